"""A payment: the meeting point of an order and the bank transfer that pays it.

Its id is the transfer's id, so bank's `TransferCompleted` and `TransferFailed`, which name
only the transfer, find it. The order's expectation (`AwaitPayment`) and the transfer's end
(`SettlePayment`) may arrive in either order: whichever comes second carries both halves in
its event, and the order process manager acts on that event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from processors.domain import AggregateType, Decision, Event, Record, Rejected

COMPLETED = "COMPLETED"
FAILED = "FAILED"


class AwaitPayment(TypedDict):
    transfer_id: str
    order_id: str


class SettlePayment(TypedDict):
    transfer_id: str
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class Payment:
    transfer_id: str = ""
    order_id: str = ""  # empty until an order awaits it
    outcome: str = ""  # empty until the transfer ended


PAYMENT = AggregateType("shop.Payment", id_field="transfer_id", initial_state=Payment())


@PAYMENT.decides("AwaitPayment", internal=True)
def await_payment(data: AwaitPayment, state: Payment) -> Decision:
    if state.order_id:
        return Rejected("already_awaited", f"transfer pays order {state.order_id}")
    awaited = {**data, "outcome": state.outcome or None}
    return [Event("shop.PaymentAwaited", awaited)]


@PAYMENT.decides("SettlePayment", internal=True)
def settle(data: SettlePayment, state: Payment) -> Decision:
    if state.outcome:
        return Rejected("already_settled", f"transfer already {state.outcome}")
    if data["outcome"] not in (COMPLETED, FAILED):
        return Rejected("invalid_outcome", f"{data['outcome']!r} is not COMPLETED or FAILED")
    settled = {**data, "order_id": state.order_id or None}
    return [Event("shop.PaymentSettled", settled)]


@PAYMENT.evolves("PaymentAwaited")
def _awaited(state: Payment, data: Record) -> Payment:
    return Payment(data["transfer_id"], data["order_id"], data["outcome"] or "")


@PAYMENT.evolves("PaymentSettled")
def _settled(state: Payment, data: Record) -> Payment:
    return Payment(data["transfer_id"], data["order_id"] or "", data["outcome"])
