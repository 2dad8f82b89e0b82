"""One batch of projection records, reduced to what one database transaction writes: per
projection the newest row per key (the guard column decides), and per (projection, source
partition) the highest checkpoint. Pure, so the rules are unit-tested.

Within one upsert statement Postgres cannot touch a row twice, and an older record must
not win over a newer one, hence the reduction before writing; the guard in the SQL keeps
the same rule across transactions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from processors.projections import Projection

Position = tuple[str, int]  # (topic, partition) of a projection topic


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """A decoded record of a projection topic; `row` is None for a checkpoint record."""

    projection: Projection
    source_partition: int
    checkpoint: int
    row: dict[str, Any] | None


@dataclass
class SinkBatch:
    rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[tuple[str, int], int] = field(default_factory=dict)
    oldest_event: dt.datetime | None = None  # the oldest source event's time, if known
    records: int = 0


def reduce_batch(records: Iterable[SinkRecord]) -> SinkBatch:
    batch = SinkBatch()
    for record in records:
        batch.records += 1
        projection = record.projection
        point = (projection.name, record.source_partition)
        if record.checkpoint > batch.checkpoints.get(point, -1):
            batch.checkpoints[point] = record.checkpoint
        if record.row is None:
            continue
        rows = batch.rows.setdefault(projection.name, {})
        key = tuple(record.row[k] for k in projection.key_fields)
        held = rows.get(key)
        guard = projection.guard_field
        if held is None or held[guard] < record.row[guard]:
            rows[key] = record.row
    return batch


def skipped_offsets(
    last_seen: dict[Position, int], positions: Iterable[tuple[str, int, int]]
) -> list[tuple[str, int, int, int]]:
    """(topic, partition, first, last) of each run of offsets jumped over by `positions`
    (topic, partition, offset in arrival order), given the highest offset seen so far per
    partition, which it updates. A position at or below what was seen (a redelivery after a
    rebalance) is not a skip."""
    skips = []
    for topic, partition, offset in positions:
        tp = (topic, partition)
        last = last_seen.get(tp)
        if last is not None and offset > last + 1:
            skips.append((topic, partition, last + 1, offset - 1))
        if last is None or offset > last:
            last_seen[tp] = offset
    return skips
