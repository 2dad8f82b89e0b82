"""Drives a workload through the command client and records what happened to each command:
when it was sent, when its result arrived, accepted or rejected (and why), and where its
event landed. Shared by `cqrsctl demo` and the benchmark (bench/bench_pipeline.py).

Times are `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the machine),
so they compare with the checkpoint times other processes record.

Three ways to send: flat out (everything queued at once), a closed loop with at most
`window` commands awaiting their result (many clients at once, the full-load runs), or
paced at `rate` commands/s (command i is not sent before i / rate seconds after the first;
it never waits when behind).
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.command_client import CommandClient, CommandResult, PendingCommand

Command = tuple[str, dict[str, Any]]
Progress = Callable[[int, int], None]  # (sent, resolved)

NOT_YET = 0
ACCEPTED = 1
REJECTED = 2
PERCENTILES = (50, 95, 99)


class DriveError(RuntimeError):
    """The workload could not be driven to the end (no result in time, ...)."""


@dataclass
class Drive:
    """Per-command records of one run, indexed by the command's position in the workload.
    Sized for `total` commands; arrays keep 100,000s of them compact."""

    total: int
    sent_at: array[float] = field(init=False)
    result_at: array[float] = field(init=False)
    outcome: bytearray = field(init=False)  # NOT_YET, ACCEPTED or REJECTED
    # Position of the command's last event on `<ctx>.events` (-1: none).
    event_partition: array[int] = field(init=False)
    event_offset: array[int] = field(init=False)
    rejections: Counter[str] = field(default_factory=Counter)  # by reason
    events: int = 0
    sent: int = 0
    resolved: int = 0

    def __post_init__(self) -> None:
        self.sent_at = array("d", bytes(8 * self.total))
        self.result_at = array("d", bytes(8 * self.total))
        self.outcome = bytearray(self.total)
        self.event_partition = array("i", [-1]) * self.total
        self.event_offset = array("q", [-1]) * self.total

    @property
    def accepted(self) -> int:
        return self.outcome.count(ACCEPTED)

    @property
    def rejected(self) -> int:
        return self.outcome.count(REJECTED)

    def record(self, index: int, result: CommandResult, at: float) -> None:
        self.result_at[index] = at
        if result.accepted:
            self.outcome[index] = ACCEPTED
        else:
            self.outcome[index] = REJECTED
            self.rejections[result.reason] += 1
        if result.events:
            last = result.events[-1]
            self.event_partition[index] = last.partition
            self.event_offset[index] = last.offset
            self.events += len(result.events)

    def last_event_offsets(self) -> dict[int, int]:
        """The highest event offset per partition among the results: once a projection's
        checkpoints pass these, it reflects every accepted command."""
        ends: dict[int, int] = {}
        for partition, offset in zip(self.event_partition, self.event_offset, strict=True):
            if partition >= 0 and offset > ends.get(partition, -1):
                ends[partition] = offset
        return ends

    def result_latencies(self) -> list[float]:
        """Seconds from send to result, per resolved command."""
        return [
            r - s
            for s, r, o in zip(self.sent_at, self.result_at, self.outcome, strict=True)
            if o != NOT_YET
        ]

    @property
    def first_sent(self) -> float:
        return self.sent_at[0]

    @property
    def last_result(self) -> float:
        return max(self.result_at)


class Driver:
    """Sends commands with one CommandClient; results are recorded as they arrive (on the
    client's listener thread), so sending never waits for them unless a window is set."""

    def __init__(self, client: CommandClient, total: int) -> None:
        self.client = client
        self.drive = Drive(total)
        self._resolved = threading.Condition()

    def _on_result(self, index: int) -> Callable[[CommandResult], None]:
        drive, resolved = self.drive, self._resolved

        def done(result: CommandResult) -> None:
            at = time.monotonic()
            with resolved:
                drive.record(index, result, at)
                drive.resolved += 1
                resolved.notify_all()

        return done

    def send_all(
        self,
        commands: Iterable[Command],
        *,
        rate: float | None = None,
        window: int | None = None,
        progress: Progress | None = None,
        check: Callable[[], None] | None = None,
        timeout: float = 120.0,
    ) -> Drive:
        """Send every command, then wait for every result. `check` is called about twice a
        second (e.g. to raise when a worker has died); `progress(sent, resolved)` too."""
        drive = self.drive
        send = self.client.send
        started = time.monotonic()
        last_tick = started
        for index, (kind, data) in enumerate(commands):
            if index >= drive.total:
                raise DriveError(f"the workload has more than the {drive.total} commands expected")
            if rate is not None:
                ahead = started + index / rate - time.monotonic()
                if ahead > 0.001:  # sleeping for less costs more than it paces
                    time.sleep(ahead)
            if window is not None and index - drive.resolved >= window:
                self._wait_until(index - window + 1, timeout, check, progress)
            at = time.monotonic()
            pending = send(kind, data)
            drive.sent_at[index] = at
            drive.sent = index + 1
            on_result(pending, self._on_result(index))
            if at - last_tick > 0.5:
                last_tick = at
                if check is not None:
                    check()
                if progress is not None:
                    progress(drive.sent, drive.resolved)
        self.client.flush(timeout)
        self._wait_until(drive.sent, timeout, check, progress)
        return drive

    def _wait_until(
        self,
        resolved: int,
        timeout: float,
        check: Callable[[], None] | None,
        progress: Progress | None,
    ) -> None:
        """Until `resolved` results have arrived; the timeout restarts whenever one does."""
        drive = self.drive
        deadline = time.monotonic() + timeout
        seen = drive.resolved
        while True:
            with self._resolved:
                if drive.resolved >= resolved:
                    return
                self._resolved.wait(0.5)
                now_resolved = drive.resolved
            if progress is not None:
                progress(drive.sent, now_resolved)
            if check is not None:
                check()
            if now_resolved != seen:
                seen, deadline = now_resolved, time.monotonic() + timeout
            elif time.monotonic() > deadline:
                raise DriveError(
                    f"no result for {timeout:g} s with {drive.sent - now_resolved} commands "
                    "awaiting theirs; is the command processor running?"
                )


def on_result(pending: PendingCommand, callback: Callable[[CommandResult], None]) -> None:
    """Call `callback(result)` when the command's result arrives."""
    pending.add_done_callback(callback)


def percentiles(values: Sequence[float], points: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """Linear-interpolated percentiles, keyed "p50" etc."""
    if not values:
        raise ValueError("percentiles of an empty sample are undefined")
    ordered = sorted(values)
    last = len(ordered) - 1
    found: dict[str, float] = {}
    for point in points:
        if not 0 <= point <= 100:
            raise ValueError(f"percentile must be within 0..100, got {point}")
        rank = point / 100 * last
        low = math.floor(rank)
        high = min(low + 1, last)
        found[f"p{point}"] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return found
