"""How far each projection's read model is: positions applied, lag, state and time to catch up.

A projection's progress is read where it is exact: its checkpoints in Postgres
(`cqrs_checkpoints`, committed with its rows; docs/read-side.md) against the end of
`<ctx>.events` in Kafka. Per source partition P with checkpoint C (-1 before the first)
and end E (the last stable offset, i.e. the next offset a read_committed reader would get):

* applied: C + 1, the offsets of P the read model has passed;
* lag in events: E - (C + 1), the offsets still to apply. Offsets count the processor's
  transaction markers as well, so this is an upper bound; it is exactly 0 when no committed
  event follows C;
* lag in seconds: now - the time of the first committed event after C, 0 when there is none.

The time to catch up needs a rate, so it comes from two samples (`estimate`). `measure` is
the pure part; `read_progress` does the I/O (one query, one Kafka consumer).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from processors.topic_reader import watermarks


class ProbeError(RuntimeError):
    """The events topic could not be read (an error from the broker, or no answer in time)."""


LIVE = "live"  # the generation readers query; others are building or retired


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    partition: int
    checkpoint: int  # the last offset applied, -1 before the first
    end: int  # the next offset a read_committed reader would get
    oldest_unapplied_ms: int | None  # time of the first committed event after checkpoint

    @property
    def applied(self) -> int:
        return self.checkpoint + 1

    @property
    def lag(self) -> int:
        return 0 if self.oldest_unapplied_ms is None else max(0, self.end - self.applied)


@dataclass(frozen=True, slots=True)
class ProjectionProgress:
    """One projection at one moment (`at`, seconds since the epoch)."""

    projection: str
    state: str
    at: float
    partitions: tuple[PartitionProgress, ...]
    rate: float | None = None  # offsets applied per second between two samples
    eta_seconds: float | None = None  # None: unknown (no progress between the samples)
    generation: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.projection, self.generation)

    @property
    def applied(self) -> int:
        return sum(p.applied for p in self.partitions)

    @property
    def lag_events(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def lag_seconds(self) -> float:
        oldest = [p.oldest_unapplied_ms for p in self.partitions if p.oldest_unapplied_ms]
        return max(0.0, self.at - min(oldest) / 1000) if oldest else 0.0

    @property
    def progress(self) -> float:
        """Applied / (applied + lag), 1.0 when nothing is left (an empty topic too)."""
        total = self.applied + self.lag_events
        return 1.0 if self.lag_events == 0 else self.applied / total

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "generation": self.generation,
            "state": self.state,
            "applied": self.applied,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "rate": None if self.rate is None else round(self.rate, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "partitions": [
                {"partition": p.partition, "checkpoint": p.checkpoint, "end": p.end, "lag": p.lag}
                for p in self.partitions
            ],
        }


def measure(
    projection: str,
    checkpoints: Mapping[int, int],
    ends: Mapping[int, int],
    oldest_unapplied_ms: Mapping[int, int],
    at: float,
    state: str = LIVE,
    generation: int = 1,
) -> ProjectionProgress:
    """The progress of `projection` from its checkpoints, the partitions' ends and the time of
    the first event after each checkpoint (absent: none follows it)."""
    partitions = tuple(
        PartitionProgress(p, checkpoints.get(p, -1), end, oldest_unapplied_ms.get(p))
        for p, end in sorted(ends.items())
    )
    return ProjectionProgress(projection, state, at, partitions, generation=generation)


def estimate(earlier: ProjectionProgress, later: ProjectionProgress) -> ProjectionProgress:
    """`later` with the rate since `earlier` and the time left at that rate."""
    elapsed = later.at - earlier.at
    if elapsed <= 0:
        raise ValueError("the later sample must be taken after the earlier one")
    rate = max(0, later.applied - earlier.applied) / elapsed
    if later.lag_events == 0:
        eta: float | None = 0.0
    else:
        eta = later.lag_events / rate if rate > 0 else None
    return dataclasses.replace(later, rate=rate, eta_seconds=eta)


# -- I/O -------------------------------------------------------------------------------------

SELECT_CHECKPOINTS = (
    "SELECT projection, source_partition, source_offset FROM cqrs_checkpoints "
    "WHERE projection = ANY(%s)"
)


def read_checkpoints(
    conn: psycopg.Connection[Any], projections: Sequence[str]
) -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {name: {} for name in projections}
    for name, partition, offset in conn.execute(SELECT_CHECKPOINTS, [list(projections)]):
        found[name][int(partition)] = int(offset)
    return found


class EventsProbe:
    """Reads the end of each partition of the events topic and the time of the first committed
    event after an offset, with one read_committed consumer (no group, nothing committed)."""

    def __init__(self, kafka: dict[str, Any], topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self._consumer = Consumer(
            {
                **kafka,
                "group.id": f"{topic}.progress",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )

    def ends(self) -> dict[int, int]:
        return {
            p: watermarks(self._consumer, TopicPartition(self.topic, p))[1]
            for p in range(self.partitions)
        }

    def first_times(self, after: Mapping[int, int], timeout_s: float = 10.0) -> dict[int, int]:
        """{partition: time in ms} of the first committed event past each offset in `after`;
        a partition with none is left out."""
        pending = dict(after)
        found: dict[int, int] = {}
        if not pending:
            return found
        assigned = [TopicPartition(self.topic, p, o + 1) for p, o in pending.items()]
        self._consumer.assign(assigned)
        deadline = time.monotonic() + timeout_s
        try:
            while pending and time.monotonic() < deadline:
                for msg in self._consumer.consume(100, 0.1):
                    partition, err = msg.partition(), msg.error()
                    if partition not in pending:
                        continue
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        raise ProbeError(f"reading {self.topic}[{partition}]: {err}")
                    if err is None:
                        found[partition] = msg.timestamp()[1]
                    del pending[partition]
                    self._consumer.pause([TopicPartition(self.topic, partition)])
        finally:
            # A paused partition stays paused when assigned again: resume before the next call.
            self._consumer.resume(assigned)
            self._consumer.unassign()
        if pending:
            raise ProbeError(
                f"reading {self.topic} partitions {sorted(pending)} took over {timeout_s:g}s"
            )
        return found

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True, slots=True)
class Tracked:
    """One generation of one projection, as `read_progress` samples it."""

    projection: str
    checkpoint_key: str
    state: str = LIVE
    generation: int = 1


def tracked(conn: psycopg.Connection[Any], projections: Iterable[str]) -> list[Tracked]:
    """Every generation of each projection (cqrs_generations), or the projection itself as
    its one live generation when it has never been rebuilt."""
    names = list(projections)
    found: dict[str, list[Tracked]] = {name: [] for name in names}
    exists = conn.execute("SELECT to_regclass('cqrs_generations') IS NOT NULL").fetchone()
    if exists and exists[0]:
        rows = conn.execute(
            "SELECT projection, checkpoint_key, state, generation FROM cqrs_generations "
            "WHERE projection = ANY(%s) ORDER BY projection, generation",
            (names,),
        )
        for name, key, state, generation in rows:
            found[name].append(Tracked(name, key, state, generation))
    return [t for name in names for t in (found[name] or [Tracked(name, name)])]


def read_progress(
    conn: psycopg.Connection[Any], probe: EventsProbe, entries: Iterable[Tracked]
) -> list[ProjectionProgress]:
    """One sample of every generation in `entries`."""
    wanted = list(entries)
    checkpoints = read_checkpoints(conn, [t.checkpoint_key for t in wanted])
    ends = probe.ends()
    at = time.time()
    out = []
    for entry in wanted:
        mine = checkpoints[entry.checkpoint_key]
        behind = {p: mine.get(p, -1) for p, end in ends.items() if mine.get(p, -1) + 1 < end}
        out.append(
            measure(
                entry.projection,
                mine,
                ends,
                probe.first_times(behind),
                at,
                entry.state,
                entry.generation,
            )
        )
    return out
