"""The swap of a projection's generations in Postgres (sinks/generations.py): under a steady
stream of writes to both generations, a reader polling the view every few milliseconds
never sees a missing or an older row, and the swapped-in table equals the fold of the
events; plus the refusals and the drop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from processors.projections import Guard, Projection
from sinks.generations import (
    BUILDING,
    LIVE,
    GenerationError,
    SwapRefused,
    drop,
    ensure_catalog,
    generations,
    prepare,
    register,
    swap,
)
from tests.support.polling_reader import PollingReader

CHECKPOINTS_SQL = (
    Path(__file__).parents[2] / "sinks/migrations/cqrs/0001_checkpoints.sql"
).read_text()
KEYS = 40


def projection(name: str, **extra: Any) -> Projection:
    return Projection(
        name=name,
        row_schema="bank.AccountRow",
        event_types=frozenset(),
        key=lambda event, meta: "",
        apply=lambda row, event, meta: {},
        key_fields=extra.pop("key_fields", ("account_id",)),
        **extra,
    )


ACCOUNTS = projection("accounts")


def accounts_layout(conn: psycopg.Connection[Any]) -> None:
    """Generation 1 live behind the view `accounts`, generation 2 building."""
    conn.execute(CHECKPOINTS_SQL)
    for table in ("accounts_g1", "accounts_g2"):
        conn.execute(
            f"CREATE TABLE {table} (account_id text PRIMARY KEY, balance bigint NOT NULL, "
            "version bigint NOT NULL)"
        )
    conn.execute("CREATE VIEW accounts AS SELECT * FROM accounts_g1")
    register(conn, "accounts", 1, "accounts_g1", "accounts", LIVE)
    register(conn, "accounts", 2, "accounts_g2", "accounts.g2", BUILDING)


class Events:
    """A steady sender: event i adds i to account i % KEYS, the account's next version."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, int]] = []  # (account, amount, version)
        self._versions: dict[str, int] = {}
        self.lock = threading.Lock()

    def send(self, count: int) -> None:
        with self.lock:
            for _ in range(count):
                i = len(self.items)
                account = f"a{i % KEYS}"
                self._versions[account] = self._versions.get(account, 0) + 1
                self.items.append((account, i, self._versions[account]))

    def upto(self, end: int) -> list[tuple[str, int, int]]:
        with self.lock:
            return self.items[:end]

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


