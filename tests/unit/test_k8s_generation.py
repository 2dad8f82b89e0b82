"""The manifests of a rebuilt projection generation (deploy/k8s/render_generation.py) and the
gc CronJob: added to an overlay they render and validate like the rest (kubernetes-validate,
the CRD schemas); the generation's workers run as the shared ones do, with their own Kafka
users limited to the generation's topics and groups; the lifecycle's Kafka user may delete
rebuilt generations only; the network lets exactly the Postgres clients through."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from deploy.k8s.render_generation import main, manifests
from deploy.k8s.render_generation import render as render_generation
from processors.projector.app import projector_app_id
from processors.registry import default_registry
from sinks.config import sink_group_id
from tests.unit import netpol
from tests.unit.k8s_render import K8S_DIR, of_kind, validate_documents
from tests.unit.k8s_render import render as kustomize
from tests.unit.test_k8s_cluster import pods, policies
from tests.unit.test_k8s_topics import BANK, acls, decide
from tests.unit.test_k8s_workers import container, parse_cli, workload

PROJECTIONS = [p.name for p in default_registry().context("bank").projections]


@pytest.fixture(scope="module")
def prod_with_generation(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The prod overlay with accounts generation 2 added, as docs/deploy.md says to."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S_DIR, root)
    overlay = root / "overlays" / "prod"
    (overlay / "generation-accounts-g2.yaml").write_text(render_generation("accounts", 2))
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["resources"].append("generation-accounts-g2.yaml")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(overlay)


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(tuple(docs), kind) if d["metadata"]["name"] == name]
    return doc


def test_an_overlay_with_a_generation_renders_and_validates(
    prod_with_generation: list[dict[str, Any]],
) -> None:
    docs = prod_with_generation
    assert validate_documents(docs) == []
    job = named(docs, "Job", "bank-rebuild-accounts-g2")
    sts = named(docs, "StatefulSet", "bank-projector-accounts-g2")
    for doc in (job, sts, named(docs, "Deployment", "bank-sink-accounts-g2")):
        assert doc["metadata"]["namespace"] == "cqrs"  # the overlay's
        (c,) = doc["spec"]["template"]["spec"]["containers"]
        assert c["image"] == "registry.example.com/kafka-cqrs:0.1.0"


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_every_projections_generation_validates(projection: str) -> None:
    assert validate_documents(manifests(projection, 3)) == []


def generation_workload(role: str) -> dict[str, Any]:
    kind = "StatefulSet" if role == "projector" else "Deployment"
    return named(manifests("accounts", 2), kind, f"bank-{role}-accounts-g2")


@pytest.mark.parametrize("role", ["projector", "sink"])
def test_a_generations_workers_run_like_the_shared_ones(role: str) -> None:
    shared = workload("prod", role)
    mine = generation_workload(role)
    pod, shared_pod = mine["spec"]["template"]["spec"], shared["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "volumes"):
        assert pod[key] == shared_pod[key], key
    c, shared_c = container(mine), container(shared)
    for key in ("securityContext", "livenessProbe", "readinessProbe", "ports", "envFrom"):
        assert c[key] == shared_c[key], key
    params = parse_cli(c["args"])
    assert (params["projection"], params["generation"]) == ("accounts", 2)
    env = {e["name"]: e for e in c["env"]}
    user = f"cqrs-{role}-accounts-g2"
    assert env["CQRS_KAFKA_SASL_USERNAME"]["value"] == user
    assert env["CQRS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == user
    shared_env = {e["name"]: e for e in shared_c["env"]}
    for name in ("PGUSER", "PGPASSWORD", "PGSSLMODE"):  # the same Postgres role
        assert env.get(name) == shared_env.get(name), name
    # No selector of the shared workers picks up the generation's pods.
    labels = mine["spec"]["template"]["metadata"]["labels"]
    assert not netpol.selects(shared["spec"]["selector"], labels)
    assert netpol.selects(mine["spec"]["selector"], labels)


def generation_acls(role: str) -> list[dict[str, Any]]:
    user = named(manifests("accounts", 2), "KafkaUser", f"cqrs-{role}-accounts-g2")
    return user["spec"]["authorization"]["acls"]


def test_the_generations_projector_may_touch_its_own_topics_and_group_only() -> None:
    mine = generation_acls("projector")
    app_id = projector_app_id(BANK.prefix, "accounts", 2)
    assert decide(mine, "topic", BANK.events, "Read")
    assert not decide(mine, "topic", BANK.events, "Write")
    for op in ("Read", "Write"):  # its rows, and its table's changelog
        assert decide(mine, "topic", BANK.projection("accounts_g2"), op), op
    assert not decide(mine, "topic", BANK.projection("accounts_g2"), "Create")
    assert decide(mine, "group", app_id, "Read")
    for op in ("Create", "Read", "Write"):
        assert not decide(mine, "topic", f"{app_id}-accounts_g2-changelog", op), op
        assert decide(mine, "topic", f"{app_id}-__assignor-__leader", op), op
    # Never the shared workers' topics and groups, nor another generation's.
    assert not decide(mine, "topic", BANK.projection("accounts"), "Write")
    assert not decide(mine, "topic", BANK.projection("accounts"), "Read")
    assert not decide(mine, "topic", BANK.projection("accounts_g3"), "Write")
    assert not decide(
        mine, "topic", f"{projector_app_id(BANK.prefix)}-__assignor-__leader", "Write"
    )
    assert not decide(mine, "group", projector_app_id(BANK.prefix), "Read")
    for topic in (BANK.commands, BANK.results, BANK.aggregates, BANK.dlq):
        assert not decide(mine, "topic", topic, "Write"), topic


def test_the_generations_sink_reads_its_topic_in_its_group_only() -> None:
    mine = generation_acls("sink")
    own_group = sink_group_id(BANK.prefix, "accounts", 2)
    assert decide(mine, "topic", BANK.projection("accounts_g2"), "Read")
    assert decide(mine, "group", own_group, "Read")
    assert not decide(mine, "topic", BANK.projection("accounts"), "Read")
    assert not decide(mine, "group", sink_group_id(BANK.prefix), "Read")
    assert not any("Write" in a["operations"] for a in mine)


def test_the_lifecycle_user_may_create_and_delete_rebuilt_generations_only() -> None:
    mine = acls("cqrs-projections")
    for name in PROJECTIONS:
        topic = BANK.projection(f"{name}_g2")
        assert decide(mine, "topic", topic, "Create") and decide(mine, "topic", topic, "Delete")
        app_id = projector_app_id(BANK.prefix, name, 2)
        assert decide(mine, "topic", f"{app_id}-__assignor-__leader", "Delete")
        assert decide(mine, "group", app_id, "Delete")
        assert decide(mine, "group", sink_group_id(BANK.prefix, name, 2), "Delete")
        # The shared workers' topics and groups are out of reach.
        assert not decide(mine, "topic", BANK.projection(name), "Delete")
        leader = f"{projector_app_id(BANK.prefix)}-__assignor-__leader"
        assert not decide(mine, "topic", leader, "Delete")
    assert not decide(mine, "group", projector_app_id(BANK.prefix), "Delete")
    assert not decide(mine, "group", sink_group_id(BANK.prefix), "Delete")
    for topic in (BANK.events, BANK.commands, BANK.aggregates):
        assert not decide(mine, "topic", topic, "Delete"), topic


def test_the_gc_cronjob_runs_gc_as_the_migration_role_and_the_lifecycle_user() -> None:
    (cron,) = [
        d
        for d in kustomize(K8S_DIR / "overlays" / "prod")
        if d["kind"] == "CronJob" and d["metadata"]["name"] == "bank-projections-gc"
    ]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    params = parse_cli(c["args"])
    assert params["retired_grace"] == 86400
    env = {e["name"]: e for e in c["env"]}
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"]["name"] == "cqrs-pg-app"
    assert env["CQRS_KAFKA_SASL_USERNAME"]["value"] == "cqrs-projections"
    rebuild = named(manifests("accounts", 2), "Job", "bank-rebuild-accounts-g2")
    (job_c,) = rebuild["spec"]["template"]["spec"]["containers"]
    params = parse_cli(job_c["args"])
    assert (params["projection"], params["generation"], params["wait"]) == ("accounts", 2, True)
    assert {e["name"]: e for e in job_c["env"]} == env  # the same logins as gc


@pytest.mark.parametrize(
    ("source", "reaches_postgres"),
    [("sink", True), ("projector", False), ("job", True)],
)
def test_only_the_generations_postgres_clients_reach_postgres(
    prod_with_generation: list[dict[str, Any]], source: str, reaches_postgres: bool
) -> None:
    found, rules = pods("prod"), policies("prod")
    docs = prod_with_generation
    doc = {
        "sink": lambda: named(docs, "Deployment", "bank-sink-accounts-g2"),
        "projector": lambda: named(docs, "StatefulSet", "bank-projector-accounts-g2"),
        "job": lambda: named(docs, "Job", "bank-rebuild-accounts-g2"),
    }[source]()
    pod = netpol.Pod(source, "cqrs", doc["spec"]["template"]["metadata"]["labels"])
    assert netpol.allowed(rules, pod, found["postgres"], 5432, "TCP") is reaches_postgres
    assert netpol.allowed(rules, pod, found["broker"], 9093, "TCP")


def test_the_script_refuses_what_cannot_be_a_generation(capsys: pytest.CaptureFixture) -> None:
    assert main(["accounts", "1"]) == 2
    assert main(["nope", "2"]) == 2
    assert main(["accounts"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: a rebuilt generation is numbered from 2, got 1",
        "error: bank has no projection 'nope' (known: accounts, daily_totals, event_log)",
        "usage: render_generation.py PROJECTION GENERATION",
    ]
