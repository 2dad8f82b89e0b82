"""With `--log-format json`, a worker's line about one record names the record's partition,
and the command's id where it is known: the processor's dead letters and (at DEBUG) its
rejections, the projector's and the sink's skipped records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from deploy.local.pipeline import WorkerProcess
from tests.support.read_side import ReadSideRig
from tests.support.write_side import movement, open_account


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def wait_for_line(worker: WorkerProcess, prefix: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [x for x in json_lines(worker.log_path) if x["message"].startswith(prefix)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {prefix!r} line in {worker.role}:\n{worker.log_tail()}")
        time.sleep(0.3)


def test_lines_about_one_record_name_its_partition_and_command(read_side: ReadSideRig) -> None:
    bank = read_side.bank
    json_logs = ("--log-format", "json")
    processor = WorkerProcess(
        "processor",
        [
            "--context",
            "bank",
            "--prefix",
            bank.prefix,
            "--instance-id",
            "j0",
            "--log-level",
            "DEBUG",
            *json_logs,
        ],
        bank.log_dir / "processor-json.log",
    ).start()
    read_side.workers.append(processor)
    processor.wait_ready()
    data_dir = str(bank.log_dir / "projector-data")
    projector = read_side._start(
        "projector", ["--prefix", bank.prefix, "--data-dir", data_dir, *json_logs], True
    )
    sink = read_side._start(
        "sink", ["--prefix", bank.prefix, "--schema", read_side.schema, *json_logs], True
    )

    with read_side.client() as client:
        assert client.send("bank.OpenAccount", open_account("logged")).result(60).accepted
        refused = client.send("bank.Withdraw", movement("logged", 10_000))
        assert not refused.result(60).accepted
    producer = Producer(bank.kafka)
    producer.produce(
        bank.topics.commands, b"\x00not avro", b"k", partition=2, headers={"ce_id": b"junk-1"}
    )
    producer.produce(bank.topics.events, b"\x00not avro", b"k", partition=3)
    producer.produce(bank.topics.projection("accounts"), b"junk", b"k", partition=4)
    assert producer.flush(30) == 0

    common = {"context": "bank"}
    dead = wait_for_line(processor, "dead-lettered")
    assert dead | common == dead and dead["role"] == "processor"
    assert (dead["partition"], dead["command_id"], dead["level"]) == (2, "junk-1", "WARNING")
    rejected = wait_for_line(processor, "rejected bank.Withdraw")
    assert rejected["command_id"] == refused.command_id and rejected["level"] == "DEBUG"
    assert isinstance(rejected["partition"], int)
    skipped = wait_for_line(projector, "skipping undecodable event")
    assert (skipped["role"], skipped["partition"], skipped["context"]) == ("projector", 3, "bank")
    skipped = wait_for_line(sink, "skipping undecodable record")
    assert (skipped["role"], skipped["partition"], skipped["context"]) == ("sink", 4, "bank")
