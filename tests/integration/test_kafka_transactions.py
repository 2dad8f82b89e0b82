"""The broker runs real transactions: what a read_committed consumer sees, and what it must not."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Producer

from tests.support.topics import read_until


def _transactional_producer(kafka_config: dict[str, Any], ctx_name: str) -> Producer:
    producer = Producer({**kafka_config, "transactional.id": f"{ctx_name}-{uuid.uuid4().hex[:6]}"})
    producer.init_transactions(30)
    return producer


def _values(messages: list[Any]) -> list[bytes]:
    return [m.value() for m in messages]


def _has(value: bytes):
    return lambda messages: value in _values(messages)


def test_committed_transaction_is_visible_to_read_committed(
    kafka_config: dict[str, Any], ctx_name: str, create_topics
) -> None:
    topic = f"{ctx_name}.events"
    create_topics({topic: 1})
    producer = _transactional_producer(kafka_config, ctx_name)

    producer.begin_transaction()
    producer.produce(topic, key=b"acc-1", value=b"committed-1")
    producer.produce(topic, key=b"acc-1", value=b"committed-2")
    producer.commit_transaction(30)

    seen = read_until(kafka_config, topic, _has(b"committed-2"))
    assert _values(seen) == [b"committed-1", b"committed-2"]
    assert [m.key() for m in seen] == [b"acc-1", b"acc-1"]


def test_aborted_transaction_is_invisible_to_read_committed_but_was_written(
    kafka_config: dict[str, Any], ctx_name: str, create_topics
) -> None:
    topic = f"{ctx_name}.events"
    create_topics({topic: 1})
    producer = _transactional_producer(kafka_config, ctx_name)

    producer.begin_transaction()
    producer.produce(topic, key=b"acc-1", value=b"aborted-1")
    producer.produce(topic, key=b"acc-1", value=b"aborted-2")
    producer.flush(30)  # the records reach the log before the abort
    producer.abort_transaction(30)
    # A committed marker after the aborted records: a reader that reached it has passed them,
    # so "not seen" is proven without sleeping.
    producer.begin_transaction()
    producer.produce(topic, key=b"acc-1", value=b"marker")
    producer.commit_transaction(30)

    committed = read_until(kafka_config, topic, _has(b"marker"))
    assert _values(committed) == [b"marker"]
    # Offsets 0-1 hold the aborted records and 2 the abort control record.
    assert committed[0].offset() == 3

    uncommitted = read_until(
        kafka_config, topic, _has(b"marker"), isolation_level="read_uncommitted"
    )
    assert _values(uncommitted) == [b"aborted-1", b"aborted-2", b"marker"]


def test_reading_offsets_again_returns_the_committed_records_among_them(
    kafka_config: dict[str, Any], ctx_name: str, create_topics
) -> None:
    """What the projector does with records Faust dropped (processors/fetch_ledger.py)."""
    from processors.topic_reader import read_offsets

    topic = f"{ctx_name}.events"
    create_topics({topic: 2})
    producer = _transactional_producer(kafka_config, ctx_name)
    for values, commit in (([b"a", b"b"], True), ([b"x"], False), ([b"c", b"d", b"e"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value, partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"p1", partition=1)
    producer.commit_transaction(30)
    # partition 0: a0 b1 commit2 x3 abort4 c5 d6 e7 commit8; partition 1: p1@0 commit1

    found = read_offsets(kafka_config, topic, {0: {1, 2, 3, 5, 6}, 1: {0, 1}})

    assert [(m.partition(), m.offset(), m.value()) for m in found] == [
        (0, 1, b"b"),
        (0, 5, b"c"),
        (0, 6, b"d"),
        (1, 0, b"p1"),
    ]
    # an offset past the end: the read stops at the end of the partition
    assert [m.value() for m in read_offsets(kafka_config, topic, {0: {7, 40}})] == [b"e"]


def test_reading_a_topic_returns_every_partitions_committed_records_in_order(
    kafka_config: dict[str, Any], ctx_name: str, create_topics
) -> None:
    """The one whole-topic reader of the runtime and the tests: every partition up to its
    end, aborted records left out (and shown when asked for uncommitted records)."""
    from processors.topic_reader import read_topic

    topic = f"{ctx_name}.events"
    create_topics({topic: 3})
    producer = _transactional_producer(kafka_config, ctx_name)
    for values, commit in ((["a", "b"], True), (["x"], False), (["c"], True)):
        producer.begin_transaction()
        for i, value in enumerate(values):
            producer.produce(topic, value=value.encode(), partition=(i * 2) % 3)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    # partition 0: a@0 commit x@2 abort c@4 commit; partition 1: empty; partition 2: b@0 commit

    committed = read_topic(kafka_config, topic)
    assert [(m.partition(), m.offset(), m.value()) for m in committed] == [
        (0, 0, b"a"),
        (0, 4, b"c"),
        (2, 0, b"b"),
    ]
    everything = read_topic(kafka_config, topic, uncommitted=True)
    assert [m.value() for m in everything] == [b"a", b"x", b"c", b"b"]


def test_auto_topic_creation_is_off(kafka_config: dict[str, Any], ctx_name: str) -> None:
    # The project creates every topic with explicit partitions; a typo must not create one.
    producer = Producer({**kafka_config, "message.timeout.ms": 1500})
    errors: list[Any] = []
    producer.produce(
        f"{ctx_name}.never-created", value=b"x", on_delivery=lambda e, m: errors.append(e)
    )
    producer.flush(10)
    assert errors and errors[0] is not None

    from confluent_kafka.admin import AdminClient

    topics = AdminClient(kafka_config).list_topics(timeout=10).topics
    assert f"{ctx_name}.never-created" not in topics


def test_a_stable_read_waits_for_open_transactions_a_plain_read_stops_before_them(
    kafka_config: dict[str, Any], ctx_name: str, create_topics
) -> None:
    """What a processor restoring state relies on: a transaction still open when it is
    assigned (e.g. the previous owner's last batch, committed but its markers not yet
    written) is waited for, not skipped."""
    import threading
    import time

    from processors.topic_reader import read_partition

    topic = f"{ctx_name}.aggregates"
    create_topics({topic: 1})
    producer = _transactional_producer(kafka_config, ctx_name)
    producer.begin_transaction()
    producer.produce(topic, key=b"a", value=b"before")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"a", value=b"pending")
    producer.flush(10)

    assert _values(read_partition(kafka_config, topic, 0)) == [b"before"]  # stops at the LSO
    seen: list[bytes] = []
    reader = threading.Thread(
        target=lambda: seen.extend(_values(read_partition(kafka_config, topic, 0, stable=True)))
    )
    reader.start()
    time.sleep(2)
    assert reader.is_alive(), "the stable read returned while a transaction was open"
    producer.commit_transaction(30)
    reader.join(30)
    assert seen == [b"before", b"pending"]


def test_librdkafka_statistics_show_a_joined_consumer_as_a_steady_group_member(
    kafka_config: dict[str, Any], ctx_name: str, create_topics: Any
) -> None:
    """GroupWatch (processors/group_watch.py) keys on the words librdkafka uses."""
    import time

    from confluent_kafka import Consumer

    from processors.group_watch import GroupWatch

    (topic,) = create_topics({f"{ctx_name}.watched": 2})
    watch = GroupWatch(limit_s=60)
    consumer = Consumer(
        {
            **kafka_config,
            **watch.consumer_config(),
            "statistics.interval.ms": 200,
            "group.id": f"{ctx_name}.watcher",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while watch.state != "up/steady" and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert watch.state == "up/steady"
        assert len(consumer.assignment()) == 2
    finally:
        consumer.close()
