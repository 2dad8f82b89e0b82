"""The shop context next to bank on one broker and one Postgres: orders paid by bank
transfers, confirmed when bank publishes TransferCompleted (read by shop's reactor from
bank's events topic), end to end into Postgres; and a run with kill -9 of the processors
and the reactor that ends with money and stock conserved."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from deploy.local import postgres_roles
from deploy.local.pipeline import WorkerProcess
from deploy.local.processes import free_port
from processors.registry import default_registry
from processors.topic_admin import create_topics
from processors.topic_reader import read_topic
from processors.topics import ContextTopics, declared_topics
from producers.command_client import CommandClient
from schemas.codec import default_codec
from sinks.db import connect
from tests.support.topics import read_until
from tests.support.worker_metrics import lag, scrape, wait_until
from tests.support.write_side import (
    BankRig,
    StoredEvent,
    causation_of,
    check_event_log,
    fold_balances,
    forged_headers,
    movement,
    open_account,
    read_events,
)

BANK_ENDS = ("bank.TransferCompleted", "bank.TransferFailed")
TILL = "shop-till"  # the shop's bank account: every order's transfer pays into it


@dataclass
class ShopRig:
    bank: BankRig
    dsn: str
    schema: str
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{self.bank.prefix}_shop"

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.prefix)

    def start(
        self, role: str, args: list[str], ready: bool = True, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = f"{role}-{len(self.workers)}"
        worker = WorkerProcess(role, args, self.bank.log_dir / f"{name}.log", env).start()
        self.workers.append(worker)
        return worker.wait_ready(90) if ready else worker

    def processor(self, ready: bool = True) -> WorkerProcess:
        args = ["--context", "shop", "--prefix", self.prefix, "--instance-id", "s0"]
        return self.start("processor", args, ready)

    def reactor(self, ready: bool = True) -> WorkerProcess:
        args = ["--context", "shop", "--prefix", self.prefix, "--instance-id", "r0"]
        return self.start("reactor", [*args, "--source", f"bank={self.bank.prefix}"], ready)

    def read_side(self, context: str, prefix: str) -> None:
        """The projector and the sink of one context, into the shared Postgres schema."""
        common = ["--context", context, "--prefix", prefix, "--batch-wait", "0.01"]
        data_dir = self.bank.log_dir / f"projector-{context}"
        self.start("projector", [*common, "--data-dir", str(data_dir)])
        logins = postgres_roles.prepare(self.dsn, self.schema, default_registry().context(context))
        env, no_migrate = postgres_roles.sink_env(logins)
        self.start("sink", [*common, "--schema", self.schema, *no_migrate], env=env)

    def client(self) -> CommandClient:
        return CommandClient(self.bank.kafka, "shop", topic_prefix=self.prefix)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def shop(bank: BankRig, pg_dsn_for_schema: str, pg_schema: str) -> Iterator[ShopRig]:
    rig = ShopRig(bank, pg_dsn_for_schema, pg_schema)
    create_topics(bank.kafka, declared_topics(default_registry().context("shop"), rig.prefix))
    try:
        yield rig
    finally:
        rig.stop_all()


def _order(o: str, t: str, lines: dict[str, int], amount: int) -> dict[str, Any]:
    order_lines = [{"product_id": p, "quantity": q} for p, q in lines.items()]
    return {
        "order_id": o,
        "customer": "ann",
        "lines": order_lines,
        "transfer_id": t,
        "amount": amount,
    }


def _transfer(t: str, src: str, amount: int) -> dict[str, Any]:
    money = {"amount": amount, "currency": "EUR"}
    return {"transfer_id": t, "from_account_id": src, "to_account_id": TILL, "amount": money}


def _eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.5)


def test_an_order_paid_by_a_bank_transfer_is_confirmed_into_postgres(shop: ShopRig):
    shop.bank.processor()
    shop.processor()
    reactor = shop.reactor()
    shop.read_side("bank", shop.bank.prefix)
    shop.read_side("shop", shop.prefix)
    with shop.bank.client() as bank, shop.client() as client:
        for account in ("ann", TILL):
            assert bank.send("bank.OpenAccount", open_account(account)).result(30).accepted
        assert bank.send("bank.Deposit", movement("ann", 1000)).result(30).accepted
        for product, units in (("apple", 5), ("pear", 1)):
            added = {"product_id": product, "quantity": units}
            assert client.send("shop.AddStock", added).result(30).accepted
        # Paid: confirmed. Its transfer is requested after the order is placed.
        paid = _order("o-paid", "t-paid", {"apple": 2, "pear": 1}, 300)
        assert client.send("shop.PlaceOrder", paid).result(30).accepted
        assert (
            bank.send("bank.RequestTransfer", _transfer("t-paid", "ann", 300)).result(30).accepted
        )
        # Unpaid: ann cannot cover it, bank fails the transfer, the order is cancelled and
        # its apples go back. Here the transfer comes first, the order after it.
        assert (
            bank.send("bank.RequestTransfer", _transfer("t-big", "ann", 5000)).result(30).accepted
        )
        unpaid = _order("o-unpaid", "t-big", {"apple": 3}, 5000)
        assert client.send("shop.PlaceOrder", unpaid).result(30).accepted

    def settled() -> dict[str, tuple] | None:
        with connect(shop.dsn, shop.schema) as conn:
            rows = conn.execute("SELECT order_id, status, reason FROM orders").fetchall()
        orders = {order_id: (status, reason) for order_id, status, reason in rows}
        done = len(orders) == 2 and all(status != "PLACED" for status, _ in orders.values())
        return orders if done else None

    orders = _eventually(settled, 120, "both orders settled in Postgres")
    assert orders == {"o-paid": ("CONFIRMED", ""), "o-unpaid": ("CANCELLED", "payment_failed")}

    def stock_settled() -> list[tuple] | None:
        with connect(shop.dsn, shop.schema) as conn:
            rows = conn.execute(
                "SELECT product_id, available, reserved, sold FROM stock ORDER BY product_id"
            ).fetchall()
        return rows if rows == [("apple", 3, 0, 2), ("pear", 0, 0, 1)] else None

    _eventually(stock_settled, 60, "stock sold and released in Postgres")

    def balances() -> dict[str, int] | None:
        with connect(shop.dsn, shop.schema) as conn:
            rows = dict(conn.execute("SELECT account_id, balance FROM accounts").fetchall())
        return rows if rows == {"ann": 700, TILL: 300} else None

    _eventually(balances, 60, "bank's accounts read model next to shop's")

    # The reactor's /metrics: the two transfers' outcomes reacted to, one command each,
    # and every bank.events partition it owns caught up.
    metrics = scrape(reactor)
    assert sum(metrics["cqrs_reactor_commands_total"].values()) == 2
    assert metrics["cqrs_reactor_events_total"][(("reacted", "true"),)] == 2
    assert metrics["cqrs_consumer_rebalances_total"][()] >= 1
    events = f"{shop.bank.prefix}.events"
    wait_until(lambda: set(lag(reactor)) == {(events, p) for p in range(6)}, "reactor lag")
    wait_until(lambda: set(lag(reactor).values()) == {0.0}, "the reactor caught up")


# -- forged internal commands ---------------------------------------------------------------


def test_forged_reactor_commands_are_refused_over_kafka_and_http(shop: ShopRig):
    """SettlePayment is what the reactor issues when bank completes a transfer. Forged by a
    client (the reactor's id, every header, over Kafka or HTTP), it must not pay an order:
    the reactor's commands are shop's internal commands, on shop.internal-commands."""
    shop.bank.processor()
    shop.processor()
    shop.reactor()
    settle = {"transfer_id": "t-f", "outcome": "COMPLETED", "reason": ""}
    with shop.bank.client() as bank, shop.client() as client:
        for account in ("ann", TILL):
            assert bank.send("bank.OpenAccount", open_account(account)).result(30).accepted
        assert bank.send("bank.Deposit", movement("ann", 1000)).result(30).accepted
        assert client.send("shop.AddStock", {"product_id": "apple", "quantity": 5}).result(30)
        order = _order("o-f", "t-f", {"apple": 2}, 300)
        assert client.send("shop.PlaceOrder", order).result(30).accepted
        forged = [
            client.send("shop.SettlePayment", settle, command_id="pm:payment:t-f:settle"),
            client.send("shop.RecordPayment", {"order_id": "o-f"}, command_id="pm:order:o-f:paid"),
        ]
        for pending in forged:
            result = pending.result(30)
            assert (result.status, result.reason) == ("REJECTED", "internal_command")
            assert "internal command of context shop" in result.detail
    producer = Producer(shop.bank.kafka)
    producer.produce(
        shop.topics.commands,
        default_codec().encode("shop.SettlePayment", settle),
        b"t-f",
        headers=forged_headers(
            "pm:payment:t-f:forged", "shop.SettlePayment", "t-f", "/shop/reactor"
        ),
    )
    assert producer.flush(30) == 0
    results = read_until(
        shop.bank.kafka,
        shop.topics.results,
        lambda ms: any(causation_of(m) == "pm:payment:t-f:forged" for m in ms),
        partitions=default_registry().context("shop").partitions,
    )
    raw = next(m for m in results if causation_of(m) == "pm:payment:t-f:forged")
    decoded = default_codec().decode(raw.value())
    assert (decoded["status"], decoded["reason"]) == ("REJECTED", "internal_command")
    # Over HTTP the type is not offered, whatever the Idempotency-Key mimics.
    shop_context = default_registry().context("shop")
    logins = postgres_roles.prepare(shop.dsn, shop.schema, shop_context)
    port = free_port()
    shop.start(
        "gateway",
        ["--context", "shop", "--prefix", shop.prefix, "--schema", shop.schema,
         "--query-dsn", logins.query_dsn, "--host", "127.0.0.1", "--port", str(port),
         "--auth", "none", "--rate-limit", "0"],
    )  # fmt: skip
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        answer = http.post(
            "/commands/shop.SettlePayment",
            json=settle,
            headers={"Idempotency-Key": "pm:payment:t-f:settle"},
        )
        assert (answer.status_code, answer.json()["error"]) == (404, "unknown_command_type")
        assert "shop.SettlePayment" not in answer.json()["message"].partition("known:")[2]

    def placed_only() -> list[str]:
        return [e.type for e in read_events(shop.bank.kafka, shop.topics.events)]

    # Reserved, awaiting payment, and nothing a forged command would have caused.
    held = _eventually(
        lambda: (t := placed_only()).count("shop.StockReserved") == 1 and t, 60, "reserved"
    )
    assert not {"shop.PaymentSettled", "shop.OrderPaid", "shop.OrderConfirmed"} & set(held)
    # The real transfer: the reactor's SettlePayment, on the internal topic, pays the order
    # (a forged command with its id did not take its place as a duplicate).
    with shop.bank.client() as bank:
        assert bank.send("bank.RequestTransfer", _transfer("t-f", "ann", 300)).result(30)
    _eventually(lambda: "shop.OrderConfirmed" in placed_only(), 120, "the order confirmed")
    issued = [
        dict(m.headers())["ce_id"].decode()
        for m in read_topic(shop.bank.kafka, shop.topics.internal_commands)
        if dict(m.headers()).get("ce_type") == b"shop.SettlePayment"
    ]
    assert issued == ["pm:payment:t-f:settle"]
    events = read_events(shop.bank.kafka, shop.topics.events)
    assert not {"c-forge", "pm:payment:t-f:forged"} & {e.causation_id for e in events}
    balances = fold_balances(read_events(shop.bank.kafka, shop.bank.topics.events))
    assert balances == {"ann": 700, TILL: 300}


# -- kill -9 ----------------------------------------------------------------------------------


def _terminal(events: list[StoredEvent]) -> dict[str, str]:
    return {
        e.aggregate_id: e.type
        for e in events
        if e.type in ("shop.OrderConfirmed", "shop.OrderCancelled")
    }


def _fold_stock(events: list[StoredEvent]) -> dict[str, dict[str, Any]]:
    stock: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"added": 0, "available": 0, "held": {}, "sold": 0}
    )
    for e in events:
        row, d = stock[e.aggregate_id], e.data
        if e.type == "shop.StockAdded":
            row["added"] += d["quantity"]
            row["available"] = d["available"]
        elif e.type == "shop.StockReserved":
            row["held"][d["order_id"]] = d["quantity"]
            row["available"] = d["available"]
        elif e.type == "shop.StockReleased":
            row["held"].pop(d["order_id"])
            row["available"] = d["available"]
        elif e.type == "shop.StockCommitted":
            row["held"].pop(d["order_id"])
            row["sold"] = d["sold"]
    return stock


def test_money_and_stock_are_conserved_with_kill_9_of_the_processors(shop: ShopRig):
    rng = random.Random(17)
    bank_processor = shop.bank.processor()
    shop_processor = shop.processor()
    reactor = shop.reactor()
    customers = [f"c-{i:02d}" for i in range(20)]
    products = {f"p-{i}": 15 for i in range(8)}
    orders: dict[str, dict[str, Any]] = {}
    late: list[dict[str, Any]] = []
    with shop.bank.client() as bank, shop.client() as client:
        opened = [bank.send("bank.OpenAccount", open_account(a)) for a in [*customers, TILL]]
        assert all(p.result(60).accepted for p in opened)
        funded = [bank.send("bank.Deposit", movement(c, 2000)) for c in customers]
        stocked = [
            client.send("shop.AddStock", {"product_id": p, "quantity": q})
            for p, q in products.items()
        ]
        assert all(p.result(60).accepted for p in funded + stocked)
        for i in range(150):
            o, t = f"o-{i}", f"t-{i}"
            lines = {p: rng.randint(1, 3) for p in rng.sample(sorted(products), rng.randint(1, 3))}
            amount = rng.randint(100, 900)
            orders[o] = _order(o, t, lines, amount)
            transfer = _transfer(t, rng.choice(customers), amount)
            if i % 10 == 0:  # placed at the end, after its transfer has ended
                bank.send("bank.RequestTransfer", transfer)
                late.append(orders[o])
            elif rng.random() < 0.3:
                bank.send("bank.RequestTransfer", transfer)
                client.send("shop.PlaceOrder", orders[o])
            else:
                client.send("shop.PlaceOrder", orders[o])
                bank.send("bank.RequestTransfer", transfer)
            if i in (30, 70, 110):
                client.flush()
                bank.flush()
                shop_processor.kill()
                shop_processor = shop.processor(ready=False)
            if i == 50:
                bank.flush()
                bank_processor.kill()
                bank_processor = shop.bank.processor(ready=False)
            if i == 90:
                reactor.kill()
                reactor = shop.reactor(ready=False)
        bank.flush()

        def late_transfers_ended() -> bool:
            events = read_events(shop.bank.kafka, shop.bank.topics.events)
            ended = {e.aggregate_id for e in events if e.type in BANK_ENDS}
            return all(order["transfer_id"] in ended for order in late)

        _eventually(late_transfers_ended, 120, "the late orders' transfers ended")
        for order in late:
            client.send("shop.PlaceOrder", order)
        client.flush()

    def settled() -> tuple[list[StoredEvent], list[StoredEvent]] | None:
        shop_events = read_events(shop.bank.kafka, shop.topics.events)
        stock = _fold_stock(shop_events)
        if len(_terminal(shop_events)) < len(orders) or any(s["held"] for s in stock.values()):
            return None
        return shop_events, read_events(shop.bank.kafka, shop.bank.topics.events)

    _eventually(settled, 240, "every order confirmed or cancelled, no stock held")
    time.sleep(3)  # a late reservation of a cancelled order is released right after it
    shop_events, bank_events = _eventually(settled, 60, "no stock held")
    check_event_log(shop_events)
    check_event_log(bank_events)

    # Money: only deposits brought money in; transfers moved it, exactly once each.
    balances = fold_balances(bank_events)
    assert all(b >= 0 for b in balances.values())
    assert sum(balances.values()) == 2000 * len(customers)
    completed = {e.aggregate_id for e in bank_events if e.type == "bank.TransferCompleted"}
    failed = {e.aggregate_id for e in bank_events if e.type == "bank.TransferFailed"}
    assert completed and failed and completed | failed == {f"t-{i}" for i in range(150)}
    assert balances[TILL] == sum(
        orders[o]["amount"] for o in orders if orders[o]["transfer_id"] in completed
    )

    # The reactor, killed once, issued each transfer's SettlePayment exactly once: its
    # commands and its consumed offsets commit together.
    settles = Counter(
        dict(msg.headers())["ce_id"].decode()
        for msg in read_topic(shop.bank.kafka, shop.topics.internal_commands)
        if dict(msg.headers()).get("ce_type") == b"shop.SettlePayment"
    )
    assert settles == {f"pm:payment:t-{i}:settle": 1 for i in range(150)}

    # Orders: confirmed exactly when paid and stocked; a failed transfer cancels.
    terminal = _terminal(shop_events)
    confirmed = {o for o, kind in terminal.items() if kind == "shop.OrderConfirmed"}
    assert confirmed and all(orders[o]["transfer_id"] in completed for o in confirmed)
    assert all(
        terminal[o] == "shop.OrderCancelled" for o in orders if orders[o]["transfer_id"] in failed
    )

    # Stock: every unit added is available or sold (none held), and sold = confirmed lines.
    sold: dict[str, int] = defaultdict(int)
    for o in confirmed:
        for line in orders[o]["lines"]:
            sold[line["product_id"]] += line["quantity"]
    stock = _fold_stock(shop_events)
    for product, added in products.items():
        row = stock[product]
        assert row["added"] == added
        assert row["available"] + row["sold"] == added, (product, row)
        assert row["sold"] == sold[product], (product, row)
    assert sum(e.type == "shop.OrderPlaced" for e in shop_events) == len(orders)
    # Every path was taken: out of stock, and transfers that ended before their order existed.
    reasons = {
        e.data["reason"].partition(":")[0] for e in shop_events if e.type == "shop.OrderCancelled"
    }
    assert reasons == {"out_of_stock", "payment_failed"}
    known = {
        e.data["order_id"]
        for e in shop_events
        if e.type == "shop.PaymentAwaited" and e.data["outcome"]
    }
    # Every late order sees its transfer's outcome at once; an order sent beside its transfer
    # may too, when the transfer ended first (e.g. while a processor was being restarted).
    assert {order["order_id"] for order in late} <= known
