"""What the command client hands back: the command sent (`PendingCommand`), the processor's
verdict (`CommandResult`), and why a command was not sent or not answered."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("producers.command_client")


class InvalidCommand(ValueError):
    """The command was not sent: its type is unknown or it does not match its schema."""


class CommandTimeout(TimeoutError):
    pass


class CommandNotDelivered(RuntimeError):
    """Kafka did not take the command (e.g. it timed out in the producer's queue while no
    broker was reachable, or the producer failed fatally): it will get no result. Sending
    it again is safe: a command id that was processed already is answered with its first
    result. `code` is the librdkafka error code of the delivery report, when there was one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class EventPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    command_id: str
    command_type: str
    aggregate_id: str
    status: str  # ACCEPTED | REJECTED | CONFLICT
    reason: str
    detail: str
    version: int
    events: tuple[EventPosition, ...]
    processed_at: datetime

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPTED"

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CommandResult:
        processed = r["processed_at"]
        if isinstance(processed, int):
            processed = datetime.fromtimestamp(processed / 1000, UTC)
        return cls(
            command_id=r["command_id"],
            command_type=r["command_type"],
            aggregate_id=r["aggregate_id"],
            status=r["status"],
            reason=r["reason"],
            detail=r["detail"],
            version=r["version"],
            events=tuple(
                EventPosition(e["topic"], e["partition"], e["offset"]) for e in r["events"]
            ),
            processed_at=processed,
        )


class PendingCommand:
    """A sent command; `result()` waits for the processor's verdict, and when the command
    was sent with `wait_for`, also until that projection shows the command's effect."""

    def __init__(
        self,
        command_id: str,
        aggregate_id: str,
        future: Future[CommandResult] | None,
        read_your_writes: Callable[[CommandResult, float], None] | None = None,
        delivered: Future[None] | None = None,
    ):
        self.command_id = command_id
        self.aggregate_id = aggregate_id
        self._future = future
        self._read_your_writes = read_your_writes
        self._delivered = delivered

    def delivery(self, timeout: float = 30.0) -> None:
        """Return once the broker has acknowledged the command (its delivery report);
        CommandNotDelivered if Kafka did not take it, CommandTimeout if no report came in
        time. The caller must serve delivery reports meanwhile (`CommandClient.flush`)."""
        if self._delivered is None:
            raise RuntimeError("this command has no delivery report to wait for")
        try:
            self._delivered.result(timeout)
        except FutureTimeout:
            raise CommandTimeout(
                f"no delivery report for command {self.command_id} within {timeout:g}s"
            ) from None

    def add_delivery_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(None)` once the broker has acknowledged the command, or
        `callback(CommandNotDelivered)` if Kafka did not take it: on the thread serving the
        delivery reports (at once if the report is already in)."""
        if self._delivered is None:
            raise RuntimeError("this command has no delivery report to wait for")
        self._delivered.add_done_callback(lambda done: callback(done.exception()))

    def result(self, timeout: float = 30.0) -> CommandResult:
        if self._future is None:
            raise RuntimeError("this client was created with await_results=False")
        deadline = time.monotonic() + timeout
        try:
            result = self._future.result(timeout)
        except FutureTimeout:
            raise CommandTimeout(
                f"no result for command {self.command_id} within {timeout:g}s"
            ) from None
        if self._read_your_writes is not None and result.accepted:
            self._read_your_writes(result, max(0.0, deadline - time.monotonic()))
        return result

    def add_done_callback(
        self,
        callback: Callable[[CommandResult], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Call `callback(result)` as soon as the result arrives (on the client's listener
        thread; at once if it is already here), without blocking anyone: for clients that
        keep thousands of commands in flight and time each one. Read your writes is not
        awaited here. If the command was not delivered, `on_error(exc)` is called instead
        (without one, the failure is logged)."""
        if self._future is None:
            raise RuntimeError("this client was created with await_results=False")

        def done(future: Future[CommandResult]) -> None:
            error = future.exception()
            if error is None:
                callback(future.result())
            elif on_error is not None:
                on_error(error)
            else:
                log.error("command %s: %s", self.command_id, error)

        self._future.add_done_callback(done)
