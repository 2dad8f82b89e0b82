"""The domain API itself: derived type sets, the initial state, the derived state record,
the load-time check against the schemas, and the given/when/then helper's verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

import pytest

from bank.account import ACCOUNT, Account
from processors import testing
from processors.domain import AggregateType, BoundedContext, Command, Event, Rejected
from processors.registry import ContextError, Registry, default_registry, schema_problems
from schemas.catalog import default_catalog


@dataclass(frozen=True)
class Counter:
    account_id: str = ""
    owner: str = ""
    currency: str = ""
    balance: int = 0
    status: str = "OPEN"


def counter(state_schema: str = "bank.AccountState") -> AggregateType[Counter]:
    agg = AggregateType(
        "bank.Counter", id_field="account_id", initial_state=Counter(), state_schema=state_schema
    )

    @agg.decides("Deposit")
    def add(data, state: Counter):
        balance = state.balance + data["amount"]["amount"]
        return [Event("bank.Deposited", {**data, "balance": balance})]

    @agg.evolves("Deposited", "bank.Withdrawn")
    def moved(state: Counter, data) -> Counter:
        return Counter(data["account_id"], balance=data["balance"])

    return agg


def test_type_sets_are_derived_from_the_declared_functions() -> None:
    agg = counter()
    assert agg.command_types == {"bank.Deposit"}
    assert agg.event_types == {"bank.Deposited", "bank.Withdrawn"}
    assert ACCOUNT.command_types == {
        "bank.OpenAccount",
        "bank.Deposit",
        "bank.Withdraw",
        "bank.CloseAccount",
    }
    with pytest.raises(ValueError, match=r"bank\.Deposit is decided twice"):
        agg.decides("bank.Deposit")(lambda data, state: [])
    with pytest.raises(ValueError, match=r"bank\.Withdrawn is evolved twice"):
        agg.evolves("Withdrawn")(lambda state, data: state)
    assert agg.decide(Command("bank.Withdraw", {}), agg.initial_state) == Rejected(
        "unknown_command", "bank.Counter cannot handle bank.Withdraw"
    )
    with pytest.raises(ValueError, match=r"cannot apply bank\.AccountClosed"):
        agg.evolve(agg.initial_state, Event("bank.AccountClosed", {}))


def test_the_state_must_be_a_dataclass_and_the_name_full() -> None:
    with pytest.raises(TypeError, match="must be a dataclass instance"):
        AggregateType("bank.X", id_field="x", initial_state=0)
    with pytest.raises(ValueError, match="must be a full name"):
        AggregateType("X", id_field="x", initial_state=Counter())


def test_deciders_start_from_the_initial_state_and_fold_from_it() -> None:
    agg = counter()
    money = {"amount": 5, "currency": "EUR"}
    first = agg.decide(Command("bank.Deposit", {"account_id": "c", "amount": money}), Counter())
    assert [e.data["balance"] for e in first] == [5]
    assert agg.fold([]) == Counter()
    assert agg.fold(first).balance == 5
    assert agg.to_record(agg.fold(first)) == {
        "account_id": "c",
        "owner": "",
        "currency": "",
        "balance": 5,
        "status": "OPEN",
    }
    assert agg.from_record({**agg.to_record(agg.fold(first)), "version": 1}) == agg.fold(first)


def test_a_context_that_disagrees_with_its_schemas_is_named_at_load() -> None:
    catalog = default_catalog()
    assert schema_problems(default_registry().context("bank"), catalog) == []
    agg = counter()
    agg.decides("Depost")(lambda data, state: [])
    agg.evolves("AccountClosed")(lambda state, data: state)
    problems = schema_problems(BoundedContext("bank", aggregates=(agg,)), catalog)
    assert problems == [
        "bank.Counter command: unknown schema 'bank.Depost'; did you mean bank.Deposit?"
    ]

    @dataclass(frozen=True)
    class Typo:
        account_id: str = ""
        ownr: str = ""

    wrong = AggregateType(
        "bank.Typo", id_field="acount_id", initial_state=Typo(), state_schema="bank.AccountState"
    )
    wrong.decides("CloseAccount")(lambda data, state: [])
    (id_problem, state_problem) = schema_problems(BoundedContext("bank", (wrong,)), catalog)
    assert id_problem == "bank.Typo command bank.CloseAccount has no id field 'acount_id'"
    assert state_problem == (
        "bank.Typo state Typo fields differ from bank.AccountState: missing "
        "['balance', 'currency', 'owner', 'status'], unknown ['ownr']"
    )
    # The registry alone does not consult schemas; default_registry() raises ContextError.
    assert Registry([BoundedContext("bank", (wrong,))]).aggregate("bank.Typo") is wrong
    assert issubclass(ContextError, ValueError)


class Money(TypedDict):
    amount: int
    currency: str


class Deposit(TypedDict):
    account_id: str
    amount: Money
    transfer_id: NotRequired[str | None]


class Moneyy(TypedDict):
    amount: int
    curency: str


class DepositTypo(TypedDict):
    account_id: str
    amount: Moneyy
    transfer: NotRequired[str | None]


class Withdrawn(TypedDict):
    account_id: str
    amount: Money
    balance: int
    transfer_id: str | None


class Deposited(TypedDict):
    account_id: str
    amount: Money
    balance: int
    transfer_id: str | None


def add(data: Deposit, state: Counter) -> list[Event]:
    return []


def add_typo(data: DepositTypo, state: Counter) -> list[Event]:
    return []


def typed_counter(decider) -> AggregateType[Counter]:
    agg = AggregateType(
        "bank.Typed",
        id_field="account_id",
        initial_state=Counter(),
        state_schema="bank.AccountState",
    )
    agg.decides("Deposit")(decider)

    @agg.evolves("Deposited", "Withdrawn")
    def moved(state: Counter, data: Deposited | Withdrawn) -> Counter:
        return state

    return agg


def test_typed_commands_and_events_are_checked_against_their_schemas_at_load() -> None:
    catalog = default_catalog()
    assert set(ACCOUNT.message_types()) == ACCOUNT.command_types  # bank types its commands
    assert schema_problems(default_registry().context("bank"), catalog) == []
    sound = typed_counter(add)
    assert sound.message_types() == {
        "bank.Deposit": Deposit,
        "bank.Deposited": Deposited,
        "bank.Withdrawn": Withdrawn,
    }
    # Deposited v2 has a memo field the typed dict lacks: the union member named Deposited
    # is checked against bank.Deposited, Withdrawn against bank.Withdrawn.
    assert schema_problems(BoundedContext("bank", (sound,)), catalog) == [
        "bank.Typed Deposited (bank.Deposited) keys differ from bank.Deposited: missing "
        "['memo'], unknown []"
    ]
    typo = typed_counter(add_typo)
    problems = schema_problems(BoundedContext("bank", (typo,)), catalog)
    assert problems[:2] == [
        "bank.Typed DepositTypo (bank.Deposit) keys differ from bank.Deposit: missing "
        "['transfer_id'], unknown ['transfer']",
        "bank.Typed DepositTypo (bank.Deposit).amount keys differ from bank.Money: missing "
        "['currency'], unknown ['curency']",
    ]


def test_given_when_then_passes_on_the_right_verdict_and_fails_on_a_wrong_one() -> None:
    opened = Event("bank.AccountOpened", {"account_id": "a", "owner": "A", "currency": "EUR"})
    money = {"amount": 5, "currency": "EUR"}
    deposit = Command("bank.Deposit", {"account_id": "a", "amount": money})
    deposited = Event(
        "bank.Deposited", {"account_id": "a", "amount": money, "balance": 5, "transfer_id": None}
    )
    scenario = testing.given(ACCOUNT, opened, catalog=default_catalog())
    assert scenario.when(deposit).then(deposited) == Account("a", "A", "EUR", 5, "OPEN")
    six = Event("bank.Deposited", {**deposited.data, "balance": 6})
    with pytest.raises(
        AssertionError, match=r"decided\n.*'balance': 5.*\nexpected\n.*'balance': 6"
    ):
        scenario.when(deposit).then(six)
    with pytest.raises(AssertionError, match="expected"):
        scenario.when(deposit).then(deposited, deposited)
    with pytest.raises(AssertionError, match=r"decided \[bank\.Deposited\], expected x"):
        scenario.when(deposit).then_rejected("x")
    with pytest.raises(AssertionError, match="rejected as account_not_found"):
        testing.given(ACCOUNT).when(deposit).then_rejected("account_closed")
    with pytest.raises(AssertionError, match=r"was rejected \(account_not_found"):
        testing.given(ACCOUNT).when(deposit).then(deposited)
    with pytest.raises(AssertionError, match=r"decides no bank\.Nope"):
        scenario.when("Nope", {})
    from schemas.catalog import ValidationError

    with pytest.raises(ValidationError, match="field 'account_id': missing"):
        scenario.when("Deposit", {"acount_id": "a", "amount": money})
    # An event that breaks its schema fails then(), even when it is the one expected.
    broken = testing.When(scenario, deposit, scenario.state, [Event("bank.Deposited", {})])
    with pytest.raises(ValidationError, match="account_id"):
        broken.then(Event("bank.Deposited", {}))


def test_cqrsctl_reports_a_broken_context_in_one_line(monkeypatch, capsys) -> None:
    import cqrsctl.main

    def broken() -> None:
        raise ContextError("context 'bank': bank.Account command: unknown schema 'bank.Depost'")

    monkeypatch.setattr(cqrsctl.main, "app", broken)
    with pytest.raises(SystemExit) as exited:
        cqrsctl.main.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: context 'bank': bank.Account command: unknown schema 'bank.Depost'\n"
    )


def test_a_context_package_brings_its_schemas_and_migrations() -> None:
    import bank as bank_package

    home = Path(bank_package.__file__).parent
    bank = default_registry().context("bank")
    assert (bank.schema_root, bank.migrations) == (home / "schemas", home / "migrations")
    assert "contexts" in home.parts  # a package of its own, outside the runtime's folders
    bare = BoundedContext("bare", aggregates=(), package="processors")  # has neither folder
    assert (bare.schema_root, bare.migrations) == (None, None)
    given = BoundedContext("x", aggregates=(), package="bank", migrations=home)
    assert (given.schema_root, given.migrations) == (home / "schemas", home)
