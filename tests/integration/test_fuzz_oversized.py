"""Oversized and extreme input against a real command processor process.

Kafka refuses records over a size limit (librdkafka's `message.max.bytes`, 1,000,000 by
default; the topic's `max.message.bytes`, 1,048,588, on the broker). A command that fits can
still ask the processor for output that does not fit, and a processor that tried to produce
it would abort its transaction and retry the same command forever: the partition would
stall. These tests show each case ends in a clear error, a rejection or a dead letter.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from processors import wire
from processors.topic_reader import read_topic
from producers.command_client import InvalidCommand
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.integration.test_fuzz_bad_input import (
    LONG_MAX,
    PARTITIONS,
    account_on_each_partition,
    command_headers,
)
from tests.support.write_side import BankRig, movement, open_account, read_events

_codec = default_codec()


def largest_accepted(build: object, low: int = 0, high: int = 1_100_000) -> int:
    """The largest n for which librdkafka accepts `build(n)` = (key, value, headers) locally."""
    probe = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    try:
        while low < high:
            middle = (low + high + 1) // 2
            key, value, headers = build(middle)  # type: ignore[operator]
            try:
                probe.produce("probe", value, key, headers=headers)
                low = middle
            except KafkaException:
                high = middle - 1
    finally:
        probe.purge()
    return low


def high_watermarks(kafka: dict, topic: str) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({**kafka, "group.id": f"{topic}.watermarks"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def assert_partitions_flow(bank: BankRig, tag: str) -> None:
    accounts = account_on_each_partition(f"{tag}-live")
    with bank.client() as client:
        opened = [client.send("bank.OpenAccount", open_account(a)) for a in accounts]
        assert all(p.result(90).accepted for p in opened)
        deposits = [client.send("bank.Deposit", movement(a, 1)).result(90) for a in accounts]
    assert all(r.accepted and r.version == 2 for r in deposits)
    assert {r.events[0].partition for r in deposits} == set(range(PARTITIONS))


def test_a_10_mb_command_fails_clearly_in_the_client_and_at_the_broker(bank: BankRig):
    worker = bank.processor()
    pid = worker.proc.pid
    ten_mb = "x" * (10 * 1024 * 1024)
    before = high_watermarks(bank.kafka, bank.topics.commands)

    with bank.client() as client, pytest.raises(InvalidCommand) as refused:
        client.send("bank.OpenAccount", {"account_id": "big", "owner": ten_mb, "currency": "EUR"})
    message = str(refused.value)
    assert "bank.OpenAccount" in message and "message.max.bytes" in message
    assert "1,000,000" in message and "nothing was sent" in message

    value = _codec.encode(
        "bank.OpenAccount", {"account_id": "big", "owner": ten_mb, "currency": "EUR"}
    )
    headers = command_headers(str(uuid.uuid4()), "bank.OpenAccount")
    # A plain producer refuses it locally ...
    with pytest.raises(KafkaException) as local:
        Producer(bank.kafka).produce(bank.topics.commands, value, b"big", headers=headers)
    assert local.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    # ... and one configured to let it through is refused by the broker (max.message.bytes).
    errors: list[KafkaError] = []
    lax = Producer({**bank.kafka, "message.max.bytes": 20_000_000})
    lax.produce(
        bank.topics.commands, value, b"big", headers=headers,
        on_delivery=lambda err, msg: errors.append(err),
    )  # fmt: skip
    assert lax.flush(60) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors[0]

    assert high_watermarks(bank.kafka, bank.topics.commands) == before
    assert_partitions_flow(bank, "ten-mb")
    assert worker.alive and worker.proc.pid == pid, worker.log_tail()


def test_output_that_would_not_fit_is_rejected_too_large_and_partitions_flow(bank: BankRig):
    worker = bank.processor()
    pid = worker.proc.pid
    producer = Producer({**bank.kafka, "partitioner": "murmur2_random"})
    positions: dict[str, tuple[int, int]] = {}

    def produce(label: str, key: bytes, value: bytes, headers: list) -> None:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            positions[label] = (msg.partition(), msg.offset())

        producer.produce(bank.topics.commands, value, key, headers=headers, on_delivery=on_delivery)

    # 1. A command just under the limit: its event (same body, longer headers) is not.
    big_id = str(uuid.uuid4())
    big_headers = command_headers(big_id, "bank.OpenAccount")

    def open_with_owner(n: int) -> tuple[bytes, bytes, list]:
        record = {"account_id": "big-owner", "owner": "o" * n, "currency": "EUR"}
        return b"big-owner", _codec.encode("bank.OpenAccount", record), big_headers

    produce("big-owner", *open_with_owner(largest_accepted(open_with_owner) - 8))

    # 2. An aggregate id over the cap, as key and field: answering it would repeat it in the
    #    event's key, ce_id and ce_subject headers, the result and the snapshot key.
    huge = "k" * 300_000
    produce(
        "huge-key",
        huge.encode(),
        _codec.encode("bank.OpenAccount", open_account(huge)),
        command_headers(str(uuid.uuid4()), "bank.OpenAccount"),
    )

    # 3. Garbage just under the limit: as a dead letter, with its reason headers, it is over.
    def garbage(n: int) -> tuple[bytes, bytes, list]:
        return b"garbage", os.urandom(n), command_headers(str(uuid.uuid4()), "bank.Deposit")

    garbage_size = largest_accepted(garbage) - 8
    produce("garbage", *garbage(garbage_size))
    assert producer.flush(60) == 0

    with bank.client() as client:
        # 4. A transfer whose debit command would have an account id over the cap as its
        #    key (the request, keyed by the transfer id, and its event fit).
        far = client.send(
            "bank.RequestTransfer",
            {
                "transfer_id": "t-far",
                "from_account_id": "f" * 400_000,
                "to_account_id": "to",
                "amount": {"amount": 1, "currency": "EUR"},
            },
        ).result(60)
        # 5. A balance past the Avro long: the event cannot be encoded.
        assert client.send("bank.OpenAccount", open_account("rich")).result(60).accepted
        assert client.send("bank.Deposit", movement("rich", LONG_MAX)).result(60).accepted
        overflow = client.send("bank.Deposit", movement("rich", 1)).result(60)
        after_overflow = client.send("bank.Withdraw", movement("rich", 1)).result(60)
        # The rejected big command changed nothing: the id is still free.
        reopened = client.send("bank.OpenAccount", open_account("big-owner")).result(60)

    assert far.status == "REJECTED" and far.reason == "too_large", far
    assert "bank.Withdraw" in far.detail and "1024 bytes" in far.detail
    assert overflow.status == "REJECTED" and overflow.reason == "invalid_output", overflow
    assert "balance" in overflow.detail
    assert after_overflow.accepted and after_overflow.version == 3
    assert reopened.accepted and reopened.version == 1

    results = {
        wire.result_command_id(m): _codec.decode(m.value(), "cqrs.CommandResult")
        for m in read_topic(bank.kafka, bank.topics.results)
    }
    big = results[big_id]
    assert (big["status"], big["reason"]) == ("REJECTED", "too_large"), big
    assert "bank.AccountOpened" in big["detail"] and "1,000,000" in big["detail"]

    dead = {}
    for m in read_topic(bank.kafka, bank.topics.dlq):
        h = dict(m.headers())
        dead[(int(h["dlq_source_partition"]), int(h["dlq_source_offset"]))] = (m, h)
    assert len(dead) == 2
    _, huge_headers = dead[positions["huge-key"]]
    assert huge_headers["dlq_error_type"] == b"OversizedId"
    assert b"300000 bytes" in huge_headers["dlq_reason"]
    garbage_msg, garbage_headers = dead[positions["garbage"]]
    assert garbage_headers["dlq_error_type"] == b"BadMagic"
    assert int(garbage_headers["dlq_original_size"]) == garbage_size
    assert garbage_headers["dlq_truncated"] == b"value"
    assert 0 < len(garbage_msg.value()) < garbage_size
    assert ce.ID in garbage_headers  # the original headers are kept when they fit

    events = read_events(bank.kafka, bank.topics.events)
    assert not [e for e in events if e.aggregate_id in ("t-far", huge)]
    assert [e.type for e in events if e.aggregate_id == "big-owner"] == ["bank.AccountOpened"]
    assert [e.data["owner"] for e in events if e.aggregate_id == "big-owner"] == [
        "owner of big-owner"
    ]

    assert_partitions_flow(bank, "oversized")
    assert worker.alive and worker.proc.pid == pid, worker.log_tail()


def test_a_state_that_outgrows_the_limit_replays_the_batch_and_rejects_its_cause(
    kafka_config: dict, ctx_name: str, create_topics
):
    """In process, with a test context whose state grows while its events stay small: the
    snapshot, encoded once per batch, is refused at the end of the batch; the transaction
    aborts, the batch is replayed with per-command checks for that aggregate, and only the
    command that made the state too large is rejected."""
    import threading

    from processors.command_processor import CommandProcessor
    from processors.processor_config import ProcessorConfig
    from processors.registry import Registry
    from processors.topics import ContextTopics, declared_topics
    from tests.unit.test_fuzz_wire import GROWING

    limit = 3000
    for spec in declared_topics(GROWING, ctx_name):  # the fixture waits for leaders
        create_topics({spec.name: spec.partitions}, spec.config)
    topics = ContextTopics(ctx_name)
    config = ProcessorConfig(
        "grow", {**kafka_config, "message.max.bytes": limit}, ctx_name, "grow-0", batch_size=100
    )
    # Its own metrics registry: another in-process worker of the session (e.g. a reactor)
    # may have registered the same metric names in the default one.
    worker = CommandProcessor(config, Registry([GROWING]), CollectorRegistry())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(60)
    producer = Producer({**kafka_config, "partitioner": "murmur2_random", "linger.ms": 200})
    ids = [f"grow-{i}" for i in range(4)]
    for command_id, (pad, amount) in zip(
        ids, [("pad", 1000), ("pad", 1000), ("pad", 1000), ("other", 10)], strict=True
    ):
        value = _codec.encode(
            "bank.Deposit", {"account_id": pad, "amount": {"amount": amount, "currency": "EUR"}}
        )
        producer.produce(
            topics.commands, value, pad.encode(), headers=command_headers(command_id, "x")
        )
    assert producer.flush(30) == 0
    try:
        results: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(results) < len(ids) and time.monotonic() < deadline:
            results = {
                wire.result_command_id(m): _codec.decode(m.value(), "cqrs.CommandResult")
                for m in read_topic(kafka_config, topics.results)
            }
            time.sleep(0.3)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
    outcomes = [(results[i]["status"], results[i]["reason"]) for i in ids]
    assert outcomes == [
        ("ACCEPTED", ""),
        ("ACCEPTED", ""),
        ("REJECTED", "too_large"),
        ("ACCEPTED", ""),
    ], outcomes
    assert ("grow.Pad", "pad") in worker.outputs.strict
    snapshots = {
        m.key().decode(): wire.decode_snapshot(m.value())
        for m in read_topic(kafka_config, topics.aggregates)
    }
    _, _, version, state = snapshots["grow.Pad:pad"]
    assert (version, state["balance"]) == (2, 2000)
    events = read_events(kafka_config, topics.events)
    assert [(e.aggregate_id, e.version) for e in events if e.aggregate_id == "pad"] == [
        ("pad", 1),
        ("pad", 2),
    ]
