"""The bank account aggregate: open, deposit, withdraw without overdraft, close at zero."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bank.messages import CloseAccount, Movement, OpenAccount
from processors.domain import AggregateType, Decision, Event, Record, Rejected

NEW = "NEW"  # not opened yet: the initial state only, never written
OPEN = "OPEN"
CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str = ""
    owner: str = ""
    currency: str = ""
    balance: int = 0
    status: str = NEW


ACCOUNT = AggregateType("bank.Account", id_field="account_id", initial_state=Account())


def _check_movement(data: Movement, state: Account) -> tuple[int, str] | Rejected:
    if state.status == NEW:
        return Rejected("account_not_found", f"account {data['account_id']} is not open")
    if state.status == CLOSED:
        return Rejected("account_closed", f"account {state.account_id} is closed")
    amount, currency = int(data["amount"]["amount"]), str(data["amount"]["currency"])
    if amount <= 0:
        return Rejected("invalid_amount", f"amount must be positive, got {amount}")
    if currency != state.currency:
        return Rejected(
            "currency_mismatch", f"account holds {state.currency}, command is in {currency}"
        )
    return amount, currency


def _moved(kind: str, data: Movement, amount: int, balance: int, state: Account) -> Event:
    money = {"amount": amount, "currency": state.currency}
    record: Record = {"account_id": state.account_id, "amount": money, "balance": balance}
    return Event(kind, {**record, "transfer_id": data.get("transfer_id")})


@ACCOUNT.decides("OpenAccount")
def open_account(data: OpenAccount, state: Account) -> Decision:
    if state.status != NEW:
        return Rejected("account_exists", f"account {state.account_id} already exists")
    code = data["currency"]
    if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
        return Rejected("invalid_currency", f"not an ISO 4217 code: {code!r}")
    if not data["owner"].strip():
        return Rejected("invalid_owner", "owner must not be blank")
    opened = {"account_id": data["account_id"], "owner": data["owner"], "currency": code}
    return [Event("bank.AccountOpened", opened)]


@ACCOUNT.decides("Deposit")
def deposit(data: Movement, state: Account) -> Decision:
    checked = _check_movement(data, state)
    if isinstance(checked, Rejected):
        return checked
    amount, _ = checked
    return [_moved("bank.Deposited", data, amount, state.balance + amount, state)]


@ACCOUNT.decides("Withdraw")
def withdraw(data: Movement, state: Account) -> Decision:
    checked = _check_movement(data, state)
    if isinstance(checked, Rejected):
        return checked
    amount, _ = checked
    if amount > state.balance:
        detail = f"withdrawing {amount} would overdraw balance {state.balance}"
        return Rejected("insufficient_funds", detail)
    return [_moved("bank.Withdrawn", data, amount, state.balance - amount, state)]


@ACCOUNT.decides("CloseAccount")
def close_account(data: CloseAccount, state: Account) -> Decision:
    if state.status == NEW:
        return Rejected("account_not_found", f"account {data['account_id']} is not open")
    if state.status == CLOSED:
        return Rejected("account_closed", f"account {state.account_id} is already closed")
    if state.balance != 0:
        detail = f"balance is {state.balance}; only zero can be closed"
        return Rejected("non_zero_balance", detail)
    return [Event("bank.AccountClosed", {"account_id": state.account_id})]


@ACCOUNT.evolves("AccountOpened")
def _opened(state: Account, data: Record) -> Account:
    return Account(data["account_id"], data["owner"], data["currency"], 0, OPEN)


@ACCOUNT.evolves("Deposited", "Withdrawn")
def _moved_money(state: Account, data: Record) -> Account:
    return replace(state, balance=data["balance"])


@ACCOUNT.evolves("AccountClosed")
def _closed(state: Account, data: Record) -> Account:
    return replace(state, status=CLOSED)
