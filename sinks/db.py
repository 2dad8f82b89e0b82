"""Connections to the read-model database and the schema they work in.

The schema is `--schema` when given, else the first schema of the DSN's search_path
(e.g. `options=-csearch_path=bank`), else `public`. Each connection sets its search_path to
that schema only, so every statement of the read side names tables unqualified.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

CHECKPOINT_CHANNEL = "cqrs_checkpoint"  # NOTIFY channel; the payload is the schema name


class ReadModelError(RuntimeError):
    """The read-model database is not usable as asked (no schema, not migrated, ...)."""


def resolve_schema(dsn: str, schema: str | None = None) -> str:
    if schema:
        return schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT current_schema()").fetchone()
        if found and found[0]:
            return str(found[0])
        path = conn.execute("SHOW search_path").fetchone()
    first = str(path[0]).split(",")[0].strip().strip('"') if path else ""
    if not first or first == "$user":
        return "public"
    return first


def search_path(schema: str) -> sql.Composed:
    return sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))


def connect(dsn: str, schema: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute(search_path(schema))
    except psycopg.Error:
        conn.close()
        raise
    conn.autocommit = autocommit
    return conn
