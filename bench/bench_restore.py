"""How long a processor takes to restore one partition it is assigned (state from the
compacted `<ctx>.aggregates` topic, dedup window from the tail of `<ctx>.command-results`),
beside the plain way: decode every snapshot the partition holds. Runs on the stack that
`cqrsctl up` runs (or CQRS_KAFKA_BOOTSTRAP_SERVERS).

    .venv/bin/python -m bench.bench_restore --snapshots 50000 --aggregates 35 --runs 5

Until the log cleaner runs (the active segment is never cleaned), a partition holds one
snapshot per aggregate per batch that touched it, so a busy partition holds far more
snapshots than aggregates. Restore time is downtime: the partition answers nothing meanwhile.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bank.account import ACCOUNT, Account
from processors import wire
from processors.command_handler import AggregateEntry, CommandHandler
from processors.registry import default_registry
from processors.settings import load_settings
from processors.state_restore import restore_partition
from processors.topic_admin import create_topics
from processors.topic_reader import read_partition
from processors.topics import ContextTopics, declared_topics
from schemas.wire import headers as ce
from schemas.wire.limits import snapshot_key


def fill(kafka: dict[str, Any], topics: ContextTopics, snapshots: int, aggregates: int) -> None:
    producer = Producer({**kafka, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    for i in range(snapshots):
        key = f"acct-{i % aggregates:05d}"
        entry = AggregateEntry(Account(key, "owner", "EUR", i, "OPEN"), i // aggregates + 1)
        value = wire.encode_snapshot(ACCOUNT, key, entry)
        producer.produce(topics.aggregates, value, snapshot_key(ACCOUNT.name, key), 0)
        headers = [(ce.CAUSATION_ID, f"cmd-{i}".encode())]
        producer.produce(topics.results, b"r" * 120, key, 0, headers=headers)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush()


def decode_every_snapshot(kafka: dict[str, Any], topics: ContextTopics, window: int) -> int:
    """The plain way: decode each snapshot in offset order, the last one wins."""
    state = {}
    for msg in read_partition(kafka, topics.aggregates, 0):
        name, agg_id, version, record = wire.decode_snapshot(msg.value())
        state[(name, agg_id)] = (version, record)
    results = {}
    for msg in read_partition(kafka, topics.results, 0, tail=window):
        results[wire.result_command_id(msg)] = msg.value()
    return len(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=50_000, help="also results")
    parser.add_argument("--aggregates", type=int, default=35)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    kafka = load_settings(postgres=False).kafka.client_config()
    registry = default_registry()
    ctx = registry.context("bank")
    prefix = f"rsbench{secrets.token_hex(3)}"
    topics = ContextTopics(prefix)
    window = 50_000
    specs = declared_topics(ctx, prefix)
    create_topics(kafka, specs)
    try:
        fill(kafka, topics, args.snapshots, args.aggregates)
        handler = CommandHandler(registry, "bank", ctx.partitions, window)
        ours: list[float] = []
        plain: list[float] = []
        for _ in range(args.runs):
            started = time.perf_counter()
            state = restore_partition(kafka, topics, 0, handler, window)
            ours.append(time.perf_counter() - started)
            assert len(state.aggregates) == min(args.aggregates, args.snapshots)
            started = time.perf_counter()
            decode_every_snapshot(kafka, topics, window)
            plain.append(time.perf_counter() - started)
    finally:
        AdminClient(kafka).delete_topics([s.name for s in specs])
    table = Table(
        title=f"restore of one partition: {args.snapshots:,} snapshots of "
        f"{args.aggregates:,} aggregates + {min(args.snapshots, window):,} results "
        f"(median of {args.runs})"
    )
    for column in ("way", "seconds", "vs restore_partition"):
        table.add_column(column)
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    table.add_row("restore_partition (newest snapshot per key)", f"{ours_s:.2f}", "1.00x")
    table.add_row("decode every snapshot", f"{plain_s:.2f}", f"{plain_s / ours_s:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
