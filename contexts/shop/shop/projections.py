"""The shop's read models: `orders` and `stock`, one row per aggregate (version-guarded)."""

from __future__ import annotations

from processors.domain import Event, Record
from processors.projections import EventMeta, Guard, Projection
from shop.order import ORDER
from shop.stock import STOCK


def _aggregate_key(event: Event, meta: EventMeta) -> str:
    return meta.aggregate_id


def _apply_order(row: Record | None, event: Event, meta: EventMeta) -> Record:
    data = event.data
    if event.type == "shop.OrderPlaced":
        keep = ("order_id", "customer", "transfer_id", "amount")
        row = {**{k: data[k] for k in keep}, "lines": len(data["lines"]), "status": "PLACED"}
        row["reason"] = ""
    elif row is None:
        raise ValueError(f"{event.type} for order {meta.aggregate_id} before OrderPlaced")
    elif event.type == "shop.OrderConfirmed":
        row = {**row, "status": "CONFIRMED"}
    elif event.type == "shop.OrderCancelled":
        row = {**row, "status": "CANCELLED", "reason": data["reason"]}
    return {**row, "updated_at": meta.time}


ORDERS = Projection(
    name="orders",
    row_schema="shop.OrderRow",
    event_types=ORDER.event_types,
    key=_aggregate_key,
    apply=_apply_order,
    key_fields=("order_id",),
    guard=Guard.VERSION,
    description="one row per order: customer, transfer, amount, status",
)


def _apply_stock(row: Record | None, event: Event, meta: EventMeta) -> Record:
    data = event.data
    row = row or {"product_id": meta.aggregate_id, "available": 0, "reserved": 0, "sold": 0}
    if event.type == "shop.StockAdded":
        row = {**row, "available": data["available"]}
    elif event.type == "shop.StockReserved":
        row = {
            **row,
            "available": data["available"],
            "reserved": row["reserved"] + data["quantity"],
        }
    elif event.type == "shop.StockReleased":
        row = {
            **row,
            "available": data["available"],
            "reserved": row["reserved"] - data["quantity"],
        }
    elif event.type == "shop.StockCommitted":
        row = {**row, "sold": data["sold"], "reserved": row["reserved"] - data["quantity"]}
    return {**row, "updated_at": meta.time}


STOCK_LEVELS = Projection(
    name="stock",
    row_schema="shop.StockRow",
    event_types=STOCK.event_types,
    key=_aggregate_key,
    apply=_apply_stock,
    key_fields=("product_id",),
    guard=Guard.VERSION,
    description="one row per product: units available, held for orders, sold",
)

PROJECTIONS: tuple[Projection, ...] = (ORDERS, STOCK_LEVELS)
