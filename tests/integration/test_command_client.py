"""The command client against the real broker: what a sender learns when Kafka does not
take a command."""

from __future__ import annotations

import time
from typing import Any

import pytest

from processors.topic_admin import create_topics
from processors.topics import ContextTopics, TopicSpec
from producers.command_client import CommandClient, CommandNotDelivered
from tests.integration.write_side import movement


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

    def consume(self, *args: object) -> list:
        time.sleep(0.05)
        return []

    def close(self) -> None:
        pass


def test_a_results_listener_that_falls_silent_is_replaced_and_results_arrive(
    kafka_config: dict[str, Any], ctx_name: str
):
    from confluent_kafka import Producer

    from schemas import headers as ce
    from schemas.codec import default_codec

    topics = ContextTopics(ctx_name)
    create_topics(kafka_config, [TopicSpec(topics.commands, 6), TopicSpec(topics.results, 6)])
    client = CommandClient(kafka_config, "bank", topic_prefix=ctx_name)
    listener = client._listener
    assert listener is not None
    listener.stall_s = 2.0
    try:
        listener._consumer = _Silent()  # type: ignore[assignment]
        pending = client.send("bank.Deposit", movement("a1", 5))
        result = {
            "command_id": pending.command_id,
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
            headers=[(ce.CAUSATION_ID, pending.command_id.encode())],
        )
        producer.flush(10)

        assert pending.result(30).accepted  # a silent consumer alone: CommandTimeout
        assert listener.reconnects == 1
        assert "reconnects 1" in listener.describe()
    finally:
        listener.stop()
