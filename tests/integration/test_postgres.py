"""The session's Postgres: a round trip through psycopg, schema isolation, durability settings."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg

from deploy.settings import ENV_PG_DSN


def test_round_trip_in_the_tests_own_schema(pg_conn: psycopg.Connection[Any], pg_schema: str):
    pg_conn.execute("CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL)")
    pg_conn.execute("INSERT INTO accounts VALUES (%s, %s), (%s, %s)", ("a-1", 100, "a-2", 250))

    rows = pg_conn.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall()

    assert rows == [("a-1", 100), ("a-2", 250)]
    (schema,) = pg_conn.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'accounts'"
    ).fetchone()
    assert schema == pg_schema


def test_schema_dsn_reaches_the_same_schema_from_a_subprocess(
    pg_conn: psycopg.Connection[Any], pg_dsn_for_schema: str
):
    pg_conn.execute("CREATE TABLE notes (body text)")
    pg_conn.execute("INSERT INTO notes VALUES ('written by the test')")
    script = (
        "import os, sys, psycopg\n"
        "assert os.environ['CQRS_POSTGRES_DSN']\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    print(c.execute('SELECT body FROM notes').fetchone()[0])\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script, pg_dsn_for_schema],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "written by the test"


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
