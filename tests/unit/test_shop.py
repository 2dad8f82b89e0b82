"""The shop context's deciders with given/when/then, and its order process manager run to
completion by a tiny in-memory driver, with bank's published events fed in by hand."""

from __future__ import annotations

from typing import Any

import pytest
from shop import context as shop
from shop.order import ORDER
from shop.payment import PAYMENT
from shop.process import ORDER_PROCESS
from shop.stock import STOCK, Stock
from typer.testing import CliRunner

from cqrsctl.main import app
from processors.domain import Command, CommandOutcome, Event, Rejected
from processors.registry import default_registry
from processors.testing import given
from schemas.catalog import default_catalog

CATALOG = default_catalog()


def added(product: str, quantity: int, available: int) -> Event:
    data = {"product_id": product, "quantity": quantity, "available": available}
    return Event("shop.StockAdded", data)


def reserved(product: str, order: str, quantity: int, available: int) -> Event:
    data = {"product_id": product, "order_id": order, "quantity": quantity, "available": available}
    return Event("shop.StockReserved", data)


LINES = [{"product_id": "apple", "quantity": 2}, {"product_id": "pear", "quantity": 1}]
PLACE = {"order_id": "o-1", "customer": "ann", "lines": LINES, "transfer_id": "t-1", "amount": 500}
PLACED = Event("shop.OrderPlaced", PLACE)


def test_stock_is_reserved_only_while_available():
    stock = given(STOCK, added("apple", 5, 5), catalog=CATALOG)
    state = stock.when("ReserveStock", {"product_id": "apple", "order_id": "o-1", "quantity": 3})
    after = state.then(reserved("apple", "o-1", 3, 2))
    assert after == Stock("apple", available=2, reserved={"o-1": 3}, sold=0)
    stock.when(
        "ReserveStock", {"product_id": "apple", "order_id": "o-1", "quantity": 6}
    ).then_rejected("insufficient_stock")
    given(STOCK).when(
        "ReserveStock", {"product_id": "kiwi", "order_id": "o-1", "quantity": 1}
    ).then_rejected("insufficient_stock")


def test_a_reservation_is_released_or_sold_once():
    held = given(STOCK, added("apple", 5, 5), reserved("apple", "o-1", 3, 2), catalog=CATALOG)
    for_order = {"product_id": "apple", "order_id": "o-1"}
    released = Event("shop.StockReleased", {**for_order, "quantity": 3, "available": 5})
    assert held.when("ReleaseStock", for_order).then(released).available == 5
    sold = Event("shop.StockCommitted", {**for_order, "quantity": 3, "sold": 3})
    after = held.when("CommitStock", for_order).then(sold)
    assert (after.available, after.reserved, after.sold) == (2, {}, 3)
    given(STOCK, added("apple", 5, 5)).when("ReleaseStock", for_order).then_rejected("not_reserved")


def test_an_order_is_confirmed_when_reserved_and_paid_in_any_order():
    line_reserved = [
        Event("shop.LineReserved", {"order_id": "o-1", "product_id": p}) for p in ("apple", "pear")
    ]
    paid = Event("shop.OrderPaid", {"order_id": "o-1", "transfer_id": "t-1"})
    confirmed = Event("shop.OrderConfirmed", {"order_id": "o-1", "lines": LINES})
    given(ORDER, catalog=CATALOG).when("PlaceOrder", PLACE).then(PLACED)
    # Paid last: the payment confirms.
    given(ORDER, PLACED, *line_reserved, catalog=CATALOG).when(
        "RecordPayment", {"order_id": "o-1"}
    ).then(paid, confirmed)
    # Reserved last: the last line confirms.
    last = given(ORDER, PLACED, line_reserved[0], paid, catalog=CATALOG).when(
        "RecordReservation", {"order_id": "o-1", "product_id": "pear"}
    )
    assert last.then(line_reserved[1], confirmed).status == "CONFIRMED"


def test_a_cancelled_order_takes_no_more_steps():
    cancelled = Event(
        "shop.OrderCancelled", {"order_id": "o-1", "reason": "payment_failed", "lines": LINES}
    )
    given(ORDER, PLACED).when("CancelOrder", {"order_id": "o-1", "reason": "payment_failed"}).then(
        cancelled
    )
    after = given(ORDER, PLACED, cancelled)
    after.when("RecordPayment", {"order_id": "o-1"}).then_rejected("order_closed")
    after.when("RecordReservation", {"order_id": "o-1", "product_id": "apple"}).then_rejected(
        "order_closed"
    )


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "empty_order"),
        ([LINES[0], LINES[0]], "duplicate_line"),
        ([{"product_id": "a", "quantity": 0}], "invalid_quantity"),
    ],
)
def test_an_order_needs_distinct_positive_lines(lines: list[dict[str, Any]], reason: str):
    given(ORDER).when("PlaceOrder", {**PLACE, "lines": lines}).then_rejected(reason)


