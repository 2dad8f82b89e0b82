"""The read side's connections (sinks/db.py) against the session's Postgres, and that
Postgres's durability settings (deploy/local/postgres.py)."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from processors.settings import ENV_PG_DSN
from sinks.db import connect, resolve_schema


def test_a_connection_works_in_its_schema_also_after_a_rollback(
    stack, pg_conn: psycopg.Connection[Any], pg_schema: str
):
    pg_conn.execute("CREATE TABLE notes (body text)")
    pg_conn.execute("INSERT INTO notes VALUES ('in the test schema')")

    # The server's own DSN has no search_path of ours: connect() alone picks the schema.
    with connect(stack.postgres_dsn, pg_schema, autocommit=False) as conn:
        assert not conn.autocommit
        assert conn.execute("SELECT body FROM notes").fetchall() == [("in the test schema",)]
        conn.rollback()
        # Set outside any transaction: a rollback does not take the schema away.
        assert conn.execute("SELECT current_schema()").fetchone() == (pg_schema,)
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def test_the_schema_is_the_option_else_the_dsns_search_path_else_public(
    stack, pg_dsn_for_schema: str, pg_schema: str
):
    assert resolve_schema(stack.postgres_dsn, "given") == "given"
    assert resolve_schema(pg_dsn_for_schema) == pg_schema
    # Not created yet (the migrations create it): named by the search_path all the same.
    missing = make_conninfo(stack.postgres_dsn, options="-csearch_path=not_made_yet")
    assert resolve_schema(missing) == "not_made_yet"
    assert resolve_schema(stack.postgres_dsn) == "public"


def test_session_dsn_is_exported_and_durability_is_the_default(stack):
    assert os.environ[ENV_PG_DSN] == stack.postgres_dsn
    with psycopg.connect(os.environ[ENV_PG_DSN]) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'full_page_writes', 'server_version_num')"
            ).fetchall()
        )
    assert settings["fsync"] == "on"
    assert settings["synchronous_commit"] == "on"
    assert settings["full_page_writes"] == "on"
    assert settings["server_version_num"].startswith("15")
