"""The account decider and evolver as pure functions: given events, when a command, then
events or a rejection (processors/testing.py), with every record checked against its schema."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bank.account import ACCOUNT, CLOSED, NEW, OPEN, Account
from processors import testing
from processors.domain import Command, Event, Rejected
from schemas.catalog import default_catalog


def money(amount: int, currency: str = "EUR") -> dict:
    return {"amount": amount, "currency": currency}


def account(*events: Event) -> testing.Given[Account]:
    return testing.given(ACCOUNT, *events, catalog=default_catalog())


OPEN_CMD = Command("bank.OpenAccount", {"account_id": "a1", "owner": "Ada", "currency": "EUR"})
OPENED = Event("bank.AccountOpened", {"account_id": "a1", "owner": "Ada", "currency": "EUR"})
CLOSE = Command("bank.CloseAccount", {"account_id": "a1"})
CLOSED_EVENT = Event("bank.AccountClosed", {"account_id": "a1"})


def deposit(amount: int, currency: str = "EUR") -> Command:
    return Command("bank.Deposit", {"account_id": "a1", "amount": money(amount, currency)})


def withdraw(amount: int) -> Command:
    return Command("bank.Withdraw", {"account_id": "a1", "amount": money(amount)})


def moved(kind: str, amount: int, balance: int) -> Event:
    data = {"account_id": "a1", "amount": money(amount), "balance": balance, "transfer_id": None}
    return Event(f"bank.{kind}", data)


def run(commands: list[Command], state: Account = ACCOUNT.initial_state):
    """Decide and evolve each command in turn; returns the final state and every decision."""
    decisions = []
    for cmd in commands:
        decision = ACCOUNT.decide(cmd, state)
        decisions.append(decision)
        if not isinstance(decision, Rejected):
            state = ACCOUNT.fold(decision, state)
    return state, decisions


def test_a_new_account_starts_at_the_initial_state():
    assert account().state == Account() and Account().status == NEW
    assert account().when(OPEN_CMD).then(OPENED) == Account("a1", "Ada", "EUR", 0, OPEN)


def test_deposits_emit_events_with_the_running_balance():
    state = account(OPENED, moved("Deposited", 500, 500)).when(deposit(250))
    assert state.then(moved("Deposited", 250, 750)) == Account("a1", "Ada", "EUR", 750, OPEN)


def test_overdrawing_withdraw_is_rejected_and_emits_nothing():
    rejected = account(OPENED, moved("Deposited", 100, 100)).when(withdraw(101))
    assert "overdraw" in rejected.then_rejected("insufficient_funds").detail


def test_withdraw_of_whole_balance_is_allowed():
    after = account(OPENED, moved("Deposited", 100, 100)).when(withdraw(100))
    assert after.then(moved("Withdrawn", 100, 0)).balance == 0


def test_commands_on_a_missing_account_are_rejected():
    for cmd in (deposit(1), withdraw(1), CLOSE):
        account().when(cmd).then_rejected("account_not_found")


def test_opening_twice_is_rejected():
    account(OPENED).when(OPEN_CMD).then_rejected("account_exists")


def test_close_only_at_zero_balance_and_then_everything_is_rejected():
    account(OPENED, moved("Deposited", 10, 10)).when(CLOSE).then_rejected("non_zero_balance")
    emptied = (OPENED, moved("Deposited", 10, 10), moved("Withdrawn", 10, 0))
    assert account(*emptied).when(CLOSE).then(CLOSED_EVENT).status == CLOSED
    for cmd in (deposit(1), withdraw(1), CLOSE):
        account(*emptied, CLOSED_EVENT).when(cmd).then_rejected("account_closed")


def test_non_positive_amounts_and_other_currencies_are_rejected():
    account(OPENED).when(deposit(0)).then_rejected("invalid_amount")
    account(OPENED).when(deposit(-5)).then_rejected("invalid_amount")
    account(OPENED).when(deposit(5, "USD")).then_rejected("currency_mismatch")


def test_open_validates_currency_and_owner():
    bad_currency = {"account_id": "x", "owner": "A", "currency": "eur"}
    account().when("OpenAccount", bad_currency).then_rejected("invalid_currency")
    blank_owner = {"account_id": "x", "owner": " ", "currency": "EUR"}
    account().when("OpenAccount", blank_owner).then_rejected("invalid_owner")


def test_state_record_round_trip_and_the_record_is_the_schemas():
    state = account(OPENED, moved("Deposited", 42, 42)).state
    record = ACCOUNT.to_record(state)
    assert ACCOUNT.from_record(record) == state
    default_catalog().validate("bank.AccountState", {**record, "version": 2})


@given(
    st.lists(
        st.tuples(st.sampled_from(["deposit", "withdraw"]), st.integers(1, 20_000)), max_size=60
    )
)
def test_balance_matches_a_plain_model_and_never_goes_negative(ops):
    """The decider agrees with the simplest possible model of an account: each movement is
    one event carrying the model's running balance, and a withdrawal that would overdraw is
    rejected."""
    expected = 0
    commands = [OPEN_CMD]
    wanted: list[object] = [[OPENED]]
    for kind, amount in ops:
        commands.append(deposit(amount) if kind == "deposit" else withdraw(amount))
        if kind == "deposit":
            expected += amount
        elif amount <= expected:
            expected -= amount
        else:
            wanted.append("insufficient_funds")
            continue
        wanted.append([moved("Deposited" if kind == "deposit" else "Withdrawn", amount, expected)])
    state, decisions = run(commands)
    assert state.balance == expected >= 0
    got = [d.reason if isinstance(d, Rejected) else list(d) for d in decisions]
    assert got == wanted
