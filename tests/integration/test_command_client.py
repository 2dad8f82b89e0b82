"""The command client against the real broker: what a sender learns when Kafka does not
take a command."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from processors.topic_admin import create_topics
from processors.topics import ContextTopics, TopicSpec
from producers.command_client import CommandClient, CommandNotDelivered
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.topics import read_until
from tests.support.write_side import movement


def test_a_command_kafka_does_not_take_fails_at_once_instead_of_timing_out(
    kafka_config: dict[str, Any], ctx_name: str
):
    # Results can be read, but the commands topic does not exist (and the local broker
    # creates no topic by itself): the command expires in the producer's queue.
    create_topics(kafka_config, [TopicSpec(ContextTopics(ctx_name).results, 6)])
    client = CommandClient(
        kafka_config, "bank", topic_prefix=ctx_name, producer_config={"message.timeout.ms": 2000}
    )
    try:
        pending = client.send("bank.Deposit", movement("a1", 5))
        with pytest.raises(CommandNotDelivered, match=pending.command_id):
            pending.result(30)  # well before 30 s: the delivery report says so
        errors: list[BaseException] = []
        client.send("bank.Deposit", movement("a1", 5)).add_done_callback(
            lambda result: pytest.fail(f"a result for an undelivered command: {result}"),
            errors.append,
        )
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(errors) == 1 and isinstance(errors[0], CommandNotDelivered)
    finally:
        client._producer.purge()
        if client._listener is not None:
            client._listener.stop()


class _Silent:
    """A consumer that returns nothing, like the listener's in fault runs 23 and 50."""

    def __init__(self) -> None:
        self.in_use = threading.Event()

    def consume(self, *args: object) -> list:
        self.in_use.set()
        time.sleep(0.05)
        return []

    def close(self) -> None:
        pass


def test_a_results_listener_that_falls_silent_is_replaced_and_results_arrive(
    kafka_config: dict[str, Any], ctx_name: str
):
    topics = ContextTopics(ctx_name)
    create_topics(kafka_config, [TopicSpec(topics.commands, 6), TopicSpec(topics.results, 6)])
    client = CommandClient(kafka_config, "bank", topic_prefix=ctx_name)
    listener = client._listener
    assert listener is not None
    listener.stall_s = 2.0
    try:
        silent = _Silent()
        listener._consumer = silent  # type: ignore[assignment]
        # the real consumer's last consume() call (0.1 s) must not catch the result
        assert silent.in_use.wait(5)
        pending = client.send("bank.Deposit", movement("a1", 5))
        _write_result(kafka_config, topics, pending.command_id)

        assert pending.result(30).accepted  # a silent consumer alone: CommandTimeout
        assert listener.reconnects == 1
        assert "reconnects 1" in listener.describe()
    finally:
        listener.stop()


def _write_result(kafka_config: dict[str, Any], topics: ContextTopics, command_id: str) -> None:
    """An ACCEPTED result for `command_id`, as the processor would write it."""
    result = {
        "command_id": command_id,
        "command_type": "bank.Deposit",
        "aggregate_id": "a1",
        "status": "ACCEPTED",
        "reason": "",
        "detail": "",
        "version": 2,
        "events": [],
        "processed_at": int(time.time() * 1000),
    }
    producer = Producer(kafka_config)
    producer.produce(
        topics.results,
        default_codec().encode("cqrs.CommandResult", result),
        b"a1",
        partition=3,
        headers=[(ce.CAUSATION_ID, command_id.encode())],
    )
    producer.flush(10)


class _Stuck:
    """A producer that takes commands and never sends them, like the client's in fault run 56
    (librdkafka#5430); purging reports them as purged."""

    def __init__(self) -> None:
        self.reports: list[Any] = []

    def produce(self, topic: str, value: bytes, key: str, **kwargs: Any) -> None:
        self.reports.append(kwargs["on_delivery"])

    def poll(self, timeout: float = 0) -> int:
        return 0

    def purge(self) -> None:
        for report in self.reports:
            report(KafkaError(KafkaError._PURGE_QUEUE), None)

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_a_producer_that_sends_nothing_is_replaced_and_the_command_sent_again(
    kafka_config: dict[str, Any], ctx_name: str
):
    topics = ContextTopics(ctx_name)
    create_topics(kafka_config, [TopicSpec(topics.commands, 6), TopicSpec(topics.results, 6)])
    client = CommandClient(kafka_config, "bank", topic_prefix=ctx_name)
    client.stall_s = 2.0
    client._producer = _Stuck()  # type: ignore[assignment]
    try:
        pending = client.send("bank.Deposit", movement("a1", 5))

        def sent(messages: list[Any]) -> bool:
            return any(
                dict(m.headers() or []).get(ce.ID) == pending.command_id.encode() for m in messages
            )

        # a stuck producer alone: never on the topic (read_until fails after 30 s)
        read_until(kafka_config, topics.commands, sent, partitions=6)
        assert client.producer_replacements == 1
        # the replaced producer's purge reported the command as not delivered: ignored
        _write_result(kafka_config, topics, pending.command_id)
        assert pending.result(30).accepted
    finally:
        client.close()
