"""The sink's reduction of a batch (newest row per key, highest checkpoint) and the SQL it
derives from a projection."""

from __future__ import annotations

import pytest

from bank.projections import ACCOUNTS, DAILY_TOTALS, EVENT_LOG
from processors.domain import BoundedContext
from processors.registry import default_registry
from schemas.codec import default_codec
from sinks.batch import SinkRecord, reduce_batch
from sinks.migrate import MigrationError, discover
from sinks.tables import table_writer


def account(version: int, balance: int) -> dict:
    return {"account_id": "a1", "balance": balance, "version": version}


def test_the_newest_row_per_key_wins_whatever_the_order():
    records = [
        SinkRecord(ACCOUNTS, 0, 10, account(3, 30)),
        SinkRecord(ACCOUNTS, 0, 12, account(5, 50)),
        SinkRecord(ACCOUNTS, 0, 11, account(4, 40)),  # older than what the batch has
    ]
    batch = reduce_batch(records)
    assert batch.rows == {"accounts": {("a1",): account(5, 50)}}
    assert batch.checkpoints == {("accounts", 0): 12}
    assert batch.records == 3


def test_watermark_rows_are_per_source_partition_and_markers_only_move_checkpoints():
    def totals(partition: int, offset: int, deposits: int) -> dict:
        return {
            "currency": "EUR",
            "day": 19844,
            "source_partition": partition,
            "source_offset": offset,
            "deposits": deposits,
        }

    records = [
        SinkRecord(DAILY_TOTALS, 1, 7, totals(1, 7, 70)),
        SinkRecord(DAILY_TOTALS, 2, 3, totals(2, 3, 30)),
        SinkRecord(DAILY_TOTALS, 1, 6, totals(1, 6, 60)),
        SinkRecord(DAILY_TOTALS, 2, 9, None),  # marker
        SinkRecord(ACCOUNTS, 4, 15, None),
    ]
    batch = reduce_batch(records)
    assert batch.rows["daily_totals"] == {
        ("EUR", 19844, 1): totals(1, 7, 70),
        ("EUR", 19844, 2): totals(2, 3, 30),
    }
    assert batch.checkpoints == {
        ("daily_totals", 1): 7,
        ("daily_totals", 2): 9,
        ("accounts", 4): 15,
    }
    assert "accounts" not in batch.rows


def test_the_upsert_is_guarded_by_the_projection_guard_column():
    catalog = default_codec().catalog
    writer = table_writer(ACCOUNTS, catalog)
    accounts = writer.upsert.as_string(None)
    assert accounts.startswith('INSERT INTO "accounts" ("account_id", "owner"')
    assert 'SELECT "account_id", "owner"' in accounts
    assert 'FROM "pg_temp"."cqrs_stage_accounts" ON CONFLICT' in accounts
    assert writer.copy.as_string(None).startswith(
        'COPY "pg_temp"."cqrs_stage_accounts" ("account_id", "owner"'
    )
    stage = writer.stage.as_string(None)
    assert '(LIKE "accounts" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS' in stage
    assert 'ON CONFLICT ("account_id") DO UPDATE SET "owner" = EXCLUDED."owner"' in accounts
    assert accounts.endswith('WHERE "accounts"."version" < EXCLUDED."version"')
    totals = table_writer(DAILY_TOTALS, catalog).upsert.as_string(None)
    assert 'INTO "daily_totals_by_partition"' in totals
    assert 'ON CONFLICT ("currency", "day", "source_partition")' in totals
    assert totals.endswith('."source_offset" < EXCLUDED."source_offset"')
    log = table_writer(EVENT_LOG, catalog)
    assert "payload_json" in log.columns and '"cqrs_stage_event_log"' in log.upsert.as_string(None)


def test_migrations_run_the_runtime_scope_first():
    bank = default_registry().context("bank")
    labels = [f"{m.scope}/{m.version:04d}_{m.name}" for m in discover(bank)]
    assert labels == [
        "cqrs/0001_checkpoints",
        "cqrs/0002_sink_offsets",
        "bank/0001_read_models",
        "bank/0002_event_log_principal",
        "bank/0003_event_log_traceparent",
    ]
    assert discover(BoundedContext("bare", aggregates=()))[-1].scope == "cqrs"


def test_a_context_migrations_folder_must_exist_and_cqrs_is_the_runtimes(tmp_path):
    with pytest.raises(MigrationError, match=r"migrations folder .* does not exist"):
        discover(BoundedContext("gone", aggregates=(), migrations=tmp_path / "nowhere"))
    with pytest.raises(MigrationError, match="may not be named 'cqrs'"):
        discover(BoundedContext("cqrs", aggregates=()))


def test_skipped_offsets_finds_jumps_but_not_redeliveries():
    from sinks.batch import skipped_offsets

    seen: dict[tuple[str, int], int] = {}
    assert skipped_offsets(seen, [("t", 0, 5), ("t", 0, 6), ("t", 1, 0)]) == []  # first sight
    assert skipped_offsets(seen, [("t", 0, 7), ("t", 0, 10), ("t", 1, 1)]) == [("t", 0, 8, 9)]
    assert skipped_offsets(seen, [("t", 0, 3), ("t", 0, 4)]) == []  # replayed after a rebalance
    assert skipped_offsets(seen, [("t", 0, 11), ("t", 1, 5)]) == [("t", 1, 2, 4)]
    assert seen == {("t", 0): 11, ("t", 1): 5}
