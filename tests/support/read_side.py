"""The read side as real processes (projector, sink) next to the write side's processor,
and the checks read back from Kafka and Postgres."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from bank.account import ACCOUNT
from bank.projections import PROJECTIONS
from deploy.local import postgres_roles
from deploy.local.pipeline import WorkerProcess
from processors.domain import Event
from processors.projector.app import projector_app_id
from processors.projector.tables import is_row
from processors.registry import default_registry
from processors.topic_reader import partition_count, read_partition, read_topic
from processors.topics import ContextTopics
from producers.command_client import CommandClient
from producers.command_results import EventPosition
from sinks.checkpoints import CheckpointWaiter
from sinks.config import sink_group_id
from sinks.db import connect
from tests.support.write_side import BankRig, StoredEvent, read_events

BANK = default_registry().context("bank")
PROJECTION_NAMES = [p.name for p in PROJECTIONS]
STATEFUL = [p.name for p in PROJECTIONS if p.stateful]


@dataclass
class ReadSideRig:
    bank: BankRig
    dsn: str
    schema: str
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def kafka(self) -> dict[str, Any]:
        return self.bank.kafka

    @property
    def prefix(self) -> str:
        return self.bank.prefix

    # A stable instance id (static membership): a restart after kill -9 takes the
    # partitions back at once.
    _group_args = ("--instance-id", "r0", "--session-timeout", "6")

    def _start(
        self, role: str, args: list[str], ready: bool, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = f"{role}-{len(self.workers)}"
        worker = WorkerProcess(role, args, self.bank.log_dir / f"{name}.log", env).start()
        self.workers.append(worker)
        return worker.wait_ready(90) if ready else worker

    def projector(self, ready: bool = True, batch_wait: float = 0.01) -> WorkerProcess:
        data_dir = self.bank.log_dir / "projector-data"  # kept across restarts, like a volume
        args = ["--prefix", self.prefix, "--data-dir", str(data_dir), *self._group_args]
        return self._start("projector", [*args, "--batch-wait", str(batch_wait)], ready)

    def sink(self, ready: bool = True, batch_wait: float = 0.01) -> WorkerProcess:
        """As in Kubernetes: migrated by the migration role, run as a writer login."""
        logins = postgres_roles.prepare(self.dsn, self.schema, BANK)
        env, no_migrate = postgres_roles.sink_env(logins)
        args = ["--prefix", self.prefix, "--schema", self.schema, *self._group_args, *no_migrate]
        return self._start("sink", [*args, "--batch-wait", str(batch_wait)], ready, env)

    def client(self) -> CommandClient:
        return CommandClient(
            self.kafka,
            "bank",
            topic_prefix=self.prefix,
            read_your_writes=CheckpointWaiter(
                self.dsn, self.schema, events_topic=self.bank.topics.events
            ),
        )

    def pg(self) -> psycopg.Connection[Any]:
        return connect(self.dsn, self.schema)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()

    # -- waiting ---------------------------------------------------------------------------

    def last_event_positions(self) -> list[EventPosition]:
        """The last committed event of every partition of `<prefix>.events`."""
        topic = self.bank.topics.events
        positions = []
        for p in range(partition_count(self.kafka, topic)):
            tail = list(read_partition(self.kafka, topic, p, tail=20))
            if tail:
                positions.append(EventPosition(topic, p, tail[-1].offset()))
        return positions

    def wait_caught_up(self, timeout: float = 120.0) -> None:
        """Until every projection's checkpoint in Postgres passed every committed event."""
        positions = self.last_event_positions()
        deadline = time.monotonic() + timeout
        with CheckpointWaiter(self.dsn, self.schema) as waiter:
            for name in PROJECTION_NAMES:
                remaining = max(0.1, deadline - time.monotonic())
                waiter.wait(name, positions, remaining)

    # -- consumer groups -------------------------------------------------------------------

    def projector_group(self) -> tuple[str, list[str]]:
        return projector_app_id(self.prefix), [self.bank.topics.events]

    def sink_group(self) -> tuple[str, list[str]]:
        return sink_group_id(self.prefix), [
            self.bank.topics.projection(n) for n in PROJECTION_NAMES
        ]

    def reset_sink_to_beginning(self) -> None:
        """The sink resumes from its positions in Postgres; Kafka's are only a copy."""
        self.reset_to_beginning(*self.sink_group())
        with self.pg() as conn:
            conn.execute("DELETE FROM cqrs_sink_offsets")

    def reset_to_beginning(self, group: str, topics: list[str]) -> None:
        self.move_group(group, {tp: 0 for tp in self.partitions_of(topics)})

    def move_group_to_end(self, group: str, topics: list[str]) -> None:
        ends = {}
        for topic, p in self.partitions_of(topics):
            tail = list(read_partition(self.kafka, topic, p, tail=1))
            ends[(topic, p)] = tail[-1].offset() + 1 if tail else 0
        self.move_group(group, ends)

    def partitions_of(self, topics: list[str]) -> list[tuple[str, int]]:
        return [(t, p) for t in topics for p in range(partition_count(self.kafka, t))]

    def move_group(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        admin = AdminClient(self.kafka)
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        request = ConsumerGroupTopicPartitions(group, parts)
        deadline = time.monotonic() + 30
        # The group must be empty: a stopped static member stays until its session ends.
        while True:
            try:
                done = admin.alter_consumer_group_offsets([request])[group].result(10)
                errors = [tp.error for tp in done.topic_partitions if tp.error is not None]
            except Exception as exc:
                errors = [exc]
            if not errors:
                break
            assert time.monotonic() < deadline, f"cannot move {group}: {errors[:3]}"
            time.sleep(0.5)
        topics = sorted({t for t, _ in offsets})
        assert committed_offsets(self.kafka, group, topics) == offsets

    def wait_group_at_end(self, group: str, topics: list[str], timeout: float = 120.0) -> None:
        """Until the group's committed offsets are past the last record of each partition."""
        ends = {}
        for t in topics:
            for p in range(partition_count(self.kafka, t)):
                tail = list(read_partition(self.kafka, t, p, tail=20))
                if tail:
                    ends[(t, p)] = tail[-1].offset() + 1
        deadline = time.monotonic() + timeout
        while True:
            have = committed_offsets(self.kafka, group, topics)
            behind = {k: (have.get(k), v) for k, v in ends.items() if (have.get(k) or 0) < v}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} behind (committed, needed): {behind}")
            time.sleep(0.5)


