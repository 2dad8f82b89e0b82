"""The order process manager: stateless, its process state being the Order and Payment
aggregates. It reacts to the shop's own events, to the outcomes of the commands it issued,
and to bank's published events on `bank.events` (the runtime's reactor feeds those):

    OrderPlaced           ─▶ ReserveStock per line                pm:order:<o>:reserve:<p>
                          ─▶ AwaitPayment(transfer)               pm:order:<o>:await
    reserve accepted      ─▶ RecordReservation                    pm:order:<o>:reserved:<p>
    reserve rejected      ─▶ CancelOrder(out_of_stock)            pm:order:<o>:cancel
    bank.TransferCompleted ─▶ SettlePayment(COMPLETED)            pm:payment:<t>:settle
    bank.TransferFailed    ─▶ SettlePayment(FAILED)               pm:payment:<t>:settle
    payment known both ways ─▶ RecordPayment | CancelOrder(payment_failed)
    OrderConfirmed        ─▶ CommitStock per line                 pm:order:<o>:commit:<p>
    OrderCancelled        ─▶ ReleaseStock per line                pm:order:<o>:release:<p>

Command ids are derived from the order (or transfer) id and the step, so a reaction seen
twice issues the same ids and the processor's duplicate detection drops the repeat.
"""

from __future__ import annotations

from processors.domain import (
    Command,
    CommandOutcome,
    Event,
    IssueCommand,
    ProcessManager,
    Record,
    Trigger,
)
from shop.payment import COMPLETED, FAILED, PAYMENT

ORDER_PREFIX = "pm:order:"
PAYMENT_PREFIX = "pm:payment:"
RESERVE = ":reserve:"
# bank's published events the shop reacts to: the only thing it knows of bank.
BANK_EVENTS = frozenset({"bank.TransferCompleted", "bank.TransferFailed"})


def _issue(command_id: str, type_: str, data: Record) -> IssueCommand:
    return IssueCommand(command_id, Command(type_, data))


def _per_line(o: str, step: str, type_: str, lines: list[Record]) -> list[IssueCommand]:
    return [
        _issue(f"{ORDER_PREFIX}{o}:{step}:{p}", type_, {"product_id": p, "order_id": o})
        for p in (line["product_id"] for line in lines)
    ]


def _payment_known(order_id: str | None, outcome: str | None) -> list[IssueCommand]:
    if not order_id or not outcome:
        return []
    if outcome == COMPLETED:
        return [
            _issue(f"{ORDER_PREFIX}{order_id}:paid", "shop.RecordPayment", {"order_id": order_id})
        ]
    cancel = {"order_id": order_id, "reason": "payment_failed"}
    return [_issue(f"{ORDER_PREFIX}{order_id}:cancel", "shop.CancelOrder", cancel)]


def _outcome(trigger: CommandOutcome) -> list[IssueCommand]:
    rest = trigger.command_id[len(ORDER_PREFIX) :]
    o, sep, p = rest.partition(RESERVE)
    if not sep:
        return []
    if trigger.accepted:
        reserved = {"order_id": o, "product_id": p}
        return [_issue(f"{ORDER_PREFIX}{o}:reserved:{p}", "shop.RecordReservation", reserved)]
    cancel = {"order_id": o, "reason": f"out_of_stock: {p}"}
    return [_issue(f"{ORDER_PREFIX}{o}:cancel", "shop.CancelOrder", cancel)]


def react(trigger: Trigger) -> list[IssueCommand]:
    """The next commands for a trigger; pure."""
    if isinstance(trigger, CommandOutcome):
        return _outcome(trigger) if trigger.command_id.startswith(ORDER_PREFIX) else []
    return _on_event(trigger)


def _on_event(event: Event) -> list[IssueCommand]:
    data = event.data
    match event.type:
        case "shop.OrderPlaced":
            o = data["order_id"]
            reserve = [
                _issue(
                    f"{ORDER_PREFIX}{o}{RESERVE}{line['product_id']}",
                    "shop.ReserveStock",
                    {"product_id": line["product_id"], "order_id": o, "quantity": line["quantity"]},
                )
                for line in data["lines"]
            ]
            awaited = {"transfer_id": data["transfer_id"], "order_id": o}
            return [*reserve, _issue(f"{ORDER_PREFIX}{o}:await", "shop.AwaitPayment", awaited)]
        case "shop.PaymentAwaited" | "shop.PaymentSettled":
            return _payment_known(data["order_id"], data["outcome"])
        case "shop.OrderConfirmed":
            return _per_line(data["order_id"], "commit", "shop.CommitStock", data["lines"])
        case "shop.OrderCancelled":
            return _per_line(data["order_id"], "release", "shop.ReleaseStock", data["lines"])
        case "bank.TransferCompleted" | "bank.TransferFailed":
            t = data["transfer_id"]
            failed = event.type == "bank.TransferFailed"
            settled = {
                "transfer_id": t,
                "outcome": FAILED if failed else COMPLETED,
                "reason": data["reason"] if failed else "",
            }
            return [_issue(f"{PAYMENT_PREFIX}{t}:settle", "shop.SettlePayment", settled)]
    return []


ORDER_PROCESS = ProcessManager(
    name="shop.order",
    event_types=frozenset({"shop.OrderPlaced", "shop.OrderConfirmed", "shop.OrderCancelled"})
    | PAYMENT.event_types
    | BANK_EVENTS,
    owns_command=lambda command_id: command_id.startswith(ORDER_PREFIX),
    react=react,
)