def test_a_payment_meets_its_order_whichever_comes_first():
    awaited = {"transfer_id": "t-1", "order_id": "o-1"}
    settled = {"transfer_id": "t-1", "outcome": "COMPLETED", "reason": ""}
    given(PAYMENT, catalog=CATALOG).when("AwaitPayment", awaited).then(
        Event("shop.PaymentAwaited", {**awaited, "outcome": None})
    )
    first = Event("shop.PaymentSettled", {**settled, "order_id": None})
    given(PAYMENT, catalog=CATALOG).when("SettlePayment", settled).then(first)
    given(PAYMENT, first, catalog=CATALOG).when("AwaitPayment", awaited).then(
        Event("shop.PaymentAwaited", {**awaited, "outcome": "COMPLETED"})
    )
    given(PAYMENT, first).when("SettlePayment", settled).then_rejected("already_settled")


def test_shop_subscribes_to_bank_events_and_bank_to_none():
    assert shop.foreign_event_types() == {
        "bank": frozenset({"bank.TransferCompleted", "bank.TransferFailed"})
    }
    assert default_registry().context("bank").foreign_event_types() == {}


# -- the process manager, run to completion ---------------------------------------------------


def drive(states: dict, queue: list[tuple[str, Command]], foreign: list[Event] = ()) -> list[Event]:
    """Deliver commands to their aggregates, feeding every event and owned outcome to the
    process manager (as the processor does) and then `foreign` events (as the reactor does),
    until nothing is left. Duplicate command ids are dropped, as the processor drops them."""
    registry = default_registry()
    seen: set[str] = set()
    events: list[Event] = []
    pending_foreign = list(foreign)
    while queue or pending_foreign:
        if not queue:
            queue += [
                (i.command_id, i.command) for i in ORDER_PROCESS.react(pending_foreign.pop(0))
            ]
            continue
        command_id, cmd = queue.pop(0)
        if command_id in seen:
            continue
        seen.add(command_id)
        agg = registry.aggregate_for_command(cmd.type)
        CATALOG.validate(cmd.type, dict(cmd.data))
        key = (agg.name, cmd.data[agg.id_field])
        decision = agg.decide(cmd, states.get(key, agg.initial_state))
        triggers: list[Any] = []
        if isinstance(decision, Rejected):
            outcome = CommandOutcome(command_id, False, decision.reason)
        else:
            states[key] = agg.fold(decision, states.get(key))
            events.extend(decision)
            triggers += [e for e in decision if e.type in ORDER_PROCESS.event_types]
            outcome = CommandOutcome(command_id, True)
        if ORDER_PROCESS.owns_command(command_id):
            triggers.insert(0, outcome)
        for trigger in triggers:
            queue += [(i.command_id, i.command) for i in ORDER_PROCESS.react(trigger)]
    return events


def _stocked(states: dict) -> None:
    for product in ("apple", "pear"):
        cmd = Command("shop.AddStock", {"product_id": product, "quantity": 2})
        drive(states, [(f"add-{product}", cmd)])


def _stock_of(states: dict, product: str) -> Stock:
    return states[("shop.Stock", product)]


def test_a_completed_transfer_confirms_the_order_and_sells_its_stock():
    states: dict = {}
    _stocked(states)
    completed = Event("bank.TransferCompleted", {"transfer_id": "t-1"})
    events = drive(states, [("c-1", Command("shop.PlaceOrder", PLACE))], [completed])
    assert states[("shop.Order", "o-1")].status == "CONFIRMED"
    assert [e.type for e in events].count("shop.StockCommitted") == 2
    apple, pear = _stock_of(states, "apple"), _stock_of(states, "pear")
    assert (apple.available, apple.reserved, apple.sold) == (0, {}, 2)
    assert (pear.available, pear.reserved, pear.sold) == (1, {}, 1)


def test_a_failed_transfer_cancels_the_order_and_releases_its_stock():
    states: dict = {}
    _stocked(states)
    failed = Event(
        "bank.TransferFailed",
        {
            "transfer_id": "t-1",
            "from_account_id": "ann",
            "amount": {"amount": 500, "currency": "EUR"},
            "reason": "insufficient_funds",
            "compensated": False,
        },
    )
    drive(states, [("c-1", Command("shop.PlaceOrder", PLACE))], [failed])
    assert states[("shop.Order", "o-1")].status == "CANCELLED"
    assert all(
        (s.available, s.reserved, s.sold) == (2, {}, 0)
        for s in (_stock_of(states, "apple"), _stock_of(states, "pear"))
    )


def test_a_line_out_of_stock_cancels_the_order_and_releases_the_others():
    states: dict = {}
    _stocked(states)
    big = {
        **PLACE,
        "lines": [{"product_id": "apple", "quantity": 1}, {"product_id": "pear", "quantity": 9}],
    }
    completed = Event("bank.TransferCompleted", {"transfer_id": "t-1"})
    drive(states, [("c-1", Command("shop.PlaceOrder", big))], [completed])
    order = states[("shop.Order", "o-1")]
    assert order.status == "CANCELLED"
    assert (_stock_of(states, "apple").available, _stock_of(states, "apple").reserved) == (2, {})
    assert _stock_of(states, "pear").available == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "bank"], "context 'bank' reacts to no event of another context"),
        (["--context", "nope"], "no bounded context 'nope'"),
        (["--context", "shop", "--source", "bank"], "expected CONTEXT=PREFIX"),
    ],
)
def test_run_reactor_refuses_what_it_cannot_run_in_one_line(args: list[str], message: str):
    result = CliRunner().invoke(app, ["run", "reactor", *args, "--health-port", "0"])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
