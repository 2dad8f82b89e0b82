"""No secret printed by `cqrsctl status` and `cqrsctl smoke` against the real local stack,
whatever secrets the environment holds. (The processor's log is checked with a real SASL
password in test_security_kafka.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.local.state import StackState
from deploy.settings import ENV_PG_DSN, ENV_SASL_PASSWORD

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
