"""`cqrsctl up --pipeline --observability` on a stack of its own: a real Prometheus scrapes
every worker, and after a small workload every metric the dashboard reads has a series,
non-zero, except the few a healthy run leaves at zero (`LEGITIMATELY_ZERO`, each
with its reason). The workload makes the failure counters move on purpose: a duplicate
command id, and records no stage can use on the commands, events and projection topics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy.k8s.render_dashboard import queries
from deploy.local import background, prometheus
from deploy.local import stack as local_stack
from deploy.local.processes import is_our_process
from deploy.local.state import ENV_STATE_DIR, read_state
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN
from tests.unit.promql import metric_names

CQRSCTL = str(Path(sys.executable).with_name("cqrsctl"))
ROLES = {"processor", "projector", "sink"}
# The local pipeline runs no gateway: its series come from `run gateway` (tests of its own).
NOT_LOCAL = ("gateway_",)
# What a small healthy workload leaves at zero, and why; the test still wants their series.
LEGITIMATELY_ZERO = {
    "cqrs_transaction_aborts_total": "a healthy broker aborts no transaction (tests/faults)",
    "cqrs_projector_redelivered_total": "only a projector restart replays applied events",
    "cqrs_projector_reread_events_total": "only records Faust fetched and dropped",
    "cqrs_sink_retries_total": "only a failing Postgres makes the sink retry",
    "cqrs_sink_skipped_offsets_total": "only lost or compacted projection records",
    "cqrs_consumer_lag_records": "every stage is caught up at the end of the run",
    "cqrs_consumer_lag_seconds": "every stage is caught up at the end of the run",
}


def cqrsctl(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_STATE_DIR: str(state_dir), "COLUMNS": "200"}
    for name in (ENV_BOOTSTRAP, ENV_PG_DSN):  # the session stack's: not this one's
        env.pop(name, None)
    return subprocess.run([CQRSCTL, *args], capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture
def own_state_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700 root-only and the `postgres` user must get in.
    folder = Path(tempfile.mkdtemp(prefix="cqrs-test-obs-"))
    yield folder
    background.stop(folder)
    prometheus.stop(folder, keep_data=False)
    local_stack.down(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _dashboard_metrics() -> set[str]:
    names: set[str] = set()
    for expr in queries():
        names |= set(metric_names(expr))
    names.discard("up")
    # A histogram's panels read `_bucket`; the series family is what a worker exports.
    return {n for n in names if not n.startswith(NOT_LOCAL)}


def _eur(amount: int) -> dict[str, object]:
    return {"amount": amount, "currency": "EUR"}


def _workload(state_dir: Path) -> None:
    from producers.command_client import CommandClient

    state = read_state(state_dir)
    assert state is not None
    with CommandClient({"bootstrap.servers": state.bootstrap_servers}, "bank") as client:
        pending = [
            client.send(
                "bank.OpenAccount",
                {"account_id": f"obs-{i}", "owner": f"o{i}", "currency": "EUR"},
            )
            for i in range(10)
        ]
        pending += [
            client.send("bank.Deposit", {"account_id": f"obs-{i}", "amount": _eur(100 + i)})
            for i in range(10)
        ]
        # Rejected: more than the balance.
        pending += [
            client.send("bank.Withdraw", {"account_id": f"obs-{i}", "amount": _eur(10_000)})
            for i in range(3)
        ]
        results = [p.result(60) for p in pending]
        # The same command id again: a duplicate, answered with the first result.
        again = client.send(
            "bank.Deposit",
            {"account_id": "obs-0", "amount": _eur(100)},
            command_id=pending[10].command_id,
        ).result(60)
    assert sum(r.accepted for r in results) == 20 and sum(not r.accepted for r in results) == 3
    assert again == results[10]
    # Records no stage can use: a dead letter, an event the projector skips, a projection
    # record the sink skips.
    producer = Producer({"bootstrap.servers": state.bootstrap_servers})
    for topic in ("bank.commands", "bank.events", "bank.projection.accounts"):
        producer.produce(topic, b"\x00not avro", b"obs-junk", headers={"ce_id": b"obs-junk"})
    assert producer.flush(30) == 0


def _wait_for(prom: prometheus.RecordedPrometheus, promql: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = prometheus.query(prom, promql)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_prometheus_scrapes_every_worker_and_finds_every_dashboard_metric(
    own_state_dir: Path,
) -> None:
    done = cqrsctl(own_state_dir, "up", "--pipeline", "--observability")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prometheus: http://127.0.0.1:" in done.stdout
    prom = prometheus.recorded(own_state_dir)
    assert prom is not None and prometheus.running(prom)
    assert str(own_state_dir / "prometheus" / "data") in " ".join(
        Path(f"/proc/{prom.pid}/cmdline").read_text().split("\0")
    )

    _workload(own_state_dir)

    # Every worker target is up, each under its role's job and the namespace label.
    deadline = time.monotonic() + 30
    while True:
        up = prometheus.query(prom, 'up{namespace="local"}')
        jobs = {s["metric"]["job"]: s["value"][1] for s in up}
        if (set(jobs) == ROLES and set(jobs.values()) == {"1"}) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert jobs == dict.fromkeys(ROLES, "1"), up

    # Every metric the dashboard reads has a series; those the workload moves are non-zero.
    wanted = _dashboard_metrics()
    assert {"cqrs_commands_total", "cqrs_sink_rows_total", "cqrs_consumer_lag_records"} <= wanted
    served = _served_names(own_state_dir)
    missing, zero = [], []
    for name in sorted(wanted):
        if name in LEGITIMATELY_ZERO:
            family = name.removesuffix("_total")
            if not (prometheus.query(prom, f'{{__name__="{name}"}}') or {name, family} & served):
                missing.append(name)
            continue
        found = _wait_for(prom, f'sum({name}{{namespace="local"}}) > 0', timeout=20)
        if not found:
            (zero if prometheus.query(prom, name) else missing).append(name)
    assert not missing, f"no series in Prometheus nor on any worker's /metrics: {missing}"
    assert not zero, f"still zero after the workload: {zero}"
    # Each consuming stage reports its lag (both units) and its rebalances (its first
    # assignment counts).
    for promql in (
        'sum by (job) (cqrs_consumer_rebalances_total{namespace="local"}) > 0',
        'count by (job) (cqrs_consumer_lag_seconds{namespace="local"})',
        'count by (job) (cqrs_consumer_lag_records{namespace="local"})',
    ):
        found = {s["metric"]["job"] for s in prometheus.query(prom, promql)}
        assert found == ROLES, (promql, found)

    # status shows it; down stops it and the workers.
    shown = cqrsctl(own_state_dir, "status", "--output", "json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    report = json.loads(shown.stdout)
    assert report["prometheus"]["health"] == "healthy"
    assert report["prometheus"]["url"] == prom.url
    stopped = cqrsctl(own_state_dir, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped prometheus" in stopped.stdout
    assert not is_our_process(prom.pid, prom.config)
    assert prometheus.recorded(own_state_dir) is None


def _served_names(state_dir: Path) -> set[str]:
    """The metric families (as `# TYPE` names) the workers' /metrics serve."""
    import urllib.request

    names: set[str] = set()
    for worker in background.recorded(state_dir):
        with urllib.request.urlopen(
            f"http://127.0.0.1:{worker.health_port}/metrics", timeout=5
        ) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("# TYPE "):
                    names.add(line.split()[2])
    return names


def test_up_observability_without_prometheus_is_one_clear_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        ENV_STATE_DIR: str(tmp_path / "state"),
        "PATH": str(Path(sys.executable).parent),  # python and cqrsctl, no prometheus
    }
    done = subprocess.run(
        [CQRSCTL, "up", "--observability"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: prometheus is not installed (Debian: apt-get install prometheus); "
        "--observability needs it"
    ]
    assert not (tmp_path / "state" / "state.json").exists()
