"""The stock of one product: units on hand, held per order, and sold.

A reservation holds units for one order until the order is confirmed (the units are sold)
or cancelled (they are released). Units are conserved: added = available + held + sold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict

from processors.domain import AggregateType, Decision, Event, Record, Rejected


@dataclass(frozen=True, slots=True)
class Stock:
    product_id: str = ""
    available: int = 0
    reserved: dict[str, int] = field(default_factory=dict)  # order id -> units held
    sold: int = 0


STOCK = AggregateType("shop.Stock", id_field="product_id", initial_state=Stock())


class AddStock(TypedDict):
    product_id: str
    quantity: int


class ReserveStock(TypedDict):
    product_id: str
    order_id: str
    quantity: int


class ForOrder(TypedDict):
    """shop.ReleaseStock and shop.CommitStock."""

    product_id: str
    order_id: str


@STOCK.decides("AddStock")
def add_stock(data: AddStock, state: Stock) -> Decision:
    if data["quantity"] <= 0:
        return Rejected("invalid_quantity", f"quantity must be positive, got {data['quantity']}")
    available = state.available + data["quantity"]
    return [Event("shop.StockAdded", {**data, "available": available})]


@STOCK.decides("ReserveStock", internal=True)
def reserve(data: ReserveStock, state: Stock) -> Decision:
    if data["order_id"] in state.reserved:
        return Rejected("already_reserved", f"order {data['order_id']} already holds units")
    if data["quantity"] <= 0:
        return Rejected("invalid_quantity", f"quantity must be positive, got {data['quantity']}")
    if data["quantity"] > state.available:
        return Rejected("insufficient_stock", f"{state.available} available")
    available = state.available - data["quantity"]
    return [Event("shop.StockReserved", {**data, "available": available})]


def _held(data: ForOrder, state: Stock) -> int | Rejected:
    held = state.reserved.get(data["order_id"])
    if held is None:
        return Rejected("not_reserved", f"order {data['order_id']} holds no units")
    return held


@STOCK.decides("ReleaseStock", internal=True)
def release(data: ForOrder, state: Stock) -> Decision:
    held = _held(data, state)
    if isinstance(held, Rejected):
        return held
    released = {**data, "quantity": held, "available": state.available + held}
    return [Event("shop.StockReleased", released)]


@STOCK.decides("CommitStock", internal=True)
def commit(data: ForOrder, state: Stock) -> Decision:
    held = _held(data, state)
    if isinstance(held, Rejected):
        return held
    return [Event("shop.StockCommitted", {**data, "quantity": held, "sold": state.sold + held})]


@STOCK.evolves("StockAdded")
def _added(state: Stock, data: Record) -> Stock:
    return replace(state, product_id=data["product_id"], available=data["available"])


@STOCK.evolves("StockReserved")
def _reserved(state: Stock, data: Record) -> Stock:
    held = {**state.reserved, data["order_id"]: data["quantity"]}
    return replace(state, product_id=data["product_id"], available=data["available"], reserved=held)


@STOCK.evolves("StockReleased", "StockCommitted")
def _ended(state: Stock, data: Record) -> Stock:
    held = {k: v for k, v in state.reserved.items() if k != data["order_id"]}
    if "sold" in data:
        return replace(state, reserved=held, sold=data["sold"])
    return replace(state, reserved=held, available=data["available"])
