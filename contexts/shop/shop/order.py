"""An order: lines of products, paid by one bank transfer.

It is CONFIRMED once every line's stock is held and its transfer completed, whichever comes
last, and CANCELLED when a line is out of stock or the transfer failed. The order process
manager (shop/process.py) reserves and releases stock, and brings the payment's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict

from processors.domain import AggregateType, Decision, Event, Record, Rejected

NEW = "NEW"  # not placed yet: the initial state only, never written
PLACED = "PLACED"
CONFIRMED = "CONFIRMED"
CANCELLED = "CANCELLED"


class OrderLine(TypedDict):
    product_id: str
    quantity: int


class PlaceOrder(TypedDict):
    order_id: str
    customer: str
    lines: list[OrderLine]
    transfer_id: str
    amount: int


class RecordReservation(TypedDict):
    order_id: str
    product_id: str


class RecordPayment(TypedDict):
    order_id: str


class CancelOrder(TypedDict):
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str = ""
    customer: str = ""
    lines: list[OrderLine] = field(default_factory=list)
    transfer_id: str = ""
    amount: int = 0
    reserved: list[str] = field(default_factory=list)  # products whose stock is held
    paid: bool = False
    status: str = NEW


ORDER = AggregateType("shop.Order", id_field="order_id", initial_state=Order())


def _open(order_id: str, state: Order) -> Rejected | None:
    if state.status == NEW:
        return Rejected("order_not_found", f"order {order_id} does not exist")
    if state.status != PLACED:
        return Rejected("order_closed", f"order {state.order_id} is {state.status}")
    return None


def _confirmed_if_ready(state: Order, reserved: list[str], paid: bool) -> list[Event]:
    if paid and len(reserved) == len(state.lines):
        return [Event("shop.OrderConfirmed", {"order_id": state.order_id, "lines": state.lines})]
    return []


@ORDER.decides("PlaceOrder")
def place(data: PlaceOrder, state: Order) -> Decision:
    if state.status != NEW:
        return Rejected("order_exists", f"order {state.order_id} already exists")
    products = [line["product_id"] for line in data["lines"]]
    if not products:
        return Rejected("empty_order", "an order needs at least one line")
    if len(set(products)) != len(products):
        return Rejected("duplicate_line", "one line per product")
    if any(line["quantity"] <= 0 for line in data["lines"]):
        return Rejected("invalid_quantity", "every line's quantity must be positive")
    if data["amount"] <= 0:
        return Rejected("invalid_amount", f"amount must be positive, got {data['amount']}")
    return [Event("shop.OrderPlaced", dict(data))]


@ORDER.decides("RecordReservation", internal=True)
def record_reservation(data: RecordReservation, state: Order) -> Decision:
    if rejected := _open(data["order_id"], state):
        return rejected
    product = data["product_id"]
    if product not in [line["product_id"] for line in state.lines]:
        return Rejected("no_such_line", f"order {state.order_id} has no line for {product}")
    if product in state.reserved:
        return Rejected("already_reserved", f"{product} is already held")
    reserved = [*state.reserved, product]
    line = Event("shop.LineReserved", {"order_id": state.order_id, "product_id": product})
    return [line, *_confirmed_if_ready(state, reserved, state.paid)]


@ORDER.decides("RecordPayment", internal=True)
def record_payment(data: RecordPayment, state: Order) -> Decision:
    if rejected := _open(data["order_id"], state):
        return rejected
    if state.paid:
        return Rejected("already_paid", f"order {state.order_id} is paid")
    paid = Event("shop.OrderPaid", {"order_id": state.order_id, "transfer_id": state.transfer_id})
    return [paid, *_confirmed_if_ready(state, state.reserved, True)]


@ORDER.decides("CancelOrder", internal=True)
def cancel(data: CancelOrder, state: Order) -> Decision:
    if rejected := _open(data["order_id"], state):
        return rejected
    cancelled = {"order_id": state.order_id, "reason": data["reason"], "lines": state.lines}
    return [Event("shop.OrderCancelled", cancelled)]


@ORDER.evolves("OrderPlaced")
def _placed(state: Order, data: Record) -> Order:
    placed = {k: data[k] for k in ("order_id", "customer", "transfer_id", "amount")}
    return Order(**placed, lines=list(data["lines"]), status=PLACED)


@ORDER.evolves("LineReserved")
def _line_reserved(state: Order, data: Record) -> Order:
    return replace(state, reserved=[*state.reserved, data["product_id"]])


@ORDER.evolves("OrderPaid")
def _paid(state: Order, data: Record) -> Order:
    return replace(state, paid=True)


@ORDER.evolves("OrderConfirmed")
def _confirmed(state: Order, data: Record) -> Order:
    return replace(state, status=CONFIRMED)


@ORDER.evolves("OrderCancelled")
def _cancelled(state: Order, data: Record) -> Order:
    return replace(state, status=CANCELLED)
