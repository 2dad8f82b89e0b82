"""The worker manifests run what the code expects: every env var the app reads is set,
credentials come from Secrets that something creates, the container arguments parse with
cqrsctl, probes hit the health port, replicas fit the partitions; plus the shape each
overlay promises (sizes, PodDisruptionBudgets, anti-affinity)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from cqrsctl.main import app
from processors import settings
from processors.registry import default_registry
from sinks.migrate import roles as read_model_roles
from tests.unit.k8s_render import OVERLAYS, REPO, of_kind, render_overlay

APP_PACKAGES = ("cqrsctl", "deploy", "processors", "producers", "schemas", "sinks")
ENV_NAME = re.compile(r"\bCQRS_[A-Z0-9_]+\b")
# Read only by the local stack (`cqrsctl up`, deploy/local), never by a worker in a cluster.
LOCAL_ONLY = {
    "CQRS_STATE_DIR",  # where the local stack keeps its state file and data
    "CQRS_CACHE_DIR",  # where the broker jars resolved from Maven Central are cached
    "CQRS_MAVEN_REPO",  # the local Maven repository for those jars
    "CQRS_JAVA",  # the java binary that runs the local broker
    "CQRS_MVN",  # the mvn binary that resolves the jars
    "CQRS_PG_BIN",  # the folder of initdb / pg_ctl
    "CQRS_KAFKA_HEAP_OPTS",  # the local broker's heap
}
# processors/settings.py reads CQRS_STATE_DIR only when the connection variables are unset:
# its fallback to the local stack's state file.
LOCAL_STACK_FILES = ("deploy/local/", "cqrsctl/stack_cmd.py", "processors/settings.py")
# Read only by `cqrsctl run gateway`, each the environment form of an optional option
# (--jwks-url or --jwks-file, TLS or not): the gateway's are checked by
# test_k8s_cluster.py's test of its token settings, not required of every worker.
GATEWAY_OPTIONS = {
    getattr(settings, name) for name in dir(settings) if name.startswith("ENV_GATEWAY_")
}

# role -> (kind, name) of its workload
WORKERS = {
    "processor": ("StatefulSet", "bank-processor"),
    "projector": ("StatefulSet", "bank-projector"),
    "sink": ("Deployment", "bank-sink"),
    "gateway": ("Deployment", "bank-gateway"),
}


def env_vars_in_sources() -> dict[str, set[str]]:
    """CQRS_* names in string literals of the app's Python sources -> files using them."""
    found: dict[str, set[str]] = {}
    for package in APP_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for name in ENV_NAME.findall(node.value):
                        found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def app_env_vars() -> set[str]:
    return set(env_vars_in_sources()) - LOCAL_ONLY


