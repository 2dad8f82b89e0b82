"""Read what is on a topic, for assertions: from the beginning until a condition holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition


def read_until(
    kafka_config: Mapping[str, Any],
    topic: str,
    done: Callable[[list[Message]], bool],
    *,
    partitions: int = 1,
    isolation_level: str = "read_committed",
    timeout: float = 30.0,
) -> list[Message]:
    """Messages of `topic` from offset 0 of each partition, once `done(messages)` is true.

    Raises AssertionError with what was read when `done` is still false after `timeout`.
    To prove something is NOT on a topic without sleeping, write a committed marker after
    it and read until the marker.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "isolation.level": isolation_level,
            "enable.auto.commit": False,
        }
    )
    messages: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while not done(messages):
            if time.monotonic() > deadline:
                seen = [(m.partition(), m.offset(), m.value()) for m in messages]
                raise AssertionError(f"{topic}: condition not met in {timeout} s; read {seen}")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            messages.append(msg)
    finally:
        consumer.close()
    return messages
