"""`cqrsctl demo` as users run it: a real process starting real workers against the session's
broker and Postgres, with small numbers so it stays quick."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cqrsctl.workload import WorkloadSpec, account_id, expected_outcome, iter_commands
from deploy.local import postgres_roles, prometheus
from deploy.local.processes import cmdline, is_our_process
from deploy.local.state import ENV_STATE_DIR, StackState
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN
from sinks.migrate import roles
from tests.integration.test_postgres_roles_local import member_of, owners_of

ACCOUNTS = 30
COMMANDS = 1500


def run_demo(
    args: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**(os.environ if env is None else env), "COLUMNS": "160"},
    )


def own_state(state: Path) -> dict[str, str]:
    """The environment with a state folder of its own: kept workers no other run can stop."""
    return {**os.environ, ENV_STATE_DIR: str(state)}


@pytest.fixture
def demo_state(tmp_path: Path) -> Iterator[Path]:
    """A state folder of the test's own; whatever Prometheus a demo left there is stopped."""
    state = tmp_path / "state"
    yield state
    prometheus.stop(state / "demo", keep_data=False)


def test_demo_drives_the_workload_into_postgres_and_stops_its_workers(
    ctx_name: str, pg_schema: str, pg_conn: psycopg.Connection[Any], tmp_path: Path
):
    report_path = tmp_path / "report.json"
    done = run_demo(
        [
            *("--accounts", str(ACCOUNTS), "--commands", str(COMMANDS), "--seed", "11"),
            *("--prefix", ctx_name, "--schema", pg_schema, "--window", "400"),
            *("--report-json", str(report_path)),
        ]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())

    # Every command got an answer, and the answers are the rules' answers.
    model = expected_outcome(iter_commands(WorkloadSpec(ACCOUNTS, COMMANDS, seed=11)))
    assert report["sent"] == ACCOUNTS + COMMANDS
    assert report["accepted"] + report["rejected"] == report["sent"]
    assert report["rejected"] == sum(report["rejections"].values()) > 0
    assert report["accepted"] == model.accepted_count
    assert report["rejections"] == dict(model.rejections)
    assert report["events"] == model.events
    assert report["matches_model"] and report["balances_match_model"]
    assert "outcomes match the reference model" in done.stdout
    assert f"cqrsctl query accounts {report['tag']}-acc-" in done.stdout

    # Postgres reflects every accepted command: one event_log row per event, and each
    # account's balance and version as the model has them.
    tag = report["tag"]
    pg_conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
    rows = pg_conn.execute(
        "SELECT account_id, balance, version FROM accounts WHERE account_id LIKE %s",
        (f"{tag}-%",),
    ).fetchall()
    assert {a: b for a, b, _ in rows} == {f"{tag}-{k}": v for k, v in model.balances.items()}
    (logged,) = pg_conn.execute(
        "SELECT count(*) FROM event_log WHERE aggregate_id LIKE %s", (f"{tag}-%",)
    ).fetchone()
    assert logged == model.events
    versions = {a: v for a, _, v in rows}
    first = f"{tag}-{account_id(0)}"
    (events_of_first,) = pg_conn.execute(
        "SELECT count(*) FROM event_log WHERE aggregate_id = %s", (first,)
    ).fetchone()
    assert versions[first] == events_of_first

    # It stopped what it started.
    assert set(report["workers"]) == {"processor", "projector", "sink"}
    for role, pid in report["workers"].items():
        assert cmdline(pid) is None, f"the demo left its {role} (pid {pid}) running"


def test_a_worker_that_dies_is_one_line_and_its_log_tail(ctx_name: str):
    # Postgres refuses schema names starting with pg_: the sink exits at start-up.
    args = ["--accounts", "2", "--commands", "5", "--prefix", ctx_name, "--schema", "pg_x"]
    done = run_demo(args)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: sink: exited with code"), errors[0]
    assert "Traceback" not in done.stderr
    assert "pg_x" in done.stdout  # the sink's own last log lines say why


