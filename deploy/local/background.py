"""The pipeline's workers in the background of the local stack (`cqrsctl up --pipeline`):
the command processor, the projector and the sink started with the `Pipeline` harness
(the read models migrated first by the migration role, the sink logged in as a writer; see
deploy/local/postgres_roles.py),
left running after `up` returns, and recorded in `<state>/pipeline/workers.json` (role,
PID, health port, log) so that `status` can probe them and `down` can stop them.

    workers = start(state, context="bank")   # topics created, all three ready
    recorded(state_dir)                      # what workers.json holds
    probe(worker)                            # "healthy" | "unhealthy" | "not running"
    consumer_lag(kafka, "bank")              # records each role has still to process
    stop(state_dir)                          # SIGTERM, SIGKILL after the grace period
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploy.local.pipeline import (
    ROLES,
    WORKER_MARKER,
    Pipeline,
    PipelineSpec,
    create_context_topics,
)
from deploy.local.processes import is_our_process, kill_process, wait_gone
from deploy.local.state import StackState, state_dir

WORKERS_FILE = "workers.json"


@dataclass(frozen=True)
class RecordedWorker:
    role: str
    pid: int
    health_port: int
    log: str
    context: str = "bank"
    prefix: str | None = None


def pipeline_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the background workers keep their logs, data and `workers.json`."""
    return state_dir(directory) / "pipeline"


def recorded(directory: str | os.PathLike[str] | None = None) -> list[RecordedWorker]:
    """The workers the last `up --pipeline` started (empty when there were none)."""
    try:
        rows = json.loads((pipeline_dir(directory) / WORKERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [RecordedWorker(**row) for row in rows]


def running(directory: str | os.PathLike[str] | None = None) -> list[RecordedWorker]:
    return [w for w in recorded(directory) if is_our_process(w.pid, WORKER_MARKER)]


def start(
    state: StackState,
    *,
    context: str = "bank",
    prefix: str | None = None,
    timeout: float = 120.0,
) -> tuple[list[RecordedWorker], bool]:
    """Create the context's topics and start the three workers, or keep the recorded ones
    when all of them still run. Returns the workers and whether they were started now.
    A worker that fails to become ready stops the others and raises WorkerFailed."""
    alive = running(state.state_dir)
    if {w.role for w in alive} == set(ROLES):
        return alive, False
    stop(state.state_dir)
    kafka = {"bootstrap.servers": state.bootstrap_servers}
    create_context_topics(kafka, context, prefix)
    folder = pipeline_dir(state.state_dir)
    # The projector restores its tables from the projection topics: a folder left by an
    # earlier stack would hold rows of topics that no longer exist.
    shutil.rmtree(folder / "data", ignore_errors=True)
    from deploy.local import postgres_roles
    from processors.registry import default_registry

    # As in Kubernetes: migrated once by the migration role; the sink is a writer login.
    bounded = default_registry().context(context)
    logins = postgres_roles.prepare(state.postgres_dsn, "public", bounded)
    spec = PipelineSpec(
        log_dir=folder / "logs",
        data_dir=folder / "data",
        context=context,
        prefix=prefix,
        instance_id="local-0",
        env={
            "CQRS_KAFKA_BOOTSTRAP_SERVERS": state.bootstrap_servers,
            "CQRS_POSTGRES_DSN": state.postgres_dsn,
            "CQRS_STATE_DIR": state.state_dir,
        },
        **postgres_roles.spec_options(logins),
    )
    pipeline = Pipeline(spec)
    try:
        pipeline.start()
        pipeline.wait_ready(timeout)
    except BaseException:
        pipeline.stop()
        raise
    workers = [
        RecordedWorker(
            role=role,
            pid=int(w.pid or 0),
            health_port=w.health_port,
            log=str(w.log_path),
            context=context,
            prefix=prefix,
        )
        for role, w in pipeline.workers.items()
    ]
    (folder / WORKERS_FILE).write_text(json.dumps([asdict(w) for w in workers], indent=2))
    return workers, True


def probe(worker: RecordedWorker, timeout: float = 2.0) -> str:
    """`healthy` when its /healthz answers 200, `unhealthy` when it runs but does not,
    `not running` when the recorded PID is gone (or is no longer one of ours)."""
    if not is_our_process(worker.pid, WORKER_MARKER):
        return "not running"
    try:
        url = f"http://127.0.0.1:{worker.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return "healthy" if resp.status == 200 else "unhealthy"
    except OSError:
        return "unhealthy"


def stop(directory: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> list[str]:
    """SIGTERM every recorded worker that is still ours, wait, SIGKILL what remains;
    returns the roles stopped. The data folder goes too (the stack's topics go with it)."""
    folder = pipeline_dir(directory)
    alive = running(directory)
    for worker in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
    for worker in alive:
        if not wait_gone(worker.pid, timeout):
            kill_process(worker.pid, WORKER_MARKER)
    (folder / WORKERS_FILE).unlink(missing_ok=True)
    return [w.role for w in alive]


def group_topics(kafka: Mapping[str, Any], context: str, prefix: str | None) -> dict[str, Any]:
    """Each role's consumer group and the topics it reads."""
    from processors.projector.app import projector_app_id
    from processors.registry import default_registry
    from processors.topics import ContextTopics
    from sinks.config import sink_group_id

    topics = ContextTopics(prefix or context)
    projections = [
        topics.projection(p.name) for p in default_registry().context(context).projections
    ]
    return {
        "processor": (
            f"{topics.prefix}.command-processor",
            [topics.commands, topics.internal_commands],
        ),
        "projector": (projector_app_id(topics.prefix), [topics.events]),
        "sink": (sink_group_id(topics.prefix), projections),
    }


def consumer_lag(
    kafka: Mapping[str, Any], context: str = "bank", prefix: str | None = None, timeout: float = 5.0
) -> dict[str, int | None]:
    """Records each role's consumer group has not yet committed, summed over its topics'
    partitions (high watermark - committed offset); None when Kafka did not answer. With
    transactional topics a caught-up partition can show 1 (the commit marker)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    lags: dict[str, int | None] = {}
    for role, (group, topics) in group_topics(kafka, context, prefix).items():
        consumer = Consumer(
            {
                **kafka,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            meta = consumer.list_topics(timeout=timeout).topics
            partitions = [
                TopicPartition(t, p) for t in topics if t in meta for p in meta[t].partitions
            ]
            committed = consumer.committed(partitions, timeout=timeout)
            total = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=timeout
                )
                total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            lags[role] = total
        except KafkaException:
            lags[role] = None
        finally:
            consumer.close()
    return lags
