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
