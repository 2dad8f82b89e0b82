"""SQL migrations of the read side, applied idempotently by `cqrsctl migrate` (or by the sink
on start, unless `--no-migrate`), as a role that may create tables: the migration role.

Files: `sinks/migrations/cqrs/NNNN_*.sql` (the runtime's own tables), then the context's
own `NNNN_*.sql` from the migrations folder its `BoundedContext` declares (its read models,
shipped inside the context's package), then the runtime's `grants.sql` on every run. Each
file runs once per schema, in its own transaction, recorded in `cqrs_migrations` with a
checksum; a file changed after it was applied is an error (write a
new one instead). A transaction-level advisory lock serialises sinks starting together.

Files may name `{schema}`, `{reader}` and `{writer}`; they are replaced by quoted
identifiers (psycopg's sql.Identifier), never by string pasting; `{reader_name}` and
`{writer_name}` by the role names as quoted literals. A literal brace in a file
is written twice (`'{{}}'::jsonb`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from processors.domain import BoundedContext
from sinks.db import ReadModelError, search_path

# The runtime's migrations: `cqrs/NNNN_*.sql` and `grants.sql`.
RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
RUNTIME_SCOPE = "cqrs"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS cqrs_migrations (
    scope      text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, version)
)
"""


class MigrationError(ReadModelError):
    pass


@dataclass(frozen=True)
class Migration:
    scope: str
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def roles(schema: str) -> tuple[str, str]:
    """The (reader, writer) group roles of a schema."""
    return f"{schema}_reader", f"{schema}_writer"


def discover(context: BoundedContext, runtime: Path = RUNTIME_MIGRATIONS) -> list[Migration]:
    """The runtime's migrations, then the context's (scope = the context's name)."""
    if context.name == RUNTIME_SCOPE:
        raise MigrationError(f"a context may not be named {RUNTIME_SCOPE!r}: the runtime's scope")
    runtime_folder = runtime / RUNTIME_SCOPE
    if not runtime_folder.is_dir():
        raise MigrationError(f"no runtime migrations in {runtime_folder}")
    scopes = [(RUNTIME_SCOPE, runtime_folder)]
    if context.migrations is not None:
        if not context.migrations.is_dir():
            raise MigrationError(
                f"context {context.name!r}: migrations folder {context.migrations} does not exist"
            )
        scopes.append((context.name, context.migrations))
    found = []
    for scope, folder in scopes:
        versions: set[int] = set()
        for path in sorted(folder.glob("*.sql")):
            match = FILE_NAME.match(path.name)
            if match is None:
                raise MigrationError(f"{path}: name migrations NNNN_lower_case_name.sql")
            version = int(match["version"])
            if version in versions:
                raise MigrationError(f"{folder}: two migrations numbered {version:04d}")
            versions.add(version)
            found.append(Migration(scope, version, match["name"], path))
    return found


def _render(text: str, schema: str) -> sql.Composed:
    reader, writer = roles(schema)
    return sql.SQL(text).format(  # type: ignore[arg-type]  # the files are ours
        schema=sql.Identifier(schema),
        reader=sql.Identifier(reader),
        writer=sql.Identifier(writer),
        reader_name=sql.Literal(reader),
        writer_name=sql.Literal(writer),
    )


def migrate(
    dsn: str, schema: str, context: BoundedContext, runtime: Path = RUNTIME_MIGRATIONS
) -> list[str]:
    """Apply what is missing; returns the labels (`scope/NNNN_name`) applied now."""
    migrations = discover(context, runtime)
    applied_now = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(search_path(schema))  # may name a schema that does not exist yet
        with conn.transaction():
            _lock(conn, schema)  # two CREATE SCHEMA IF NOT EXISTS at once can collide
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(BOOTSTRAP)
        for migration in migrations:
            with conn.transaction():
                _lock(conn, schema)
                if _already_applied(conn, migration):
                    continue
                conn.execute(_render(migration.text, schema))
                conn.execute(
                    "INSERT INTO cqrs_migrations (scope, version, name, checksum)"
                    " VALUES (%s, %s, %s, %s)",
                    (migration.scope, migration.version, migration.name, migration.checksum),
                )
                applied_now.append(f"{migration.scope}/{migration.path.name}")
        grants = runtime / "grants.sql"
        if grants.exists():
            with conn.transaction():
                _lock(conn, schema)
                conn.execute(_render(grants.read_text(), schema))
    return applied_now


def check_migrated(
    conn: psycopg.Connection[Any], context: BoundedContext, runtime: Path = RUNTIME_MIGRATIONS
) -> None:
    """Raise unless every migration is applied (for a sink started with --no-migrate)."""
    try:
        rows = conn.execute("SELECT scope, version FROM cqrs_migrations").fetchall()
    except psycopg.errors.UndefinedTable:
        raise MigrationError(
            "the schema has no cqrs_migrations table: run the migrations"
        ) from None
    have = {(scope, version) for scope, version in rows}
    missing = [m for m in discover(context, runtime) if (m.scope, m.version) not in have]
    if missing:
        names = ", ".join(f"{m.scope}/{m.path.name}" for m in missing)
        raise MigrationError(f"migrations not applied yet: {names}")


def _lock(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cqrs-migrate:{schema}",))


def _already_applied(conn: psycopg.Connection[Any], migration: Migration) -> bool:
    row = conn.execute(
        "SELECT checksum FROM cqrs_migrations WHERE scope = %s AND version = %s",
        (migration.scope, migration.version),
    ).fetchone()
    if row is None:
        return False
    if row[0] != migration.checksum:
        raise MigrationError(
            f"{migration.scope}/{migration.path.name} changed after it was applied; "
            "add a new migration instead of editing an applied one"
        )
    return True
