"""The bank account aggregate: open, deposit, withdraw without overdraft, close at zero."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from processors.domain import AggregateType, Command, Decision, Event, Record, Rejected

OPEN = "OPEN"
CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    owner: str
    currency: str
    balance: int
    status: str


def _money(data: Any) -> tuple[int, str]:
    money = data["amount"]
    return int(money["amount"]), str(money["currency"])


def _check_movement(cmd: Command, state: Account | None) -> tuple[int, str] | Rejected:
    if state is None:
        return Rejected("account_not_found", f"account {cmd.data['account_id']} is not open")
    if state.status == CLOSED:
        return Rejected("account_closed", f"account {state.account_id} is closed")
    amount, currency = _money(cmd.data)
    if amount <= 0:
        return Rejected("invalid_amount", f"amount must be positive, got {amount}")
    if currency != state.currency:
        return Rejected(
            "currency_mismatch", f"account holds {state.currency}, command is in {currency}"
        )
    return amount, currency


def _is_currency_code(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def decide(cmd: Command, state: Account | None) -> Decision:
    data = cmd.data
    match cmd.type:
        case "bank.OpenAccount":
            if state is not None:
                return Rejected("account_exists", f"account {state.account_id} already exists")
            if not _is_currency_code(data["currency"]):
                got = data["currency"]
                return Rejected("invalid_currency", f"not an ISO 4217 code: {got!r}")
            if not data["owner"].strip():
                return Rejected("invalid_owner", "owner must not be blank")
            record = {k: data[k] for k in ("account_id", "owner", "currency")}
            return [Event("bank.AccountOpened", record)]
        case "bank.Deposit":
            checked = _check_movement(cmd, state)
            if isinstance(checked, Rejected):
                return checked
            assert state is not None
            amount, currency = checked
            return [
                Event(
                    "bank.Deposited",
                    {
                        "account_id": state.account_id,
                        "amount": {"amount": amount, "currency": currency},
                        "balance": state.balance + amount,
                        "transfer_id": data.get("transfer_id"),
                    },
                )
            ]
        case "bank.Withdraw":
            checked = _check_movement(cmd, state)
            if isinstance(checked, Rejected):
                return checked
            assert state is not None
            amount, currency = checked
            if amount > state.balance:
                return Rejected(
                    "insufficient_funds",
                    f"withdrawing {amount} would overdraw balance {state.balance}",
                )
            return [
                Event(
                    "bank.Withdrawn",
                    {
                        "account_id": state.account_id,
                        "amount": {"amount": amount, "currency": currency},
                        "balance": state.balance - amount,
                        "transfer_id": data.get("transfer_id"),
                    },
                )
            ]
        case "bank.CloseAccount":
            if state is None:
                return Rejected("account_not_found", f"account {data['account_id']} is not open")
            if state.status == CLOSED:
                return Rejected("account_closed", f"account {state.account_id} is already closed")
            if state.balance != 0:
                return Rejected(
                    "non_zero_balance", f"balance is {state.balance}; only zero can be closed"
                )
            return [Event("bank.AccountClosed", {"account_id": state.account_id})]
    return Rejected("unknown_command", f"account cannot handle {cmd.type}")


def evolve(state: Account | None, event: Event) -> Account:
    data = event.data
    match event.type:
        case "bank.AccountOpened":
            return Account(data["account_id"], data["owner"], data["currency"], 0, OPEN)
        case "bank.Deposited" | "bank.Withdrawn":
            assert state is not None, f"{event.type} before AccountOpened"
            return replace(state, balance=data["balance"])
        case "bank.AccountClosed":
            assert state is not None, "AccountClosed before AccountOpened"
            return replace(state, status=CLOSED)
    raise ValueError(f"account cannot apply {event.type}")


def to_record(state: Account) -> Record:
    return {
        "account_id": state.account_id,
        "owner": state.owner,
        "currency": state.currency,
        "balance": state.balance,
        "status": state.status,
    }


def from_record(record: Record) -> Account:
    return Account(
        record["account_id"],
        record["owner"],
        record["currency"],
        record["balance"],
        record["status"],
    )


ACCOUNT: AggregateType[Account] = AggregateType(
    name="bank.Account",
    id_field="account_id",
    command_types=frozenset(
        {"bank.OpenAccount", "bank.Deposit", "bank.Withdraw", "bank.CloseAccount"}
    ),
    event_types=frozenset(
        {"bank.AccountOpened", "bank.Deposited", "bank.Withdrawn", "bank.AccountClosed"}
    ),
    state_schema="bank.AccountState",
    decide=decide,
    evolve=evolve,
    to_record=to_record,
    from_record=from_record,
)
