"""Transfers between two accounts: the Transfer aggregate holds the process state, and a
stateless process manager turns its events, and the outcomes of the commands it issued,
into the next command.

    RequestTransfer ─▶ TransferRequested ─▶ Withdraw(from)            id pm:transfer:<t>:debit
    debit accepted  ─▶ RecordTransferDebit ─▶ TransferDebited ─▶ Deposit(to)   …:credit
    credit accepted ─▶ CompleteTransfer ─▶ TransferCompleted
    debit rejected  ─▶ FailTransfer ─▶ TransferFailed(compensated=false)
    credit rejected ─▶ FailTransfer ─▶ TransferFailed(compensated=true) ─▶ Deposit(from)  …:refund

RecordTransferDebit, CompleteTransfer and FailTransfer are internal commands: only this
process manager issues them, through the processor's `bank.internal-commands` topic, and the
processor refuses them from clients. Whether a failed transfer is refunded follows from the
Transfer's state (DEBITED), never from a field a sender sets.

Each command id is derived from the transfer id and the step, so when the process manager
sees a trigger again after a crash it issues the same id, and the command processor's
duplicate detection turns the repeat into a no-op: exactly-once like any other command.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bank.messages import FailTransfer, Money, RequestTransfer, TransferStep
from processors.domain import (
    AggregateType,
    Command,
    CommandOutcome,
    Decision,
    Event,
    IssueCommand,
    ProcessManager,
    Record,
    Rejected,
    Trigger,
)

NEW = "NEW"  # not requested yet: the initial state only, never written
REQUESTED = "REQUESTED"
DEBITED = "DEBITED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

COMMAND_ID_PREFIX = "pm:transfer:"


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str = ""
    from_account_id: str = ""
    to_account_id: str = ""
    amount: Money = field(default_factory=lambda: Money(amount=0, currency=""))
    status: str = NEW


TRANSFER = AggregateType("bank.Transfer", id_field="transfer_id", initial_state=Transfer())


def _route(state: Transfer) -> Record:
    return {
        "transfer_id": state.transfer_id,
        "from_account_id": state.from_account_id,
        "to_account_id": state.to_account_id,
        "amount": dict(state.amount),
    }


def _step(
    data: TransferStep | FailTransfer, state: Transfer, allowed: tuple[str, ...]
) -> Rejected | None:
    """Why a step of an existing transfer may not happen now, if it may not."""
    if state.status == NEW:
        return Rejected("transfer_not_found", f"transfer {data['transfer_id']} does not exist")
    if state.status not in allowed:
        return Rejected("invalid_transition", f"not allowed while {state.status}")
    return None


@TRANSFER.decides("RequestTransfer")
def request_transfer(data: RequestTransfer, state: Transfer) -> Decision:
    if state.status != NEW:
        return Rejected("transfer_exists", f"transfer {state.transfer_id} already exists")
    if data["from_account_id"] == data["to_account_id"]:
        return Rejected("same_account", "a transfer needs two different accounts")
    if data["amount"]["amount"] <= 0:
        return Rejected("invalid_amount", f"amount must be positive, got {data['amount']}")
    route = {k: data[k] for k in ("transfer_id", "from_account_id", "to_account_id")}
    return [Event("bank.TransferRequested", {**route, "amount": dict(data["amount"])})]


@TRANSFER.decides("RecordTransferDebit", internal=True)
def record_debit(data: TransferStep, state: Transfer) -> Decision:
    if rejected := _step(data, state, (REQUESTED,)):
        return rejected
    return [Event("bank.TransferDebited", _route(state))]


@TRANSFER.decides("CompleteTransfer", internal=True)
def complete(data: TransferStep, state: Transfer) -> Decision:
    if rejected := _step(data, state, (DEBITED,)):
        return rejected
    return [Event("bank.TransferCompleted", {"transfer_id": state.transfer_id})]


@TRANSFER.decides("FailTransfer", internal=True)
def fail(data: FailTransfer, state: Transfer) -> Decision:
    """The refund (`compensated`) follows from the transfer's own state: money was debited
    only if the transfer is DEBITED. The command's `compensated` field is ignored (kept in
    the schema so FailTransfer.v1 stays the one version senders and readers know)."""
    if rejected := _step(data, state, (REQUESTED, DEBITED)):
        return rejected
    failed = {
        "transfer_id": state.transfer_id,
        "from_account_id": state.from_account_id,
        "amount": dict(state.amount),
        "reason": data["reason"],
        "compensated": state.status == DEBITED,
    }
    return [Event("bank.TransferFailed", failed)]


@TRANSFER.evolves("TransferRequested")
def _requested(state: Transfer, data: Record) -> Transfer:
    route = (data["transfer_id"], data["from_account_id"], data["to_account_id"])
    return Transfer(*route, dict(data["amount"]), REQUESTED)


@TRANSFER.evolves("TransferDebited")
def _debited(state: Transfer, data: Record) -> Transfer:
    return replace(state, status=DEBITED)


@TRANSFER.evolves("TransferCompleted")
def _completed(state: Transfer, data: Record) -> Transfer:
    return replace(state, status=COMPLETED)


@TRANSFER.evolves("TransferFailed")
def _failed(state: Transfer, data: Record) -> Transfer:
    return replace(state, status=FAILED)


def step_command_id(transfer_id: str, step: str) -> str:
    return f"{COMMAND_ID_PREFIX}{transfer_id}:{step}"


def _parse_command_id(command_id: str) -> tuple[str, str] | None:
    if not command_id.startswith(COMMAND_ID_PREFIX):
        return None
    transfer_id, sep, step = command_id[len(COMMAND_ID_PREFIX) :].rpartition(":")
    return (transfer_id, step) if sep else None


def owns_command(command_id: str) -> bool:
    return command_id.startswith(COMMAND_ID_PREFIX)


def _issue(transfer_id: str, step: str, type_: str, data: Record) -> IssueCommand:
    return IssueCommand(step_command_id(transfer_id, step), Command(type_, data))


def react(trigger: Trigger) -> list[IssueCommand]:
    """The next command(s) for a trigger; pure and stateless, the Transfer aggregate being
    the process's state."""
    if isinstance(trigger, CommandOutcome):
        parsed = _parse_command_id(trigger.command_id)
        if parsed is None:
            return []
        t, step = parsed
        if step == "debit":
            if trigger.accepted:
                return [_issue(t, "debited", "bank.RecordTransferDebit", {"transfer_id": t})]
            failed = {"transfer_id": t, "reason": trigger.reason, "compensated": False}
            return [_issue(t, "fail", "bank.FailTransfer", failed)]
        if step == "credit":
            if trigger.accepted:
                return [_issue(t, "complete", "bank.CompleteTransfer", {"transfer_id": t})]
            failed = {"transfer_id": t, "reason": trigger.reason, "compensated": True}
            return [_issue(t, "fail", "bank.FailTransfer", failed)]
        return []
    data = trigger.data
    t = data["transfer_id"]
    match trigger.type:
        case "bank.TransferRequested":
            debit = {"account_id": data["from_account_id"], "amount": data["amount"]}
            return [_issue(t, "debit", "bank.Withdraw", {**debit, "transfer_id": t})]
        case "bank.TransferDebited":
            credit = {"account_id": data["to_account_id"], "amount": data["amount"]}
            return [_issue(t, "credit", "bank.Deposit", {**credit, "transfer_id": t})]
        case "bank.TransferFailed" if data["compensated"]:
            refund = {"account_id": data["from_account_id"], "amount": data["amount"]}
            return [_issue(t, "refund", "bank.Deposit", {**refund, "transfer_id": t})]
    return []


TRANSFER_SAGA = ProcessManager(
    name="bank.transfer",
    event_types=TRANSFER.event_types,
    owns_command=owns_command,
    react=react,
)
