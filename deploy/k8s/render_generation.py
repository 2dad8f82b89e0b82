"""Print the Kubernetes manifests that rebuild one projection generation beside the live one
(docs/read-side.md, "Projection lifecycle"; docs/deploy.md, "Rebuilding a projection"):

    .venv/bin/python deploy/k8s/render_generation.py accounts 2 \\
        > deploy/k8s/overlays/prod/generation-accounts-g2.yaml

then list the file under the overlay's `resources` (the overlay sets namespace and image)
and `kubectl apply -k`. The documents:

- the generation's projector (headless Service + StatefulSet with its own volume) and sink
  (Deployment), made from the shared workers' manifests (base/workers/projector.yaml,
  sink.yaml): the same image, security context, probes, resources and Postgres role (the
  sink logs in as cqrs_sink), run with `--projection P --generation N`, labelled
  `app.kubernetes.io/component: projector-generation | sink-generation` (so no shared
  selector, PodMonitor or autoscaler picks them up) and `kafka-cqrs/generation: P-gN`;
- a Kafka user for each, least privilege: the projector reads `<ctx>.events` (and may never
  write it), writes and reads only its own projection topic (its table's changelog too)
  and uses only its own group and leader-election topic; the sink reads
  only that topic, in its own group;
- the Job that runs `cqrsctl projections rebuild P --generation N`: prepares the
  generation's table and topic, waits until it has caught up and swaps it in (as the
  migration role and the Kafka user cqrs-projections, like the gc CronJob it is made from);
  the workers restart until it has prepared the generation;
- a PodMonitor scraping both workers (job `projector-generation` / `sink-generation`).

Delete them (`kubectl delete -f`) once the generation is retired; the gc CronJob then drops
its table, groups and topics after the grace period.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from deploy.k8s.reactor_acls import acl
from processors.generations import GenerationNames
from processors.projector.app import projector_app_id
from processors.registry import default_registry
from processors.topics import ContextTopics
from sinks.config import sink_group_id

BASE = Path(__file__).parent / "base"
CONTEXT = "bank"  # the deployed context: the base manifests are its
COMPONENT = "app.kubernetes.io/component"
GENERATION_LABEL = "kafka-cqrs/generation"
PART_OF = {"app.kubernetes.io/part-of": "kafka-cqrs"}
REBUILD_TIMEOUT_S = 7 * 24 * 3600  # the Job waits this long for the swap


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_name(name: str) -> str:
    return name.replace("_", "-")


def _relabel(node: Any, role: str, tag: str) -> None:
    """Every label set or selector of `role` becomes the generation's."""
    if isinstance(node, dict):
        if node.get(COMPONENT) == role:
            node[COMPONENT] = f"{role}-generation"
            node[GENERATION_LABEL] = tag
        for value in node.values():
            _relabel(value, role, tag)
    elif isinstance(node, list):
        for value in node:
            _relabel(value, role, tag)


def _kafka_user_env(container: dict[str, Any], user: str) -> None:
    for env in container["env"]:
        if env["name"] == "CQRS_KAFKA_SASL_USERNAME":
            env["value"] = user
        elif env["name"] == "CQRS_KAFKA_SASL_PASSWORD":
            env["valueFrom"]["secretKeyRef"]["name"] = user  # Strimzi's secret of the user


def _worker(docs: list[dict[str, Any]], role: str, projection: str, generation: int) -> list:
    tag = k8s_name(f"{projection}-g{generation}")
    old = f"{CONTEXT}-{role}"
    new = f"{old}-{tag}"
    out = []
    for doc in copy.deepcopy(docs):
        _relabel(doc, role, tag)
        doc["metadata"]["name"] = new
        spec = doc["spec"]
        if doc["kind"] == "StatefulSet":
            spec["serviceName"] = new
        if doc["kind"] in ("StatefulSet", "Deployment"):
            spec["replicas"] = 1
            (container,) = spec["template"]["spec"]["containers"]
            container["args"] += [f"--projection={projection}", f"--generation={generation}"]
            _kafka_user_env(container, f"cqrs-{role}-{tag}")
        out.append(doc)
    return out


