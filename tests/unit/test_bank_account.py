"""The account decider and evolver as pure functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bank.account import ACCOUNT, CLOSED, OPEN, Account
from processors.domain import Command, Event, Rejected


def money(amount: int, currency: str = "EUR") -> dict:
    return {"amount": amount, "currency": currency}


def run(commands: list[Command], state: Account | None = None):
    """Decide and evolve each command in turn; returns the final state and every decision."""
    decisions = []
    for cmd in commands:
        decision = ACCOUNT.decide(cmd, state)
        decisions.append(decision)
        if not isinstance(decision, Rejected):
            state = ACCOUNT.fold(decision, state)
    return state, decisions


OPEN_CMD = Command("bank.OpenAccount", {"account_id": "a1", "owner": "Ada", "currency": "EUR"})


def deposit(amount: int, currency: str = "EUR") -> Command:
    return Command("bank.Deposit", {"account_id": "a1", "amount": money(amount, currency)})


def withdraw(amount: int) -> Command:
    return Command("bank.Withdraw", {"account_id": "a1", "amount": money(amount)})


CLOSE = Command("bank.CloseAccount", {"account_id": "a1"})


def test_open_then_deposit_emits_events_with_running_balance():
    state, decisions = run([OPEN_CMD, deposit(500), deposit(250)])
    assert decisions[0] == [Event("bank.AccountOpened", dict(OPEN_CMD.data))]
    assert decisions[2][0].data["balance"] == 750
    assert state == Account("a1", "Ada", "EUR", 750, OPEN)


def test_overdrawing_withdraw_is_rejected_and_emits_nothing():
    state, decisions = run([OPEN_CMD, deposit(100), withdraw(101)])
    assert decisions[2] == Rejected("insufficient_funds", decisions[2].detail)
    assert "overdraw" in decisions[2].detail
    assert state.balance == 100


def test_withdraw_of_whole_balance_is_allowed():
    state, _ = run([OPEN_CMD, deposit(100), withdraw(100)])
    assert state.balance == 0


def test_commands_on_a_missing_account_are_rejected():
    for cmd in (deposit(1), withdraw(1), CLOSE):
        assert ACCOUNT.decide(cmd, None).reason == "account_not_found"


def test_opening_twice_is_rejected():
    _, decisions = run([OPEN_CMD, OPEN_CMD])
    assert decisions[1].reason == "account_exists"


def test_close_only_at_zero_balance_and_then_everything_is_rejected():
    state, decisions = run([OPEN_CMD, deposit(10), CLOSE, withdraw(10), CLOSE])
    assert decisions[2].reason == "non_zero_balance"
    assert state.status == CLOSED
    assert decisions[4] == [Event("bank.AccountClosed", {"account_id": "a1"})]
    _, after = run([deposit(1), CLOSE], state)
    assert [d.reason for d in after] == ["account_closed", "account_closed"]


def test_non_positive_amounts_and_other_currencies_are_rejected():
    state, _ = run([OPEN_CMD])
    assert ACCOUNT.decide(deposit(0), state).reason == "invalid_amount"
    assert ACCOUNT.decide(deposit(-5), state).reason == "invalid_amount"
    assert ACCOUNT.decide(deposit(5, "USD"), state).reason == "currency_mismatch"


def test_open_validates_currency_and_owner():
    bad_currency = Command("bank.OpenAccount", {"account_id": "x", "owner": "A", "currency": "eur"})
    blank_owner = Command("bank.OpenAccount", {"account_id": "x", "owner": " ", "currency": "EUR"})
    assert ACCOUNT.decide(bad_currency, None).reason == "invalid_currency"
    assert ACCOUNT.decide(blank_owner, None).reason == "invalid_owner"


def test_state_record_round_trip():
    state, _ = run([OPEN_CMD, deposit(42)])
    assert ACCOUNT.from_record(ACCOUNT.to_record(state)) == state


@given(
    st.lists(
        st.tuples(st.sampled_from(["deposit", "withdraw"]), st.integers(1, 20_000)), max_size=60
    )
)
def test_balance_matches_a_plain_model_and_never_goes_negative(ops):
    """The decider agrees with the simplest possible model of an account."""
    expected = 0
    commands = [OPEN_CMD]
    for kind, amount in ops:
        commands.append(deposit(amount) if kind == "deposit" else withdraw(amount))
        if kind == "deposit":
            expected += amount
        elif amount <= expected:
            expected -= amount
    state, decisions = run(commands)
    assert state.balance == expected
    assert all(
        d.data.get("balance", 0) >= 0
        for ds in decisions
        if not isinstance(ds, Rejected)
        for d in ds
    )
