"""Rebuilds the compacted `<ctx>.aggregates` topic from the full event history.

Normal recovery restores from snapshots; this is the escape hatch for when snapshots are lost
or a state schema changed in a way its records cannot follow. It must run while no command
processor of the context is up, which it checks through the consumer group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from processors import wire
from processors.command_handler import AggregateEntry
from processors.domain import Event
from processors.registry import Registry
from processors.topic_reader import partition_count, read_partition
from processors.topics import ContextTopics
from schemas.codec import LATEST, default_codec
from schemas.wire import headers as ce
from schemas.wire.limits import snapshot_key


class RebuildRefused(RuntimeError):
    pass


@dataclass
class RebuildReport:
    events: int = 0
    aggregates: int = 0
    version_mismatches: list[str] = field(default_factory=list)


def active_processors(kafka: dict[str, Any], group_id: str) -> int:
    admin = AdminClient(kafka)
    future = admin.describe_consumer_groups([group_id])[group_id]
    return len(future.result(10).members)


def rebuild_snapshots(
    kafka: dict[str, Any], registry: Registry, context: str, prefix: str | None = None
) -> RebuildReport:
    topics = ContextTopics(prefix or context)
    group_id = f"{topics.prefix}.command-processor"
    if active_processors(kafka, group_id):
        raise RebuildRefused(f"command processors of {group_id} are running: stop them first")
    codec = default_codec()
    report = RebuildReport()
    producer = Producer(
        {**kafka, "transactional.id": f"{topics.prefix}.rebuild", "enable.idempotence": True}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for partition in range(partition_count(kafka, topics.events)):
        entries: dict[tuple[str, str], AggregateEntry] = {}
        for msg in read_partition(kafka, topics.events, partition):
            report.events += 1
            decoded = codec.decode_message(msg.value(), LATEST)
            agg = registry.aggregate_for_event(decoded.schema.name)
            aggregate_id = msg.key().decode()
            key = (agg.name, aggregate_id)
            entry = entries.get(key) or AggregateEntry(agg.initial_state, 0)
            state = agg.evolve(entry.state, Event(decoded.schema.name, decoded.record))
            entries[key] = AggregateEntry(state, entry.version + 1)
            stamped = dict(msg.headers() or ()).get(ce.AGGREGATE_VERSION)
            if stamped is not None and int(stamped) != entry.version + 1:
                report.version_mismatches.append(
                    f"{aggregate_id}: event at offset {msg.offset()} says version "
                    f"{stamped.decode()}, the fold is at {entry.version + 1}"
                )
        for (agg_name, aggregate_id), entry in entries.items():
            agg = registry.aggregate(agg_name)
            producer.produce(
                topics.aggregates,
                wire.encode_snapshot(agg, aggregate_id, entry),
                snapshot_key(agg_name, aggregate_id),
                partition=partition,
            )
        report.aggregates += len(entries)
    producer.commit_transaction(60)
    return report
