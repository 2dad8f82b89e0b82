"""The bank projections and the projection API's guards, as pure functions."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from bank.account import ACCOUNT
from bank.projections import ACCOUNTS, DAILY_TOTALS, EVENT_LOG, PROJECTIONS
from processors.domain import Event
from processors.projections import EventMeta, Guard, Projection, ProjectionError
from processors.registry import default_registry
from schemas.codec import default_codec

T0 = dt.datetime(2024, 5, 1, 23, 59, 59, tzinfo=dt.UTC)


TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def meta(version: int, offset: int, *, partition: int = 0, time: dt.datetime = T0, agg="a1"):
    return EventMeta(
        event_id=f"bank:{agg}:{version}",
        aggregate_type="bank.Account",
        aggregate_id=agg,
        version=version,
        time=time,
        partition=partition,
        offset=offset,
        correlation_id="corr-1",
        causation_id=f"cmd-{version}",
        principal="alice",
        traceparent=TRACE,
    )


def opened(account="a1", currency="EUR"):
    return Event(
        "bank.AccountOpened", {"account_id": account, "owner": "Ada", "currency": currency}
    )


def deposited(amount: int, balance: int, account="a1", currency="EUR"):
    money = {"amount": amount, "currency": currency}
    data = {"account_id": account, "amount": money, "balance": balance, "transfer_id": None}
    return Event("bank.Deposited", data)


def withdrawn(amount: int, balance: int, account="a1"):
    money = {"amount": amount, "currency": "EUR"}
    data = {"account_id": account, "amount": money, "balance": balance, "transfer_id": None}
    return Event("bank.Withdrawn", data)


def test_the_bank_context_declares_its_projections():
    assert default_registry().context("bank").projections == PROJECTIONS
    assert [p.name for p in PROJECTIONS] == ["accounts", "daily_totals", "event_log"]


def test_accounts_folds_like_the_aggregate_and_keeps_the_version():
    stream = [(opened(), 1), (deposited(500, 500), 2), (withdrawn(120, 380), 3)]
    row = None
    for i, (event, version) in enumerate(stream):
        row = ACCOUNTS.step(row, event, meta(version, 10 + i))
    state = ACCOUNT.fold([e for e, _ in stream])
    assert row == {
        "account_id": "a1",
        "owner": "Ada",
        "currency": "EUR",
        "balance": state.balance,
        "status": "OPEN",
        "version": 3,
        "updated_at": T0,
    }
    closed = ACCOUNTS.step(row, Event("bank.AccountClosed", {"account_id": "a1"}), meta(4, 20))
    assert closed["status"] == "CLOSED" and closed["version"] == 4


def test_a_redelivered_event_is_skipped_by_the_version_guard():
    row = ACCOUNTS.step(None, opened(), meta(1, 0))
    row = ACCOUNTS.step(row, deposited(500, 500), meta(2, 1))
    assert ACCOUNTS.step(row, deposited(500, 500), meta(2, 1)) is None
    assert ACCOUNTS.step(row, opened(), meta(1, 0)) is None
    assert ACCOUNTS.is_applied(row, meta(2, 1)) and not ACCOUNTS.is_applied(row, meta(3, 2))


def test_daily_totals_are_per_currency_utc_day_and_source_partition():
    event = deposited(700, 700)
    # The projection keys by currency and day; the runtime adds the source partition.
    assert DAILY_TOTALS.key(event, meta(2, 5, partition=3)) == "EUR:2024-05-01"
    assert DAILY_TOTALS.row_key(event, meta(2, 5, partition=3)) == "EUR:2024-05-01:3"
    next_day = meta(2, 5, partition=3, time=T0 + dt.timedelta(seconds=1))
    assert DAILY_TOTALS.row_key(event, next_day) == "EUR:2024-05-02:3"
    assert DAILY_TOTALS.key_fields == ("currency", "day", "source_partition")
    row = DAILY_TOTALS.step(None, event, meta(2, 5, partition=3))
    row = DAILY_TOTALS.step(row, withdrawn(200, 500), meta(3, 9, partition=3))
    assert row == {
        "currency": "EUR",
        "day": dt.date(2024, 5, 1),
        "deposits": 700,
        "withdrawals": 200,
        "count": 2,
        "source_partition": 3,
        "source_offset": 9,
    }
    # The watermark, not the version, guards it: any event at or below offset 9 is old.
    assert DAILY_TOTALS.step(row, deposited(1, 1, account="b"), meta(7, 9, partition=3)) is None
    assert DAILY_TOTALS.step(row, deposited(1, 1, account="b"), meta(1, 10, partition=3))


def test_a_watermark_row_refuses_events_of_another_partition():
    row = DAILY_TOTALS.step(None, deposited(1, 1), meta(2, 5, partition=3))
    with pytest.raises(ProjectionError, match=r"rows are keyed by row_key"):
        DAILY_TOTALS.step(row, deposited(1, 2), meta(3, 6, partition=4))


def test_the_runtime_keys_a_watermark_projection_by_source_partition():
    totals = Projection(
        name="totals",
        row_schema="bank.DailyTotalRow",
        event_types=frozenset({"bank.Deposited"}),
        key=lambda e, m: "EUR",
        apply=lambda r, e, m: {},
        key_fields=("currency",),
        guard=Guard.WATERMARK,
    )
    assert totals.key_fields == ("currency", "source_partition")
    assert totals.row_key(deposited(1, 1), meta(2, 5, partition=4)) == "EUR:4"
    assert ACCOUNTS.row_key(deposited(1, 1), meta(2, 5, partition=4)) == "a1"


def test_event_log_rows_carry_the_envelope_and_the_payload_as_json():
    event = deposited(700, 700)
    m = meta(2, 5, partition=1)
    row = EVENT_LOG.step(None, event, m)
    assert EVENT_LOG.key(event, m) == "bank.Account:a1:2"
    assert json.loads(row.pop("payload_json")) == event.data
    assert row == {
        "event_id": "bank:a1:2",
        "aggregate_type": "bank.Account",
        "aggregate_id": "a1",
        "version": 2,
        "type": "bank.Deposited",
        "time": T0,
        "correlation_id": "corr-1",
        "causation_id": "cmd-2",
        "principal": "alice",
        "traceparent": TRACE,
        "source_partition": 1,
        "source_offset": 5,
    }
    # The same event gives the same row, byte for byte (a replay republishes equal records).
    assert EVENT_LOG.step(None, event, m) == EVENT_LOG.step(None, event, m)


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_rows_encode_with_their_row_schema(projection: Projection):
    codec = default_codec()
    event = deposited(700, 700)
    row = projection.step(
        ACCOUNTS.step(None, opened(), meta(1, 0)) if projection is ACCOUNTS else None,
        event,
        meta(2, 1),
    )
    assert codec.decode(codec.encode(projection.row_schema, row), projection.row_schema) == row
