"""The local pipeline's Postgres logins are Kubernetes' split (deploy/local/postgres_roles.py):
the migration role migrates, the sink runs as a writer login with --no-migrate and cannot run
DDL, readers log in as a reader login that sees nothing outside its schema."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from deploy.local import postgres_roles
from deploy.local.state import StackState
from sinks.migrate import migrate, roles
from tests.support.read_side import BANK, ReadSideRig

DDL = (
    "CREATE TABLE mine (x int)",
    "ALTER TABLE accounts ADD COLUMN x int",
    "DROP TABLE event_log",
    "TRUNCATE accounts",
    "DROP VIEW daily_totals",
    "CREATE INDEX ON accounts (owner)",
)


def owners_of(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Who owns the relations of `schema`."""
    rows = conn.execute(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows]


def member_of(conn: psycopg.Connection[Any], role: str) -> list[str]:
    """The roles `role` is a member of."""
    rows = conn.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s ORDER BY 1",
        (role,),
    ).fetchall()
    return [r[0] for r in rows]


def test_the_rig_sink_logs_in_as_a_writer_that_cannot_run_ddl(
    stack: StackState, read_side: ReadSideRig
) -> None:
    read_side.sink()
    schema = read_side.schema
    reader, writer = roles(schema)
    sink_role, query_role = postgres_roles.login_names(schema)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        # The running sink's sessions are the writer login's, not the superuser's.
        deadline = time.monotonic() + 30
        while not admin.execute(
            "SELECT FROM pg_stat_activity WHERE usename = %s", (sink_role,)
        ).fetchall():
            assert time.monotonic() < deadline, "no session of the sink's login"
            time.sleep(0.2)
        assert member_of(admin, sink_role) == [writer]
        assert member_of(admin, query_role) == [reader]
        flags = admin.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = ANY(%s) ORDER BY 1",
            ([sink_role, query_role, postgres_roles.MIGRATOR],),
        ).fetchall()
        assert [f[1:] for f in flags] == [(False, False, False)] * 3
        # The migration role ran the migrations: it owns the schema and every table.
        assert owners_of(admin, schema) == [postgres_roles.MIGRATOR]
        other = f"{schema}_x"
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
        admin.execute(sql.SQL("CREATE TABLE {}.secrets (x int)").format(sql.Identifier(other)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(other)))
    try:
        as_sink = postgres_roles.dsn_as(stack.postgres_dsn, sink_role, schema)
        with psycopg.connect(as_sink, autocommit=True) as c:
            c.execute("UPDATE accounts SET balance = balance")  # what it may do
            for ddl in (*DDL, "DELETE FROM accounts", "INSERT INTO cqrs_migrations VALUES "
                        "('x', 1, 'x', 'x', now())"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(ddl)
        as_query = postgres_roles.dsn_as(stack.postgres_dsn, query_role, schema)
        with psycopg.connect(as_query, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM accounts").fetchone() == (0,)
            for statement in (
                sql.SQL("SELECT * FROM {}.secrets").format(sql.Identifier(other)),
                sql.SQL("UPDATE accounts SET balance = 0"),
                sql.SQL("CREATE TABLE mine (x int)"),
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(statement)
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(other)))


def test_tables_an_earlier_superuser_sink_made_are_handed_to_the_migration_role(
    stack: StackState, pg_schema: str, pg_dsn_for_schema: str
) -> None:
    migrate(pg_dsn_for_schema, pg_schema, BANK)  # as the superuser, as local sinks once did
    logins = postgres_roles.prepare(stack.postgres_dsn, pg_schema, BANK)
    assert postgres_roles.prepare(stack.postgres_dsn, pg_schema, BANK) == logins  # idempotent
    with psycopg.connect(logins.sink_dsn, autocommit=True) as c:
        row = ("a", "Ann", "EUR", 5, "OPEN", 1)
        c.execute("INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s, now())", row)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DROP TABLE accounts")
    with psycopg.connect(logins.query_dsn, autocommit=True) as c:
        assert c.execute("SELECT balance FROM accounts").fetchall() == [(5,)]
