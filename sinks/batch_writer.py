"""The sink's Postgres side: each batch in ONE transaction (the version-guarded upserts of
its rows, its checkpoints, the consumer's next offset per partition in
`cqrs_sink_offsets`, and a NOTIFY on `cqrs_checkpoint` that Postgres delivers at commit),
and the stored offsets a newly assigned partition starts from. A transaction is retried on
a fresh connection while the database restarts or is briefly unreachable."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from processors.projections import Projection
from schemas.catalog import Catalog
from sinks.batch import Position, SinkBatch
from sinks.db import CHECKPOINT_CHANNEL, connect
from sinks.generations import RETIRED_ROUTE, read_routes
from sinks.metrics import SinkMetrics
from sinks.tables import (
    SELECT_OFFSETS,
    UPSERT_CHECKPOINT,
    UPSERT_OFFSET,
    TableWriter,
    table_writer,
)

log = logging.getLogger("sinks.app")  # the sink worker's logger, whichever module logs

RETRIES = 8  # per transaction, for a database that is restarting or briefly unreachable


class BatchWriter:
    """Writes the rows of `projections` to schema `schema` over one connection, opened on
    first use and again after a failure."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        projections: Sequence[Projection],
        catalog: Catalog,
        metrics: SinkMetrics,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.catalog = catalog
        self.metrics = metrics
        self.writers: dict[str, TableWriter] = {
            p.name: table_writer(p, catalog) for p in projections
        }
        self._routed: dict[str, TableWriter] = {}  # by generation table
        self._staged: set[tuple[str, str | None]] = set()  # writers with a staging table
        self._conn: psycopg.Connection[Any] | None = None

    def write(self, batch: SinkBatch, offsets: dict[Position, int]) -> None:
        """`batch` and the next offset per partition it covers, in one transaction."""
        self._transaction(self._write, batch, offsets)

    def stored_offsets(self, topics: list[str]) -> dict[Position, int]:
        """The next offset to consume per partition of `topics` that has one stored."""
        return self._transaction(self._select_offsets, topics)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._drop_connection()

    def _select_offsets(self, cur: psycopg.Cursor[Any], topics: list[str]) -> dict[Position, int]:
        cur.execute(SELECT_OFFSETS, (topics,))
        return {(t, p): o for t, p, o in cur.fetchall()}

    def _write(
        self, cur: psycopg.Cursor[Any], batch: SinkBatch, offsets: dict[Position, int]
    ) -> None:
        routes = read_routes(cur, list(self.writers))
        for name, rows in batch.rows.items():
            route = routes.get(name)
            if route == RETIRED_ROUTE:
                continue
            writer = self._table_writer(cur, name, route)
            with cur.copy(writer.copy) as copy:
                for row in rows.values():
                    copy.write_row(writer.params(row))
            cur.execute(writer.upsert)
        checkpoints = [
            (p, part, off)
            for (p, part), off in batch.checkpoints.items()
            if routes.get(p) != RETIRED_ROUTE
        ]
        if checkpoints:
            cur.executemany(UPSERT_CHECKPOINT, checkpoints)
        cur.executemany(UPSERT_OFFSET, [(t, p, o) for (t, p), o in offsets.items()])
        # Delivered at commit, and only if the transaction commits.
        cur.execute("SELECT pg_notify(%s, %s)", (CHECKPOINT_CHANNEL, self.schema))

    def _table_writer(
        self, cur: psycopg.Cursor[Any], name: str, relation: str | None
    ) -> TableWriter:
        """The projection's writer, or once it has generations, one for its generation's
        table. Its staging table is created on first use in this connection: a table a
        writer is not used for may since have become a generation (renamed `<table>_g1`)."""
        if relation is None:
            writer = self.writers[name]
        else:
            writer = self._routed.get(relation)
            if writer is None:
                projection = self.writers[name].projection
                writer = table_writer(projection, self.catalog, relation)
                self._routed[relation] = writer
        staged = (name, relation)
        if staged not in self._staged:
            cur.execute(writer.stage)
            self._staged.add(staged)
        return writer

    def _transaction(self, work: Any, *args: Any) -> Any:
        """`work(cursor, *args)` in one transaction, retried while the database restarts."""
        for attempt in range(RETRIES):
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    return work(cur, *args)
            except psycopg.OperationalError as exc:
                self.metrics.retries.inc()
                log.warning("database transaction failed (attempt %d): %s", attempt + 1, exc)
                self._drop_connection()
                time.sleep(min(0.2 * 2**attempt, 5.0))
        raise SystemExit(f"sink stopped: database unreachable after {RETRIES} attempts")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # autocommit: each batch is one explicit transaction block
            self._conn = connect(self.dsn, self.schema)
            self._staged = set()  # staging tables are per session
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
