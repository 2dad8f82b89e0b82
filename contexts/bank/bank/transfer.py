"""Transfers between two accounts: the Transfer aggregate holds the process state, and a
stateless process manager turns its events, and the outcomes of the commands it issued,
into the next command.

    RequestTransfer ─▶ TransferRequested ─▶ Withdraw(from)            id pm:transfer:<t>:debit
    debit accepted  ─▶ RecordTransferDebit ─▶ TransferDebited ─▶ Deposit(to)   …:credit
    credit accepted ─▶ CompleteTransfer ─▶ TransferCompleted
    debit rejected  ─▶ FailTransfer(compensated=false) ─▶ TransferFailed
    credit rejected ─▶ FailTransfer(compensated=true) ─▶ TransferFailed ─▶ Deposit(from)  …:refund

Each command id is derived from the transfer id and the step, so when the process manager
sees a trigger again after a crash it issues the same id, and the command processor's
duplicate detection turns the repeat into a no-op: exactly-once like any other command.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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

REQUESTED = "REQUESTED"
DEBITED = "DEBITED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

COMMAND_ID_PREFIX = "pm:transfer:"


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    from_account_id: str
    to_account_id: str
    amount: Record  # bank.Money
    status: str


def _route(state: Transfer) -> Record:
    return {
        "transfer_id": state.transfer_id,
        "from_account_id": state.from_account_id,
        "to_account_id": state.to_account_id,
        "amount": dict(state.amount),
    }


def decide(cmd: Command, state: Transfer | None) -> Decision:
    data = cmd.data
    if cmd.type == "bank.RequestTransfer":
        if state is not None:
            return Rejected("transfer_exists", f"transfer {state.transfer_id} already exists")
        if data["from_account_id"] == data["to_account_id"]:
            return Rejected("same_account", "a transfer needs two different accounts")
        if data["amount"]["amount"] <= 0:
            return Rejected("invalid_amount", f"amount must be positive, got {data['amount']}")
        record = {
            "transfer_id": data["transfer_id"],
            "from_account_id": data["from_account_id"],
            "to_account_id": data["to_account_id"],
            "amount": dict(data["amount"]),
        }
        return [Event("bank.TransferRequested", record)]
    if state is None:
        return Rejected("transfer_not_found", f"transfer {data['transfer_id']} does not exist")
    match cmd.type, state.status:
        case "bank.RecordTransferDebit", "REQUESTED":
            return [Event("bank.TransferDebited", _route(state))]
        case "bank.CompleteTransfer", "DEBITED":
            return [Event("bank.TransferCompleted", {"transfer_id": state.transfer_id})]
        case "bank.FailTransfer", "REQUESTED" | "DEBITED":
            failed = {
                "transfer_id": state.transfer_id,
                "from_account_id": state.from_account_id,
                "amount": dict(state.amount),
                "reason": data["reason"],
                "compensated": data["compensated"],
            }
            return [Event("bank.TransferFailed", failed)]
    return Rejected("invalid_transition", f"{cmd.type} not allowed while {state.status}")


def evolve(state: Transfer | None, event: Event) -> Transfer:
    data = event.data
    if event.type == "bank.TransferRequested":
        return Transfer(
            data["transfer_id"],
            data["from_account_id"],
            data["to_account_id"],
            dict(data["amount"]),
            REQUESTED,
        )
    assert state is not None, f"{event.type} before TransferRequested"
    status = {
        "bank.TransferDebited": DEBITED,
        "bank.TransferCompleted": COMPLETED,
        "bank.TransferFailed": FAILED,
    }.get(event.type)
    if status is None:
        raise ValueError(f"transfer cannot apply {event.type}")
    return replace(state, status=status)


def to_record(state: Transfer) -> Record:
    return {**_route(state), "status": state.status}


def from_record(record: Record) -> Transfer:
    return Transfer(
        record["transfer_id"],
        record["from_account_id"],
        record["to_account_id"],
        dict(record["amount"]),
        record["status"],
    )


TRANSFER: AggregateType[Transfer] = AggregateType(
    name="bank.Transfer",
    id_field="transfer_id",
    command_types=frozenset(
        {
            "bank.RequestTransfer",
            "bank.RecordTransferDebit",
            "bank.CompleteTransfer",
            "bank.FailTransfer",
        }
    ),
    event_types=frozenset(
        {
            "bank.TransferRequested",
            "bank.TransferDebited",
            "bank.TransferCompleted",
            "bank.TransferFailed",
        }
    ),
    state_schema="bank.TransferState",
    decide=decide,
    evolve=evolve,
    to_record=to_record,
    from_record=from_record,
)


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
