"""Producing one batch's records into the processor's open transaction.

Events are produced as each command is decided; `publish_outcomes` follows once they are
flushed and writes the rest: each command's result (naming its events' offsets), one
snapshot per aggregate of its state after the batch, the commands process managers issued,
and the first result again for every duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processors import wire
from processors.command_handler import ACCEPTED, CommandHandler, Decided, Duplicate
from processors.domain import AggregateType
from processors.outputs import OutputBuilder, Outputs
from processors.topics import ContextTopics
from schemas.wire import headers as ce
from schemas.wire.limits import snapshot_key


@dataclass(slots=True)
class PendingEvent:
    position: list[Any]  # [partition, offset], filled by the delivery callback


DecidedCommand = tuple[Decided, list[PendingEvent], Outputs]


def produce_events(
    producer: Producer, events_topic: str, d: Decided, outputs: Outputs
) -> list[PendingEvent]:
    pending: list[PendingEvent] = []
    msg = d.message
    for value, headers in outputs.events:
        slot = PendingEvent([msg.partition, -1])
        pending.append(slot)
        producer.produce(
            events_topic,
            value,
            msg.key,
            partition=msg.partition,
            headers=headers,
            on_delivery=_record_position(slot),
        )
    return pending


def publish_outcomes(
    producer: Producer,
    topics: ContextTopics,
    handler: CommandHandler,
    builder: OutputBuilder,
    stamp: ce.Stamp,
    decided: list[DecidedCommand],
    duplicates: list[Duplicate],
) -> None:
    """Everything of the batch after its events: called once they are delivered, since a
    result names its events' offsets."""
    produce = producer.produce
    # One snapshot per aggregate per batch, of its state after the batch.
    snapshots: dict[tuple[int, tuple[str, str]], tuple[AggregateType[Any], bytes | None]] = {}
    for d, pending, outputs in decided:
        msg = d.message
        positions = [(topics.events, p.position[0], p.position[1]) for p in pending]
        if any(pos[2] < 0 for pos in positions):
            raise KafkaException(KafkaError(KafkaError._FAIL, "event delivery failed"))
        result = wire.encode_result(d, positions)
        handler.remember_result(msg.partition, msg.dedup_key, result)
        produce(
            topics.results,
            result,
            msg.key,
            partition=msg.partition,
            headers=wire.result_headers(stamp, msg),
        )
        if d.status == ACCEPTED and d.aggregate is not None:
            snapshots[(msg.partition, (d.aggregate.name, msg.key))] = (
                d.aggregate,
                outputs.snapshot,
            )
        for target, partition, value, headers in outputs.issued:
            produce(
                topics.internal_commands,
                value,
                target,
                partition=partition,
                headers=headers,
            )
    for (partition, (name, key)), (agg, value) in snapshots.items():
        if value is None:  # encoded (and size-checked) once per batch, here
            entry = handler.owned[partition].aggregates[(name, key)]
            value = builder.snapshot_value(agg, key, entry)
        key_text = snapshot_key(name, key)
        produce(topics.aggregates, value, key_text, partition=partition)
    for dup in duplicates:
        msg = dup.message
        first = handler.first_result(msg.partition, msg.dedup_key)
        if first is None:  # cannot happen: a duplicate's original is decided first
            continue
        produce(
            topics.results,
            first,
            msg.key,
            partition=msg.partition,
            headers=wire.result_headers(stamp, msg),
        )


def _record_position(slot: PendingEvent) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            slot.position[0] = msg.partition()
            slot.position[1] = msg.offset()

    return on_delivery
