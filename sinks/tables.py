"""The SQL the sink runs, derived from a projection's declaration and its row schema.

Columns are the row schema's fields, by name; the table is `projection.table_name`. A
batch's rows go with `COPY` into a temporary staging table of the same columns (one per
projection and connection, emptied at every commit), then into the table with one
`INSERT ... SELECT ... ON CONFLICT` that only overwrites a stored row with a newer one (the
guard column: `version`, or `source_offset` for watermark rows), so a repeated or older
record changes nothing. The staging table holds at most one row per key (the batch is
reduced first), as one INSERT may not touch a row twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from processors.projections import Projection
from schemas.catalog import Catalog


@dataclass(frozen=True)
class TableWriter:
    projection: Projection
    columns: tuple[str, ...]
    stage: sql.Composed  # creates the connection's staging table, if it has none
    copy: sql.Composed  # COPY ... FROM STDIN into the staging table
    upsert: sql.Composed  # the staging table's rows into the table, guarded

    def params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.columns)

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.projection.key_fields)


def table_writer(
    projection: Projection, catalog: Catalog, relation: str | None = None
) -> TableWriter:
    """The SQL for `projection`'s rows, written to `relation` (default: its `table_name`;
    a generation's own table once the projection has generations, sinks/generations.py)."""
    fields = catalog.latest(projection.row_schema).schema["fields"]
    columns = tuple(f["name"] for f in fields)
    missing = [k for k in (*projection.key_fields, projection.guard_field) if k not in columns]
    if missing:
        raise ValueError(f"{projection.row_schema} lacks fields {missing} of {projection.name}")
    target = relation or projection.table_name
    table = sql.Identifier(target)
    staging = sql.Identifier("pg_temp", f"cqrs_stage_{target}")
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = [c for c in columns if c not in projection.key_fields]
    guard = sql.Identifier(projection.guard_field)
    stage = sql.SQL(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
        "(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    ).format(staging=staging, table=table)
    copy = sql.SQL("COPY {staging} ({columns}) FROM STDIN").format(
        staging=staging, columns=column_list
    )
    upsert = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
        "ON CONFLICT ({keys}) DO UPDATE SET {updates} "
        "WHERE {table}.{guard} < EXCLUDED.{guard}"
    ).format(
        table=table,
        columns=column_list,
        staging=staging,
        keys=sql.SQL(", ").join(map(sql.Identifier, projection.key_fields)),
        updates=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
        ),
        guard=guard,
    )
    return TableWriter(projection, columns, stage, copy, upsert)


# Checkpoints only move forward, and an unchanged one is not rewritten (a replay leaves the
# table exactly as it was).
UPSERT_CHECKPOINT = sql.SQL(
    "INSERT INTO cqrs_checkpoints (projection, source_partition, source_offset) "
    "VALUES (%s, %s, %s) "
    "ON CONFLICT (projection, source_partition) DO UPDATE "
    "SET source_offset = EXCLUDED.source_offset, updated_at = now() "
    "WHERE cqrs_checkpoints.source_offset < EXCLUDED.source_offset"
)

# The sink's own position; GREATEST because a sink that lost its partitions without knowing
# (a zombie) may still commit one batch: every stored offset was written together with all
# the rows below it, so the highest one is always a safe place to resume.
UPSERT_OFFSET = sql.SQL(
    "INSERT INTO cqrs_sink_offsets (topic, topic_partition, next_offset) VALUES (%s, %s, %s) "
    "ON CONFLICT (topic, topic_partition) DO UPDATE "
    "SET next_offset = GREATEST(cqrs_sink_offsets.next_offset, EXCLUDED.next_offset), "
    "updated_at = now()"
)
SELECT_OFFSETS = sql.SQL(
    "SELECT topic, topic_partition, next_offset FROM cqrs_sink_offsets WHERE topic = ANY(%s)"
)