def test_demo_charts_are_png_images_of_the_run_and_its_prometheus_stops_with_it(
    ctx_name: str, pg_schema: str, tmp_path: Path, demo_state: Path
):
    import matplotlib.image

    folder = tmp_path / "charts"
    state = demo_state
    done = run_demo(
        [
            *("--accounts", "20", "--commands", "200", "--seed", "3"),
            *("--prefix", ctx_name, "--schema", pg_schema, "--charts", str(folder)),
            "--observability",
        ],
        env=own_state(state),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The demo's Prometheus ran, scraped every worker as up, and stopped with the workers.
    flat = " ".join(done.stdout.split())
    started = re.search(r"prometheus: http://127\.0\.0\.1:\d+ \(pid (\d+)\)", flat)
    assert started, done.stdout
    assert "scraping processor, projector, sink; all up" in flat
    assert cmdline(int(started.group(1))) is None, "the demo left its prometheus running"
    assert prometheus.recorded(state / "demo") is None
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["lag.png", "latency.png", "throughput.png"]
    for name in names:
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(folder / name)  # decodes: a whole, valid image
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0.01, f"{name} is blank"
    assert f"charts:{folder / 'throughput.png'}" in "".join(done.stdout.split())


def test_demo_on_the_local_stack_migrates_as_the_migration_role_and_runs_a_writer_sink(
    stack: StackState, ctx_name: str, pg_schema: str, pg_conn: psycopg.Connection[Any]
):
    """As `make demo` runs it: no connection variables, only the state folder (here the
    session's stack, which `demo` reuses). The migration role migrates, the sink runs as the
    schema's writer login with --no-migrate."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_BOOTSTRAP, ENV_PG_DSN)}
    assert env[ENV_STATE_DIR] == stack.state_dir
    sink_log = Path(stack.state_dir) / "demo" / "logs" / "sink.log"  # appended to by each run
    logged_before = sink_log.stat().st_size if sink_log.exists() else 0
    done = run_demo(
        [
            *("--accounts", "10", "--commands", "200", "--seed", "3"),
            *("--prefix", ctx_name, "--schema", pg_schema),
        ],
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcomes match the reference model" in done.stdout
    assert owners_of(pg_conn, pg_schema) == [postgres_roles.MIGRATOR]
    sink_role, _ = postgres_roles.login_names(pg_schema)
    assert member_of(pg_conn, sink_role) == [roles(pg_schema)[1]]
    with open(sink_log, "rb") as log:
        log.seek(logged_before)
        this_run = log.read().decode(errors="replace")
    assert this_run.strip(), "the sink wrote nothing to its log"
    assert "applied migration" not in this_run  # it ran with --no-migrate


def test_demo_observability_keeps_prometheus_scraping_its_workers_until_stop(
    ctx_name: str, pg_schema: str, demo_state: Path
):
    state = demo_state
    args = ["--accounts", "5", "--commands", "20", "--prefix", ctx_name, "--schema", pg_schema]
    done = run_demo([*args, "--observability", "--keep-running"], env=own_state(state))
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        prom = prometheus.recorded(state / "demo")
        assert prom is not None and prometheus.running(prom), done.stdout
        assert f"prometheus {prom.url}; stop them with" in " ".join(done.stdout.split())
        # Prometheus itself says each worker's target is up, under the role's job.
        seen = prometheus.wait_scraped(prom, {"processor", "projector", "sink"}, timeout=30)
        assert seen == {"processor": "1", "projector": "1", "sink": "1"}
        # ... and has scraped the processor after it decided the demo's 25 commands.
        decided = 'sum(cqrs_commands_total{job="processor",namespace="local"}) >= 25'
        deadline = time.monotonic() + 30
        while not prometheus.query(prom, decided) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prometheus.query(prom, decided), prometheus.query(prom, "cqrs_commands_total")
    finally:
        stopped = run_demo(["--stop"], env=own_state(state))
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the prometheus a previous demo left running" in stopped.stdout
    assert not is_our_process(prom.pid, prom.config)
    assert prometheus.recorded(state / "demo") is None


def test_demo_observability_without_prometheus_is_one_clear_error(ctx_name: str, demo_state: Path):
    env = {**own_state(demo_state), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "demo", "--observability", "--prefix", ctx_name],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: prometheus is not installed (Debian: apt-get install prometheus); "
        "--observability needs it"
    ]
    assert not (demo_state / "demo").exists()  # it stopped before starting anything
