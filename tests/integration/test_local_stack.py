"""`cqrsctl up|status|down` on a stack of its own, beside (never touching) the session stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local import binaries, kafka, postgres
from deploy.local import stack as local_stack
from deploy.local.errors import StackError
from deploy.local.processes import find_processes
from deploy.local.state import ENV_STATE_DIR, StackState, read_state
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN

CQRSCTL = str(Path(sys.executable).with_name("cqrsctl"))


def cqrsctl(state_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, ENV_STATE_DIR: str(state_dir), "COLUMNS": "200", **env}
    return subprocess.run(
        [CQRSCTL, *args], capture_output=True, text=True, timeout=300, env=environment
    )


def brokers_in(state_dir: Path) -> list[int]:
    return find_processes(str(state_dir), "kafka.Kafka")


def postmasters_in(state_dir: Path) -> list[int]:
    # Only the postmaster's command line names the data folder; its backends do not.
    return find_processes(str(state_dir), "bin/postgres")


@pytest.fixture
def own_state_dir():
    # Not under pytest's tmp_path: that is 0700 root-only and the `postgres` user must get in.
    folder = Path(tempfile.mkdtemp(prefix="cqrs-test-stack-"))
    yield folder
    local_stack.down(folder)  # whatever the test left running
    shutil.rmtree(folder, ignore_errors=True)


def test_up_twice_runs_one_of_each_status_reports_healthy_down_stops_them(
    own_state_dir: Path, stack: StackState
) -> None:
    first = cqrsctl(own_state_dir, "up")
    assert first.returncode == 0, first.stderr
    state = read_state(own_state_dir)
    assert state is not None and state.kafka_pid and state.postgres_pid

    second = cqrsctl(own_state_dir, "up")
    assert second.returncode == 0, second.stderr
    again = read_state(own_state_dir)
    assert again is not None
    assert (again.kafka_pid, again.postgres_pid) == (state.kafka_pid, state.postgres_pid)
    assert brokers_in(own_state_dir) == [state.kafka_pid]
    assert postmasters_in(own_state_dir) == [state.postgres_pid]

    status = cqrsctl(own_state_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 2 and "unhealthy" not in status.stdout
    assert state.bootstrap_servers in status.stdout
    assert f"127.0.0.1:{state.postgres_port}" in status.stdout

    down = cqrsctl(own_state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert brokers_in(own_state_dir) == []
    assert postmasters_in(own_state_dir) == []
    assert read_state(own_state_dir) is None
    assert not Path(state.kafka_dir).exists() and not Path(state.postgres_dir).exists()

    # The session stack is a different state folder: `down` must not have touched it.
    assert kafka.is_running(stack) and kafka.healthy(stack.bootstrap_servers)
    assert postgres.is_running(stack) and postgres.healthy(stack.postgres_dsn)


def test_restarting_one_part_keeps_its_data_and_port(own_state_dir: Path) -> None:
    state = local_stack.up(own_state_dir, started_by="test")
    admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
    admin.create_topics([NewTopic("kept.events", 2, 1)])["kept.events"].result(30)
    with psycopg.connect(state.postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    assert local_stack.stop_kafka(own_state_dir, kill=True)
    assert brokers_in(own_state_dir) == []
    assert local_stack.stop_postgres(own_state_dir)
    assert postmasters_in(own_state_dir) == []
    restarted = local_stack.start_postgres(own_state_dir)
    restarted = local_stack.start_kafka(own_state_dir)

    assert restarted.kafka_pid != state.kafka_pid
    assert restarted.postgres_pid != state.postgres_pid
    assert restarted.bootstrap_servers == state.bootstrap_servers
    assert restarted.postgres_dsn == state.postgres_dsn
    topics = AdminClient({"bootstrap.servers": state.bootstrap_servers}).list_topics(timeout=30)
    assert len(topics.topics["kept.events"].partitions) == 2
    with psycopg.connect(state.postgres_dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_status_without_a_stack_says_so(tmp_path: Path) -> None:
    done = cqrsctl(tmp_path / "nothing-here", "status")
    assert done.returncode == 1
    assert "no local stack recorded" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_java_is_one_clear_error_naming_the_package(own_state_dir: Path) -> None:
    done = cqrsctl(own_state_dir, "up", CQRS_JAVA="/nonexistent/bin/java")

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: java not found at CQRS_JAVA=/nonexistent/bin/java")
    assert binaries.JAVA_PACKAGE in lines[0]
    assert brokers_in(own_state_dir) == []


def test_broker_dying_at_start_reports_its_log(own_state_dir: Path) -> None:
    # A heap too small for the JVM: Kafka exits at once, and `up` must say so, with the log.
    done = cqrsctl(own_state_dir, "up", CQRS_KAFKA_HEAP_OPTS="-Xmx1m")

    assert done.returncode == 1
    assert done.stderr.startswith("error: Kafka exited during start-up")
    assert "heap" in done.stderr.lower()
    assert "Traceback" not in done.stderr
    assert brokers_in(own_state_dir) == []


def test_require_binary_names_the_debian_package() -> None:
    with pytest.raises(
        StackError, match=r"install the Debian package maven \(apt-get install maven\)"
    ):
        binaries.require_binary("no-such-program-cqrs", "maven")


def test_missing_postgres_programs_name_postgresql_15(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(binaries.ENV_PG_BIN, "/nonexistent/pg/bin")
    with pytest.raises(StackError, match="postgresql-15") as error:
        binaries.postgres_bin("initdb")
    assert "/nonexistent/pg/bin/initdb" in str(error.value)


def test_session_stack_is_exported_to_subprocesses(stack: StackState) -> None:
    assert os.environ[ENV_BOOTSTRAP] == stack.bootstrap_servers
    assert os.environ[ENV_PG_DSN] == stack.postgres_dsn
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from processors.settings import load_settings as l; "
            "s = l(); print(s.kafka.bootstrap_servers)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == stack.bootstrap_servers, done.stderr
