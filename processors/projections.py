"""The projection API: read models built from events, declared by a bounded context.

A projection is pure data and pure functions (no Kafka, no Postgres): which events it reads,
which row each event touches (`key`), and how a row changes (`apply`). The projector runs it
at least once per event and makes that safe with a *guard* the runtime keeps in every row:

- `Guard.VERSION`: the row belongs to one aggregate and keeps the aggregate version of the
  last event applied (field `version`); an event whose version is not newer is skipped.
- `Guard.WATERMARK`: the row gathers events of many aggregates, so versions say nothing;
  instead it keeps the partition and offset of the last source event applied (fields
  `source_partition`, `source_offset`). Offsets only order events of one partition, so such
  a row takes events from ONE source partition: the runtime appends the partition to the
  projection's key (`row_key`) and `source_partition` to its `key_fields`, so `key` states
  only the business grouping, and a reader sums the rows of all partitions (see
  docs/read-side.md).

`apply(row, event, meta)` returns the new row (`row` is None for a new key); the runtime sets
the guard fields afterwards, so `apply` only states the business rule.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.domain import Event, Record


class Guard(enum.Enum):
    VERSION = "version"
    WATERMARK = "watermark"


VERSION_FIELD = "version"
PARTITION_FIELD = "source_partition"
OFFSET_FIELD = "source_offset"


class ProjectionError(RuntimeError):
    """A projection broke a rule of the runtime (e.g. a watermark row fed by two partitions)."""


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Where an event came from and what its envelope says.

    `aggregate_type` is the aggregate's name (e.g. `bank.Account`), `version` the aggregate
    version after the event, `partition`/`offset` its position on `<ctx>.events`."""

    event_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    time: dt.datetime
    partition: int
    offset: int
    correlation_id: str | None = None
    causation_id: str | None = None
    principal: str | None = None  # ce_principal: who caused the event's command
    traceparent: str | None = None  # the W3C trace context of the event's command


@dataclass(frozen=True)
class Projection:
    """One read model.

    `name` names the topic `<ctx>.projection.<name>` and the Postgres relation users query.
    `table` is where the sink writes the rows (default: `name`); a watermark projection
    writes per-partition rows to its own table and its migration defines a view `name`
    that sums them. `key_fields` are the row's primary key (they determine `key`).
    `query_field` is the column `cqrsctl query <name> KEY` matches. `stateful=False` means
    the row depends on the event alone (an append-only log): the projector keeps no table.
    """

    name: str
    row_schema: str
    event_types: frozenset[str]
    key: Callable[[Event, EventMeta], str]
    apply: Callable[[Record | None, Event, EventMeta], Record]
    key_fields: tuple[str, ...]
    guard: Guard = Guard.VERSION
    table: str | None = None
    query_field: str | None = None
    stateful: bool = True
    description: str = ""
    guard_field: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum() or not self.name.islower():
            raise ValueError(f"projection name {self.name!r}: use lower-case letters, digits, _")
        if not self.key_fields:
            raise ValueError(f"projection {self.name}: key_fields must name the row's key")
        guard_field = VERSION_FIELD if self.guard is Guard.VERSION else OFFSET_FIELD
        object.__setattr__(self, "guard_field", guard_field)
        if self.guard is Guard.WATERMARK and PARTITION_FIELD not in self.key_fields:
            # A watermark row is per source partition: the runtime keys it so (row_key), and
            # the partition is part of the row's primary key.
            object.__setattr__(self, "key_fields", (*self.key_fields, PARTITION_FIELD))

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def query_column(self) -> str:
        return self.query_field or self.key_fields[0]

    def row_key(self, event: Event, meta: EventMeta) -> str:
        """The key of the row `event` touches: `key`, and for a watermark projection the
        source partition after it, so `key` states only the business grouping."""
        key = self.key(event, meta)
        return key if self.guard is Guard.VERSION else f"{key}:{meta.partition}"

    def handles(self, event_type: str) -> bool:
        return event_type in self.event_types

    def is_applied(self, row: Record | None, meta: EventMeta) -> bool:
        """True when `row` already reflects the event (a redelivery): apply must be skipped."""
        if row is None:
            return False
        if self.guard is Guard.VERSION:
            return int(row[VERSION_FIELD]) >= meta.version
        if int(row[PARTITION_FIELD]) != meta.partition:
            raise ProjectionError(
                f"projection {self.name}: row from partition {row[PARTITION_FIELD]} got an "
                f"event of partition {meta.partition}; rows are keyed by row_key, not key"
            )
        return int(row[OFFSET_FIELD]) >= meta.offset

    def step(self, row: Record | None, event: Event, meta: EventMeta) -> Record | None:
        """The row after `event`, with its guard fields set; None when already applied."""
        if self.stateful and self.is_applied(row, meta):
            return None
        new = dict(self.apply(row if self.stateful else None, event, meta))
        if self.guard is Guard.VERSION:
            new[VERSION_FIELD] = meta.version
        else:
            new[PARTITION_FIELD] = meta.partition
            new[OFFSET_FIELD] = meta.offset
        return new


def epoch_day(moment: dt.datetime) -> dt.date:
    """The UTC calendar day of an aware datetime."""
    return moment.astimezone(dt.UTC).date()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def payload_json(data: Mapping[str, Any]) -> str:
    """An event's fields as compact JSON with sorted keys (stable across redeliveries)."""
    return json.dumps(data, default=_json_default, sort_keys=True, separators=(",", ":"))


def event_log(row_schema: str, event_types: frozenset[str]) -> Projection:
    """Every event of a context as one row: the archive behind audits and history.

    Keyed by (aggregate type, aggregate id, version), which is unique even when two
    aggregate types use the same id. The row schema must have the fields of
    `bank.EventLogRow` (its latest version, with `principal` and `traceparent`)."""

    def key(event: Event, meta: EventMeta) -> str:
        return f"{meta.aggregate_type}:{meta.aggregate_id}:{meta.version}"

    def apply(row: Record | None, event: Event, meta: EventMeta) -> Record:
        return {
            "event_id": meta.event_id,
            "aggregate_type": meta.aggregate_type,
            "aggregate_id": meta.aggregate_id,
            "version": meta.version,
            "type": event.type,
            "time": meta.time,
            "correlation_id": meta.correlation_id,
            "causation_id": meta.causation_id,
            "principal": meta.principal,
            "traceparent": meta.traceparent,
            "source_partition": meta.partition,
            "source_offset": meta.offset,
            "payload_json": payload_json(event.data),
        }

    return Projection(
        name="event_log",
        row_schema=row_schema,
        event_types=event_types,
        key=key,
        apply=apply,
        key_fields=("aggregate_type", "aggregate_id", "version"),
        query_field="aggregate_id",
        stateful=False,
        description="every event, for audit and history",
    )
