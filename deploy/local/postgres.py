"""A throwaway PostgreSQL 15 cluster: `initdb` in the state folder, `pg_ctl` on a free port.

Postgres refuses to run as root, so as root every server program runs as the `postgres`
user (`runuser -u postgres`) and the cluster's folders belong to that user. Durability
settings stay at their defaults (fsync and synchronous_commit on): tests of the sink's
guarantees must see the same crash behaviour as production.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy.local import binaries
from deploy.local.errors import StackError
from deploy.local.processes import is_our_process, kill_process, stop_process, tail, wait_port_free
from deploy.local.state import StackState

START_TIMEOUT = 60.0
SERVER_USER = "postgres"


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise StackError("runuser not found: install the Debian package util-linux")
    return [runuser, "-u", SERVER_USER, "--", *cmd]


def _owned_by_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise StackError(
            f"no `{SERVER_USER}` user to run Postgres as: install the Debian package "
            f"{binaries.POSTGRES_PACKAGE} (it creates the user)"
        ) from exc
    os.chown(path, user.pw_uid, user.pw_gid)


def _check_reachable(folder: Path) -> None:
    """As root, fail clearly when the `postgres` user cannot walk down to `folder`."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(SERVER_USER)
    for part in [folder, *folder.parents]:
        if not part.exists():
            continue
        info = part.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == user.pw_gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            raise StackError(
                f"the `{SERVER_USER}` user cannot enter {part}, so Postgres cannot use "
                f"{folder}: pick a state folder outside it (CQRS_STATE_DIR)"
            )


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(
        _as_server_user(cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/"
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise StackError(f"{what} failed (exit {done.returncode}):\n{output}")


def prepare(state: StackState) -> None:
    """Create the cluster once per state folder (a no-op when it exists)."""
    pg_dir = Path(state.postgres_dir)
    data = Path(state.postgres_data_dir)
    if (data / "PG_VERSION").exists():
        return
    for folder in (pg_dir, Path(state.postgres_socket_dir)):
        folder.mkdir(parents=True, exist_ok=True)
        _owned_by_server_user(folder)
    _check_reachable(pg_dir)
    if data.exists():
        shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
    _run(
        [
            str(binaries.postgres_bin("initdb")),
            "--pgdata",
            str(data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
        ],
        "initdb",
    )
    # Loopback TCP on our own port and a socket folder of our own, so a Debian
    # `main` cluster (or a second local stack) on the same machine never collides.
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# kafka-cqrs local stack\n"
            f"port = {state.postgres_port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{state.postgres_socket_dir}'\n"
            "max_connections = 200\n"
        )


def start(state: StackState, timeout: float = START_TIMEOUT) -> int:
    """Start the cluster on its recorded port; return the postmaster PID once it accepts logins."""
    prepare(state)
    if not wait_port_free(state.postgres_port, 15.0):
        raise StackError(
            f"cannot start Postgres: port {state.postgres_port} on 127.0.0.1 is taken by "
            f"another program (run `cqrsctl down` to start afresh on new ports)"
        )
    _remove_stale_lock(state)
    try:
        _run(
            [
                str(binaries.postgres_bin("pg_ctl")),
                "--pgdata",
                state.postgres_data_dir,
                "--log",
                state.postgres_log,
                "--wait",
                "--timeout",
                str(int(timeout)),
                "start",
            ],
            "pg_ctl start",
        )
    except StackError as exc:
        log = tail(state.postgres_log)
        raise StackError(f"{exc}\nlast lines of {state.postgres_log}:\n{log}") from None
    pid = postmaster_pid(state)
    if pid is None:
        raise StackError(f"Postgres wrote no postmaster.pid in {state.postgres_data_dir}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(state.postgres_dsn, timeout=2.0):
            return pid
        time.sleep(0.2)
    raise StackError(
        f"Postgres did not accept connections on port {state.postgres_port} within "
        f"{timeout:.0f} s; last lines of its log:\n{tail(state.postgres_log)}"
    )


def _remove_stale_lock(state: StackState) -> None:
    """Delete the lock files of a killed server whose process is gone or a zombie.

    Postgres itself only checks `kill(pid, 0)`, which succeeds on a zombie; where PID 1
    does not reap orphans (some sandboxes), a killed postmaster stays a zombie forever
    and would block every restart.
    """
    pid = postmaster_pid(state)
    if pid is None or is_our_process(pid, state.postgres_data_dir):
        return
    socket_lock = Path(state.postgres_socket_dir) / f".s.PGSQL.{state.postgres_port}.lock"
    for lock in (socket_lock, Path(state.postgres_data_dir) / "postmaster.pid"):
        lock.unlink(missing_ok=True)


def postmaster_pid(state: StackState) -> int | None:
    try:
        first = (Path(state.postgres_data_dir) / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.strip().isdigit() else None


def healthy(dsn: str, timeout: float = 3.0) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def is_running(state: StackState) -> bool:
    return is_our_process(state.postgres_pid, state.postgres_data_dir)


def stop(state: StackState, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Fast shutdown (SIGINT: roll back sessions, checkpoint), SIGKILL after `timeout`.

    `kill=True` is a crash: the postmaster and its backends die at once and the next start
    runs crash recovery from the WAL.
    """
    marker = state.postgres_data_dir
    pid = state.postgres_pid
    if not is_our_process(pid, marker):
        # An interrupted `up` may have started a postmaster it never recorded.
        pid = postmaster_pid(state)
    if kill:
        return kill_process(pid, marker)
    return stop_process(pid, marker, sig=signal.SIGINT, timeout=timeout)
