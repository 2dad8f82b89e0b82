"""A steady command load, and a probe that samples the read model's checkpoints."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field

import psycopg

from producers.command_client import CommandClient, CommandResult, CommandTimeout, PendingCommand
from tests.support.write_side import movement


@dataclass
class Sent:
    at: float  # wall clock
    pending: PendingCommand


@dataclass
class SteadyLoad:
    """Deposits and withdrawals over `accounts` at `rate` commands/s until stopped."""

    client: CommandClient
    accounts: list[str]
    rate: float
    seed: int
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            account = rng.choice(self.accounts)
            if rng.random() < 0.6:
                type_, data = "bank.Deposit", movement(account, rng.randint(1, 10_000))
            else:
                type_, data = "bank.Withdraw", movement(account, rng.randint(1, 12_000))
            try:
                self.sent.append(Sent(time.time(), self.client.send(type_, data)))
            except Exception as exc:  # counted, never hidden: a send that raised was not sent
                self.errors.append(repr(exc))
            n += 1
            ahead = n / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def results(self, timeout: float) -> dict[str, CommandResult]:
        """Every result the client got within `timeout` (shared by all commands)."""
        deadline = time.monotonic() + timeout
        out = {}
        for s in self.sent:
            with contextlib.suppress(CommandTimeout):
                out[s.pending.command_id] = s.pending.result(max(0.01, deadline - time.monotonic()))
        return out


@dataclass
class CheckpointProbe:
    """Samples `cqrs_checkpoints` of one projection every `period` s: (wall time,
    {events partition: offset}). Samples fail (and are skipped) while Postgres is down."""

    dsn: str
    projection: str
    period: float = 0.25
    samples: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        while not self._stop.wait(self.period):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                rows = conn.execute(
                    "SELECT source_partition, source_offset FROM cqrs_checkpoints"
                    " WHERE projection = %s",
                    (self.projection,),
                ).fetchall()
                self.samples.append((time.time(), dict(rows)))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def caught_up_at(self, after: float, target: dict[int, int]) -> float | None:
        """The first sample at or after `after` whose checkpoints reach `target`."""
        for at, checkpoints in self.samples:
            if at >= after and all(checkpoints.get(p, -1) >= o for p, o in target.items()):
                return at
        return None
