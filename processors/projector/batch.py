"""One batch of events through every projection: pure, so the rules are unit-tested.

Input: the batch's decoded events in consumption order, the last offset the batch holds for
each source partition (undecodable events included), and a way to load a stored row. Output:
the rows to store in the tables, and what to publish on the projection topics, in order.

Checkpoints. Every record published on partition P of a projection topic carries a
checkpoint C: "every row change caused by events of source partition P at or below offset C
has been published on this partition at or before this record". The sink stores the
highest C it has committed, so its checkpoint is exact. Within a batch a row is published
once, with all the batch's changes folded in, and rows are published in the order of the
last event that touched them; so record i may carry C = (first offset among the rows still
to come) - 1, and the last record the batch's last offset of P. A projection that no event
of P touched in the batch gets a progress marker carrying that last offset, so checkpoints
also pass events the projection ignores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from processors.domain import Event, Record
from processors.projections import EventMeta, Projection
from schemas.wire.progress import CHECKPOINT_KEY_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceEvent:
    event: Event
    meta: EventMeta


@dataclass(frozen=True, slots=True)
class Publication:
    """A record for `<ctx>.projection.<name>`, partition `partition` (= source partition).

    `key`/`row` are None for a progress marker. `cause` is the event whose processing
    published the row (the last event of the batch that touched it)."""

    projection: Projection
    partition: int
    key: str | None
    row: Record | None
    cause: EventMeta | None
    checkpoint: int

    @property
    def is_marker(self) -> bool:
        return self.key is None

    def as_marker(self) -> Publication:
        """A progress marker in this publication's place (same partition and checkpoint)."""
        return Publication(self.projection, self.partition, None, None, None, self.checkpoint)


@dataclass(frozen=True, slots=True)
class Failure:
    projection: Projection
    meta: EventMeta
    error: Exception


@dataclass
class BatchOutcome:
    publications: list[Publication] = field(default_factory=list)
    # (projection, key, row, partition) of every row the batch changed, to store in the tables
    stores: list[tuple[Projection, str, Record, int]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    applied: int = 0  # events applied to a row
    skipped: int = 0  # events a row had already applied (redelivered)


@dataclass(slots=True)
class _Touched:
    row: Record | None
    first_offset: int
    cause: EventMeta
    changed: bool = False


Loader = Callable[[Projection, str, int], Record | None]


def last_offsets(positions: Iterable[tuple[int, int]]) -> dict[int, int]:
    """The highest offset per partition among (partition, offset) pairs."""
    ends: dict[int, int] = {}
    for partition, offset in positions:
        if offset > ends.get(partition, -1):
            ends[partition] = offset
    return ends


def project_batch(
    projections: Sequence[Projection],
    events: Sequence[SourceEvent],
    ends: Mapping[int, int],
    load: Loader,
) -> BatchOutcome:
    """Run `events` through `projections`; `load(projection, key, partition)` reads a
    stored row (only called for stateful projections, once per key and batch)."""
    out = BatchOutcome()
    for projection in projections:
        touched: dict[int, dict[str, _Touched]] = {}
        for source in events:
            event, meta = source.event, source.meta
            if not projection.handles(event.type):
                continue
            try:
                key = projection.row_key(event, meta)
                if key.startswith(CHECKPOINT_KEY_PREFIX):
                    raise ValueError(
                        f"row key {key!r} starts with reserved {CHECKPOINT_KEY_PREFIX!r}"
                    )
                rows = touched.setdefault(meta.partition, {})
                entry = rows.get(key)
                if entry is None:
                    stored = load(projection, key, meta.partition) if projection.stateful else None
                    entry = rows[key] = _Touched(stored, meta.offset, meta)
                new = projection.step(entry.row, event, meta)
            except Exception as exc:  # a projection bug or an event it cannot take
                out.failures.append(Failure(projection, meta, exc))
                continue
            entry.cause = meta
            if new is None:
                out.skipped += 1
            else:
                entry.row, entry.changed = new, True
                out.applied += 1
        for partition in sorted(ends):
            _publish_partition(
                out, projection, partition, ends[partition], touched.get(partition, {})
            )
    return out


def _publish_partition(
    out: BatchOutcome,
    projection: Projection,
    partition: int,
    end: int,
    rows: Mapping[str, _Touched],
) -> None:
    ready = sorted(
        ((key, t) for key, t in rows.items() if t.row is not None),
        key=lambda item: item[1].cause.offset,
    )
    if not ready:
        out.publications.append(Publication(projection, partition, None, None, None, end))
        return
    # checkpoint of record i: one below the first offset of any row published after it
    checkpoints = [end] * len(ready)
    lowest_after = end + 1
    for i in range(len(ready) - 1, -1, -1):
        checkpoints[i] = min(end, lowest_after - 1)
        lowest_after = min(lowest_after, ready[i][1].first_offset)
    for (key, t), checkpoint in zip(ready, checkpoints, strict=True):
        assert t.row is not None
        out.publications.append(Publication(projection, partition, key, t.row, t.cause, checkpoint))
        if t.changed and projection.stateful:
            out.stores.append((projection, key, t.row, partition))
