"""`cqrsctl dlq list|show|replay` on real dead letters of a running command processor."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from processors.partitioning import partition_for
from processors.topic_reader import read_topic
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.cli_run import cqrsctl, wait_for
from tests.support.write_side import BankRig, movement, open_account, read_events

PARTITIONS = 6  # bank's declared partition count


def dlq_json(bank: BankRig, *args: str) -> tuple[int, Any]:
    done = cqrsctl("dlq", *args, "--prefix", bank.prefix, "--output", "json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def end_offsets(bank: BankRig, topic: str) -> list[int]:
    consumer = Consumer({**bank.kafka, "group.id": f"{topic}.probe"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def results_for(bank: BankRig, command_id: str) -> list[dict[str, Any]]:
    codec = default_codec()
    return [
        codec.decode(m.value())
        for m in read_topic(bank.kafka, bank.topics.results)
        if dict(m.headers() or ()).get(ce.CAUSATION_ID) == command_id.encode()
    ]


def put_dead_letter_of_an_older_processor(bank: BankRig, command_id: str, key: str) -> None:
    """A valid command as a processor that lacked its schema would have dead-lettered it
    (the upgrade case of docs/deploy.md: replayed once the schema is deployed)."""
    headers = ce.CloudEventHeaders(
        id=command_id, type="bank.OpenAccount", source="/test", subject=key, time=ce.now()
    ).to_kafka()
    partition = partition_for(key, PARTITIONS)
    headers += [
        ("dlq_reason", b"unknown writer schema fingerprint 0102030405060708 (wire order)"),
        ("dlq_error_type", b"UnknownFingerprint"),
        ("dlq_source_topic", bank.topics.commands.encode()),
        ("dlq_source_partition", str(partition).encode()),
        ("dlq_source_offset", b"0"),
        ("dlq_time", ce.time_header_value()),
    ]
    producer = Producer(bank.kafka)
    value = default_codec().encode("bank.OpenAccount", open_account(key))
    producer.produce(bank.topics.dlq, value, key.encode(), partition=partition, headers=headers)
    assert producer.flush(30) == 0


def test_dlq_list_show_and_replay_on_real_dead_letters(bank: BankRig) -> None:
    bank.processor()
    codec = default_codec()
    producer = Producer(bank.kafka)
    commands = bank.topics.commands
    producer.produce(
        commands, b"not avro at all", b"junk-1", partition=partition_for("junk-1", PARTITIONS)
    )
    no_id = [(ce.SPECVERSION, b"1.0"), (ce.TYPE, b"bank.Deposit"), (ce.SOURCE, b"/test")]
    producer.produce(
        commands,
        codec.encode("bank.Deposit", movement("acc-9", 5)),
        b"acc-9",
        partition=partition_for("acc-9", PARTITIONS),
        headers=no_id,
    )
    assert producer.flush(30) == 0
    put_dead_letter_of_an_older_processor(bank, "fix-1", "acc-fix")
    letters = wait_for(
        lambda: (found := dlq_json(bank, "list")[1]) and len(found) == 3 and found,
        what="three dead letters",
    )
    by_type = {letter["error_type"]: letter for letter in letters}
    assert set(by_type) == {"BadMagic", "MissingHeader", "UnknownFingerprint"}
    garbage, no_id_letter, fixable = (
        by_type["BadMagic"],
        by_type["MissingHeader"],
        by_type["UnknownFingerprint"],
    )
    assert garbage["key"] == "junk-1" and "c3 01" in garbage["reason"]
    assert garbage["source"]["topic"] == commands
    assert "ce_id" in no_id_letter["reason"]
    assert fixable["command_id"] == "fix-1" and fixable["command_type"] == "bank.OpenAccount"

    # Filters: --reason matches the error type or the reason, any case; --since a time.
    code, found = dlq_json(bank, "list", "--reason", "badmagic")
    assert code == 0 and [f["key"] for f in found] == ["junk-1"]
    code, found = dlq_json(bank, "list", "--reason", "CE_ID")
    assert code == 0 and [f["error_type"] for f in found] == ["MissingHeader"]
    code, found = dlq_json(bank, "list", "--since", "1h")
    assert code == 0 and len(found) == 3
    code, found = dlq_json(bank, "list", "--since", "2999-01-01T00:00:00Z")
    assert code == 1 and found == []
    done = cqrsctl("dlq", "list", "--prefix", bank.prefix, "--since", "yesterday")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--since" in done.stderr

    # show: the undecodable value as a decode error; the fixable one decoded.
    garbage_at = f"{garbage['partition']}:{garbage['offset']}"
    fixable_at = f"{fixable['partition']}:{fixable['offset']}"
    code, shown = dlq_json(bank, "show", garbage_at, fixable_at)
    assert code == 0 and len(shown) == 2
    shown_by_key = {s["key"]: s for s in shown}
    assert shown_by_key["junk-1"]["record"]["error"].startswith("BadMagic")
    assert shown_by_key["junk-1"]["headers"]["dlq_error_type"] == "BadMagic"
    assert shown_by_key["acc-fix"]["record"]["schema"] == "bank.OpenAccount v1"
    assert shown_by_key["acc-fix"]["record"]["value"]["account_id"] == "acc-fix"
    table = cqrsctl("dlq", "show", garbage_at, "--prefix", bank.prefix)
    assert table.returncode == 0 and "decode error: BadMagic" in table.stdout
    missing = cqrsctl("dlq", "show", "5:999999", "--prefix", bank.prefix)
    assert missing.returncode == 1 and "no dead letter at 5:999999" in missing.stderr

    # replay needs a selection; --dry-run sends nothing.
    assert cqrsctl("dlq", "replay", "--prefix", bank.prefix).returncode == 2
    before = end_offsets(bank, commands)
    code, planned = dlq_json(bank, "replay", "--all", "--dry-run")
    assert code == 0 and {p["action"] for p in planned} == {"would_replay"} and len(planned) == 3
    assert end_offsets(bank, commands) == before
    assert results_for(bank, "fix-1") == []

    # A record the processor can handle now: processed once, with its original command id.
    code, done = dlq_json(bank, "replay", fixable_at)
    assert code == 0 and done[0]["action"] == "replayed"
    assert done[0]["commands_partition"] == partition_for("acc-fix", PARTITIONS)
    first = wait_for(lambda: results_for(bank, "fix-1"), what="the replayed command's result")
    assert [r["status"] for r in first] == ["ACCEPTED"]
    opened = [e for e in read_events(bank.kafka, bank.topics.events) if e.causation_id == "fix-1"]
    assert [(e.aggregate_id, e.type, e.version) for e in opened] == [
        ("acc-fix", "bank.AccountOpened", 1)
    ]

    # Replayed again: the processor answers the command id with its first result, no event.
    code, done = dlq_json(bank, "replay", fixable_at)
    assert code == 0 and done[0]["action"] == "replayed"
    again = wait_for(
        lambda: (found := results_for(bank, "fix-1")) and len(found) == 2 and found,
        what="the duplicate's result",
    )
    assert again[0] == again[1]
    events = read_events(bank.kafka, bank.topics.events)
    assert [e.version for e in events if e.causation_id == "fix-1"] == [1]

    # Still invalid: dead-lettered again, with its reason, naming the dead letter it came from.
    code, done = dlq_json(bank, "replay", "--reason", "MissingHeader")
    assert code == 0 and [d["action"] for d in done] == ["replayed"]
    no_id_at = f"{no_id_letter['partition']}:{no_id_letter['offset']}"
    back = wait_for(
        lambda: [
            f
            for f in dlq_json(bank, "list")[1]
            if f["replay_of"] == f"{bank.topics.dlq}:{no_id_at}"
        ],
        what="the replayed record back in the DLQ",
    )
    assert back[0]["error_type"] == "MissingHeader" and "ce_id" in back[0]["reason"]
    assert back[0]["key"] == "acc-9"

    # The report as a table.
    table = cqrsctl("dlq", "replay", garbage_at, "--dry-run", "--prefix", bank.prefix)
    assert table.returncode == 0
    assert "would replay" in table.stdout and "junk-1" in table.stdout
    assert "dry run: nothing sent" in table.stdout
