"""Restores what a processor owns for one partition when it is assigned: aggregate state from
the compacted `<ctx>.aggregates` topic (the Kafka Streams changelog idea: no replay of the
event history) and the dedup window from the tail of `<ctx>.command-results`."""

from __future__ import annotations

from typing import Any

from processors import wire
from processors.command_handler import AggregateEntry, CommandHandler, PartitionState
from processors.topic_reader import read_partition
from processors.topics import ContextTopics


def restore_partition(
    kafka: dict[str, Any],
    topics: ContextTopics,
    partition: int,
    handler: CommandHandler,
    dedup_window: int,
) -> PartitionState:
    state = PartitionState()
    # Until the log cleaner runs, the partition holds every snapshot ever written (one per
    # aggregate per batch): keep the newest per key and decode only those. A tombstone
    # (no value) removes the aggregate.
    newest: dict[bytes | None, bytes | None] = {}
    for msg in read_partition(kafka, topics.aggregates, partition, stable=True):
        newest[msg.key()] = msg.value()
    for value in newest.values():
        if value is None:
            continue
        agg_name, agg_id, version, record = wire.decode_snapshot(value)
        agg = handler.registry.aggregate(agg_name)
        state.aggregates[(agg_name, agg_id)] = AggregateEntry(agg.from_record(record), version)
    for msg in read_partition(kafka, topics.results, partition, tail=dedup_window, stable=True):
        key = wire.result_dedup_key(msg)
        if key is not None and msg.value() is not None:
            state.results[key] = msg.value()
            if len(state.results) > dedup_window:
                state.results.popitem(last=False)
    return state
