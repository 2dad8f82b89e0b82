"""The transfer aggregate and its process manager as pure functions, run to completion
against the account aggregate by a tiny in-memory driver."""

from __future__ import annotations

from bank.account import ACCOUNT
from bank.transfer import TRANSFER, TRANSFER_SAGA, step_command_id
from processors import testing
from processors.domain import Command, CommandOutcome, Event, Rejected
from processors.registry import default_registry
from schemas.catalog import default_catalog

EUR = {"amount": 300, "currency": "EUR"}


def drive(states: dict, first: Command, first_id: str = "client-1"):
    """Deliver commands to their aggregates and feed every event and outcome to the saga,
    as the runtime does, until nothing is left to do. Returns the events and outcomes."""
    registry = default_registry()
    queue = [(first_id, first)]
    seen_ids: set[str] = set()
    events: list[Event] = []
    outcomes: list[CommandOutcome] = []
    while queue:
        command_id, cmd = queue.pop(0)
        if command_id in seen_ids:  # the processor's duplicate detection
            continue
        seen_ids.add(command_id)
        agg = registry.aggregate_for_command(cmd.type)
        key = (agg.name, cmd.data[agg.id_field])
        decision = agg.decide(cmd, states.get(key, agg.initial_state))
        if isinstance(decision, Rejected):
            outcome = CommandOutcome(command_id, False, decision.reason)
        else:
            states[key] = agg.fold(decision, states.get(key))
            events.extend(decision)
            outcome = CommandOutcome(command_id, True)
        outcomes.append(outcome)
        triggers = [outcome] if TRANSFER_SAGA.owns_command(command_id) else []
        triggers += (
            [e for e in decision if e.type in TRANSFER_SAGA.event_types]
            if not isinstance(decision, Rejected)
            else []
        )
        for trigger in triggers:
            for issued in TRANSFER_SAGA.react(trigger):
                queue.append((issued.command_id, issued.command))
    return events, outcomes


def open_accounts(states: dict, balances: dict[str, int]) -> None:
    for account_id, balance in balances.items():
        drive(
            states,
            Command(
                "bank.OpenAccount", {"account_id": account_id, "owner": "o", "currency": "EUR"}
            ),
            f"open-{account_id}",
        )
        if balance:
            deposit = {"account_id": account_id, "amount": {"amount": balance, "currency": "EUR"}}
            drive(states, Command("bank.Deposit", deposit), f"dep-{account_id}")


def balance(states: dict, account_id: str) -> int:
    return states[("bank.Account", account_id)].balance


def request(t: str, src: str, dst: str, amount: dict = EUR) -> Command:
    return Command(
        "bank.RequestTransfer",
        {"transfer_id": t, "from_account_id": src, "to_account_id": dst, "amount": amount},
    )


def test_successful_transfer_moves_money_and_completes():
    states: dict = {}
    open_accounts(states, {"a": 1000, "b": 0})
    events, _ = drive(states, request("t1", "a", "b"))
    assert [e.type for e in events] == [
        "bank.TransferRequested",
        "bank.Withdrawn",
        "bank.TransferDebited",
        "bank.Deposited",
        "bank.TransferCompleted",
    ]
    assert (balance(states, "a"), balance(states, "b")) == (700, 300)
    assert states[("bank.Transfer", "t1")].status == "COMPLETED"


def test_transfer_to_a_closed_account_is_compensated():
    states: dict = {}
    open_accounts(states, {"a": 1000, "closed": 0})
    drive(states, Command("bank.CloseAccount", {"account_id": "closed"}), "close")
    events, outcomes = drive(states, request("t2", "a", "closed"))
    assert balance(states, "a") == 1000
    failed = next(e for e in events if e.type == "bank.TransferFailed")
    assert failed.data["compensated"] is True
    assert failed.data["reason"] == "account_closed"
    assert states[("bank.Transfer", "t2")].status == "FAILED"
    refund = next(o for o in outcomes if o.command_id == step_command_id("t2", "refund"))
    assert refund.accepted


