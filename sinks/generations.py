"""Generations of a projection in Postgres: the catalog, the atomic swap, the drop.

Readers query the relation named after the projection: a view over the live generation's
table (processors/generations.py names the tables). `swap()` makes another generation
live in ONE transaction, and only when no reader could tell it went backwards: the new
table must hold every key of the live one with a guard (version, or per-partition source
offset) at or past the live row's, and its checkpoints must be at or past the live ones
and past the last events of `<ctx>.events` when the rebuild began (sinks/swap_checks.py).
Checkpoints alone are not enough, since a live row may already hold changes of events past
its table's checkpoint (docs/read-side.md, "Checkpoints, exactly"). The live table is
locked against writes (readers go on) while that is checked; then the view is re-created
over the new table and the generations' states change, and Postgres makes all of it
visible at once at commit.

These functions change the schema (views, tables), so they run as the migration role,
which also creates `cqrs_generations` on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from processors.projections import Projection
from sinks.swap_checks import checkpoints_behind, rows_behind, short_of_targets

BUILDING, LIVE, RETIRED = "building", "live", "retired"

CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS cqrs_generations (
    projection     text        NOT NULL,
    generation     integer     NOT NULL CHECK (generation >= 1),
    state          text        NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    relation       text        NOT NULL,
    checkpoint_key text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    live_at        timestamptz,
    retired_at     timestamptz,
    catch_up_to    jsonb,
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX IF NOT EXISTS cqrs_generations_one_live
    ON cqrs_generations (projection) WHERE state = 'live';
"""
# A catalog made before `catch_up_to` existed gains it (checked first: ALTER TABLE would
# lock the catalog against the sinks' reads even when the column is there).
HAS_CATCH_UP_TO = (
    "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('cqrs_generations') "
    "AND attname = 'catch_up_to' AND NOT attisdropped"
)
ADD_CATCH_UP_TO = "ALTER TABLE cqrs_generations ADD COLUMN IF NOT EXISTS catch_up_to jsonb"
LOCK_TIMEOUT = "10s"
SELECT_GENERATIONS = (
    "SELECT projection, generation, state, relation, checkpoint_key FROM cqrs_generations "
)


class GenerationError(RuntimeError):
    """A generation is unknown, or in a state that does not allow what was asked."""


class SwapRefused(GenerationError):
    """The new generation is not yet where the live one is; try again once it caught up."""


@dataclass(frozen=True, slots=True)
class Generation:
    projection: str
    generation: int
    state: str
    relation: str
    checkpoint_key: str


# `read_routes` value of a retired generation: its rows are no longer written.
RETIRED_ROUTE = ""


def read_routes(cur: psycopg.Cursor[Any], keys: list[str]) -> dict[str, str]:
    """For the sink, inside its batch transaction: {checkpoint key: the table to write} for
    the projections (by checkpoint key) that have generations, RETIRED_ROUTE for a retired
    one. The rows are locked FOR SHARE, so a swap waits for the batch, and a batch after
    the swap sees the new states."""
    cur.execute("SELECT to_regclass('cqrs_generations') IS NOT NULL")
    found = cur.fetchone()
    if not found or not found[0]:
        return {}
    cur.execute(
        "SELECT checkpoint_key, state, relation FROM cqrs_generations "
        "WHERE checkpoint_key = ANY(%s) FOR SHARE",
        (keys,),
    )
    return {key: RETIRED_ROUTE if state == RETIRED else relation for key, state, relation in cur}


