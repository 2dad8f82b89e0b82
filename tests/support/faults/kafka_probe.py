"""Where records of the fault run sit on their topics, read uncommitted and committed: what
the report shows when an invariant fails, and the open transactions the run waits out."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from processors.topic_reader import ReadError, read_partition
from processors.topics import ContextTopics


def describe_offsets(kafka: dict[str, Any], topic: str, rows: list[tuple[Any, ...]]) -> list[str]:
    """What sits at the (partition, offset) of each (aggregate, version, partition, offset)
    row, read read_uncommitted: a record of an aborted transaction there means a reader saw
    uncommitted data."""
    out = []
    consumer = Consumer(
        {
            **kafka,
            "group.id": "faults-debug",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",  # librdkafka's default is read_committed
        }
    )
    try:
        for aggregate, version, partition, offset in rows:
            consumer.assign([TopicPartition(topic, partition, offset)])
            msg = consumer.poll(10)
            if msg is None or msg.error():
                out.append(f"{partition}@{offset}: nothing ({msg and msg.error()})")
                continue
            headers = dict(msg.headers() or [])
            out.append(
                f"{partition}@{offset}: found @{msg.offset()} key={msg.key()!r} version="
                f"{headers.get('ce_aggregateversion')!r} id={headers.get('ce_id')!r} "
                f"cause={headers.get('ce_causationid')!r} ts={msg.timestamp()[1]}"
                f" (row: {aggregate} v{version})"
            )
    finally:
        consumer.close()
    return out


def trace_command(
    kafka: dict[str, Any], topics: ContextTopics, command_id: str, partition: int
) -> list[str]:
    """Every record of one command in its partition of the commands, events and results
    topics, read uncommitted, and which of them a read_committed reader does not see."""
    wanted = command_id.encode()
    out = [f"command {command_id}:"]
    for topic, header in (
        (topics.commands, "ce_id"),
        (topics.events, "ce_causationid"),
        (topics.results, "ce_causationid"),
    ):
        seen: dict[bool, set[int]] = {}
        for uncommitted in (True, False):
            found = seen.setdefault(uncommitted, set())
            for msg in read_partition(kafka, topic, partition, uncommitted=uncommitted):
                if dict(msg.headers() or []).get(header) == wanted:
                    found.add(msg.offset())
                    if uncommitted:
                        out.append(f"  {topic}[{partition}]@{msg.offset()} ts={msg.timestamp()[1]}")
        out.append(f"  {topic}: not visible read_committed: {sorted(seen[True] - seen[False])}")
    return out


def find_log_records(
    kafka: dict[str, Any], topics: ContextTopics, rows: list[tuple[Any, ...]]
) -> list[str]:
    """Where the projector published the `event_log` record of each (aggregate, version,
    partition, offset) row, if anywhere: it tells a record the projector never wrote from
    one the sink did not store."""
    out = []
    topic = topics.projection("event_log")
    for aggregate, version, partition, _ in rows:
        suffix = f":{aggregate}:{version}".encode()
        found = [
            f"@{msg.offset()} ts={msg.timestamp()[1]}"
            for msg in read_partition(kafka, topic, partition, uncommitted=True)
            if (msg.key() or b"").endswith(suffix)
        ]
        out.append(f"{topic}[{partition}] records of {aggregate} v{version}: {found or 'none'}")
    return out


def locate(kafka: dict[str, Any], topics: ContextTopics, command_id: str) -> str:
    """Where a command got to, as a read_committed reader (the command client) sees it: on
    the commands topic? a result? Only the last records of each partition are read: the load
    goes on meanwhile."""
    found = []
    for topic, header in ((topics.commands, "ce_id"), (topics.results, "ce_causationid")):
        for p in range(6):
            try:
                for msg in read_partition(kafka, topic, p, tail=5000, timeout_s=30):
                    if dict(msg.headers() or []).get(header) == command_id.encode():
                        found.append(f"{topic}[{p}]@{msg.offset()}")
            except ReadError as exc:
                found.append(f"({exc})")
    return f"found at: {found or 'nowhere'}"


def stuck_lso(kafka: dict[str, Any], topics: ContextTopics) -> dict[str, dict[int, tuple]]:
    """{topic: {partition: (last stable offset, high watermark)}} where they differ: an
    open (or hanging) transaction hides everything after it from read_committed readers."""
    admin = AdminClient(dict(kafka))
    out = {}
    for topic in (topics.events, topics.results, topics.aggregates):
        asked = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(6)}
        ends = {}
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            found = admin.list_offsets(asked, isolation_level=level)
            ends[level] = {tp.partition: f.result().offset for tp, f in found.items()}
        lso, hw = ends[IsolationLevel.READ_COMMITTED], ends[IsolationLevel.READ_UNCOMMITTED]
        out[topic] = {p: (lso[p], hw[p]) for p in hw if lso[p] != hw[p]}
    return out
