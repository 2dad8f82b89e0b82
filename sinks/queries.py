"""Query helpers of the read side: rows of a projection, and an aggregate's history.

History folds an aggregate's events from `event_log` with the domain's own `evolve`, so
"the state of account X as of T" or "at version N" is computed by the same code that
decides commands, not by a second implementation in SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from processors.domain import AggregateType, Event
from processors.projections import Projection


def fetch_rows(
    conn: psycopg.Connection[Any],
    projection: Projection,
    value: Any = None,
    *,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Rows of the relation named after the projection (a table, or the view over a
    watermark projection's per-partition rows); `value` matches its `query_column`."""
    where = sql.SQL("")
    params: list[Any] = []
    if value is not None:
        where = sql.SQL(" WHERE {} = %s").format(sql.Identifier(projection.query_column))
        params.append(value)
    order = [k for k in projection.key_fields if k != "source_partition"]
    query = sql.SQL("SELECT * FROM {}{} ORDER BY {} LIMIT %s").format(
        sql.Identifier(projection.name),
        where,
        sql.SQL(", ").join(map(sql.Identifier, order)),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


@dataclass(frozen=True)
class HistoryEvent:
    version: int
    type: str
    time: dt.datetime
    event_id: str
    correlation_id: str | None
    data: dict[str, Any]
    principal: str | None = None  # who caused it (its command's ce_principal)


@dataclass(frozen=True)
class History:
    """An aggregate at one point: its state (None before its first event), the version of
    that state (0 before the first event) and the events folded into it, oldest first."""

    aggregate_type: str
    aggregate_id: str
    state: Any
    state_record: dict[str, Any] | None  # the state as its Avro state record (to_record)
    version: int
    events: Sequence[HistoryEvent]


class IncompleteHistory(RuntimeError):
    """event_log lacks some of the aggregate's versions (the sink has not written them)."""


def load_history(
    conn: psycopg.Connection[Any],
    aggregate: AggregateType[Any],
    aggregate_id: str,
    *,
    as_of: dt.datetime | None = None,
    version: int | None = None,
) -> History:
    """The aggregate's events up to `as_of` (event time, inclusive) and/or `version`
    (inclusive), and the state they fold into."""
    if as_of is not None and as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (e.g. UTC)")
    rows = conn.execute(
        "SELECT version, type, time, event_id, correlation_id, payload_json, principal"
        " FROM event_log"
        " WHERE aggregate_type = %s AND aggregate_id = %s"
        " AND (%s::bigint IS NULL OR version <= %s::bigint)"
        " AND (%s::timestamptz IS NULL OR time <= %s::timestamptz)"
        " ORDER BY version",
        (aggregate.name, aggregate_id, version, version, as_of, as_of),
    ).fetchall()
    events = [HistoryEvent(*row) for row in rows]
    versions = [e.version for e in events]
    if versions != list(range(1, len(versions) + 1)):
        raise IncompleteHistory(
            f"event_log has versions {_ranges(versions)} of {aggregate.name} {aggregate_id}; "
            "a fold needs 1..N without gaps"
        )
    state = aggregate.fold([Event(e.type, e.data) for e in events]) if events else None
    record = None if state is None else aggregate.to_record(state)
    return History(aggregate.name, aggregate_id, state, record, len(events), events)


def _ranges(versions: list[int]) -> str:
    if not versions:
        return "none"
    shown = ", ".join(map(str, versions[:10]))
    return shown + (", ..." if len(versions) > 10 else "")
