"""Running the projection lifecycle from tests: `cqrsctl projections ...` on a rig's topics
and schema, the workers of one generation, and what Kafka still holds of it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from cqrsctl.generation_kafka import GenerationKafka
from deploy.local.pipeline import WorkerProcess
from tests.support.read_side import ReadSideRig
from tests.support.write_side import open_account, random_workload


def projections(rig: ReadSideRig, *args: str) -> subprocess.CompletedProcess[str]:
    """`cqrsctl projections ARGS` on the rig's topics and schema."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cqrsctl.main",
            "projections",
            *args,
            "--prefix",
            rig.prefix,
            "--schema",
            rig.schema,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CQRS_POSTGRES_DSN": rig.dsn},
    )


def generation_workers(
    rig: ReadSideRig,
    instance: str | None,
    projection: str = "accounts",
    generation: int = 2,
) -> tuple[WorkerProcess, WorkerProcess]:
    """The projector and the sink of one generation (not yet waited for); with `instance`,
    static group membership (a restarted worker gets its partitions back at once)."""
    own = ["--prefix", rig.prefix, "--projection", projection, "--generation", str(generation)]
    group = ["--session-timeout", "6", "--batch-wait", "0.01"]
    if instance is not None:
        group += ["--instance-id", instance]
    data = ["--data-dir", str(rig.bank.log_dir / f"projector-{projection}-g{generation}-data")]
    projector = rig._start("projector", [*own, *group, *data], ready=False)
    sink = rig._start("sink", [*own, *group, "--schema", rig.schema], ready=False)
    return projector, sink


def checkpoints_of(conn: psycopg.Connection[Any], key: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(source_offset + 1), 0) FROM cqrs_checkpoints WHERE projection = %s",
        (key,),
    ).fetchone()
    return int(row[0]) if row else 0


def members(rig: ReadSideRig, found: GenerationKafka) -> dict[str, int]:
    """Members per consumer group of the generation (0 for a group that does not exist)."""
    admin = AdminClient(rig.kafka)
    futures = admin.describe_consumer_groups(list(found.groups))
    return {group: len(future.result(30).members) for group, future in futures.items()}


def groups_present(rig: ReadSideRig, found: GenerationKafka) -> set[str]:
    """The generation's groups that the broker knows (a deleted one describes as DEAD)."""
    admin = AdminClient(rig.kafka)  # kept until the futures are done: they die with it
    futures = admin.describe_consumer_groups(list(found.groups))
    return {
        group
        for group, future in futures.items()
        if future.result(30).state != ConsumerGroupState.DEAD
    }


def topics_present(rig: ReadSideRig, found: GenerationKafka) -> list[str]:
    return found.topics_in(AdminClient(rig.kafka).list_topics(timeout=30).topics)


def running_with_events(
    rig: ReadSideRig, accounts: list[str], commands: int, seed: int
) -> list[WorkerProcess]:
    """The shared processor, projector and sink up, `accounts` opened and `commands` random
    deposits and withdrawals sent and projected; the shared workers."""
    rig.bank.processor("p0", ready=False)
    shared = [rig.projector(False), rig.sink(False), *rig.bank.workers]
    for worker in shared:
        worker.wait_ready(90)
    with rig.bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(a)) for a in accounts]
        pending += [client.send(t, d) for t, d in random_workload(accounts, commands, seed=seed)]
        assert all(p.result(120) for p in pending)
    rig.wait_caught_up()
    return shared
