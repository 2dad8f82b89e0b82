"""Transfers through the real processor: the saga's compensation, and money conserved across
all accounts after a mixed run with SIGKILLs."""

from __future__ import annotations

import random
import time

from tests.integration.write_side import (
    BankRig,
    StoredEvent,
    check_event_log,
    fold_balances,
    movement,
    open_account,
    read_events,
)


def _transfer(t: str, src: str, dst: str, amount: int) -> dict:
    return {
        "transfer_id": t,
        "from_account_id": src,
        "to_account_id": dst,
        "amount": {"amount": amount, "currency": "EUR"},
    }


def _settled(events: list[StoredEvent], transfers: set[str]) -> bool:
    """Every transfer ended, and every compensated one has its refund."""
    ended = {
        e.aggregate_id: e
        for e in events
        if e.type in ("bank.TransferCompleted", "bank.TransferFailed")
    }
    refunded = {e.causation_id for e in events if e.type == "bank.Deposited"}
    return all(
        t in ended
        and (
            ended[t].type == "bank.TransferCompleted"
            or not ended[t].data["compensated"]
            or f"pm:transfer:{t}:refund" in refunded
        )
        for t in transfers
    )


def _wait_settled(bank: BankRig, transfers: set[str], timeout: float = 120) -> list[StoredEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(bank.kafka, bank.topics.events)
        if _settled(events, transfers):
            return events
        assert time.monotonic() < deadline, "transfers did not settle"
        time.sleep(0.5)


def test_transfer_to_a_closed_account_is_compensated(bank: BankRig):
    bank.processor()
    with bank.client() as client:
        for a in ("src", "closed"):
            assert client.send("bank.OpenAccount", open_account(a)).result(30).accepted
        client.send("bank.Deposit", movement("src", 1000)).result(30)
        assert client.send("bank.CloseAccount", {"account_id": "closed"}).result(30).accepted
        assert (
            client.send("bank.RequestTransfer", _transfer("t-1", "src", "closed", 300))
            .result(30)
            .accepted
        )
    events = _wait_settled(bank, {"t-1"})
    failed = next(e for e in events if e.type == "bank.TransferFailed")
    assert failed.data["compensated"] is True and failed.data["reason"] == "account_closed"
    src = [e for e in events if e.aggregate_id == "src" and e.type != "bank.AccountOpened"]
    assert [(e.type, e.data["amount"]["amount"], e.data["balance"]) for e in src] == [
        ("bank.Deposited", 1000, 1000),
        ("bank.Withdrawn", 300, 700),
        ("bank.Deposited", 300, 1000),
    ]
    assert fold_balances(events).get("closed", 0) == 0


def test_money_is_conserved_after_a_mixed_run_with_kills(bank: BankRig):
    rng = random.Random(3)
    worker = bank.processor("p0")
    accounts = [f"m-{i:03d}" for i in range(200)]
    closed = [f"x-{i}" for i in range(5)]  # transfers into these must bounce and be refunded
    with bank.client() as client:
        opened = [client.send("bank.OpenAccount", open_account(a)) for a in accounts + closed]
        assert all(p.result(60).accepted for p in opened)
        funded = [client.send("bank.Deposit", movement(a, 50_000)) for a in accounts]
        closing = [client.send("bank.CloseAccount", {"account_id": a}) for a in closed]
        assert all(p.result(60).accepted for p in funded + closing)
        sent, transfers = [], set()
        for i in range(6000):
            roll = rng.random()
            if roll < 0.5:
                src = rng.choice(accounts)
                dst = rng.choice(closed) if roll < 0.05 else rng.choice(accounts)
                if dst != src:
                    t = f"tr-{i}"
                    transfers.add(t)
                    amount = rng.randint(1, 20_000)
                    client.send("bank.RequestTransfer", _transfer(t, src, dst, amount))
            else:
                a = rng.choice(accounts)
                kind = "d" if roll < 0.75 else "w"
                cmd = movement(a, rng.randint(1, 5000 if kind == "d" else 9000))
                type_ = "bank.Deposit" if kind == "d" else "bank.Withdraw"
                sent.append((kind, cmd, client.send(type_, cmd)))
            if i % 1500 == 750:
                client.flush()
                worker.kill()
                worker = bank.processor("p0", ready=False)
        outside_money = 50_000 * len(accounts)
        for kind, cmd, pending in sent:
            if pending.result(180).accepted:
                sign = 1 if kind == "d" else -1
                outside_money += sign * cmd["amount"]["amount"]
    events = _wait_settled(bank, transfers)
    check_event_log(events)
    balances = fold_balances(events)
    assert all(b >= 0 for b in balances.values())
    assert all(balances.get(a, 0) == 0 for a in closed)
    assert sum(balances.values()) == outside_money
    completed = sum(e.type == "bank.TransferCompleted" for e in events)
    bounced = sum(e.type == "bank.TransferFailed" and e.data["compensated"] for e in events)
    assert completed > 0 and bounced > 0
