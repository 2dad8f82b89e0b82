"""Reads committed records of a topic up to its current end: state restore, tools and tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition


class ReadError(RuntimeError):
    pass


def read_partition(
    kafka: dict[str, Any],
    topic: str,
    partition: int,
    tail: int | None = None,
    timeout_s: float = 120.0,
) -> Iterator[Message]:
    """Every committed record of one partition up to its end as of now (read_committed: an
    aborted transaction's records never appear); only about the last `tail` offsets if given."""
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # The end of the partition is only known from a fetch that comes back empty, and
            # the broker holds such a fetch for fetch.wait.max.ms (500 by default) hoping
            # for data: every read paid it. Restore time is downtime, so ask it not to wait.
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= low:
            return
        start = OFFSET_BEGINNING if tail is None else max(low, high - tail)
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # consume() waits its whole timeout unless the batch fills: keep it short.
            for msg in consumer.consume(5000, 0.05):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    return
                else:
                    raise ReadError(f"reading {topic}[{partition}]: {err}")
        raise ReadError(f"reading {topic}[{partition}] did not reach its end in {timeout_s:g}s")
    finally:
        consumer.close()


def partition_count(kafka: dict[str, Any], topic: str) -> int:
    consumer = Consumer({**kafka, "group.id": f"{topic}.reader"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise ReadError(f"topic {topic}: {meta.error}")
        return len(meta.partitions)
    finally:
        consumer.close()


def read_topic(kafka: dict[str, Any], topic: str) -> Iterator[Message]:
    """Every committed record of every partition, partition by partition."""
    for partition in range(partition_count(kafka, topic)):
        yield from read_partition(kafka, topic, partition)