def ensure_catalog(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(CATALOG_DDL)
        if conn.execute(HAS_CATCH_UP_TO).fetchone() is None:
            conn.execute(ADD_CATCH_UP_TO)


def register(
    conn: psycopg.Connection[Any],
    projection: str,
    generation: int,
    relation: str,
    checkpoint_key: str,
    state: str = BUILDING,
) -> Generation:
    """Record a generation whose table exists: the first as live (its table already behind
    the view), later ones as building, to become live through `swap()`. At most one
    generation of a projection is live (a unique index says so)."""
    ensure_catalog(conn)
    with conn.transaction():
        conn.execute(
            "INSERT INTO cqrs_generations "
            "(projection, generation, state, relation, checkpoint_key, live_at) "
            "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'live' THEN now() END)",
            (projection, generation, state, relation, checkpoint_key, state),
        )
    return Generation(projection, generation, state, relation, checkpoint_key)


def generations(conn: psycopg.Connection[Any], projection: str) -> list[Generation]:
    ensure_catalog(conn)
    rows = conn.execute(
        SELECT_GENERATIONS + "WHERE projection = %s ORDER BY generation",
        (projection,),
    ).fetchall()
    return [Generation(*row) for row in rows]


def adopt(conn: psycopg.Connection[Any], projection: Projection) -> Generation:
    """The live generation of `projection`; the first call makes its table generation 1:
    renamed `<table>_g1`, and for a projection with its own table a view under its name
    (a watermark projection's view already reads the table, and follows the rename).
    Sinks write where `read_routes` says, so a running sink follows at its next batch."""
    ensure_catalog(conn)
    with conn.transaction():
        _lock_timeout(conn)
        conn.execute("LOCK TABLE cqrs_generations IN SHARE ROW EXCLUSIVE MODE")
        rows = conn.execute(
            SELECT_GENERATIONS + "WHERE projection = %s AND state = 'live'",
            (projection.name,),
        ).fetchall()
        if rows:
            return Generation(*rows[0])
        table = projection.table_name
        first = f"{table}_g1"
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(table), sql.Identifier(first)
            )
        )
        if projection.table is None:
            conn.execute(
                sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                    sql.Identifier(projection.name), sql.Identifier(first)
                )
            )
        conn.execute(
            "INSERT INTO cqrs_generations "
            "(projection, generation, state, relation, checkpoint_key, live_at) "
            "VALUES (%s, 1, 'live', %s, %s, now())",
            (projection.name, first, projection.name),
        )
    return Generation(projection.name, 1, LIVE, first, projection.name)


def prepare(
    conn: psycopg.Connection[Any],
    projection: Projection,
    generation: int,
    checkpoint_key: str,
    catch_up_to: Mapping[int, int] | None = None,
) -> Generation:
    """A building generation: its empty table, like the live one's (columns, keys, indexes),
    and its catalog row. Idempotent for a generation that is already building.

    `catch_up_to`: {partition: offset of the last event of `<ctx>.events`} when the rebuild
    began; `swap` waits until the new generation has passed those too, so that a partition
    the live generation has no checkpoint for (a projection added since its last event) is
    not swapped in half built."""
    live = adopt(conn, projection)
    relation = f"{projection.table_name}_g{generation}"
    with conn.transaction():
        row = conn.execute(
            SELECT_GENERATIONS + "WHERE projection = %s AND generation = %s",
            (projection.name, generation),
        ).fetchone()
        if row is not None:
            found = Generation(*row)
            if found.state != BUILDING:
                raise GenerationError(
                    f"{projection.name} generation {generation} is {found.state}, not building"
                )
            return found
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(relation), sql.Identifier(live.relation)
            )
        )
        targets = (
            None if catch_up_to is None else Jsonb({str(p): o for p, o in catch_up_to.items()})
        )
        conn.execute(
            "INSERT INTO cqrs_generations (projection, generation, state, relation, "
            "checkpoint_key, catch_up_to) VALUES (%s, %s, 'building', %s, %s, %s)",
            (projection.name, generation, relation, checkpoint_key, targets),
        )
    return Generation(projection.name, generation, BUILDING, relation, checkpoint_key)


def next_generation(conn: psycopg.Connection[Any], projection: str) -> int:
    found = generations(conn, projection)
    return max((g.generation for g in found), default=1) + 1


def swap(conn: psycopg.Connection[Any], projection: Projection, generation: int) -> Generation:
    """Make `generation` of `projection` the one readers see, atomically; the live one
    becomes retired. Raises SwapRefused (nothing changed) while the new generation is behind,
    GenerationError when the states do not allow a swap."""
    ensure_catalog(conn)
    with conn.transaction():
        _lock_timeout(conn)
        rows = conn.execute(
            SELECT_GENERATIONS + "WHERE projection = %s FOR UPDATE",
            (projection.name,),
        ).fetchall()
        found = {row[1]: Generation(*row) for row in rows}
        live = next((g for g in found.values() if g.state == LIVE), None)
        new = found.get(generation)
        if new is None or new.state != BUILDING:
            state = "unknown" if new is None else new.state
            raise GenerationError(
                f"{projection.name} generation {generation} is {state}; only a building "
                "generation can be swapped in"
            )
        if live is None:
            raise GenerationError(f"{projection.name} has no live generation to replace")
        conn.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(live.relation))
        )
        behind = sorted(
            {*checkpoints_behind(conn, live, new), *short_of_targets(conn, projection, new)}
        )
        if behind:
            raise SwapRefused(
                f"{projection.name} generation {generation} is behind generation "
                f"{live.generation}: checkpoints of partitions {behind}"
            )
        stale = rows_behind(conn, projection, live, new)
        if stale:
            raise SwapRefused(
                f"{projection.name} generation {generation} is behind generation "
                f"{live.generation}: {stale}"
            )
        _repoint_view(conn, projection, live.relation, new.relation)
        conn.execute(
            "UPDATE cqrs_generations SET state = 'retired', retired_at = now() "
            "WHERE projection = %s AND generation = %s",
            (projection.name, live.generation),
        )
        conn.execute(
            "UPDATE cqrs_generations SET state = 'live', live_at = now() "
            "WHERE projection = %s AND generation = %s",
            (projection.name, generation),
        )
    return Generation(new.projection, new.generation, LIVE, new.relation, new.checkpoint_key)


