"""Bring the local stack (one Kafka broker, one Postgres cluster) up, report on it, take it down.

The API other code uses:

    state = up(state_dir)           # idempotent: reuses what already runs and is healthy
    status(state_dir)               # ComponentStatus for each part
    down(state_dir)                 # stops what `up` started (by recorded PID) and deletes the data

and, for fault-injection tests that restart one part while keeping its data and ports:

    stop_kafka(state_dir, kill=True); start_kafka(state_dir)
    stop_postgres(state_dir);         start_postgres(state_dir)

Every function takes the state folder (default: $CQRS_STATE_DIR or /var/tmp/kafka-cqrs) and
holds a lock on it, so two commands on one stack never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.local import kafka, kafka_jars, postgres
from deploy.local.errors import StackError
from deploy.local.processes import free_port
from deploy.local.state import StackState, read_state, remove_state, state_dir, write_state

StateDir = str | os.PathLike[str] | None


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # The `postgres` user must be able to walk into the state folder (mkdtemp makes 0700).
        directory.chmod(directory.stat().st_mode | 0o055)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _new_state(directory: Path, started_by: str) -> StackState:
    directory = directory.resolve()
    kafka_dir = directory / "kafka"
    pg_dir = directory / "postgres"
    ports = set()
    while len(ports) < 4:
        ports.add(free_port())
    kafka_port, controller_port, pg_port, jmx_port = sorted(ports)
    return StackState(
        state_dir=str(directory),
        started_by=started_by,
        kafka_version=kafka_jars.kafka_version(),
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        kafka_cluster_id=kafka.new_cluster_id(),
        kafka_dir=str(kafka_dir),
        kafka_log=str(kafka_dir / "logs" / "server.log"),
        postgres_port=pg_port,
        postgres_dir=str(pg_dir),
        postgres_data_dir=str(pg_dir / "data"),
        postgres_socket_dir=str(pg_dir / "run"),
        postgres_log=str(pg_dir / "postgres.log"),
        kafka_jmx_port=jmx_port,
    )


def _load_or_create(directory: Path, started_by: str) -> StackState:
    state = read_state(directory)
    if state is None:
        state = _new_state(directory, started_by)
        write_state(state)
    return state


def _ensure_kafka(state: StackState) -> None:
    if kafka.is_running(state):
        if kafka.healthy(state.bootstrap_servers, timeout=30.0):
            return
        raise StackError(
            f"Kafka (pid {state.kafka_pid}) runs but does not answer on "
            f"{state.bootstrap_servers}; see {state.kafka_log} or run `cqrsctl down`"
        )

    def record(pid: int | None) -> None:
        state.kafka_pid = pid
        write_state(state)

    try:
        kafka.start(state, on_spawn=record)
    except StackError:
        record(None)  # start() has stopped the failed broker itself
        raise


def _ensure_postgres(state: StackState) -> None:
    if postgres.is_running(state):
        if postgres.healthy(state.postgres_dsn, timeout=10.0):
            return
        raise StackError(
            f"Postgres (pid {state.postgres_pid}) runs but refuses connections on port "
            f"{state.postgres_port}; see {state.postgres_log} or run `cqrsctl down`"
        )
    state.postgres_pid = postgres.start(state)
    write_state(state)


def up(directory: StateDir = None, *, started_by: str = "cqrsctl up") -> StackState:
    """Start (or reuse) the broker and the database; the returned state is also on disk."""
    folder = state_dir(directory)
    with _locked(folder):
        state = _load_or_create(folder, started_by)
        _ensure_kafka(state)
        _ensure_postgres(state)
        return state


def start_kafka(directory: StateDir = None) -> StackState:
    folder = state_dir(directory)
    with _locked(folder):
        state = _load_or_create(folder, "start_kafka")
        _ensure_kafka(state)
        return state


def start_postgres(directory: StateDir = None) -> StackState:
    folder = state_dir(directory)
    with _locked(folder):
        state = _load_or_create(folder, "start_postgres")
        _ensure_postgres(state)
        return state


def _require_state(folder: Path) -> StackState:
    state = read_state(folder)
    if state is None:
        raise StackError(f"no local stack recorded in {folder} (run `cqrsctl up` first)")
    return state


def stop_kafka(directory: StateDir = None, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop only the broker, keeping its data and ports for `start_kafka`. False if not running."""
    folder = state_dir(directory)
    with _locked(folder):
        state = _require_state(folder)
        stopped = kafka.stop(state, kill=kill, timeout=timeout)
        state.kafka_pid = None
        write_state(state)
        return stopped


def stop_postgres(directory: StateDir = None, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop only Postgres, keeping its data and port for `start_postgres`. False if not running."""
    folder = state_dir(directory)
    with _locked(folder):
        state = _require_state(folder)
        stopped = postgres.stop(state, kill=kill, timeout=timeout)
        state.postgres_pid = None
        write_state(state)
        return stopped


def down(directory: StateDir = None, *, keep_data: bool = False, timeout: float = 30.0) -> bool:
    """Stop what `up` started and, unless `keep_data`, delete the data: the stack is throwaway.

    Only the PIDs in the state file are signalled, and only while their command line still
    names this state folder's config, so a reused PID is never hit. Returns False when no
    stack was recorded there.
    """
    folder = state_dir(directory)
    if not folder.exists():
        return False
    with _locked(folder):
        state = read_state(folder)
        if state is None:
            return False
        kafka.stop(state, timeout=timeout)
        postgres.stop(state, timeout=timeout)
        state.kafka_pid = state.postgres_pid = None
        if keep_data:
            write_state(state)
            return True
        for path in (state.kafka_dir, state.postgres_dir):
            shutil.rmtree(path, ignore_errors=True)
        remove_state(folder)
    return True


def status(directory: StateDir = None) -> list[ComponentStatus] | None:
    """The recorded stack's parts and their health, or None when nothing was started."""
    state = read_state(state_dir(directory))
    if state is None:
        return None
    kafka_up = kafka.is_running(state)
    pg_up = postgres.is_running(state)
    return [
        ComponentStatus(
            name=f"kafka {state.kafka_version}",
            address=state.bootstrap_servers,
            pid=state.kafka_pid,
            running=kafka_up,
            healthy=kafka_up and kafka.healthy(state.bootstrap_servers),
        ),
        ComponentStatus(
            name="postgres 15",
            address=state.postgres_dsn,
            pid=state.postgres_pid,
            running=pg_up,
            healthy=pg_up and postgres.healthy(state.postgres_dsn),
        ),
    ]
