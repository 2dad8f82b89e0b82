"""Our own server processes: are they alive, are they still ours, and stopping them politely.

A PID alone is not proof: after a crash the kernel may hand the same number to another
program. So every check also matches the process's command line against a marker (the
config file or data folder path) that only our process carries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments, or None when there is no such live process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # A zombie has exited already; its parent has not collected it yet.
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        _reap(pid)
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def is_our_process(pid: int | None, marker: str) -> bool:
    """True when `pid` is alive and its command line contains `marker`."""
    if not pid:
        return False
    args = cmdline(pid)
    return args is not None and any(marker in arg for arg in args)


def find_processes(marker: str, program: str) -> list[int]:
    """PIDs of live processes whose arguments contain both `program` and `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        if args and any(program in a for a in args) and any(marker in a for a in args):
            found.append(int(entry.name))
    return sorted(found)


def _reap(pid: int) -> None:
    # Only succeeds for our own children (the pytest session starts the broker directly).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _exists(pid: int) -> bool:
    """True until the process has fully exited (all threads gone, files and sockets closed).

    A multi-threaded program (the JVM) shows its main thread as a zombie while the other
    threads are still tearing down; its listening sockets close only when the last one ends.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state not in ("Z", "X"):
            return True
        if len(os.listdir(f"/proc/{pid}/task")) > 1:
            return True
    except (FileNotFoundError, ProcessLookupError):
        return False
    _reap(pid)
    return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _exists(pid):
            return True
        time.sleep(0.05)
    return not _exists(pid)


def wait_port_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop_process(
    pid: int | None, marker: str, *, sig: int = signal.SIGTERM, timeout: float = 30.0
) -> bool:
    """Send `sig`, wait up to `timeout`, then SIGKILL the process group.

    Returns False when there was nothing of ours to stop. The servers are started as
    session leaders, so killing the group also takes their helper processes.
    """
    if not is_our_process(pid, marker):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_gone(pid, timeout):
        return True
    kill_process(pid, marker)
    return True


def kill_process(pid: int | None, marker: str) -> bool:
    """SIGKILL, like a power cut: no shutdown hooks run. For restarts in fault tests too."""
    if not is_our_process(pid, marker):
        return False
    assert pid is not None
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ProcessLookupError):
        if pgid == pid:
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10.0)
    return True


def tail(path: str | os.PathLike[str], lines: int = 30) -> str:
    """The last lines of a log file, for error messages; empty when it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
