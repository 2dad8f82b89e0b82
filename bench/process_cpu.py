"""CPU time of processes, read from /proc: one process (all its threads), or a process and
every descendant it has had, including those that exited during the measurement.

A process tree's CPU at one moment is the root's own user + system time, plus its
`cutime + cstime` (the CPU of children it has already reaped, and of their reaped
descendants), plus the same sum over every live child. Postgres' postmaster reaps each
backend when it exits, so the difference of two snapshots counts every backend that ran in
between, whether it lived through the whole interval, started after the first snapshot or
exited before the second, without sampling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


class ProcError(RuntimeError):
    """A process could not be read (gone, or not a process of this machine)."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this module uses; times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own_ticks(self) -> int:
        return self.utime + self.stime

    @property
    def reaped_children_ticks(self) -> int:
        return self.cutime + self.cstime


def parse_stat(line: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name (field 2) is in parentheses and may
    itself hold spaces and parentheses, so the fields are counted from its last `)`."""
    head, sep, rest = line.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError(f"not a /proc/<pid>/stat line: {line[:80]!r}")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    if len(fields) < 15:
        raise ValueError(f"a /proc/<pid>/stat line with {len(fields) + 2} fields, expected 17+")
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def read_stat(pid: int, proc: Path = PROC) -> ProcStat:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, ProcessLookupError) as gone:
        raise ProcError(f"process {pid} is not running") from gone


def _all_stats(proc: Path) -> Iterable[ProcStat]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield parse_stat((entry / "stat").read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue  # exited between the listing and the read


def tree_ticks(stats: Iterable[ProcStat], root: int) -> int:
    """The CPU ticks of `root` and its descendants among `stats` (one snapshot of /proc):
    own time and reaped children's time of each process in the tree."""
    children: dict[int, list[ProcStat]] = {}
    by_pid: dict[int, ProcStat] = {}
    for stat in stats:
        by_pid[stat.pid] = stat
        children.setdefault(stat.ppid, []).append(stat)
    if root not in by_pid:
        raise ProcError(f"process {root} is not running")
    total, todo = 0, [by_pid[root]]
    while todo:
        stat = todo.pop()
        total += stat.own_ticks + stat.reaped_children_ticks
        todo.extend(children.get(stat.pid, ()))
    return total


def cpu_seconds(pid: int | None = None, proc: Path = PROC) -> float:
    """User + system CPU time of one process and all its threads so far."""
    stat = read_stat(pid or os.getpid(), proc)
    return stat.own_ticks / ticks_per_second()


def tree_cpu_seconds(root: int, proc: Path = PROC, attempts: int = 5) -> float:
    """CPU seconds of `root` and every descendant it has had so far. A child that exits while
    /proc is being listed would be missed (no longer live, not yet in the root's reaped
    time): the root's reaped time is read before and after, and the snapshot retaken if it
    moved."""
    for _ in range(attempts):
        before = read_stat(root, proc).reaped_children_ticks
        stats = list(_all_stats(proc))
        after = read_stat(root, proc).reaped_children_ticks
        if before == after:
            return tree_ticks(stats, root) / ticks_per_second()
    return tree_ticks(stats, root) / ticks_per_second()


def per_command_us(cpu_s: float | None, commands: int) -> float | None:
    """CPU microseconds per command, or None when the CPU or the count is unknown."""
    if cpu_s is None or commands <= 0:
        return None
    return 1e6 * cpu_s / commands


def total_us(per_process_us: dict[str, float | None]) -> float | None:
    """The sum over processes, None if any process is unmeasured (a partial sum would
    overstate the reachable rate)."""
    values = list(per_process_us.values())
    if not values or any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def bound_cmds_per_s(total_cpu_us: float | None, cores: int | None = None) -> float | None:
    """The best end-to-end rate this machine could reach if every core were busy with this
    pipeline at these costs: cores / (CPU seconds per command)."""
    cores = cores or os.cpu_count() or 1
    if not total_cpu_us:
        return None
    return cores * 1e6 / total_cpu_us