def workload(overlay: str, role: str) -> dict[str, Any]:
    kind, name = WORKERS[role]
    (doc,) = [d for d in of_kind(render_overlay(overlay), kind) if d["metadata"]["name"] == name]
    return doc


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def env_of(overlay: str, c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every env var the container gets: from envFrom ConfigMaps, then `env` (which wins)."""
    maps = {m["metadata"]["name"]: m["data"] for m in of_kind(render_overlay(overlay), "ConfigMap")}
    env: dict[str, dict[str, Any]] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "only ConfigMaps are expanded here"
        for key, value in maps[source["configMapRef"]["name"]].items():
            env[key] = {"name": key, "value": value}
    env.update({e["name"]: e for e in c.get("env", [])})
    return env


def _resolve(args: list[str]) -> tuple[Any, Any, str, list[str]]:
    """Descend cqrsctl's command groups: (command, parent context, its name, its args)."""
    cmd: Any = typer.main.get_command(app)
    parent, name = None, "cqrsctl"
    while hasattr(cmd, "get_command"):  # a command group: descend into the subcommand
        ctx = cmd.context_class(cmd, info_name=name, parent=parent)
        sub = cmd.get_command(ctx, args[0]) if args else None
        if sub is None:
            raise typer.BadParameter(f"no cqrsctl command {args[:1]} under {name!r}")
        parent, name, cmd, args = ctx, args[0], sub, args[1:]
    return cmd, parent, name, args


def parse_cli(args: list[str]) -> dict[str, Any]:
    """The parameters cqrsctl would run with; raises its usage error for bad arguments."""
    cmd, parent, name, rest = _resolve(args)
    return cmd.make_context(name, list(rest), parent=parent).params


# --- environment ----------------------------------------------------------------------------


def test_the_local_only_list_is_true_and_current() -> None:
    used = env_vars_in_sources()
    for name in LOCAL_ONLY:
        assert name in used, f"{name} is no longer read: drop it from LOCAL_ONLY"
        assert all(f.startswith(LOCAL_STACK_FILES) for f in used[name]), (name, used[name])
    # The scan finds what processors/settings.py reads.
    assert {"CQRS_KAFKA_BOOTSTRAP_SERVERS", "CQRS_POSTGRES_DSN"} <= app_env_vars()


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_every_env_var_the_app_reads_is_set(overlay: str, role: str) -> None:
    env = env_of(overlay, container(workload(overlay, role)))
    missing = app_env_vars() - GATEWAY_OPTIONS - set(env)
    assert not missing, f"{role} in {overlay} lacks {sorted(missing)}"


def operator_made_secrets(docs: tuple[dict[str, Any], ...]) -> set[str]:
    """Secrets the operators create: one per KafkaUser (Strimzi User Operator), the cluster
    CA certificate (Strimzi), the database owner's login and the CA (CloudNativePG); plus
    the managed roles' password secrets, which the Cluster needs anyway (generated in dev,
    created out of band in prod: docs/deploy.md)."""
    names = {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
    names |= {f"{k['metadata']['name']}-cluster-ca-cert" for k in of_kind(docs, "Kafka")}
    for pg in of_kind(docs, "Cluster"):
        names |= {f"{pg['metadata']['name']}-app", f"{pg['metadata']['name']}-ca"}
        roles = pg["spec"].get("managed", {}).get("roles", [])
        names |= {r["passwordSecret"]["name"] for r in roles if "passwordSecret" in r}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_credentials_come_from_secrets_that_exist(overlay: str, role: str) -> None:
    docs = render_overlay(overlay)
    doc = workload(overlay, role)
    c = container(doc)
    env = env_of(overlay, c)
    available = operator_made_secrets(docs) | {
        s["metadata"]["name"] for s in of_kind(docs, "Secret")
    }
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in env.values()
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    refs |= {
        v["secret"]["secretName"]
        for v in doc["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert refs <= available, refs - available
    # The Kafka login: the KafkaUser's name, and the password from the secret of that name.
    user = env["CQRS_KAFKA_SASL_USERNAME"]["value"]
    assert user in {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
    assert env["CQRS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": user,
        "key": "password",
    }
    # No credential is a literal in a manifest.
    for name in ("CQRS_KAFKA_SASL_PASSWORD", "PGPASSWORD"):
        assert name not in env or "value" not in env[name]
    assert "password" not in env["CQRS_POSTGRES_DSN"]["value"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_points_at_the_operators_services(overlay: str) -> None:
    docs = render_overlay(overlay)
    (kafka,) = of_kind(docs, "Kafka")
    (pg,) = of_kind(docs, "Cluster")
    (config,) = [m for m in of_kind(docs, "ConfigMap") if m["metadata"]["name"] == "cqrs-config"]
    data = config["data"]
    (listener,) = [
        lsn
        for lsn in kafka["spec"]["kafka"]["listeners"]
        if data["CQRS_KAFKA_BOOTSTRAP_SERVERS"]
        == f"{kafka['metadata']['name']}-kafka-bootstrap:{lsn['port']}"
    ]
    assert listener["tls"] and data["CQRS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert listener["authentication"]["type"] == data["CQRS_KAFKA_SASL_MECHANISM"].lower()
    assert f"host={pg['metadata']['name']}-rw " in data["CQRS_POSTGRES_DSN"]
    # The CA file is where every worker mounts the cluster CA secret's ca.crt.
    ca_dir, ca_file = data["CQRS_KAFKA_SSL_CA_LOCATION"].rsplit("/", 1)
    for role in WORKERS:
        doc = workload(overlay, role)
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [m for m in container(doc)["volumeMounts"] if m["mountPath"] == ca_dir]
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
        assert {"key": "ca.crt", "path": ca_file} in secret["items"]


def test_the_processor_instance_id_is_its_stable_pod_name() -> None:
    env = env_of("prod", container(workload("prod", "processor")))
    assert env["CQRS_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert workload("prod", "processor")["kind"] == "StatefulSet"


# --- how the containers run -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_args_parse_and_probes_hit_the_health_port(overlay: str, role: str) -> None:
    c = container(workload(overlay, role))
    assert c["args"][:2] == ["run", role]
    params = parse_cli(c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == params["health_port"] != 0
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_parse_cli_rejects_unknown_flags_and_commands() -> None:
    with pytest.raises(typer.exceptions.TyperException, match="No such option"):
        parse_cli(["run", "processor", "--healthport", "8081"])
    with pytest.raises(typer.exceptions.TyperException, match="frobnicate"):
        parse_cli(["run", "frobnicate"])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_replicas_fit_the_partitions(overlay: str, role: str) -> None:
    partitions = default_registry().context("bank").partitions
    assert 1 <= workload(overlay, role)["spec"]["replicas"] <= partitions


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_runs_non_root_read_only_with_limits(overlay: str, role: str) -> None:
    pod = workload(overlay, role)["spec"]["template"]["spec"]
    c = container(workload(overlay, role))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][bound]), bound


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_projector_keeps_rocksdb_on_its_own_volume(overlay: str) -> None:
    doc = workload(overlay, "projector")
    c = container(doc)
    (claim,) = doc["spec"]["volumeClaimTemplates"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    data_dir = Path(parse_cli(c["args"])["data_dir"])
    assert data_dir.is_relative_to(mount["mountPath"]), (data_dir, mount)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("role", WORKERS)
def test_a_pod_monitor_scrapes_each_role_with_the_role_as_job(overlay: str, role: str) -> None:
    doc = workload(overlay, role)
    labels = doc["spec"]["template"]["metadata"]["labels"]
    (monitor,) = [
        m
        for m in of_kind(render_overlay(overlay), "PodMonitor")
        if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == "health" in {p["name"] for p in container(doc)["ports"]}
    # The dashboard and the alert rules select a role by `job`.
    assert labels[monitor["spec"]["jobLabel"]] == role


# --- the shape of each overlay ------------------------------------------------------------------


def _pool(overlay: str) -> dict[str, Any]:
    (pool,) = of_kind(render_overlay(overlay), "KafkaNodePool")
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]  # KRaft, no ZooKeeper
    return pool


def test_dev_is_one_broker_and_one_postgres() -> None:
    docs = render_overlay("dev")
    assert _pool("dev")["spec"]["replicas"] == 1
    (pg,) = of_kind(docs, "Cluster")
    assert pg["spec"]["instances"] == 1
    config = of_kind(docs, "Kafka")[0]["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 1
    assert config["transaction.state.log.replication.factor"] == 1


def test_prod_is_three_nodes_rf3_isr2_and_three_postgres_spread_over_hosts() -> None:
    docs = render_overlay("prod")
    pool = _pool("prod")
    assert pool["spec"]["replicas"] == 3
    anti = pool["spec"]["template"]["pod"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"]
    config = of_kind(docs, "Kafka")[0]["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    (pg,) = of_kind(docs, "Cluster")
    assert pg["spec"]["instances"] == 3
    assert pg["spec"]["affinity"]["podAntiAffinityType"] == "required"


def test_prod_has_a_disruption_budget_for_every_worker() -> None:
    budgets = of_kind(render_overlay("prod"), "PodDisruptionBudget")
    for role in WORKERS:
        labels = workload("prod", role)["spec"]["template"]["metadata"]["labels"]
        (pdb,) = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_roles_are_declared_and_least_privilege(overlay: str) -> None:
    docs = render_overlay(overlay)
    (pg,) = of_kind(docs, "Cluster")
    roles = {r["name"]: r for r in pg["spec"]["managed"]["roles"]}
    # The group roles grants.sql grants to exist before any migration: the database owner
    # CNPG creates has no CREATEROLE. The read-model schema is `public` (no search_path in
    # the DSN).
    reader, writer = read_model_roles("public")
    assert not roles[reader]["login"] and not roles[writer]["login"]
    assert roles["cqrs_query"]["inRoles"] == [reader]
    assert roles["cqrs_sink"]["inRoles"] == [writer]
    for login in ("cqrs_query", "cqrs_sink"):
        role = roles[login]
        assert role["login"] and role["passwordSecret"]["name"]
        powers = {"superuser", "createdb", "createrole", "replication", "bypassrls"}
        assert not powers & {k for k, v in role.items() if v is True}, login
        assert "pg_read_all_data" not in role["inRoles"]
    # The migration role owns the database; only the migration Job logs in as it.
    owner = pg["spec"]["bootstrap"]["initdb"]["owner"]
    assert owner == "cqrs_migrator" and owner not in roles
    owner_secret = f"{pg['metadata']['name']}-app"
    sink = container(workload(overlay, "sink"))
    env = env_of(overlay, sink)
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "cqrs-pg-sink", "key": "username"}
    assert "--no-migrate" in sink["args"]
    (job,) = [j for j in of_kind(docs, "Job") if j["metadata"]["name"] == "bank-migrate"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"][:2] == ["migrate", "--context=bank"]
    job_env = {e["name"]: e for e in migrate["env"]}
    assert job_env["PGUSER"]["valueFrom"]["secretKeyRef"]["name"] == owner_secret
    for role in WORKERS:
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in env_of(overlay, container(workload(overlay, role))).values()
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        }
        assert owner_secret not in refs, role


def test_sources_scanned_exist() -> None:
    assert all((REPO / p).is_dir() for p in APP_PACKAGES)
    assert Path(REPO / "processors" / "settings.py").is_file()
