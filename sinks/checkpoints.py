"""Read your writes: wait until a projection's checkpoints have passed given event positions.

The sink commits each batch's rows and checkpoints in one transaction and NOTIFYs channel
`cqrs_checkpoint` (payload: the schema) in it, so Postgres delivers the notification
exactly when the new checkpoint is visible. `CheckpointWaiter` keeps one connection that
LISTENs, re-reads `cqrs_checkpoints` after each notification for its schema, and wakes the
threads waiting in `wait()`: no polling, and any number of waiters share one connection.

Checkpoint (projection, P) >= O means: every row change caused by events of partition P of
`<ctx>.events` up to offset O is committed (docs/read-side.md). So once `wait()` returns
for a command's event positions, a query of that projection sees the command's effect (or
a later state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import psycopg
from psycopg import sql

from sinks.db import CHECKPOINT_CHANNEL, ReadModelError, connect, resolve_schema

log = logging.getLogger(__name__)


class Position(Protocol):
    topic: str
    partition: int
    offset: int


class ReadModelTimeout(TimeoutError):
    """The projection did not reach the positions in time."""


ALL_CHECKPOINTS = "SELECT projection, source_partition, source_offset FROM cqrs_checkpoints"
# Once a projection has generations (sinks/generations.py), its checkpoints are those of
# the live generation, under the projection's name; other generations' are left out.
LIVE_CHECKPOINTS = (
    "SELECT coalesce(g.projection, c.projection), c.source_partition, c.source_offset "
    "FROM cqrs_checkpoints c LEFT JOIN cqrs_generations g ON g.checkpoint_key = c.projection "
    "WHERE g.state IS NULL OR g.state = 'live'"
)


def live_checkpoints(conn: psycopg.Connection[Any]) -> str:
    """The query of the checkpoints readers wait for, by projection name."""
    found = conn.execute("SELECT to_regclass('cqrs_generations') IS NOT NULL").fetchone()
    return LIVE_CHECKPOINTS if found and found[0] else ALL_CHECKPOINTS


class CheckpointWaiter:
    """Shared by any number of threads; `close()` (or `with`) stops its listener thread."""

    def __init__(
        self, dsn: str, schema: str | None = None, *, events_topic: str | None = None
    ) -> None:
        self.dsn = dsn
        self.schema = resolve_schema(dsn, schema)
        self.events_topic = events_topic
        self._checkpoints: dict[tuple[str, int], int] = {}
        self._changed = threading.Condition()
        self._loaded = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._listen, name="checkpoints", daemon=True)
        self._thread.start()

    # -- waiting ---------------------------------------------------------------------------

    def checkpoint(self, projection: str, partition: int) -> int:
        """The committed checkpoint, -1 before the first (as last seen by the listener)."""
        with self._changed:
            return self._checkpoints.get((projection, partition), -1)

    def wait(self, projection: str, positions: Iterable[Position], timeout: float) -> None:
        """Return once `projection` has passed every position; raise ReadModelTimeout."""
        deadline = time.monotonic() + timeout
        needed: dict[int, int] = {}
        for pos in positions:
            if self.events_topic is not None and pos.topic != self.events_topic:
                raise ValueError(
                    f"position on {pos.topic}: checkpoints track {self.events_topic} only"
                )
            needed[pos.partition] = max(needed.get(pos.partition, -1), pos.offset)
        if not needed:
            return
        if not self._loaded.wait(max(0.0, deadline - time.monotonic())):
            self._raise_timeout(projection, needed, timeout)
        with self._changed:
            while True:
                if self._error is not None:
                    raise ReadModelError(f"checkpoint listener failed: {self._error}")
                behind = {
                    p: o
                    for p, o in needed.items()
                    if self._checkpoints.get((projection, p), -1) < o
                }
                if not behind:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._raise_timeout(projection, behind, timeout)
                self._changed.wait(remaining)

    def _raise_timeout(self, projection: str, behind: dict[int, int], timeout: float) -> None:
        detail = ", ".join(
            f"partition {p}: at {self._checkpoints.get((projection, p), -1)}, needs {o}"
            for p, o in sorted(behind.items())
        )
        raise ReadModelTimeout(
            f"projection {projection!r} in schema {self.schema!r} did not pass the "
            f"positions within {timeout:g}s ({detail})"
        )

    # -- listening -------------------------------------------------------------------------

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with connect(self.dsn, self.schema) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHECKPOINT_CHANNEL)))
                    self._reload(conn)  # after LISTEN: no commit can slip in between
                    self._loaded.set()
                    backoff = 0.1
                    while not self._stopping.is_set():
                        mine = False
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            mine = mine or note.payload == self.schema
                        if mine:
                            self._reload(conn)
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning("checkpoint listener: %s; reconnecting", exc)
                if not self._loaded.is_set() and backoff > 5:
                    self._fail(exc)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _reload(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(live_checkpoints(conn)).fetchall()
        with self._changed:
            for projection, partition, offset in rows:
                self._checkpoints[(projection, partition)] = offset
            self._changed.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            self._error = exc
            self._changed.notify_all()
        self._loaded.set()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def __enter__(self) -> CheckpointWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
