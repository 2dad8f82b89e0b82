"""No secret printed by `cqrsctl status` and `cqrsctl smoke` against the real local stack,
whatever secrets the environment holds. (The processor's log is checked with a real SASL
password in test_security_kafka.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.local.state import StackState
from processors.settings import ENV_PG_DSN, ENV_SASL_PASSWORD

SECRET = "pg-s3cr3t-Zq9"


def cqrsctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_status_shows_where_things_are_and_no_secret(stack: StackState):
    done = cqrsctl(
        "status", env={ENV_PG_DSN: f"postgresql://x:{SECRET}@h/db", ENV_SASL_PASSWORD: SECRET}
    )
    assert done.returncode == 0, done.stderr
    assert stack.bootstrap_servers in done.stdout
    assert f"127.0.0.1:{stack.postgres_port}/postgres" in done.stdout
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "form",
    [
        "postgresql://postgres:{secret}@127.0.0.1:{port}/postgres",
        "postgresql://postgres@127.0.0.1:{port}/postgres?password={secret}",
        "host=127.0.0.1 port={port} user=postgres dbname=postgres password='{secret} x'",
    ],
)
def test_smoke_masks_a_dsn_password_from_the_environment(stack: StackState, form: str):
    # The local cluster trusts loopback, so any password connects: the check is on output.
    dsn = form.format(secret=SECRET, port=stack.postgres_port)
    done = cqrsctl("smoke", env={ENV_PG_DSN: dsn})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke: OK" in done.stdout
    assert "***" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_json_logs_of_every_role_are_json_lines_and_carry_no_secret(
    stack: StackState, ctx_name: str, pg_schema: str, tmp_path, monkeypatch
):
    """The processor, projector, sink and gateway with `--log-format json` and secrets in
    their environment (a DSN password the loopback cluster ignores, a SASL password, a
    bearer token on a request): each log line is one JSON object naming its context and
    role, and no line holds a secret."""
    import json

    import httpx
    from psycopg.conninfo import make_conninfo

    from deploy.local.pipeline import Pipeline, PipelineSpec, WorkerProcess
    from deploy.local.processes import free_port
    from producers.command_client import CommandClient

    dsn = make_conninfo(stack.postgres_dsn, password=SECRET)
    monkeypatch.setenv(ENV_PG_DSN, dsn)
    monkeypatch.setenv(ENV_SASL_PASSWORD, SECRET)
    spec = PipelineSpec(
        log_dir=tmp_path / "logs",
        data_dir=tmp_path / "data",
        prefix=ctx_name,
        schema=pg_schema,
        log_format="json",
        env={ENV_PG_DSN: dsn, ENV_SASL_PASSWORD: SECRET},
    )
    port = free_port()
    gateway = WorkerProcess(
        "gateway",
        [
            *("--prefix", ctx_name, "--schema", pg_schema, "--port", str(port)),
            *("--auth", "none", "--log-format", "json"),
        ],
        tmp_path / "logs" / "gateway.log",
    )
    from deploy.local.pipeline import create_context_topics

    create_context_topics({"bootstrap.servers": stack.bootstrap_servers}, "bank", ctx_name)
    with Pipeline(spec) as pipeline:
        pipeline.start()
        pipeline.wait_ready(120)
        gateway.start().wait_ready(60)
        try:
            kafka = {"bootstrap.servers": stack.bootstrap_servers}
            with CommandClient(kafka, "bank", topic_prefix=ctx_name) as client:
                opened = client.send(
                    "bank.OpenAccount", {"account_id": "j-1", "owner": "Jo", "currency": "EUR"}
                ).result(60)
            assert opened.accepted
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                got = http.get(
                    f"/aggregates/bank.Account/j-1?token={SECRET}",
                    headers={"Authorization": f"Bearer {SECRET}"},
                )
                assert got.status_code in (200, 400, 404), got.text
        finally:
            gateway.stop()
        logs = {role: w.log_path for role, w in pipeline.workers.items()}
    logs["gateway"] = gateway.log_path
    for role, path in logs.items():
        text = path.read_text(errors="replace")
        assert SECRET not in text, role
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        worker_lines = [e for e in entries if "role" in e]
        assert worker_lines, f"{role}: no JSON log line:\n{text[-2000:]}"
        for entry in worker_lines:
            assert entry["role"] == role and entry["context"] == "bank", entry
            assert {"time", "level", "logger", "message"} <= set(entry), entry
        others = [
            line
            for line in text.splitlines()
            if line.strip() and not line.startswith("{") and not line.startswith("%")
        ]
        assert not others, f"{role}: lines that are not JSON: {others[:5]}"
    access = [json.loads(x) for x in logs["gateway"].read_text().splitlines() if '"status"' in x]
    assert any(e.get("path") == "/aggregates/bank.Account/j-1" for e in access), access