def fold(events: list[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    rows: dict[str, tuple[int, int]] = {}
    for account, amount, version in events:
        balance = rows.get(account, (0, 0))[0]
        rows[account] = (balance + amount, version)
    return rows


class Applier(threading.Thread):
    """Folds the events into one generation's table with its checkpoint in one transaction per
    batch, like the sink: version-guarded upserts."""

    def __init__(
        self, dsn: str, events: Events, table: str, key: str, batch: int, start_after: float
    ) -> None:
        super().__init__(daemon=True)
        self.dsn, self.events, self.table, self.key = dsn, events, table, key
        self.batch, self.start_after = batch, start_after
        self.applied = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                time.sleep(self.start_after)
                while not self.stop.is_set() or self.applied < len(self.events):
                    end = min(len(self.events), self.applied + self.batch)
                    if end == self.applied:
                        time.sleep(0.002)
                        continue
                    self._apply(conn, end)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _apply(self, conn: psycopg.Connection[Any], end: int) -> None:
        events = self.events.upto(end)
        balances = fold(events)  # the state after `end` events, for the touched accounts
        touched = {account for account, _, _ in events[self.applied :]}
        with conn.transaction():
            for account in sorted(touched):
                balance, version = balances[account]
                conn.execute(
                    f"INSERT INTO {self.table} VALUES (%s, %s, %s) ON CONFLICT (account_id) "
                    "DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version "
                    f"WHERE {self.table}.version < EXCLUDED.version",
                    (account, balance, version),
                )
            conn.execute(
                "INSERT INTO cqrs_checkpoints (projection, source_partition, source_offset) "
                "VALUES (%s, 0, %s) ON CONFLICT (projection, source_partition) "
                "DO UPDATE SET source_offset = EXCLUDED.source_offset",
                (self.key, end - 1),
            )
        self.applied = end


def test_a_swap_under_steady_writes_never_shows_a_missing_or_older_row(
    pg_conn: psycopg.Connection[Any], pg_dsn_for_schema: str
) -> None:
    accounts_layout(pg_conn)
    events = Events()
    events.send(KEYS)
    live = Applier(pg_dsn_for_schema, events, "accounts_g1", "accounts", 5, 0)
    rebuild = Applier(pg_dsn_for_schema, events, "accounts_g2", "accounts.g2", 400, 0.5)
    reader = PollingReader(pg_dsn_for_schema, "accounts", "account_id")
    stop_sending = threading.Event()

    def sender() -> None:
        while not stop_sending.is_set():
            events.send(20)
            time.sleep(0.005)

    sending = threading.Thread(target=sender, daemon=True)
    for thread in (live, rebuild, reader, sending):
        thread.start()
    refusals: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while live.applied < 4 * KEYS:  # the live table has rows before the first attempt
            assert time.monotonic() < deadline and live.error is None, live.error
            time.sleep(0.01)
        while True:
            try:
                swap(pg_conn, ACCOUNTS, 2)
                break
            except SwapRefused as exc:
                refusals.append(str(exc))
                assert time.monotonic() < deadline, refusals[-3:]
                time.sleep(0.05)
        time.sleep(0.5)  # the reader keeps polling the new generation under writes
    finally:
        stop_sending.set()
        sending.join(5)
        for applier in (live, rebuild):
            applier.stop.set()
            applier.join(30)
        reader.stop.set()
        reader.join(5)
    assert live.error is None and rebuild.error is None, (live.error, rebuild.error)
    assert reader.error is None, reader.error
    assert refusals, "the rebuild started behind: the first attempts must be refused"
    assert "generation 2 is behind generation 1" in refusals[0]
    assert reader.polls > 50
    assert reader.problems == []
    final = dict(
        (account, (balance, version))
        for account, balance, version in pg_conn.execute("SELECT * FROM accounts").fetchall()
    )
    assert final == fold(events.upto(len(events)))
    states = {g.generation: g.state for g in generations(pg_conn, "accounts")}
    assert states == {1: "retired", 2: "live"}
    (definition,) = pg_conn.execute("SELECT pg_get_viewdef('accounts'::regclass)").fetchone()
    assert "accounts_g2" in definition and "accounts_g1" not in definition


def test_refusals_name_what_is_behind_and_nothing_changes(
    pg_conn: psycopg.Connection[Any],
) -> None:
    accounts_layout(pg_conn)
    pg_conn.execute("INSERT INTO accounts_g1 VALUES ('a', 10, 3), ('b', 5, 1)")
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts', 0, 7), ('accounts', 1, 2)")
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts.g2', 0, 9)")
    with pytest.raises(SwapRefused, match=r"checkpoints of partitions \[1\]"):
        swap(pg_conn, ACCOUNTS, 2)
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts.g2', 1, 2)")
    pg_conn.execute("INSERT INTO accounts_g2 VALUES ('a', 10, 2)")
    with pytest.raises(SwapRefused, match=r"row \('a',\) is at version 2, live at 3"):
        swap(pg_conn, ACCOUNTS, 2)
    pg_conn.execute("UPDATE accounts_g2 SET version = 3")
    with pytest.raises(SwapRefused, match=r"row \('b',\) is missing, live at 1"):
        swap(pg_conn, ACCOUNTS, 2)
    assert [g.state for g in generations(pg_conn, "accounts")] == ["live", "building"]
    assert pg_conn.execute("SELECT count(*) FROM accounts").fetchone() == (2,)

    pg_conn.execute("INSERT INTO accounts_g2 VALUES ('b', 5, 1), ('c', 1, 1)")
    swapped = swap(pg_conn, ACCOUNTS, 2)
    assert (swapped.generation, swapped.state) == (2, "live")
    assert pg_conn.execute("SELECT count(*) FROM accounts").fetchone() == (3,)
    with pytest.raises(GenerationError, match="generation 2 is live; only a building"):
        swap(pg_conn, ACCOUNTS, 2)
    with pytest.raises(GenerationError, match="generation 7 is unknown"):
        swap(pg_conn, ACCOUNTS, 7)
    with pytest.raises(GenerationError, match="generation 2 is live: swap another one in"):
        drop(pg_conn, "accounts", 2)

    dropped = drop(pg_conn, "accounts", 1)
    assert dropped.relation == "accounts_g1"
    assert pg_conn.execute("SELECT to_regclass('accounts_g1')").fetchone() == (None,)
    keys = pg_conn.execute("SELECT DISTINCT projection FROM cqrs_checkpoints").fetchall()
    assert keys == [("accounts.g2",)]
    assert [g.generation for g in generations(pg_conn, "accounts")] == [2]
    with pytest.raises(GenerationError, match="has no generation 1"):
        drop(pg_conn, "accounts", 1)


def test_a_generation_is_swapped_in_only_past_where_the_events_ended_when_it_began(
    pg_conn: psycopg.Connection[Any],
) -> None:
    """A projection added since the last event of some partitions: its live generation has
    no checkpoint there, so only `catch_up_to` keeps a half-built partition out of view."""
    pg_conn.execute(CHECKPOINTS_SQL)
    pg_conn.execute(
        "CREATE TABLE accounts (account_id text PRIMARY KEY, balance bigint NOT NULL, "
        "version bigint NOT NULL)"
    )
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts', 0, 9)")
    pg_conn.execute("INSERT INTO accounts VALUES ('a', 1, 1)")  # from partition 0
    prepare(pg_conn, ACCOUNTS, 2, "accounts.g2", {0: 9, 1: 4})
    pg_conn.execute("INSERT INTO accounts_g2 VALUES ('a', 1, 1)")
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts.g2', 0, 9)")
    pg_conn.execute("INSERT INTO cqrs_checkpoints VALUES ('accounts.g2', 1, 3)")
    with pytest.raises(SwapRefused, match=r"checkpoints of partitions \[1\]"):
        swap(pg_conn, ACCOUNTS, 2)
    assert [g.state for g in generations(pg_conn, "accounts")] == ["live", "building"]
    pg_conn.execute(
        "UPDATE cqrs_checkpoints SET source_offset = 4 "
        "WHERE projection = 'accounts.g2' AND source_partition = 1"
    )
    assert swap(pg_conn, ACCOUNTS, 2).state == "live"


def test_a_catalog_made_before_catch_up_to_gains_it(pg_conn: psycopg.Connection[Any]) -> None:
    ensure_catalog(pg_conn)
    pg_conn.execute("ALTER TABLE cqrs_generations DROP COLUMN catch_up_to")
    register(pg_conn, "accounts", 1, "accounts_g1", "accounts", LIVE)
    found = pg_conn.execute(
        "SELECT catch_up_to FROM cqrs_generations WHERE projection = 'accounts'"
    ).fetchall()
    assert found == [(None,)]


def test_a_watermark_projections_summing_view_is_repointed(
    pg_conn: psycopg.Connection[Any],
) -> None:
    totals = projection(
        "totals", table="totals_by_partition", guard=Guard.WATERMARK, key_fields=("currency",)
    )
    pg_conn.execute(CHECKPOINTS_SQL)
    for generation, amounts in ((1, (5, 7)), (2, (5, 9))):
        table = f"totals_by_partition_g{generation}"
        pg_conn.execute(
            f"CREATE TABLE {table} (currency text, source_partition int, amount bigint, "
            "source_offset bigint, PRIMARY KEY (currency, source_partition))"
        )
        pg_conn.execute(f"INSERT INTO {table} VALUES ('EUR', 0, %s, 4), ('EUR', 1, %s, 6)", amounts)
        register(
            pg_conn,
            "totals",
            generation,
            table,
            "totals" if generation == 1 else "totals.g2",
            LIVE if generation == 1 else BUILDING,
        )
    pg_conn.execute(
        "CREATE VIEW totals AS SELECT currency, sum(amount)::bigint AS amount "
        "FROM totals_by_partition_g1 GROUP BY currency"
    )
    assert pg_conn.execute("SELECT * FROM totals").fetchall() == [("EUR", 12)]
    pg_conn.execute("UPDATE totals_by_partition_g2 SET source_offset = 5")
    with pytest.raises(SwapRefused, match=r"row \('EUR', 1\) is at source_offset 5, live at 6"):
        swap(pg_conn, totals, 2)
    pg_conn.execute("UPDATE totals_by_partition_g2 SET source_offset = 6")
    swap(pg_conn, totals, 2)
    assert pg_conn.execute("SELECT * FROM totals").fetchall() == [("EUR", 14)]


def test_only_a_view_can_be_swapped(pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute(CHECKPOINTS_SQL)
    for table in ("plain", "plain_g1", "plain_g2"):
        pg_conn.execute(f"CREATE TABLE {table} (account_id text PRIMARY KEY, version bigint)")
    register(pg_conn, "plain", 1, "plain_g1", "plain", LIVE)
    register(pg_conn, "plain", 2, "plain_g2", "plain.g2")
    with pytest.raises(GenerationError, match="plain is not a view"):
        swap(pg_conn, projection("plain"), 2)
    assert [g.state for g in generations(pg_conn, "plain")] == ["live", "building"]
