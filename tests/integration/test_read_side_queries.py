"""The query side: read your writes, history, `cqrsctl query|history`, roles, migrations.

One processor, projector and sink serve the tests of this module that need the pipeline
(each test uses its own accounts), so Faust's start-up is paid once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bank.account import ACCOUNT
from deploy.local.state import StackState
from processors.domain import Event
from processors.registry import default_registry
from processors.topic_admin import create_topics
from processors.topics import declared_topics
from producers.command_client import CommandClient, InvalidCommand
from sinks.migrate import MigrationError, migrate, roles
from sinks.queries import load_history
from tests.support.read_side import ReadSideRig
from tests.support.write_side import BankRig, read_events

BANK = default_registry().context("bank")


@pytest.fixture(scope="module")
def pipeline(
    stack: StackState, kafka_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReadSideRig]:
    prefix = f"rq_{uuid.uuid4().hex[:8]}"
    create_topics(kafka_config, declared_topics(default_registry().context("bank"), prefix))
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(prefix)))
    dsn = make_conninfo(stack.postgres_dsn, options=f"-csearch_path={prefix}")
    bank = BankRig(kafka_config, prefix, tmp_path_factory.mktemp("read-side"))
    rig = ReadSideRig(bank, dsn, prefix)
    try:
        starting = [bank.processor("p0", ready=False), rig.projector(False), rig.sink(False)]
        for worker in starting:
            worker.wait_ready(90)
        yield rig
    finally:
        rig.stop_all()
        bank.stop_all()
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute("SET lock_timeout = '10s'")
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(prefix)))


def open_account(client: CommandClient, account: str, wait_for: str = "accounts") -> None:
    data = {"account_id": account, "owner": f"owner {account}", "currency": "EUR"}
    assert client.send("bank.OpenAccount", data, wait_for=wait_for).result(30).accepted


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


# -- read your writes ----------------------------------------------------------------------


def test_wait_for_accounts_returns_only_once_the_row_shows_the_new_balance(
    pipeline: ReadSideRig,
):
    threads, per_thread = 10, 100
    accounts = [f"ryw-{i}" for i in range(threads)]
    checked: list[int] = []
    wrong: list[tuple] = []
    with pipeline.client() as client:
        for account in accounts:
            open_account(client, account)

        def run(account: str, seed: int) -> None:
            rng = random.Random(seed)
            balance = 0
            with pipeline.pg() as conn:
                for _ in range(per_thread):
                    if rng.random() < 0.7:
                        command, amount = "bank.Deposit", rng.randint(1, 1000)
                    else:
                        command, amount = "bank.Withdraw", rng.randint(1, 1500)
                    data = {"account_id": account, "amount": money(amount)}
                    result = client.send(command, data, wait_for="accounts").result(60)
                    if result.accepted:
                        balance += amount if command == "bank.Deposit" else -amount
                    row = conn.execute(
                        "SELECT balance, version FROM accounts WHERE account_id = %s", (account,)
                    ).fetchone()
                    checked.append(1)
                    if row != (balance, result.version):
                        wrong.append((account, row, balance, result))

        workers = [
            threading.Thread(target=run, args=(account, i)) for i, account in enumerate(accounts)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join(300)
    assert len(checked) == threads * per_thread == 1000
    assert wrong == []


def test_wait_for_names_a_projection_and_needs_the_read_model(pipeline: ReadSideRig):
    data = {"account_id": "x", "amount": money(1)}
    unknown = pytest.raises(InvalidCommand, match=r"no projection 'balances'.*accounts")
    with pipeline.client() as client, unknown:
        client.send("bank.Deposit", data, wait_for="balances")
    plain = CommandClient(pipeline.kafka, "bank", topic_prefix=pipeline.prefix)
    with plain, pytest.raises(InvalidCommand, match="read_your_writes"):
        plain.send("bank.Deposit", data, wait_for="accounts")


# -- history -------------------------------------------------------------------------------


def test_history_as_of_and_version_agree_with_a_fold(pipeline: ReadSideRig):
    account = "hist-1"
    rng = random.Random(9)
    with pipeline.client() as client:
        open_account(client, account, wait_for="event_log")
        for _ in range(40):
            command = "bank.Deposit" if rng.random() < 0.6 else "bank.Withdraw"
            data = {"account_id": account, "amount": money(rng.randint(1, 900))}
            client.send(command, data, wait_for="event_log").result(30)
        # a closed account's history: empty it, then close
        (balance,) = (
            pipeline.pg()
            .execute("SELECT balance FROM accounts WHERE account_id = %s", (account,))
            .fetchone()
        )
        if balance:
            data = {"account_id": account, "amount": money(balance)}
            assert client.send("bank.Withdraw", data).result(30).accepted
        closing = client.send("bank.CloseAccount", {"account_id": account}, wait_for="event_log")
        assert closing.result(30).accepted
    events = [
        e
        for e in read_events(pipeline.kafka, pipeline.bank.topics.events)
        if e.aggregate_id == account
    ]
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert len(events) > 30

    def fold(upto: list) -> dict[str, Any] | None:
        if not upto:
            return None
        return ACCOUNT.to_record(ACCOUNT.fold([Event(e.type, e.data) for e in upto]))

    with pipeline.pg() as conn:
        for n in range(len(events) + 1):
            history = load_history(conn, ACCOUNT, account, version=n)
            assert (history.version, history.state_record) == (n, fold(events[:n])), n
            assert [e.version for e in history.events] == list(range(1, n + 1))
        instants = [e.time for e in events]
        instants += [t - dt.timedelta(milliseconds=1) for t in instants]
        for instant in instants:
            history = load_history(conn, ACCOUNT, account, as_of=instant)
            upto = [e for e in events if e.time <= instant]
            assert (history.version, history.state_record) == (len(upto), fold(upto)), instant
        assert load_history(conn, ACCOUNT, account).state_record["status"] == "CLOSED"

    # the same through the CLI
    middle = events[len(events) // 2]
    out = cli(pipeline, "history", account, "--version", str(middle.version))
    assert f"balance    │ {fold(events[: middle.version])['balance']}" in out
    assert f"version    │ {middle.version} " in out
    as_of = middle.time.isoformat()
    upto = [e for e in events if e.time <= middle.time]
    out = cli(pipeline, "history", account, "--as-of", as_of)
    assert f"balance    │ {fold(upto)['balance']}" in out
    assert f"version    │ {len(upto)} " in out
    failed = cli(pipeline, "history", account, "--as-of", as_of, "--version", "3", code=2)
    assert failed == "error: give --as-of or --version, not both\n"
    failed = cli(pipeline, "history", "nobody", code=1)
    assert failed.startswith("error: no events of bank.Account nobody")


def test_event_log_and_history_show_who_caused_each_event(pipeline: ReadSideRig):
    account = "who-1"
    with pipeline.client() as client:
        data = {"account_id": account, "owner": "o", "currency": "EUR"}
        opened = client.send("bank.OpenAccount", data, wait_for="event_log", principal="alice")
        assert opened.result(30).accepted
        deposit = {"account_id": account, "amount": money(5)}
        assert client.send("bank.Deposit", deposit, wait_for="event_log").result(30).accepted
    rows = (
        pipeline.pg()
        .execute(
            "SELECT version, principal FROM event_log WHERE aggregate_id = %s ORDER BY version",
            (account,),
        )
        .fetchall()
    )
    assert rows == [(1, "alice"), (2, None)]
    out = cli(pipeline, "history", account, "--output", "json")
    assert [e["principal"] for e in json.loads(out)["events"]] == ["alice", None]
    assert "alice" in cli(pipeline, "history", account)


def test_query_prints_a_projection_row(pipeline: ReadSideRig):
    with pipeline.client() as client:
        open_account(client, "q-1")
        data = {"account_id": "q-1", "amount": money(4321)}
        client.send("bank.Deposit", data, wait_for="accounts").result(30)
    out = cli(pipeline, "query", "accounts", "q-1")
    assert "│ q-1        │ owner q-1 │ EUR      │ 4321    │ OPEN   │ 2       │" in out
    assert "EUR" in cli(pipeline, "query", "daily_totals", "EUR")
    assert cli(pipeline, "query", "accounts", "nobody", code=1) == (
        "error: no accounts row with account_id = 'nobody'\n"
    )
    assert cli(pipeline, "query", "balances", code=2).startswith(
        "error: bank has no projection 'balances'"
    )


def cli(rig: ReadSideRig, *args: str, code: int = 0) -> str:
    env = {**os.environ, "COLUMNS": "200", "CQRS_POSTGRES_DSN": rig.dsn}
    done = subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", *args, "--schema", rig.schema],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout if code == 0 else done.stderr


# -- roles and migrations (Postgres only) --------------------------------------------------


def test_the_reader_only_reads_and_the_sink_role_cannot_drop(
    stack: StackState, pg_schema: str, pg_dsn_for_schema: str
):
    migrate(pg_dsn_for_schema, pg_schema, BANK)
    reader, writer = roles(pg_schema)
    alice, sinker = f"{pg_schema}_alice", f"{pg_schema}_sinker"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        for login, group in ((alice, reader), (sinker, writer)):
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(login), sql.Identifier(group)
                )
            )
    try:
        row = ("a", "Ann", "EUR", 5, "OPEN", 1, dt.datetime.now(dt.UTC))
        insert = "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s, %s)"
        with psycopg.connect(make_conninfo(pg_dsn_for_schema, user=sinker), autocommit=True) as c:
            c.execute(insert, row)
            c.execute("UPDATE accounts SET balance = 6")
            for forbidden in (
                "DELETE FROM accounts",
                "TRUNCATE accounts",
                "DROP TABLE accounts",
                "ALTER TABLE accounts ADD COLUMN x int",
                "CREATE TABLE mine (x int)",
                "INSERT INTO cqrs_migrations VALUES ('x', 1, 'x', 'x')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(forbidden)
        with psycopg.connect(make_conninfo(pg_dsn_for_schema, user=alice), autocommit=True) as c:
            assert c.execute("SELECT balance FROM accounts").fetchall() == [(6,)]
            assert c.execute("SELECT count(*) FROM daily_totals").fetchone() == (0,)
            assert c.execute("SELECT count(*) FROM cqrs_checkpoints").fetchone() == (0,)
            for forbidden in (
                "UPDATE accounts SET balance = 7",
                "INSERT INTO event_log (aggregate_type) VALUES ('x')",
                "DELETE FROM accounts",
                "DROP TABLE accounts",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(forbidden)
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            for login in (alice, sinker):
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


def test_migrations_run_as_an_owner_without_createrole_when_the_roles_are_declared(
    stack: StackState,
):
    """As on CloudNativePG: the migration role owns the database's schema and may not create
    roles; the group roles exist beforehand (spec.managed.roles). The sink's login, in the
    writer role, writes rows and cannot run DDL; the query login, in the reader role, reads
    the read-model schema and nothing outside it."""
    schema = f"own_{uuid.uuid4().hex[:8]}"
    owner, sinker, alice = f"{schema}_migrator", f"{schema}_sink", f"{schema}_alice"
    reader, writer = roles(schema)
    other = f"{schema}_other"
    dsn_as = {
        login: make_conninfo(stack.postgres_dsn, user=login, options=f"-csearch_path={schema}")
        for login in (owner, sinker, alice)
    }
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE NOSUPERUSER").format(sql.Identifier(owner))
        )
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE postgres TO {}").format(sql.Identifier(owner))
        )
        # Another schema with data the query role must not see.
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
        admin.execute(sql.SQL("CREATE TABLE {}.secrets (x int)").format(sql.Identifier(other)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(other)))
    try:
        # Without the roles declared, it says what to do, in one line, and grants nothing.
        with pytest.raises(psycopg.errors.RaiseException, match="may not create roles"):
            migrate(dsn_as[owner], schema, BANK)
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            for group in (reader, writer):
                admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            for login, group in ((sinker, writer), (alice, reader)):
                admin.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(login), sql.Identifier(group)
                    )
                )
        migrate(dsn_as[owner], schema, BANK)
        row = ("a", "Ann", "EUR", 5, "OPEN", 1, dt.datetime.now(dt.UTC))
        with psycopg.connect(dsn_as[sinker], autocommit=True) as c:
            c.execute("INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
            c.execute("UPDATE accounts SET balance = 6")
            for ddl in (
                "CREATE TABLE mine (x int)",
                "ALTER TABLE accounts ADD COLUMN x int",
                "DROP TABLE event_log",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(ddl)
        with psycopg.connect(dsn_as[alice], autocommit=True) as c:
            assert c.execute("SELECT balance FROM accounts").fetchall() == [(6,)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql.SQL("SELECT * FROM {}.secrets").format(sql.Identifier(other)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("CREATE TABLE mine (x int)")
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute("SET lock_timeout = '10s'")
            for name in (schema, other):
                admin.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
            admin.execute(
                sql.SQL("REVOKE CREATE ON DATABASE postgres FROM {}").format(sql.Identifier(owner))
            )
            for role in (sinker, alice, owner, reader, writer):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_migrations_apply_once_also_when_sinks_start_together(stack: StackState, pg_schema: str):
    schema = f"{pg_schema}_new"  # does not exist yet: the racers create it
    dsn = make_conninfo(stack.postgres_dsn, options=f"-csearch_path={schema}")
    results: list[list[str]] = []
    racing = [
        threading.Thread(target=lambda: results.append(migrate(dsn, schema, BANK)))
        for _ in range(3)
    ]
    for t in racing:
        t.start()
    for t in racing:
        t.join(60)
    # each file applied once, by whichever sink got the lock first
    assert sorted(label for applied in results for label in applied) == [
        "bank/0001_read_models.sql",
        "bank/0002_event_log_principal.sql",
        "bank/0003_event_log_traceparent.sql",
        "cqrs/0001_checkpoints.sql",
        "cqrs/0002_sink_offsets.sql",
    ]
    assert len(results) == 3
    assert migrate(dsn, schema, BANK) == []
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_an_applied_migration_that_changed_is_refused(
    pg_schema: str, pg_dsn_for_schema: str, tmp_path: Path
):
    assert BANK.migrations is not None
    copy = dataclasses.replace(BANK, migrations=tmp_path / "migrations")
    shutil.copytree(BANK.migrations, tmp_path / "migrations")
    migrate(pg_dsn_for_schema, pg_schema, copy)
    edited = tmp_path / "migrations" / "0001_read_models.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_dsn_for_schema, pg_schema, copy)


def test_a_sink_without_migrations_says_so_in_one_line(pg_schema: str, pg_dsn_for_schema: str):
    env = {**os.environ, "CQRS_POSTGRES_DSN": pg_dsn_for_schema}
    done = subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "run", "sink", "--no-migrate", "--health-port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 4  # unavailable: the read model is not set up
    assert done.stderr == (
        "error: postgres: the schema has no cqrs_migrations table: run the migrations\n"
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines() == [
        "applied  cqrs/0001_checkpoints.sql",
        "applied  cqrs/0002_sink_offsets.sql",
        "applied  bank/0001_read_models.sql",
        "applied  bank/0002_event_log_principal.sql",
        "applied  bank/0003_event_log_traceparent.sql",
        f"schema {pg_schema} is up to date; roles {pg_schema}_reader (read) and "
        f"{pg_schema}_writer (sink)",
    ]


def test_a_waiter_wakes_on_the_sinks_notify_and_times_out_naming_the_gap(
    pg_schema: str, pg_dsn_for_schema: str
):
    from producers.command_results import EventPosition
    from sinks.checkpoints import CheckpointWaiter, ReadModelTimeout

    migrate(pg_dsn_for_schema, pg_schema, BANK)
    topic = f"{pg_schema}.events"

    def commit_checkpoint(partition: int, offset: int) -> None:
        # what the sink does at the end of a batch: checkpoint and NOTIFY, one transaction
        with psycopg.connect(pg_dsn_for_schema) as conn:
            conn.execute(
                "INSERT INTO cqrs_checkpoints (projection, source_partition, source_offset)"
                " VALUES ('accounts', %s, %s) ON CONFLICT (projection, source_partition)"
                " DO UPDATE SET source_offset = EXCLUDED.source_offset",
                (partition, offset),
            )
            conn.execute("SELECT pg_notify('cqrs_checkpoint', %s)", (pg_schema,))

    with CheckpointWaiter(pg_dsn_for_schema, events_topic=topic) as waiter:
        positions = [EventPosition(topic, 0, 10), EventPosition(topic, 3, 5)]
        returned = threading.Event()
        waiting = threading.Thread(
            target=lambda: (waiter.wait("accounts", positions, 20), returned.set())
        )
        waiting.start()
        commit_checkpoint(0, 10)
        commit_checkpoint(3, 4)
        assert not returned.wait(0.5)  # partition 3 is one short
        commit_checkpoint(3, 5)
        assert returned.wait(5)
        waiting.join()
        assert waiter.checkpoint("accounts", 3) == 5
        with pytest.raises(ReadModelTimeout, match="partition 3: at 5, needs 99"):
            waiter.wait("accounts", [EventPosition(topic, 3, 99)], 0.3)
        with pytest.raises(ValueError, match="checkpoints track"):
            waiter.wait("accounts", [EventPosition("other.events", 3, 1)], 0.3)
