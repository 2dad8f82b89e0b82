"""`cqrsctl new context` writes a context that installs with pip, passes its own test, and
runs through the real pipeline (processor, projector, sink) to Postgres.

The new package is installed into this venv for the test and uninstalled after it. This
process has loaded the registry and the catalog already, so everything that must see the
new context runs in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg import sql

from deploy.local.pipeline import WorkerProcess
from sinks.db import connect


def cqrsctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, timeout=300)


def test_a_new_context_installs_passes_its_test_and_runs_to_postgres(
    tmp_path: Path, ctx_name: str, pg_schema: str, pg_dsn_for_schema: str
) -> None:
    name = f"nc{uuid.uuid4().hex[:6]}"
    made = cqrsctl("new", "context", name, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    root = tmp_path / name
    pip("install", "--no-deps", "-e", str(root))
    workers: list[WorkerProcess] = []
    try:
        tested = subprocess.run(
            [sys.executable, "-m", "pytest", str(root / "tests"), "-q", "-p", "no:cacheprovider"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
        assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout
        created = cqrsctl("topics", "create", "--context", name, "--prefix", ctx_name)
        assert created.returncode == 0, created.stderr
        common = ["--context", name, "--prefix", ctx_name]
        for role, extra in (
            ("processor", ["--instance-id", "n0"]),
            ("projector", ["--data-dir", str(tmp_path / "projector"), "--batch-wait", "0.01"]),
            ("sink", ["--schema", pg_schema, "--batch-wait", "0.01"]),
        ):
            workers.append(WorkerProcess(role, [*common, *extra], tmp_path / f"{role}.log").start())
        for worker in workers:
            worker.wait_ready(90)
        for by in (5, 2):
            body = json.dumps({"counter_id": "c1", "by": by})
            sent = cqrsctl(
                "send", f"{name}.Increment", "--json", body, "--prefix", ctx_name, "--wait"
            )
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["status"] == "ACCEPTED"
        rejected = cqrsctl(
            "send", f"{name}.Increment", "--json", '{"counter_id": "c1", "by": 0}',
            "--prefix", ctx_name, "--wait",
        )  # fmt: skip
        assert rejected.returncode == 1 and "invalid_amount" in rejected.stdout
        table = sql.Identifier(f"{name}_counters")
        query = sql.SQL("SELECT counter_id, total, version FROM {}").format(table)
        deadline = time.monotonic() + 60
        rows: list[Any] = []
        while rows != [("c1", 7, 2)]:
            assert time.monotonic() < deadline, f"read model not reached: {rows}"
            time.sleep(0.3)
            with connect(pg_dsn_for_schema, pg_schema) as conn:
                rows = conn.execute(query).fetchall()
    finally:
        for worker in workers:
            worker.stop()
        pip("uninstall", "-y", f"kafka-cqrs-{name}")
