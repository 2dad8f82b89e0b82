"""`cqrsctl projections list|status` and the sink's progress metrics against a running read
side: lag while the projector is stopped, none once it has caught up, and one-line errors
with truthful exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deploy.local.pipeline import WorkerProcess
from tests.support.cli_run import wait_for
from tests.support.read_side import PROJECTION_NAMES, ReadSideRig
from tests.support.write_side import BankRig, movement, open_account


def projections(rig: ReadSideRig, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "projections", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CQRS_POSTGRES_DSN": rig.dsn, **env},
    )


def listed(rig: ReadSideRig, *args: str) -> dict[str, dict[str, Any]]:
    done = projections(rig, *args, "--prefix", rig.prefix, "--schema", rig.schema, "-o", "json")
    assert done.returncode == 0, done.stderr
    return {row["projection"]: row for row in json.loads(done.stdout)}


def gauges(worker: WorkerProcess, name: str) -> dict[str, float]:
    """{projection: value} of one of the sink's progress gauges."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.health_port}/metrics") as resp:
        text = resp.read().decode()
    return {
        sample.labels["projection"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def send_all(rig: ReadSideRig, commands: list[tuple[str, dict[str, Any]]]) -> None:
    client = rig.client()
    try:
        pending = [client.send(type_, data) for type_, data in commands]
        assert all(p.result(60).accepted for p in pending)
    finally:
        client.close()


def test_status_and_metrics_show_the_lag_of_a_stopped_projector_and_none_once_caught_up(
    bank: BankRig, read_side: ReadSideRig
) -> None:
    bank.processor()
    projector = read_side.projector()
    sink = read_side.sink()
    accounts = [f"acct-{i}" for i in range(12)]
    send_all(read_side, [("bank.OpenAccount", open_account(a)) for a in accounts])
    read_side.wait_caught_up()

    caught_up = listed(read_side, "list")
    assert sorted(caught_up) == sorted(PROJECTION_NAMES)
    applied = sum(p.offset + 1 for p in read_side.last_event_positions())
    for row in caught_up.values():
        assert (row["state"], row["lag_events"], row["lag_seconds"]) == ("live", 0, 0)
        assert row["applied"] == applied
        assert row["rate"] is None and row["eta_seconds"] is None  # one sample: no rate
    wait_for(
        lambda: (
            gauges(sink, "cqrs_projection_applied_offsets")
            == dict.fromkeys(PROJECTION_NAMES, applied)
        ),
        what="the progress metrics at the checkpoints",
    )

    projector.stop()
    send_all(read_side, [("bank.Deposit", movement(a, 100)) for a in accounts])
    time.sleep(1.0)
    behind = listed(read_side, "status", "--interval", "0.5")
    for name, row in behind.items():
        # 12 deposits, plus at most one transaction marker per partition per batch
        assert row["lag_events"] >= len(accounts), (name, row)
        assert row["lag_seconds"] >= 1.0, (name, row)
        assert row["applied"] == caught_up[name]["applied"]
        assert (row["rate"], row["eta_seconds"]) == (0, None)  # nothing moves: no estimate
        positions = {p["partition"]: p for p in row["partitions"]}
        assert sum(p["lag"] for p in positions.values()) == row["lag_events"]
    # A sample taken just after the deposits has them in lag_events but not yet 1 s old.
    wait_for(
        lambda: (
            all(v >= len(accounts) for v in gauges(sink, "cqrs_projection_lag_events").values())
            and all(v >= 1.0 for v in gauges(sink, "cqrs_projection_lag_seconds").values())
        ),
        what="the lag in the metrics",
    )

    read_side.projector()
    read_side.wait_caught_up()
    one = listed(read_side, "status", "accounts", "--interval", "0.2")
    assert list(one) == ["accounts"]
    row = one["accounts"]
    assert (row["lag_events"], row["lag_seconds"], row["eta_seconds"]) == (0, 0, 0)
    applied = sum(p.offset + 1 for p in read_side.last_event_positions())
    assert row["applied"] == applied
    wait_for(
        lambda: (
            gauges(sink, "cqrs_projection_lag_events") == dict.fromkeys(PROJECTION_NAMES, 0)
            and gauges(sink, "cqrs_projection_applied_offsets")
            == dict.fromkeys(PROJECTION_NAMES, applied)
            and gauges(sink, "cqrs_projection_eta_seconds") == dict.fromkeys(PROJECTION_NAMES, 0)
        ),
        what="the metrics caught up",
    )


def test_an_unknown_projection_and_an_unreachable_database_are_one_line(
    bank: BankRig, read_side: ReadSideRig
) -> None:
    unknown = projections(read_side, "status", "nope", "--prefix", read_side.prefix)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: bank has no projection 'nope' (known: " + ", ".join(PROJECTION_NAMES) + ")"
    ]
    down = projections(
        read_side,
        "list",
        "--prefix",
        read_side.prefix,
        CQRS_POSTGRES_DSN="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
    )
    assert down.returncode == 4, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    assert down.stderr.startswith("error: postgres: ")
    missing = projections(read_side, "list", "--prefix", "no_such_prefix")
    assert missing.returncode == 4
    assert "topic no_such_prefix.events does not exist" in missing.stderr