def committed_offsets(kafka: dict[str, Any], group: str, topics: list[str]) -> dict:
    admin = AdminClient(kafka)
    parts = [TopicPartition(t, p) for t in topics for p in range(partition_count(kafka, t))]
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])
    listed = result[group].result(10)
    return {(tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions}


# -- what the read side must equal ---------------------------------------------------------


def fold_accounts(events: list[StoredEvent]) -> dict[str, dict[str, Any]]:
    """Per account: the aggregate's own fold of its events, plus its version."""
    streams: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in events:
        if e.type in ACCOUNT.event_types:
            streams[e.aggregate_id].append(e)
    out = {}
    for account_id, stream in streams.items():
        state = ACCOUNT.fold([Event(e.type, e.data) for e in stream])
        out[account_id] = {**ACCOUNT.to_record(state), "version": len(stream)}
    return out


def fold_daily_totals(kafka: dict[str, Any], topic: str) -> dict[tuple[str, dt.date], tuple]:
    """(currency, UTC day of ce_time) -> (deposits, withdrawals, count) from the events."""
    return sum_daily_totals(read_events(kafka, topic))


def sum_daily_totals(events: Iterable[StoredEvent]) -> dict[tuple[str, dt.date], tuple]:
    """The same, of events already read."""
    totals: dict[tuple[str, dt.date], list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events:
        if e.type not in ("bank.Deposited", "bank.Withdrawn"):
            continue
        money = e.data["amount"]
        entry = totals[(money["currency"], e.time.astimezone(dt.UTC).date())]
        entry[0 if e.type == "bank.Deposited" else 1] += money["amount"]
        entry[2] += 1
    return {k: tuple(v) for k, v in totals.items()}


def pg_accounts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "SELECT account_id, owner, currency, balance, status, version FROM accounts"
    ).fetchall()
    return {
        r[0]: {
            "account_id": r[0],
            "owner": r[1],
            "currency": r[2],
            "balance": r[3],
            "status": r[4],
            "version": r[5],
        }
        for r in rows
    }


def pg_daily_totals(conn: psycopg.Connection[Any]) -> dict[tuple[str, dt.date], tuple]:
    rows = conn.execute(
        "SELECT currency, day, deposits, withdrawals, count FROM daily_totals"
    ).fetchall()
    return {(c, d): (dep, wd, n) for c, d, dep, wd, n in rows}


def pg_snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple]]:
    """Every row of every read-side table, in key order."""
    tables = {
        "accounts": "account_id",
        "daily_totals_by_partition": "currency, day, source_partition",
        "event_log": "aggregate_type, aggregate_id, version",
        "cqrs_checkpoints": "projection, source_partition",
    }
    return {
        t: conn.execute(f"SELECT * FROM {t} ORDER BY {order}").fetchall()
        for t, order in tables.items()
    }


def last_values(kafka: dict[str, Any], topic: str) -> tuple[dict[tuple[int, bytes], Any], int]:
    """A compacted topic as its consumers see it: the last value per (partition, key), and
    the number of records read."""
    last: dict[tuple[int, bytes], Any] = {}
    n = 0
    for msg in read_topic(kafka, topic):
        last[(msg.partition(), msg.key())] = msg.value()
        n += 1
    return last, n


def tables_state(kafka: dict[str, Any], prefix: str) -> dict[str, tuple[dict, int]]:
    """The projector's Faust tables, read from their changelogs, the projection topics: the
    last row per (partition, key), checkpoint records left out, and the records read."""
    states = {}
    for name in STATEFUL:
        values, n = last_values(kafka, ContextTopics(prefix).projection(name))
        states[name] = ({k: v for k, v in values.items() if is_row(k[1], v)}, n)
    return states


def metric(worker: WorkerProcess, name: str) -> float:
    """Sum of a Prometheus counter/gauge across its labels, from the worker's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.health_port}/metrics") as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
