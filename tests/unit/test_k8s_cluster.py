"""The cluster manifests beyond the workers: the gateway's Service and HPA, KEDA scaling on
the workers' real consumer groups and topics, Strimzi's Kafka metrics (metricsConfig,
kafkaExporter), Postgres backups in prod, pinned images, and NetworkPolicies that allow
exactly the pipeline's flows (evaluated offline by tests/unit/netpol.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from processors.processor_config import ProcessorConfig
from processors.projector.app import projector_app_id
from processors.registry import default_registry
from processors.topics import ContextTopics
from sinks.config import sink_group_id
from tests.unit import netpol
from tests.unit.k8s_render import OVERLAYS, of_kind, render_overlay
from tests.unit.test_k8s_topics import allowed as acl_allows
from tests.unit.test_k8s_workers import container, parse_cli, workload

BANK = ContextTopics("bank")
PARTITIONS = default_registry().context("bank").partitions
# role -> (consumer group, topic its ScaledObject watches; None = all of the group's topics)
CONSUMERS = {
    "processor": (
        ProcessorConfig(context="bank", kafka={}, instance_id="x").group_id,
        BANK.commands,
    ),
    "projector": (projector_app_id(BANK.prefix), BANK.events),
    "sink": (sink_group_id(BANK.prefix), None),
}


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def config_data(overlay: str, name: str) -> dict[str, str]:
    return one(render_overlay(overlay), "ConfigMap", name)["data"]


# --- the gateway --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_is_served_scaled_on_cpu_and_probed(overlay: str) -> None:
    docs = render_overlay(overlay)
    deployment = workload(overlay, "gateway")
    c = container(deployment)
    params = parse_cli(c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert params["host"] == "0.0.0.0" and ports["http"] == params["port"]
    assert ports["health"] == params["health_port"] != params["port"]
    # Queries as the read-only role, with no SET ROLE on top.
    assert params["db_role"] == ""
    env = {e["name"]: e for e in c["env"]}
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"]["name"] == "cqrs-pg-query"
    assert env["CQRS_KAFKA_SASL_USERNAME"]["value"] == "cqrs-client"
    assert c["startupProbe"]["httpGet"]["port"] == "health"

    service = one(docs, "Service", "bank-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"

    hpa = one(docs, "HorizontalPodAutoscaler", "bank-gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "bank-gateway")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "cpu" in c["resources"]["requests"]  # utilisation is relative to the request


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_checks_tokens_with_a_jwks_and_policy_from_its_configmap(
    overlay: str,
) -> None:
    import json

    from producers.gateway.auth import Policy

    deployment = workload(overlay, "gateway")
    c = container(deployment)
    params = parse_cli(c["args"])
    assert params["auth"] == "jwt" and params["rate_limit"] > 0
    env = {e["name"]: e for e in c["env"]}
    auth = config_data(overlay, "bank-gateway-auth")
    for var, key in (("CQRS_GATEWAY_ISSUER", "issuer"), ("CQRS_GATEWAY_AUDIENCE", "audience")):
        ref = env[var]["valueFrom"]["configMapKeyRef"]
        assert (ref["name"], ref["key"]) == ("bank-gateway-auth", key) and auth[key]
    # The files the args name are the ConfigMap's keys, mounted where the args say.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    folder = mounts["gateway-auth"]
    assert volumes["gateway-auth"]["configMap"]["name"] == "bank-gateway-auth"
    assert str(params["jwks_file"]) == f"{folder}/jwks.json"
    assert str(params["policy"]) == f"{folder}/policy.json"
    assert "keys" in json.loads(auth["jwks.json"])
    policy = Policy.from_json(json.loads(auth["policy.json"]))
    commands = {t for a in default_registry().context("bank").aggregates for t in a.command_types}
    granted = {g for grants in policy.roles.values() for g in grants}
    # The shipped policy grants public bank commands only, and no wildcard over commands.
    assert {g.removeprefix("command:") for g in granted if g.startswith("command:")} <= commands
    assert not any(g in ("*", "command:*", "command:bank.*") for g in granted)
    assert not granted & {f"command:bank.{t}" for t in ("FailTransfer", "CompleteTransfer")}


# --- KEDA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", CONSUMERS)
def test_each_worker_scales_on_its_own_consumer_lag(overlay: str, role: str) -> None:
    docs = render_overlay(overlay)
    target = workload(overlay, role)
    (scaled,) = [
        s
        for s in of_kind(docs, "ScaledObject")
        if s["spec"]["scaleTargetRef"]["name"] == target["metadata"]["name"]
    ]
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", target["kind"])
    assert scaled["spec"]["minReplicaCount"] == target["spec"]["replicas"]
    assert scaled["spec"]["maxReplicaCount"] == PARTITIONS
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    group, topic = CONSUMERS[role]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == group
    assert meta.get("topic") == topic
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    assert (
        meta["bootstrapServers"]
        == config_data(overlay, "cqrs-config")["CQRS_KAFKA_BOOTSTRAP_SERVERS"]
    )
    # KEDA may read the group's offsets and the topics' end offsets, and nothing more.
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {r["parameter"]: r for r in auth["spec"]["configMapTargetRef"]}
    params |= {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    user_map = config_data(overlay, params["username"]["name"])
    user = user_map[params["username"]["key"]]
    assert user_map[params["sasl"]["key"]] == "scram_sha512"
    assert user_map[params["tls"]["key"]] == "enable"
    assert params["password"]["name"] == user and params["password"]["key"] == "password"
    assert params["ca"]["name"] == "cqrs-cluster-ca-cert"
    assert acl_allows(user, "group", group, "Describe")
    for t in [topic] if topic else [BANK.projection(p) for p in ("accounts", "daily_totals")]:
        assert acl_allows(user, "topic", t, "Describe"), t
        assert not acl_allows(user, "topic", t, "Read"), t
    assert not acl_allows(user, "group", group, "Read")


# --- Kafka metrics ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_exports_broker_metrics_and_consumer_lag(overlay: str) -> None:
    docs = render_overlay(overlay)
    (kafka,) = of_kind(docs, "Kafka")
    metrics = kafka["spec"]["kafka"]["metricsConfig"]
    assert metrics["type"] == "jmxPrometheusExporter"
    ref = metrics["valueFrom"]["configMapKeyRef"]
    jmx = yaml.safe_load(config_data(overlay, ref["name"])[ref["key"]])
    assert jmx["rules"] and all("pattern" in r for r in jmx["rules"])
    for rule in jmx["rules"]:
        re.compile(rule["pattern"])
    exporter = kafka["spec"]["kafkaExporter"]
    groups = [group for group, _ in CONSUMERS.values()]
    assert all(re.fullmatch(exporter["groupRegex"], g) for g in groups)
    assert not any(re.fullmatch(exporter["groupExcludeRegex"], g) for g in groups)
    assert re.fullmatch(exporter["groupExcludeRegex"], f"{BANK.results}.client-0123")
    for t in (BANK.commands, BANK.events, BANK.projection("accounts")):
        assert re.fullmatch(exporter["topicRegex"], t)
    (monitor,) = [
        m
        for m in of_kind(docs, "PodMonitor")
        if "strimzi.io/kind" in m["spec"]["selector"]["matchLabels"]
    ]
    assert (
        monitor["spec"]["selector"]["matchLabels"]["strimzi.io/cluster"]
        == kafka["metadata"]["name"]
    )
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "tcp-prometheus"


# --- Postgres backups and pinned images -------------------------------------------------------


def test_prod_backs_postgres_up_to_an_object_store_every_night() -> None:
    docs = render_overlay("prod")
    (pg,) = of_kind(docs, "Cluster")
    store = pg["spec"]["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    creds = store["s3Credentials"]
    assert creds["accessKeyId"]["name"] == creds["secretAccessKey"]["name"] == "cqrs-pg-backup"
    assert store["wal"]["compression"]
    assert pg["spec"]["backup"]["retentionPolicy"] == "30d"
    (scheduled,) = of_kind(docs, "ScheduledBackup")
    assert scheduled["spec"]["cluster"]["name"] == pg["metadata"]["name"]
    assert scheduled["spec"]["method"] == "barmanObjectStore"
    assert len(scheduled["spec"]["schedule"].split()) == 6  # CNPG's cron: seconds first
    # In-tree Barman Cloud backups need an image that carries it (the `system` flavour).
    assert "-system-" in pg["spec"]["imageName"]
    assert not of_kind(render_overlay("dev"), "ScheduledBackup")


FULL_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_to_a_full_version(overlay: str) -> None:
    docs = render_overlay(overlay)
    images = [
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"}
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    (pg,) = of_kind(docs, "Cluster")
    images.append(pg["spec"]["imageName"])
    assert len(images) == 5
    for image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")  # a digest may follow
        assert name and "/" not in tag, f"{image}: no tag"
        assert FULL_VERSION.match(tag), f"{image}: the tag is not a full version"
    # CNPG's MAJOR.MINOR-FLAVOUR-DISTRO form (optionally with its build timestamp and a
    # digest), never the floating `15` or `15.N`.
    assert re.fullmatch(
        r".*/postgresql:15\.\d+-(\d{12}-)?(minimal|standard|system)-(bookworm|trixie)"
        r"(@sha256:[0-9a-f]{64})?",
        pg["spec"]["imageName"],
    )
    # Strimzi picks the broker image from the Kafka version, so that is pinned too.
    (kafka,) = of_kind(docs, "Kafka")
    assert FULL_VERSION.fullmatch(kafka["spec"]["kafka"]["version"])


# --- NetworkPolicies ---------------------------------------------------------------------------


def pods(overlay: str) -> dict[str, netpol.Endpoint]:
    """The overlay's pods as the policies see them: the workloads' pod templates, and the
    pods the operators make (with the labels Strimzi and CloudNativePG give them)."""
    docs = render_overlay(overlay)
    (ns,) = of_kind(docs, "Namespace")
    here = ns["metadata"]["name"]
    found: dict[str, netpol.Endpoint] = {}
    for role in ("processor", "projector", "sink", "gateway"):
        doc = workload(overlay, role)
        ports = {p["name"]: p["containerPort"] for p in container(doc)["ports"]}
        found[role] = netpol.Pod(role, here, doc["spec"]["template"]["metadata"]["labels"], ports)
    kafka = {"strimzi.io/cluster": "cqrs", "strimzi.io/kind": "Kafka"}
    found["broker"] = netpol.Pod(
        "broker",
        here,
        kafka | {"strimzi.io/name": "cqrs-kafka", "strimzi.io/broker-role": "true"},
        {"tcp-prometheus": 9404},
    )
    found["broker2"] = netpol.Pod("broker2", here, found["broker"].labels)
    found["exporter"] = netpol.Pod(
        "exporter", here, kafka | {"strimzi.io/name": "cqrs-kafka-exporter"}
    )
    found["entity-operator"] = netpol.Pod(
        "entity-operator", here, kafka | {"strimzi.io/name": "cqrs-entity-operator"}
    )
    found["postgres"] = netpol.Pod("postgres", here, {"cnpg.io/cluster": "cqrs-pg"})
    found["postgres2"] = netpol.Pod("postgres2", here, {"cnpg.io/cluster": "cqrs-pg"})
    found["stranger"] = netpol.Pod("stranger", here, {"app": "something-else"})
    found["dns"] = netpol.Pod("dns", "kube-system", {"k8s-app": "kube-dns"})
    found["prometheus"] = netpol.Pod("prometheus", "monitoring", {"app": "prometheus"})
    found["ingress"] = netpol.Pod("ingress", "ingress-nginx", {"app": "ingress-nginx"})
    found["keda"] = netpol.Pod("keda", "keda", {"app": "keda-operator"})
    found["cnpg-operator"] = netpol.Pod("cnpg-operator", "cnpg-system", {"app": "cnpg"})
    found["other-ns"] = netpol.Pod(
        "other-ns", "elsewhere", {"app.kubernetes.io/name": "kafka-cqrs"}
    )
    found["internet"] = netpol.External("203.0.113.10")
    return found


def strimzi_broker_policy(kafka: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The ingress policy Strimzi generates for the brokers: each listener open to its
    networkPolicyPeers (everyone without them), replication and control ports to the
    cluster's own pods, the metrics port to everyone."""
    name = kafka["metadata"]["name"]
    rules = [
        {"from": lsn.get("networkPolicyPeers", []), "ports": [{"port": lsn["port"]}]}
        for lsn in kafka["spec"]["kafka"]["listeners"]
    ]
    rules.append(
        {
            "from": [{"podSelector": {"matchLabels": {"strimzi.io/cluster": name}}}],
            "ports": [{"port": 9090}, {"port": 9091}],
        }
    )
    rules.append({"ports": [{"port": 9404}]})
    return {
        "metadata": {"name": f"{name}-network-policy-kafka", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"strimzi.io/name": f"{name}-kafka"}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def policies(overlay: str) -> list[dict[str, Any]]:
    docs = render_overlay(overlay)
    (kafka,) = of_kind(docs, "Kafka")
    (ns,) = of_kind(docs, "Namespace")
    return [*of_kind(docs, "NetworkPolicy"), strimzi_broker_policy(kafka, ns["metadata"]["name"])]


ALLOWED = [
    # (from, to, port, protocol)
    *[(role, "broker", 9093, "TCP") for role in ("processor", "projector", "sink", "gateway")],
    ("sink", "postgres", 5432, "TCP"),
    ("gateway", "postgres", 5432, "TCP"),
    *[(p, "dns", 53, "UDP") for p in ("processor", "sink", "gateway", "broker", "postgres")],
    ("gateway", "dns", 53, "TCP"),
    *[("prometheus", role, 8081, "TCP") for role in ("processor", "projector", "sink", "gateway")],
    ("prometheus", "broker", 9404, "TCP"),
    ("prometheus", "exporter", 9404, "TCP"),
    ("prometheus", "postgres", 9187, "TCP"),
    ("ingress", "gateway", 8080, "TCP"),
    ("keda", "broker", 9093, "TCP"),
    ("broker", "broker2", 9091, "TCP"),
    ("broker", "broker2", 9090, "TCP"),
    ("exporter", "broker", 9091, "TCP"),
    ("entity-operator", "broker", 9091, "TCP"),
    ("entity-operator", "internet", 443, "TCP"),  # the Kubernetes API
    ("postgres", "postgres2", 5432, "TCP"),
    ("postgres", "postgres2", 8000, "TCP"),
    ("cnpg-operator", "postgres", 8000, "TCP"),
    ("postgres", "internet", 443, "TCP"),  # the backups' object store
]
DENIED = [
    ("processor", "postgres", 5432, "TCP"),  # never connects to Postgres
    ("projector", "postgres", 5432, "TCP"),
    ("stranger", "broker", 9093, "TCP"),  # an unlabelled pod of the namespace
    ("stranger", "postgres", 5432, "TCP"),
    ("other-ns", "broker", 9093, "TCP"),  # the right labels in another namespace
    ("other-ns", "gateway", 8080, "TCP"),
    ("other-ns", "postgres", 5432, "TCP"),
    ("sink", "processor", 8081, "TCP"),  # no lateral traffic between workers
    ("gateway", "sink", 8081, "TCP"),
    ("prometheus", "gateway", 8080, "TCP"),  # scrapes the health port only
    ("ingress", "gateway", 8081, "TCP"),
    ("ingress", "sink", 8081, "TCP"),
    ("processor", "internet", 443, "TCP"),  # workers have no way out
    ("gateway", "internet", 443, "TCP"),
    ("processor", "dns", 80, "TCP"),
    ("keda", "postgres", 5432, "TCP"),
    ("processor", "broker", 9091, "TCP"),  # the replication listener is Strimzi's own
]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_the_pipelines_flows(overlay: str) -> None:
    found, rules = pods(overlay), policies(overlay)
    blocked = [
        f for f in ALLOWED if not netpol.allowed(rules, found[f[0]], found[f[1]], f[2], f[3])
    ]
    assert not blocked


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_everything_else(overlay: str) -> None:
    found, rules = pods(overlay), policies(overlay)
    through = [f for f in DENIED if netpol.allowed(rules, found[f[0]], found[f[1]], f[2], f[3])]
    assert not through
    (deny,) = [p for p in rules if p["metadata"]["name"] == "default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_allow_policy_carries_a_needed_flow(overlay: str) -> None:
    # Dropping any one of them blocks a flow the pipeline needs: none is dead weight, and
    # the evaluator above does look at each.
    found, rules = pods(overlay), policies(overlay)
    ours = [p for p in rules if p["metadata"]["name"] != "default-deny"]
    assert len(ours) >= 8
    for policy in ours:
        rest = [p for p in rules if p is not policy]
        assert any(
            not netpol.allowed(rest, found[f[0]], found[f[1]], f[2], f[3]) for f in ALLOWED
        ), policy["metadata"]["name"]
