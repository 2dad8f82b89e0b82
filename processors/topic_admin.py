"""Creates a context's declared topics, idempotently, and checks existing ones still match."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from processors.topics import TopicSpec


class TopicMismatch(RuntimeError):
    pass


class TopicsNotReady(RuntimeError):
    """A topic the worker reads or writes is missing or has the wrong partition count."""


def check_declared_topics(
    kafka: dict[str, Any], required: list[TopicSpec], timeout: float = 30.0
) -> None:
    """The declared topics a worker uses exist, with the declared partition counts."""
    existing = AdminClient(kafka).list_topics(timeout=timeout).topics
    for spec in required:
        meta = existing.get(spec.name)
        if meta is None or meta.error is not None:
            raise TopicsNotReady(
                f"topic {spec.name} does not exist; create the context's topics first "
                "(cqrsctl topics create)"
            )
        if len(meta.partitions) != spec.partitions:
            raise TopicsNotReady(
                f"topic {spec.name} has {len(meta.partitions)} partitions, "
                f"the context declares {spec.partitions}"
            )


def create_topics(
    kafka: dict[str, Any],
    specs: list[TopicSpec],
    replication_factor: int = -1,
    timeout: float = 30,
) -> list[str]:
    """Create the topics that are missing; returns the names created. An existing topic with
    another partition count is an error: changing it would move aggregates between
    partitions, and so between owners. Replication -1 takes the broker's default."""
    admin = AdminClient(kafka)
    existing = admin.list_topics(timeout=timeout).topics
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
            have = len(existing[spec.name].partitions)
            raise TopicMismatch(
                f"topic {spec.name} has {have} partitions, the context declares {spec.partitions}"
            )
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, replication_factor, config=s.config) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(admin, {s.name: s.partitions for s in missing}, timeout)
    return created


def _wait_for_leaders(admin: AdminClient, topics: dict[str, int], timeout: float) -> None:
    """Creation returns before every partition has a leader; a consumer that asks for
    offsets in between gets NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        if all(
            name in meta
            and len(meta[name].partitions) == count
            and all(p.leader >= 0 for p in meta[name].partitions.values())
            for name, count in topics.items()
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(topics)} have no leaders after {timeout:g}s")
        time.sleep(0.1)
