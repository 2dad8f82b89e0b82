"""The read models' queries (projection rows, an aggregate's history and events), as the
read-only query role: what the HTTP gateway serves.

Every statement is parameterised; the only identifiers in SQL are column and relation
names taken from the context's projection declarations and row schemas (the whitelist),
quoted by psycopg's `sql.Identifier`. Connections are read-only sessions
(`default_transaction_read_only`), optionally `SET ROLE` to the schema's reader role, with
a statement timeout, so a slow query cannot hold a request forever.

psycopg's pool is synchronous and `sinks.queries.load_history` takes a plain connection,
so the gateway runs each read in a worker thread (`anyio.to_thread`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from processors.domain import AggregateType, BoundedContext
from processors.projections import OFFSET_FIELD, PARTITION_FIELD, Guard, Projection
from schemas.catalog import Catalog
from sinks.db import resolve_schema, search_path
from sinks.queries import History, load_history

EVENT_LOG = "event_log"  # the runtime's archive of every event (processors.projections)
STATEMENT_TIMEOUT_MS = 10_000
RESERVED_PARAMS = frozenset({"limit", "offset"})  # list parameters, never filters


# -- what a projection exposes -------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    avro: Any  # the field's Avro type
    kind: str  # string | long | int | boolean | date | timestamp | other


@dataclass(frozen=True)
class ProjectionView:
    """One projection as the gateway serves it: its relation, columns, key and filters."""

    projection: Projection
    row_schema: dict[str, Any]  # the row schema restricted to `columns`
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # the row's key in the relation users query

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def filters(self) -> dict[str, Column]:
        """Columns a list request may filter on (equality): the scalar ones."""
        return {
            c.name: c for c in self.columns if c.kind != "other" and c.name not in RESERVED_PARAMS
        }

    @property
    def single_key(self) -> Column | None:
        if len(self.key) != 1:
            return None
        return next(c for c in self.columns if c.name == self.key[0])


def projection_views(ctx: BoundedContext, catalog: Catalog) -> dict[str, ProjectionView]:
    views = {}
    for p in ctx.projections:
        row = catalog.latest(p.row_schema).schema
        # A watermark projection's relation is a view that sums the per-partition rows,
        # so the partition and its offset are not columns of it.
        hidden = {PARTITION_FIELD, OFFSET_FIELD} if p.guard is Guard.WATERMARK else set()
        fields = [f for f in row["fields"] if f["name"] not in hidden]
        columns = tuple(Column(f["name"], f["type"], _kind(f["type"])) for f in fields)
        key = tuple(k for k in p.key_fields if k not in hidden)
        views[p.name] = ProjectionView(p, {**row, "fields": fields}, columns, key)
    return views


def _kind(avro: Any) -> str:
    if isinstance(avro, list):
        others = [b for b in avro if b != "null"]
        return _kind(others[0]) if len(others) == 1 else "other"
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical == "date":
            return "date"
        if logical in ("timestamp-millis", "timestamp-micros"):
            return "timestamp"
        if avro.get("type") == "enum":
            return "string"
        return _kind(avro["type"]) if isinstance(avro.get("type"), str) else "other"
    return avro if avro in ("string", "long", "int", "boolean") else "other"


# -- JSON out ------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A database value as JSON: times as RFC 3339 UTC, dates ISO, jsonb as its text."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json_value(v) for k, v in row.items()}


# -- the reader ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_after_version: int | None


class ReadModel:
    """A pool of read-only connections to the read models, and the queries the HTTP
    endpoints need. Blocking: call from a worker thread."""

    def __init__(
        self,
        dsn: str,
        schema: str | None,
        views: Mapping[str, ProjectionView],
        *,
        role: str | None = None,
        pool_size: int = 8,
    ) -> None:
        self.dsn = dsn
        self.views = views
        self.role = role
        self._schema_hint = schema
        self.schema = schema or ""
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "application_name": "cqrs-gateway"},
            configure=self._configure,
            name="gateway-read-model",
        )

    def open(self, timeout: float = 30.0) -> None:
        self.schema = resolve_schema(self.dsn, self._schema_hint)
        self.pool.open(wait=True, timeout=timeout)

    def close(self) -> None:
        self.pool.close()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(search_path(self.schema))
        conn.execute("SET default_transaction_read_only = on")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(STATEMENT_TIMEOUT_MS))
        if self.role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.role)))

    def ping(self, timeout: float = 2.0) -> None:
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1 FROM cqrs_checkpoints LIMIT 1")

    # -- projections -----------------------------------------------------------------------

    def list_rows(
        self, view: ProjectionView, filters: Sequence[tuple[str, Any]], limit: int, offset: int
    ) -> list[dict[str, Any]]:
        where = sql.SQL("")
        if filters:
            kinds = {c.name: c.kind for c in view.columns}
            where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
                # A string column may be stored as text or as jsonb (event_log's payload):
                # comparing its text form takes any string, and is the column itself for text.
                sql.SQL("{}::text = %s" if kinds[name] == "string" else "{} = %s").format(
                    sql.Identifier(name)
                )
                for name, _ in filters
            )
        query = sql.SQL("SELECT {cols} FROM {rel}{where} ORDER BY {order} LIMIT %s OFFSET %s")
        query = query.format(
            cols=sql.SQL(", ").join(sql.Identifier(c.name) for c in view.columns),
            rel=sql.Identifier(view.name),
            where=where,
            order=sql.SQL(", ").join(map(sql.Identifier, view.key)),
        )
        params = [value for _, value in filters] + [limit, offset]
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            return [json_row(r) for r in cur.execute(query, params).fetchall()]

    def get_row(self, view: ProjectionView, key: Any) -> dict[str, Any] | None:
        column = view.single_key
        assert column is not None
        rows = self.list_rows(view, [(column.name, key)], 1, 0)
        return rows[0] if rows else None

    # -- aggregates ------------------------------------------------------------------------

    def history(
        self,
        aggregate: AggregateType[Any],
        aggregate_id: str,
        as_of: dt.datetime | None,
        version: int | None,
    ) -> History:
        with self.pool.connection(timeout=5) as conn:
            return load_history(conn, aggregate, aggregate_id, as_of=as_of, version=version)

    def events(
        self, aggregate: AggregateType[Any], aggregate_id: str, after_version: int, limit: int
    ) -> EventPage | None:
        """A page of the aggregate's events after `after_version`; None if it has none."""
        query = sql.SQL(
            "SELECT version, type, time, event_id, correlation_id, causation_id, payload_json"
            " FROM {} WHERE aggregate_type = %s AND aggregate_id = %s AND version > %s"
            " ORDER BY version LIMIT %s"
        ).format(sql.Identifier(EVENT_LOG))
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, (aggregate.name, aggregate_id, after_version, limit + 1))
            found = rows.fetchall()
            if not found and not self._exists(conn, aggregate, aggregate_id):
                return None
        more = len(found) > limit
        events = [
            {
                "version": r["version"],
                "type": r["type"],
                "time": json_value(r["time"]),
                "event_id": r["event_id"],
                "correlation_id": r["correlation_id"],
                "causation_id": r["causation_id"],
                "data": r["payload_json"],
            }
            for r in found[:limit]
        ]
        return EventPage(events, events[-1]["version"] if more else None)

    def _exists(
        self, conn: psycopg.Connection[Any], aggregate: AggregateType[Any], aggregate_id: str
    ) -> bool:
        query = sql.SQL(
            "SELECT 1 FROM {} WHERE aggregate_type = %s AND aggregate_id = %s LIMIT 1"
        ).format(sql.Identifier(EVENT_LOG))
        return conn.execute(query, (aggregate.name, aggregate_id)).fetchone() is not None