def droppable(conn: psycopg.Connection[Any], projection: str, generation: int) -> Generation:
    """The generation, if it may be dropped (retired, or building and abandoned); else
    GenerationError. `drop` checks again in its own transaction."""
    ensure_catalog(conn)
    row = conn.execute(
        SELECT_GENERATIONS + "WHERE projection = %s AND generation = %s",
        (projection, generation),
    ).fetchone()
    return _droppable(row, projection, generation)


def _droppable(row: Any, projection: str, generation: int) -> Generation:
    if row is None:
        raise GenerationError(f"{projection} has no generation {generation}")
    found = Generation(*row)
    if found.state == LIVE:
        raise GenerationError(
            f"{projection} generation {generation} is live: swap another one in first"
        )
    return found


def drop(conn: psycopg.Connection[Any], projection: str, generation: int) -> Generation:
    """Remove a retired (or abandoned building) generation: its table, its checkpoints and
    its catalog row. The live generation cannot be dropped."""
    ensure_catalog(conn)
    with conn.transaction():
        _lock_timeout(conn)
        row = conn.execute(
            SELECT_GENERATIONS + "WHERE projection = %s AND generation = %s FOR UPDATE",
            (projection, generation),
        ).fetchone()
        found = _droppable(row, projection, generation)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(found.relation)))
        conn.execute("DELETE FROM cqrs_checkpoints WHERE projection = %s", (found.checkpoint_key,))
        conn.execute(
            "DELETE FROM cqrs_generations WHERE projection = %s AND generation = %s",
            (projection, generation),
        )
    return found


def retired_longer_than(
    conn: psycopg.Connection[Any], projections: list[str], grace_s: float
) -> list[Generation]:
    """The generations of `projections` retired more than `grace_s` seconds ago (by the
    database's clock), oldest first: what `cqrsctl projections gc` drops."""
    ensure_catalog(conn)
    rows = conn.execute(
        SELECT_GENERATIONS + "WHERE projection = ANY(%s) AND state = 'retired' "
        "AND retired_at < now() - make_interval(secs => %s) ORDER BY retired_at, projection",
        (projections, grace_s),
    ).fetchall()
    return [Generation(*row) for row in rows]


# -- the checks and the view --------------------------------------------------------------


def _lock_timeout(conn: psycopg.Connection[Any]) -> None:
    """Fail rather than wait forever for a lock a stuck transaction holds."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))


def _repoint_view(
    conn: psycopg.Connection[Any], projection: Projection, old: str, new: str
) -> None:
    """Re-create the view readers query over `new`: `SELECT *` for a projection with its own
    table, and for one whose view reads a table of another name (a watermark projection's
    view sums the per-partition rows) its own definition, reading `new` where it read `old`."""
    view = projection.name
    found = conn.execute(
        "SELECT c.relkind, pg_get_viewdef(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (sql_identifier(view),),
    ).fetchone()
    if found is None or found[0] != "v":
        raise GenerationError(f"{view} is not a view: readers must query a view to swap it")
    if projection.table is None:
        definition: sql.Composable = sql.SQL("SELECT * FROM {}").format(sql.Identifier(new))
    else:
        definition = sql.SQL(repointed(str(found[1]), old, new))  # type: ignore[arg-type]
    conn.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS ").format(sql.Identifier(view)) + definition)


def repointed(definition: str, old: str, new: str) -> str:
    """A view definition reading table `new` wherever it read `old` (bare or quoted)."""
    pattern = re.compile(rf'(?<![\w."]){re.escape(old)}(?![\w"])|"{re.escape(old)}"')
    result, count = pattern.subn(sql_identifier(new), definition)
    if count == 0:
        raise GenerationError(f"the view does not read {old}: cannot repoint it to {new}")
    return result.rstrip().rstrip(";")


def sql_identifier(name: str) -> str:
    """`name` as Postgres writes an identifier: bare when it is lower-case and plain."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
