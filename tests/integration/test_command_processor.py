"""The write side against the real broker: business rules, optimistic concurrency,
duplicate command ids and dead letters, with the processor running as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import Producer

from bank.account import ACCOUNT, Account
from processors import wire
from processors.command_handler import AggregateEntry
from processors.partitioning import partition_for
from processors.topic_reader import read_topic
from schemas.codec import default_codec
from schemas.wire import headers as ce
from schemas.wire.limits import snapshot_key
from tests.support.write_side import (
    BankRig,
    check_event_log,
    movement,
    open_account,
    read_events,
)


def test_overdrawing_withdraw_is_rejected_and_emits_no_event(bank: BankRig):
    bank.processor()
    with bank.client() as client:
        assert client.send("bank.OpenAccount", open_account("acc-1")).result(30).accepted
        deposit = client.send("bank.Deposit", movement("acc-1", 100)).result(30)
        overdraw = client.send("bank.Withdraw", movement("acc-1", 101)).result(30)
    assert deposit.accepted and deposit.version == 2
    assert len(deposit.events) == 1 and deposit.events[0].topic == bank.topics.events
    assert overdraw.status == "REJECTED"
    assert overdraw.reason == "insufficient_funds"
    assert "overdraw" in overdraw.detail
    assert overdraw.version == 2
    events = read_events(bank.kafka, bank.topics.events)
    assert [e.type for e in events] == ["bank.AccountOpened", "bank.Deposited"]
    assert (events[1].partition, events[1].offset) == (
        deposit.events[0].partition,
        deposit.events[0].offset,
    )
    assert events[1].causation_id == deposit.command_id
    check_event_log(events)


def test_same_expected_version_one_accepted_one_conflict(bank: BankRig):
    bank.processor()
    with bank.client() as client:
        opened = client.send("bank.OpenAccount", open_account("acc-2")).result(30)
        first = client.send("bank.Deposit", movement("acc-2", 5), expected_version=opened.version)
        second = client.send("bank.Deposit", movement("acc-2", 7), expected_version=opened.version)
        outcomes = sorted([first.result(30).status, second.result(30).status])
        conflict = next(r for r in (first.result(), second.result()) if r.status == "CONFLICT")
    assert outcomes == ["ACCEPTED", "CONFLICT"]
    assert conflict.reason == "version_conflict"
    deposits = [
        e for e in read_events(bank.kafka, bank.topics.events) if e.type == "bank.Deposited"
    ]
    assert len(deposits) == 1


def test_duplicate_command_id_returns_first_result_and_emits_nothing(bank: BankRig):
    bank.processor()
    command_id = str(uuid.uuid4())
    with bank.client() as client:
        client.send("bank.OpenAccount", open_account("acc-3")).result(30)
        first = client.send("bank.Deposit", movement("acc-3", 10), command_id=command_id).result(30)
    # A second client, as a retrying producer would be after a restart.
    with bank.client() as client:
        again = client.send("bank.Deposit", movement("acc-3", 10), command_id=command_id).result(30)
    assert first == again
    events = read_events(bank.kafka, bank.topics.events)
    assert [e.causation_id for e in events].count(command_id) == 1
    raw = [
        m.value()
        for m in read_topic(bank.kafka, bank.topics.results)
        if dict(m.headers())[ce.CAUSATION_ID].decode() == command_id
    ]
    assert len(raw) == 2 and raw[0] == raw[1]


def test_random_bytes_go_to_the_dlq_and_valid_commands_still_flow(bank: BankRig):
    bank.processor()
    rng = os.urandom
    producer = Producer({**bank.kafka, "partitioner": "murmur2_random"})
    codec = default_codec()
    garbage = 1000
    with bank.client() as client:
        client.send("bank.OpenAccount", open_account("acc-4")).result(30)
        pending = []
        for i in range(garbage):
            value = rng(1 + i % 200)
            if i % 3 == 0:  # valid magic, then noise: unknown fingerprint or junk body
                value = b"\xc3\x01" + value
            producer.produce(bank.topics.commands, value, f"junk-{i}".encode())
            if i % 50 == 0:
                pending.append(client.send("bank.Deposit", movement("acc-4", 1)))
        producer.produce(  # well-formed Avro without the command id header
            bank.topics.commands,
            codec.encode("bank.Deposit", movement("acc-4", 1)),
            b"acc-4",
        )
        producer.flush(30)
        results = [p.result(60) for p in pending]
    assert all(r.accepted for r in results)
    assert results[-1].version == 1 + len(pending)
    dead = list(read_topic(bank.kafka, bank.topics.dlq))
    assert len(dead) == garbage + 1
    reasons = [dict(m.headers()) for m in dead]
    assert all(h["dlq_reason"] and h["dlq_error_type"] for h in reasons)
    types = {h["dlq_error_type"].decode() for h in reasons}
    assert "BadMagic" in types and "MissingHeader" in types
    assert {m.key().decode() for m in dead if m.key().startswith(b"junk")} == {
        f"junk-{i}" for i in range(garbage)
    }


def test_rebuild_replaces_a_corrupt_snapshot_with_the_fold_of_the_events(bank: BankRig):
    worker = bank.processor()
    with bank.client() as client:
        client.send("bank.OpenAccount", open_account("acc-5")).result(30)
        client.send("bank.Deposit", movement("acc-5", 100)).result(30)
        assert client.send("bank.Deposit", movement("acc-5", 50)).result(30).version == 3
    assert worker.stop() == 0  # SIGTERM: finish the batch, commit, leave cleanly
    corrupt = Account("acc-5", "x", "EUR", 999_999, "OPEN")
    producer = Producer(bank.kafka)
    producer.produce(
        bank.topics.aggregates,
        wire.encode_snapshot(ACCOUNT, "acc-5", AggregateEntry(corrupt, 3)),
        snapshot_key(ACCOUNT.name, "acc-5"),
        partition=partition_for("acc-5", 6),
    )
    producer.flush(10)
    cli = [sys.executable, "-m", "cqrsctl.main", "aggregates", "rebuild", "--prefix", bank.prefix]
    deadline = time.monotonic() + 30  # a static member stays in the group for its session
    while (done := subprocess.run(cli, capture_output=True, text=True)).returncode == 1:
        assert "stop them first" in done.stderr
        assert time.monotonic() < deadline, done.stderr
        time.sleep(1)
    assert done.returncode == 0, done.stderr
    assert "folded 3 events into 1 aggregate snapshots" in done.stdout
    bank.processor()
    with bank.client() as client:
        too_much = client.send("bank.Withdraw", movement("acc-5", 151)).result(30)
        exact = client.send("bank.Withdraw", movement("acc-5", 150)).result(30)
    assert too_much.reason == "insufficient_funds"
    assert exact.accepted and exact.version == 4
