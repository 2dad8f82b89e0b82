"""Every failure path of `cqrsctl send` and `cqrsctl topics list` against the real broker:
findings 1, 2 and 4 of issue 19 (a lost command reported as sent, a raw KafkaError without
a hint, `topics list` printing only the declaration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local.processes import free_port
from processors.topic_admin import create_topics
from processors.topics import ContextTopics, TopicSpec
from producers.command_client import CommandClient, CommandNotDelivered
from tests.support.write_side import movement

CQRSCTL = str(Path(sys.executable).with_name("cqrsctl"))
OPEN = '{"account_id": "acc-1", "owner": "Ada", "currency": "EUR"}'


def cqrsctl(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CQRSCTL, *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env={**os.environ, **env},
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_send_without_wait_to_missing_topics_fails_naming_topics_create(ctx_name: str) -> None:
    done = cqrsctl("send", "bank.OpenAccount", "--json", OPEN, "--prefix", ctx_name)

    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout == ""  # never "sent ..."
    line = one_error_line(done)
    assert f"topic {ctx_name}.commands does not exist" in line
    assert "topics create --context bank" in line


def test_send_wait_to_missing_topics_is_one_clear_line_not_a_raw_kafka_error(
    ctx_name: str,
) -> None:
    done = cqrsctl("send", "bank.OpenAccount", "--json", OPEN, "--prefix", ctx_name, "--wait")

    assert done.returncode == 4
    line = one_error_line(done)
    assert "KafkaError{" not in line and "UNKNOWN_TOPIC" not in line
    assert f"{ctx_name}.commands, {ctx_name}.command-results do not exist" in line
    assert "topics create" in line


def test_send_to_an_unreachable_broker_says_so_and_exits_4() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    done = cqrsctl(
        "send", "bank.OpenAccount", "--json", OPEN, "--timeout", "3",
        CQRS_KAFKA_BOOTSTRAP_SERVERS=nobody,
    )  # fmt: skip

    assert done.returncode == 4
    assert done.stdout == ""
    line = one_error_line(done)
    assert f"cannot reach Kafka at {nobody}" in line and "up" in line


def test_send_exits_0_only_once_the_broker_acknowledged(
    ctx_name: str, kafka_config: dict[str, Any]
) -> None:
    topics = ContextTopics(ctx_name)
    create_topics(kafka_config, [TopicSpec(topics.commands, 6)])

    done = cqrsctl("send", "bank.OpenAccount", "--file", "-", "--prefix", ctx_name, stdin=OPEN)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent bank.OpenAccount ") and " to acc-1" in done.stdout
    admin = AdminClient(kafka_config)
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka_config, "group.id": f"{ctx_name}.check"})
    try:
        meta = admin.list_topics(topics.commands, timeout=10).topics[topics.commands]
        total = sum(
            consumer.get_watermark_offsets(TopicPartition(topics.commands, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()
    assert total == 1  # the command is on the log


def test_send_wait_without_a_processor_times_out_with_exit_3(
    ctx_name: str, kafka_config: dict[str, Any]
) -> None:
    topics = ContextTopics(ctx_name)
    create_topics(kafka_config, [TopicSpec(topics.commands, 6), TopicSpec(topics.results, 6)])

    done = cqrsctl(
        "send", "bank.OpenAccount", "--json", OPEN, "--prefix", ctx_name, "--wait",
        "--timeout", "3",
    )  # fmt: skip

    assert done.returncode == 3
    assert done.stdout == ""
    line = one_error_line(done)
    assert "no result for command" in line and "is the command processor running?" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", '{"account_id": 1}'], "not sent: bank.OpenAccount: field 'account_id'"),
        (["--json", "{not json"], "--json is not valid JSON"),
        (["--json", OPEN, "--file", "-"], "give the command's fields with --json"),
        (["--file", "/nonexistent/body.json"], "--file: No such file or directory"),
        (["--json", OPEN, "--wait-for", "nope"], "has no projection 'nope'"),
    ],
)
def test_send_bad_input_is_a_usage_error(
    ctx_name: str, kafka_config: dict[str, Any], args: list[str], message: str
) -> None:
    create_topics(kafka_config, [TopicSpec(ContextTopics(ctx_name).commands, 6)])

    done = cqrsctl("send", "bank.OpenAccount", *args, "--prefix", ctx_name)

    assert done.returncode == 2, done.stderr
    assert message in one_error_line(done)


def test_a_lost_command_is_seen_in_its_delivery_report_not_in_flush(
    ctx_name: str, kafka_config: dict[str, Any]
) -> None:
    # The commands topic does not exist and the broker creates none: the command expires
    # in the producer's queue. flush() returns (the queue is empty), the report says why.
    client = CommandClient(
        kafka_config,
        "bank",
        topic_prefix=ctx_name,
        await_results=False,
        producer_config={"message.timeout.ms": 2000},
    )
    try:
        pending = client.send("bank.Deposit", movement("a1", 5))
        client.flush(30)
        with pytest.raises(CommandNotDelivered, match=pending.command_id) as lost:
            pending.delivery(0)
        assert lost.value.code is not None
    finally:
        client.close()

    create_topics(kafka_config, [TopicSpec(ContextTopics(ctx_name).commands, 6)])
    with CommandClient(kafka_config, "bank", topic_prefix=ctx_name, await_results=False) as ok:
        delivered = ok.send("bank.Deposit", movement("a1", 5))
        ok.flush(30)
        assert delivered.delivery(0) is None


def test_topics_list_compares_declared_with_existing_topics(
    ctx_name: str, kafka_config: dict[str, Any]
) -> None:
    topics = ContextTopics(ctx_name)
    admin = AdminClient(kafka_config)
    futures = admin.create_topics(
        [
            NewTopic(topics.commands, 6, 1, config={"cleanup.policy": "delete",
                                                    "retention.ms": "604800000"}),
            NewTopic(topics.events, 3, 1, config={"cleanup.policy": "delete",
                                                  "retention.ms": "-1"}),
            NewTopic(topics.aggregates, 6, 1, config={"cleanup.policy": "delete"}),
        ]
    )  # fmt: skip
    for future in futures.values():
        future.result(30)

    done = cqrsctl("topics", "list", "--prefix", ctx_name, "--output", "json")

    assert done.returncode == 1, done.stderr  # something differs from the declaration
    found = {row["topic"]: row for row in json.loads(done.stdout)}
    assert found[topics.commands]["status"] == "ok"
    assert found[topics.commands]["partitions"] == 6
    assert found[topics.events]["status"] == "partitions"
    assert (found[topics.events]["partitions"], found[topics.events]["declared_partitions"]) == (
        3,
        6,
    )
    assert found[topics.aggregates]["status"] == "config"
    assert found[topics.aggregates]["drift"] == {
        "cleanup.policy": {"declared": "compact", "actual": "delete"}
    }
    assert found[topics.results]["status"] == "missing"
    assert found[topics.results]["partitions"] is None
    assert found[topics.projection("accounts")]["status"] == "missing"

    table = cqrsctl("topics", "list", "--prefix", ctx_name)
    assert table.returncode == 1
    row = next(line for line in table.stdout.splitlines() if f"{topics.aggregates} " in line)
    assert "cleanup.policy=delete (declared compact)" in row
    assert "missing: run `" in table.stderr and f"--prefix {ctx_name}`" in table.stderr


def test_topics_list_of_a_complete_context_exits_0(
    ctx_name: str, kafka_config: dict[str, Any]
) -> None:
    assert cqrsctl("topics", "create", "--prefix", ctx_name).returncode == 0

    done = cqrsctl("topics", "list", "--prefix", ctx_name, "-o", "json")

    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 9 and {row["status"] for row in rows} == {"ok"}
