"""What `swap()` (sinks/generations.py) checks before a generation replaces the live one:
per partition, that the new generation's checkpoints are at or past the live one's and
past the offsets it was asked to catch up to (`catch_up_to`, recorded when the rebuild
began); row by row, that the new table has every live key at the same or a newer guard.
Each returns what is behind (empty or None when nothing is)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from processors.projections import Projection

if TYPE_CHECKING:
    from sinks.generations import Generation


def checkpoints_behind(
    conn: psycopg.Connection[Any], live: Generation, new: Generation
) -> list[int]:
    rows = conn.execute(
        "SELECT l.source_partition FROM cqrs_checkpoints l "
        "LEFT JOIN cqrs_checkpoints n "
        "ON n.projection = %s AND n.source_partition = l.source_partition "
        "WHERE l.projection = %s AND coalesce(n.source_offset, -1) < l.source_offset "
        "ORDER BY 1",
        (new.checkpoint_key, live.checkpoint_key),
    ).fetchall()
    return [int(row[0]) for row in rows]


def short_of_targets(
    conn: psycopg.Connection[Any], projection: Projection, new: Generation
) -> list[int]:
    """Partitions where `new` has not yet passed its `catch_up_to` offset."""
    row = conn.execute(
        "SELECT catch_up_to FROM cqrs_generations WHERE projection = %s AND generation = %s",
        (projection.name, new.generation),
    ).fetchone()
    targets = (row[0] if row else None) or {}
    if not targets:
        return []
    have = dict(
        conn.execute(
            "SELECT source_partition, source_offset FROM cqrs_checkpoints WHERE projection = %s",
            (new.checkpoint_key,),
        ).fetchall()
    )
    return [int(p) for p, offset in targets.items() if have.get(int(p), -1) < offset]


def rows_behind(
    conn: psycopg.Connection[Any], projection: Projection, live: Generation, new: Generation
) -> str | None:
    """None when the new table has every live key at the same or a newer guard; else the
    first key that is missing or older, as text."""
    keys = [sql.Identifier(k) for k in projection.key_fields]
    guard = sql.Identifier(projection.guard_field)
    join = sql.SQL(" AND ").join(sql.SQL("n.{k} = l.{k}").format(k=k) for k in keys)
    query = sql.SQL(
        "SELECT {keys}, l.{guard}, n.{guard} FROM {live} l LEFT JOIN {new} n ON {join} "
        "WHERE n.{first} IS NULL OR n.{guard} < l.{guard} LIMIT 1"
    ).format(
        keys=sql.SQL(", ").join(sql.SQL("l.{}").format(k) for k in keys),
        guard=guard,
        live=sql.Identifier(live.relation),
        new=sql.Identifier(new.relation),
        join=join,
        first=keys[0],
    )
    row = conn.execute(query).fetchone()
    if row is None:
        return None
    *key, live_guard, new_guard = row
    have = "missing" if new_guard is None else f"at {projection.guard_field} {new_guard}"
    return f"row {tuple(key)} is {have}, live at {live_guard}"
