"""`cqrsctl tail` on real topics: decoded records of a running command processor, a garbage
record among them, filters, committed against uncommitted records, and following."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from deploy.local.pipeline import WorkerProcess
from processors.partitioning import partition_for
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.cli_run import cqrsctl, json_lines, wait_for
from tests.support.write_side import BankRig, movement, open_account

PARTITIONS = 6  # bank's declared partition count


def tail_json(*args: str) -> list[dict[str, Any]]:
    done = cqrsctl("tail", *args, "--output", "json", "--no-follow", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    return json_lines(done)


def event_record(account_id: str, amount: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    value = default_codec().encode(
        "bank.Deposited",
        {**movement(account_id, amount), "balance": amount, "transfer_id": None, "memo": None},
    )
    headers = ce.CloudEventHeaders(
        id=f"e-{amount}", type="bank.Deposited", source="/test", subject=account_id, time=ce.now()
    ).to_kafka()
    return value, headers


def test_tail_decodes_real_topics_and_shows_garbage_as_a_decode_error(bank: BankRig) -> None:
    bank.processor()
    events = bank.topics.events
    with bank.client() as client:
        client.send("bank.OpenAccount", open_account("acc-1")).result(30)
        client.send("bank.OpenAccount", open_account("acc-2")).result(30)
        client.send("bank.Deposit", movement("acc-1", 700)).result(30)
        home = partition_for("acc-1", PARTITIONS)
        producer = Producer(bank.kafka)
        producer.produce(events, b"\x00garbage", b"acc-1", partition=home)
        assert producer.flush(30) == 0
        client.send("bank.Deposit", movement("acc-1", 300)).result(30)

    records = tail_json(events, "--from-beginning")
    mine = [r for r in records if r["key"] == "acc-1"]
    assert [r["schema"] or r["error"][:8] for r in mine] == [
        "bank.AccountOpened v1",
        "bank.Deposited v2",
        "BadMagic",
        "bank.Deposited v2",
    ]
    opened, deposited, garbage, after = mine
    assert deposited["value"]["amount"] == {"amount": 700, "currency": "EUR"}
    assert after["value"]["balance"] == 1000  # the record after the garbage is shown too
    assert deposited["headers"][ce.TYPE] == "bank.Deposited"
    assert deposited["cloudevent"]["aggregate_version"] == 2
    assert deposited["partition"] == home and deposited["offset"] > opened["offset"]
    assert garbage["error"].startswith("BadMagic: not Avro") and garbage["value"] is None
    assert garbage["value_preview_hex"] == b"\x00garbage".hex()
    assert {r["key"] for r in records} == {"acc-1", "acc-2"}

    # --key and --last: the last record of that key; --partition: only that partition.
    (last,) = tail_json("events", "--prefix", bank.prefix, "--key", "acc-1", "--last", "1")
    assert last["offset"] == after["offset"]
    two = tail_json(events, "--key", "acc-1", "--last", "2")
    assert [r["offset"] for r in two] == [garbage["offset"], after["offset"]]
    elsewhere = (home + 1) % PARTITIONS
    assert all(
        r["partition"] == elsewhere for r in tail_json(events, "--partition", str(elsewhere))
    )
    assert tail_json(events, "--partition", str(home), "--key", "acc-2") == []

    # Results and the aggregate snapshot, whose nested state is decoded too.
    results = tail_json("results", "--prefix", bank.prefix, "--from-beginning", "--key", "acc-1")
    assert [r["value"]["status"] for r in results] == ["ACCEPTED"] * 3
    (snapshot,) = tail_json(
        "aggregates", "--prefix", bank.prefix, "--last", "1", "--key", "bank.Account:acc-1"
    )
    assert snapshot["value"]["state"]["schema"] == "bank.AccountState v1"
    assert snapshot["value"]["state"]["value"]["balance"] == 1000

    # A projection topic, written by a real projector.
    projector = WorkerProcess(
        "projector",
        ["--prefix", bank.prefix, "--data-dir", str(bank.log_dir / "projector-data")],
        bank.log_dir / "projector.log",
    ).start()
    bank.workers.append(projector)
    projector.wait_ready(90)

    def account_rows() -> list[dict[str, Any]]:
        rows = tail_json("projection.accounts", "--prefix", bank.prefix, "--from-beginning")
        return [r for r in rows if r["key"] == "acc-1" and r["value"]["balance"] == 1000]

    (row,) = wait_for(account_rows, what="acc-1's row on the accounts projection topic")[-1:]
    assert row["schema"] == "bank.AccountRow v1" and row["cloudevent"]["subject"] == "acc-1"

    # Table output to a pipe: one unwrapped line per record, the garbage as a decode error.
    table = cqrsctl("tail", events, "--from-beginning", "--no-follow", "--key", "acc-1")
    assert table.returncode == 0, table.stderr
    garbage_line = next(line for line in table.stdout.splitlines() if "decode error" in line)
    assert "BadMagic: not Avro single-object encoding" in garbage_line
    assert "(value 8 bytes)" in garbage_line  # the whole reason on one line
    assert sum("bank.Deposited v2" in line for line in table.stdout.splitlines()) == 2

    # Usage errors and a missing topic: one line, a truthful exit code.
    done = cqrsctl("tail", events, "--partition", "99", "--no-follow")
    assert done.returncode == 2 and "no partition 99" in done.stderr
    assert done.stderr.count("\n") == 1
    done = cqrsctl("tail", events, "--from-beginning", "--last", "3")
    assert done.returncode == 2 and "exclude each other" in done.stderr
    done = cqrsctl("tail", f"{bank.prefix}.nope", "--no-follow")
    assert done.returncode == 4 and "does the topic exist" in done.stderr


def test_tail_hides_open_and_aborted_transactions_unless_uncommitted(
    kafka_config: dict[str, Any], ctx_name: str, create_topics: Callable[..., list[str]]
) -> None:
    (topic,) = create_topics({f"{ctx_name}.events": 1})
    committed = Producer({**kafka_config, "transactional.id": f"{ctx_name}-a"})
    committed.init_transactions(30)
    committed.begin_transaction()
    value, headers = event_record("acc-c", 1)
    committed.produce(topic, value, b"acc-c", headers=headers)
    committed.commit_transaction(30)
    pending = Producer({**kafka_config, "transactional.id": f"{ctx_name}-b"})
    pending.init_transactions(30)
    pending.begin_transaction()
    value, headers = event_record("acc-o", 2)
    pending.produce(topic, value, b"acc-o", headers=headers)
    assert pending.flush(30) == 0

    def keys(*extra: str) -> list[str]:
        return [r["key"] for r in tail_json(topic, "--from-beginning", *extra)]

    assert keys() == ["acc-c"]  # the open transaction's record is not shown
    assert keys("--uncommitted") == ["acc-c", "acc-o"]
    pending.abort_transaction(30)
    assert keys() == ["acc-c"]
    assert keys("--uncommitted") == ["acc-c", "acc-o"]


def test_tail_follows_new_records_and_a_bounded_wait_times_out(
    kafka_config: dict[str, Any], ctx_name: str, create_topics: Callable[..., list[str]]
) -> None:
    (topic,) = create_topics({f"{ctx_name}.events": 2})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cqrsctl.main",
            "tail",
            topic,
            "--output",
            "json",
            "--max",
            "2",
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "following" in proc.stderr.readline()  # positions are taken: produce now
        producer = Producer(kafka_config)
        value, headers = event_record("acc-f", 1)
        producer.produce(topic, value, b"acc-f", partition=0, headers=headers)
        producer.produce(topic, b"junk", b"acc-g", partition=1)
        assert producer.flush(30) == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    shown = {r["key"]: r for r in (json.loads(line) for line in out.splitlines())}
    assert shown["acc-f"]["schema"] == "bank.Deposited v2"
    assert shown["acc-f"]["value"]["amount"]["amount"] == 1
    assert shown["acc-g"]["error"].startswith("BadMagic")

    # Waiting for records that do not come: exit 3 after the idle timeout, saying so.
    done = cqrsctl("tail", topic, "--max", "5", "--timeout", "1")
    assert done.returncode == 3 and "timed out: 0 of 5 records" in done.stderr


def test_tail_and_dlq_name_an_unreachable_broker_in_one_line() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    for args in (("tail", "events", "--no-follow"), ("dlq", "list")):
        done = cqrsctl(*args, CQRS_KAFKA_BOOTSTRAP_SERVERS=nowhere)
        assert done.returncode == 4, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and nowhere in done.stderr, done.stderr
        assert done.stdout == ""