def _kafka_users(projection: str, generation: int) -> list[dict[str, Any]]:
    ctx = default_registry().context(CONTEXT)
    topics = ContextTopics(ctx.name)
    found = next(p for p in ctx.projections if p.name == projection)
    own_topic = GenerationNames.of(topics.prefix, found, generation).topic
    app_id = projector_app_id(topics.prefix, projection, generation)
    tag = k8s_name(f"{projection}-g{generation}")
    projector = [
        acl("topic", topics.events, ["Read", "Describe"]),
        acl("topic", topics.events, ["Write"], type="deny"),
        # its rows, which are its table's changelog too: written, and read to recover
        acl("topic", own_topic, ["Read", "Write", "Describe"]),
        acl("group", app_id, ["Read", "Describe"]),
        # Faust's one topic of this app, its leader election.
        acl("topic", f"{app_id}-__assignor-__leader", ["Read", "Write", "Describe", "Create"]),
        # Its replication factor is the cluster's default (faust_app.py).
        {"resource": {"type": "cluster"}, "operations": ["DescribeConfigs"]},
    ]
    sink = [
        acl("topic", own_topic, ["Read", "Describe"]),
        acl("group", sink_group_id(topics.prefix, projection, generation), ["Read", "Describe"]),
    ]
    return [_kafka_user(f"cqrs-projector-{tag}", projector), _kafka_user(f"cqrs-sink-{tag}", sink)]


def _kafka_user(name: str, acls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": name, "labels": {**PART_OF, "strimzi.io/cluster": "cqrs"}},
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": acls},
        },
    }


def _rebuild_job(projection: str, generation: int) -> dict[str, Any]:
    (gc,) = _load(BASE / "workers" / "projections-gc.yaml")
    template = copy.deepcopy(gc["spec"]["jobTemplate"])
    tag = k8s_name(f"{projection}-g{generation}")
    template["metadata"]["labels"][GENERATION_LABEL] = tag
    template["spec"]["template"]["metadata"]["labels"][GENERATION_LABEL] = tag
    template["spec"]["backoffLimit"] = 6  # `rebuild` resumes a building generation
    template["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    (container,) = template["spec"]["template"]["spec"]["containers"]
    container["args"] = [
        "projections",
        "rebuild",
        projection,
        f"--context={CONTEXT}",
        f"--generation={generation}",
        f"--timeout={REBUILD_TIMEOUT_S}",
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**template["metadata"], "name": f"{CONTEXT}-rebuild-{tag}"},
        "spec": template["spec"],
    }


def _pod_monitor(projection: str, generation: int) -> dict[str, Any]:
    tag = k8s_name(f"{projection}-g{generation}")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"{CONTEXT}-generation-{tag}", "labels": dict(PART_OF)},
        "spec": {
            "jobLabel": COMPONENT,
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "kafka-cqrs", GENERATION_LABEL: tag}
            },
            "podMetricsEndpoints": [{"port": "health", "path": "/metrics", "interval": "15s"}],
        },
    }


def manifests(projection: str, generation: int) -> list[dict[str, Any]]:
    """The documents that rebuild `projection` as `generation` (>= 2) in the cluster."""
    known = [p.name for p in default_registry().context(CONTEXT).projections]
    if projection not in known:
        raise ValueError(f"{CONTEXT} has no projection {projection!r} (known: {', '.join(known)})")
    if generation < 2:
        raise ValueError(f"a rebuilt generation is numbered from 2, got {generation}")
    workers = BASE / "workers"
    return [
        *_kafka_users(projection, generation),
        *_worker(_load(workers / "projector.yaml"), "projector", projection, generation),
        *_worker(_load(workers / "sink.yaml"), "sink", projection, generation),
        _rebuild_job(projection, generation),
        _pod_monitor(projection, generation),
    ]


def render(projection: str, generation: int) -> str:
    header = (
        f"# Generated by deploy/k8s/render_generation.py {projection} {generation}: do not edit.\n"
    )
    return header + yaml.safe_dump_all(manifests(projection, generation), sort_keys=False)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: render_generation.py PROJECTION GENERATION", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(render(argv[0], int(argv[1])))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
