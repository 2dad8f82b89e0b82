"""Least-privilege Postgres logins for a pipeline on this machine, as in Kubernetes
(docs/security.md, "Postgres roles"): the migrations run once as the migration role, the
sink logs in as a writer login and starts with `--no-migrate`, readers log in as a reader
login.

    logins = prepare(admin_dsn, "public", bank)   # roles, the schema's owner, migrations
    logins.sink_dsn      # <schema>_sink: member of <schema>_writer only
    logins.query_dsn     # <schema>_query: member of <schema>_reader only
    sink_env(logins)     # the sink's environment and arguments for the worker harnesses
    PipelineSpec(..., **spec_options(logins))   # the same for deploy/local/pipeline.py

`admin_dsn` is a superuser's (the throwaway cluster's `postgres`). It does what
CloudNativePG's managed roles and database owner do in Kubernetes, and no more: it creates
the roles and hands the schema to the migration role `cqrs_migrator` (LOGIN, no CREATEROLE,
CREATE on the database). The migrations then run as `cqrs_migrator`. The local cluster
trusts every loopback login (no passwords): these logins bound what each worker does, not
who may connect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from processors.domain import BoundedContext
from processors.settings import ENV_PG_DSN
from sinks.migrate import migrate, roles

MIGRATOR = "cqrs_migrator"
# How each kind of relation is handed to the migration role.
_ALTER = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


@dataclass(frozen=True)
class Logins:
    schema: str
    migrator_dsn: str
    sink_dsn: str
    query_dsn: str


def login_names(schema: str) -> tuple[str, str]:
    """The (sink, query) login roles of a schema."""
    return f"{schema}_sink", f"{schema}_query"


def dsn_as(dsn: str, user: str, schema: str) -> str:
    """`dsn` logged in as `user`, with the schema as its search_path."""
    return make_conninfo(dsn, user=user, options=f"-csearch_path={schema}")


def prepare(admin_dsn: str, schema: str, context: BoundedContext) -> Logins:
    """Create the roles, give the schema to the migration role, migrate as it."""
    create_roles(admin_dsn, schema)
    migrator_dsn = dsn_as(admin_dsn, MIGRATOR, schema)
    migrate(migrator_dsn, schema, context)
    sink, query = login_names(schema)
    return Logins(
        schema=schema,
        migrator_dsn=migrator_dsn,
        sink_dsn=dsn_as(admin_dsn, sink, schema),
        query_dsn=dsn_as(admin_dsn, query, schema),
    )


def sink_env(logins: Logins) -> tuple[dict[str, str], list[str]]:
    """The sink worker's environment (its DSN) and arguments (`--no-migrate`)."""
    return {ENV_PG_DSN: logins.sink_dsn}, ["--no-migrate"]


def spec_options(logins: Logins) -> dict[str, Any]:
    """`PipelineSpec(..., **spec_options(logins))`: the sink's login and `--no-migrate`."""
    env, args = sink_env(logins)
    return {"role_env": {"sink": env}, "extra_args": {"sink": args}}


def create_roles(admin_dsn: str, schema: str) -> None:
    """Idempotent; serialised across callers (role and database ACL updates collide)."""
    reader, writer = roles(schema)
    sink, query = login_names(schema)
    ident = sql.Identifier
    with psycopg.connect(admin_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('cqrs-local-roles'))")
        _ensure_role(conn, MIGRATOR, "LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                ident(conn.info.dbname), ident(MIGRATOR)
            )
        )
        for group in (reader, writer):
            _ensure_role(conn, group, "NOLOGIN")
        for login, group in ((sink, writer), (query, reader)):
            _ensure_role(conn, login, "LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
            conn.execute(sql.SQL("GRANT {} TO {}").format(ident(group), ident(login)))
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                ident(schema), ident(MIGRATOR)
            )
        )
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(ident(schema), ident(MIGRATOR)))
        # Tables an earlier superuser-run sink created: the migration role must own them to
        # grant on them.
        owned_by_others = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = ANY(%s)"
            " AND pg_get_userbyid(c.relowner) <> %s"
            " AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d"
            "   WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))",
            (schema, list(_ALTER), MIGRATOR),
        ).fetchall()
        for name, kind in owned_by_others:
            conn.execute(
                sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
                    sql.SQL(_ALTER[kind]), ident(schema), ident(name), ident(MIGRATOR)
                )
            )


def _ensure_role(conn: psycopg.Connection[Any], name: str, options: str) -> None:
    exists = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    if exists is None:
        conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
