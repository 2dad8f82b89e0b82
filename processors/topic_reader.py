"""Reads committed records of a topic up to its current end: state restore, tools and tests."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

# How long a partition may go without a leader (just created, or its leader moving) before a
# watermark query gives up.
LEADER_WAIT_S = 30.0
# The broker's answers while a partition's leadership is settling. librdkafka raises them
# from a watermark query without marking them retriable, so they are named here.
_LEADER_SETTLING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
    }
)


class ReadError(RuntimeError):
    pass


def watermarks(
    consumer: Consumer, tp: TopicPartition, timeout_s: float = LEADER_WAIT_S
) -> tuple[int, int]:
    """The partition's (low, high) watermarks. An answer that says leadership is settling
    (NOT_LEADER_FOR_PARTITION right after the topic was created, or while a leader moves) is
    retried until `timeout_s`; any other error is raised at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            settling = isinstance(err, KafkaError) and err.code() in _LEADER_SETTLING
            if not settling or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def read_partition(
    kafka: dict[str, Any],
    topic: str,
    partition: int,
    tail: int | None = None,
    timeout_s: float = 120.0,
    stable: bool = False,
    uncommitted: bool = False,
) -> Iterator[Message]:
    """Every committed record of one partition up to its end as of now (read_committed: an
    aborted transaction's records never appear); only about the last `tail` offsets if given.

    `stable`: also wait until every transaction that wrote to the partition before the call
    is committed or aborted. A read_committed reader otherwise stops at the first open
    transaction (the last stable offset), and `commit_transaction` returns before the commit
    markers are on every partition: a processor restoring state just after the previous owner
    committed would miss that owner's last batch and decide on stale state.

    `uncommitted`: read_uncommitted instead, up to the high watermark: records of open and
    aborted transactions too (for tools that inspect a topic)."""
    consumer = _committed_reader(kafka, topic, uncommitted)
    tp = TopicPartition(topic, partition)
    try:
        low, high = watermarks(consumer, tp)
        end = _high_watermark(kafka, tp) if stable else high
        if end <= low:
            return
        start = OFFSET_BEGINNING if tail is None else max(low, end - tail)
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        at_end = False
        while time.monotonic() < deadline:
            # consume() waits its whole timeout unless the batch fills: keep it short.
            for msg in consumer.consume(5000, 0.05):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                else:
                    raise ReadError(f"reading {topic}[{partition}]: {err}")
            if at_end and (not stable or consumer.position([tp])[0].offset >= end):
                return
        raise ReadError(f"reading {topic}[{partition}] did not reach its end in {timeout_s:g}s")
    finally:
        consumer.close()


def read_offsets(
    kafka: dict[str, Any],
    topic: str,
    wanted: Mapping[int, Collection[int]],
    timeout_s: float = 30.0,
) -> list[Message]:
    """The committed records at `wanted` offsets ({partition: offsets}), read_committed
    through one consumer, in partition then offset order; an offset that holds no committed
    record is left out."""
    last = {p: max(offsets) for p, offsets in wanted.items() if offsets}
    if not last:
        return []
    consumer = _committed_reader(kafka, topic)
    found: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, min(wanted[p])) for p in last])
        deadline = time.monotonic() + timeout_s
        while last:
            if time.monotonic() > deadline:
                raise ReadError(f"reading {topic} offsets {dict(wanted)} took over {timeout_s:g}s")
            for msg in consumer.consume(1000, 0.05):
                p, err = msg.partition(), msg.error()
                if p not in last:
                    continue  # done with it; records fetched before the pause
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise ReadError(f"reading {topic}[{p}]: {err}")
                if err is None and msg.offset() in wanted[p]:
                    found.append(msg)
                if err is not None or msg.offset() >= last[p]:
                    del last[p]
                    consumer.pause([TopicPartition(topic, p)])
        return sorted(found, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def _committed_reader(kafka: dict[str, Any], topic: str, uncommitted: bool = False) -> Consumer:
    """A read_committed (or, if asked, read_uncommitted) consumer for reads up to the current
    end, assigned by the caller."""
    return Consumer(
        {
            **kafka,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted" if uncommitted else "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # The end of a partition is only known from a fetch that comes back empty, and
            # the broker holds such a fetch for fetch.wait.max.ms (500 by default) hoping
            # for data: every read paid it. Restore time is downtime, so ask it not to wait.
            "fetch.wait.max.ms": 10,
        }
    )


def _high_watermark(kafka: dict[str, Any], tp: TopicPartition) -> int:
    """The partition's end including open transactions (a read_committed consumer is told
    the last stable offset instead)."""
    # librdkafka's default isolation level is read_committed: ask for the other one.
    probe = Consumer(
        {**kafka, "group.id": f"{tp.topic}.reader", "isolation.level": "read_uncommitted"}
    )
    try:
        return watermarks(probe, tp)[1]
    finally:
        probe.close()


def partition_count(kafka: dict[str, Any], topic: str) -> int:
    consumer = Consumer({**kafka, "group.id": f"{topic}.reader"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise ReadError(f"topic {topic}: {meta.error}")
        return len(meta.partitions)
    finally:
        consumer.close()


def read_topic(
    kafka: dict[str, Any], topic: str, timeout_s: float = 120.0, uncommitted: bool = False
) -> list[Message]:
    """Every committed record of every partition up to its end as of now, in partition then
    offset order (`uncommitted`: read_uncommitted, as in `read_partition`).

    All partitions are read through one consumer: a consumer per partition costs a group
    coordinator lookup and a fetch round trip each."""
    consumer = _committed_reader(kafka, topic, uncommitted)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise ReadError(f"topic {topic}: {meta.error}")
        pending = set()
        for partition in meta.partitions:
            low, high = watermarks(consumer, TopicPartition(topic, partition))
            if high > low:
                pending.add(partition)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        found: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise ReadError(f"reading {topic}: partitions {sorted(pending)} not at their end")
            for msg in consumer.consume(10_000, 0.05):
                err = msg.error()
                if err is None:
                    found.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise ReadError(f"reading {topic}[{msg.partition()}]: {err}")
        return sorted(found, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def last_event_offsets(kafka: dict[str, Any], topic: str, partitions: int) -> dict[int, int]:
    """{partition: offset of its last committed record} of a transactional topic (its very
    last offset is a commit marker, so the tail is read rather than the watermark trusted);
    a partition without one is left out."""
    found = {}
    for partition in range(partitions):
        tail = list(read_partition(kafka, topic, partition, tail=50))
        if tail:
            found[partition] = tail[-1].offset()
    return found