def test_transfer_without_funds_fails_without_moving_money():
    states: dict = {}
    open_accounts(states, {"a": 100, "b": 0})
    events, _ = drive(states, request("t3", "a", "b"))
    assert [e.type for e in events] == ["bank.TransferRequested", "bank.TransferFailed"]
    assert events[-1].data == {
        "transfer_id": "t3",
        "from_account_id": "a",
        "amount": EUR,
        "reason": "insufficient_funds",
        "compensated": False,
    }
    assert (balance(states, "a"), balance(states, "b")) == (100, 0)


def test_reacting_twice_to_a_trigger_issues_the_same_command_ids():
    requested = Event(
        "bank.TransferRequested",
        {"transfer_id": "t", "from_account_id": "a", "to_account_id": "b", "amount": EUR},
    )
    first = TRANSFER_SAGA.react(requested)
    assert first == TRANSFER_SAGA.react(requested)
    assert first[0].command_id == step_command_id("t", "debit")


def test_saga_ignores_outcomes_of_commands_it_did_not_issue():
    assert TRANSFER_SAGA.react(CommandOutcome("client-42", False, "insufficient_funds")) == []
    assert not TRANSFER_SAGA.owns_command("client-42")


REQUESTED = Event(
    "bank.TransferRequested",
    {"transfer_id": "t", "from_account_id": "a", "to_account_id": "b", "amount": EUR},
)


def transfer(*events: Event) -> testing.Given:
    return testing.given(TRANSFER, *events, catalog=default_catalog())


def test_transfer_state_machine_rejects_out_of_order_steps():
    transfer(REQUESTED).when("CompleteTransfer", {"transfer_id": "t"}).then_rejected(
        "invalid_transition"
    )
    transfer().when(request("t", "a", "a")).then_rejected("same_account")
    transfer().when("RecordTransferDebit", {"transfer_id": "t"}).then_rejected("transfer_not_found")
    transfer(REQUESTED).when(request("t", "a", "b")).then_rejected("transfer_exists")
    assert ACCOUNT.name != TRANSFER.name


def test_each_step_moves_the_transfer_on():
    debited = Event("bank.TransferDebited", REQUESTED.data)
    assert transfer().when(request("t", "a", "b")).then(REQUESTED).status == "REQUESTED"
    after = transfer(REQUESTED).when("RecordTransferDebit", {"transfer_id": "t"}).then(debited)
    assert after.status == "DEBITED"
    done = Event("bank.TransferCompleted", {"transfer_id": "t"})
    complete = {"transfer_id": "t"}
    assert transfer(REQUESTED, debited).when("CompleteTransfer", complete).then(done).status == (
        "COMPLETED"
    )
    fail = {"transfer_id": "t", "reason": "account_closed", "compensated": True}
    failed = Event(
        "bank.TransferFailed",
        {"transfer_id": "t", "from_account_id": "a", "amount": EUR, **fail},
    )
    assert transfer(REQUESTED, debited).when("FailTransfer", fail).then(failed).status == "FAILED"


def test_fail_refunds_only_what_the_transfer_debited_whatever_the_command_says():
    claims = {"transfer_id": "t", "reason": "forged", "compensated": True}
    not_debited = Event(
        "bank.TransferFailed",
        {"transfer_id": "t", "from_account_id": "a", "amount": EUR, **claims, "compensated": False},
    )
    transfer(REQUESTED).when("FailTransfer", claims).then(not_debited)
    # And so the saga issues no refund for it.
    assert TRANSFER_SAGA.react(not_debited) == []


def test_transfer_steps_are_internal_commands():
    assert TRANSFER.internal_command_types == {
        "bank.RecordTransferDebit",
        "bank.CompleteTransfer",
        "bank.FailTransfer",
    }
    assert TRANSFER.public_command_types == {"bank.RequestTransfer"}
