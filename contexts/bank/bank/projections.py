"""The bank's read models: `accounts`, `daily_totals` and `event_log`.

Pure functions of (row, event, meta); the projector guards them against redelivery (see
processors/projections.py), so none of them checks versions or offsets itself.
"""

from __future__ import annotations

from bank.account import ACCOUNT, CLOSED, OPEN
from bank.transfer import TRANSFER
from processors.domain import Event, Record
from processors.projections import EventMeta, Guard, Projection, epoch_day, event_log

MOVEMENTS = frozenset({"bank.Deposited", "bank.Withdrawn"})


def _account_key(event: Event, meta: EventMeta) -> str:
    return meta.aggregate_id


def _apply_account(row: Record | None, event: Event, meta: EventMeta) -> Record:
    data = event.data
    if event.type == "bank.AccountOpened":
        row = {
            "account_id": data["account_id"],
            "owner": data["owner"],
            "currency": data["currency"],
            "balance": 0,
            "status": OPEN,
        }
    elif row is None:
        raise ValueError(f"{event.type} for account {meta.aggregate_id} before AccountOpened")
    elif event.type in MOVEMENTS:
        row = {**row, "balance": data["balance"]}
    elif event.type == "bank.AccountClosed":
        row = {**row, "status": CLOSED}
    return {**row, "updated_at": meta.time}


ACCOUNTS = Projection(
    name="accounts",
    row_schema="bank.AccountRow",
    event_types=ACCOUNT.event_types,
    key=_account_key,
    apply=_apply_account,
    key_fields=("account_id",),
    guard=Guard.VERSION,
    description="one row per account: owner, currency, balance, status",
)


def _daily_key(event: Event, meta: EventMeta) -> str:
    day = epoch_day(meta.time).isoformat()
    return f"{event.data['amount']['currency']}:{day}"


def _apply_daily(row: Record | None, event: Event, meta: EventMeta) -> Record:
    amount = event.data["amount"]
    if row is None:
        row = {
            "currency": amount["currency"],
            "day": epoch_day(meta.time),
            "deposits": 0,
            "withdrawals": 0,
            "count": 0,
        }
    side = "deposits" if event.type == "bank.Deposited" else "withdrawals"
    return {**row, side: row[side] + amount["amount"], "count": row["count"] + 1}


DAILY_TOTALS = Projection(
    name="daily_totals",
    row_schema="bank.DailyTotalRow",
    event_types=MOVEMENTS,
    key=_daily_key,
    apply=_apply_daily,
    key_fields=("currency", "day"),  # the runtime adds source_partition
    guard=Guard.WATERMARK,
    table="daily_totals_by_partition",
    query_field="currency",
    description="money moved per currency and UTC day",
)

EVENT_LOG = event_log("bank.EventLogRow", ACCOUNT.event_types | TRANSFER.event_types)

PROJECTIONS: tuple[Projection, ...] = (ACCOUNTS, DAILY_TOTALS, EVENT_LOG)
