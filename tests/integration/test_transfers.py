"""Transfers through the real processor: the saga's compensation, and money conserved across
all accounts after a mixed run with SIGKILLs."""

from __future__ import annotations

import random
import time
from collections import Counter

from confluent_kafka import Producer

from processors.registry import default_registry
from processors.topic_reader import read_topic
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.topics import read_until
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


def test_forged_internal_commands_are_refused_and_money_is_conserved(bank: BankRig):
    bank.processor()
    codec = default_codec()
    with bank.client() as client:
        for a in ("fa", "fb"):
            assert client.send("bank.OpenAccount", open_account(a)).result(30).accepted
        assert client.send("bank.Deposit", movement("fa", 1000)).result(30).accepted
        # Each transfer step sent by a client, with the id the saga uses for it. A forged
        # FailTransfer{compensated} would otherwise refund money never debited.
        forged = [
            # The saga's own id for the step, over the command client.
            client.send(
                "bank.FailTransfer",
                {"transfer_id": "t-f", "reason": "forged", "compensated": True},
                command_id="pm:transfer:t-f:fail",
            ),
            client.send(
                "bank.RecordTransferDebit",
                {"transfer_id": "t-f"},
                command_id="pm:transfer:t-f:debited",
            ),
            client.send(
                "bank.CompleteTransfer",
                {"transfer_id": "t-f"},
                command_id="pm:transfer:t-f:complete",
            ),
        ]
        # A client borrowing the saga's debit id for a public Withdraw: its own money, and
        # the saga learns nothing from it.
        borrowed = client.send(
            "bank.Withdraw",
            {**movement("fa", 1), "transfer_id": "t-f"},
            command_id="pm:transfer:t-f:debit",
        )
        assert borrowed.result(30).accepted
        assert client.send("bank.RequestTransfer", _transfer("t-f", "fa", "fb", 300)).result(30)
        for pending in forged:
            result = pending.result(30)
            assert (result.status, result.reason) == ("REJECTED", "internal_command")
            assert "internal command" in result.detail
    # Forged with every header the processor sets, straight onto the public topic.
    producer = Producer(bank.kafka)
    value = codec.encode(
        "bank.FailTransfer", {"transfer_id": "t-f", "reason": "forged", "compensated": True}
    )
    producer.produce(
        bank.topics.commands,
        value,
        b"t-f",
        headers=forged_headers(
            "pm:transfer:t-f:refund", "bank.FailTransfer", "t-f", "/bank/command-processor"
        ),
    )
    assert producer.flush(30) == 0
    results = read_until(
        bank.kafka,
        bank.topics.results,
        lambda ms: any(causation_of(m) == "pm:transfer:t-f:refund" for m in ms),
        partitions=default_registry().context("bank").partitions,
    )
    raw = next(m for m in results if causation_of(m) == "pm:transfer:t-f:refund")
    decoded = codec.decode(raw.value())
    assert (decoded["status"], decoded["reason"]) == ("REJECTED", "internal_command")
    events = _wait_settled(bank, {"t-f"})
    forged_ids = {
        "pm:transfer:t-f:fail",
        "pm:transfer:t-f:debited",
        "pm:transfer:t-f:complete",
        "pm:transfer:t-f:refund",
    }
    # The saga ran its own course: debit, credit, complete, each caused by its own
    # internal command; no forged command caused an event.
    transfer = [e.type for e in events if e.aggregate_id == "t-f"]
    assert transfer == ["bank.TransferRequested", "bank.TransferDebited", "bank.TransferCompleted"]
    caused = {e.causation_id for e in events}
    assert not (caused & forged_ids - {"pm:transfer:t-f:debited", "pm:transfer:t-f:complete"})
    balances = fold_balances(events)
    assert (balances["fa"], balances["fb"]) == (1000 - 1 - 300, 300)
    assert sum(balances.values()) == 1000 - 1


def test_the_principal_is_carried_onto_events_results_and_the_saga(bank: BankRig):
    bank.processor()
    with bank.client() as client:
        for a in ("pa", "pb"):
            sent = client.send("bank.OpenAccount", open_account(a), principal="alice@example")
            assert sent.result(30).accepted
        client.send("bank.Deposit", movement("pa", 50), principal="bob").result(30)
        request = _transfer("t-p", "pa", "pb", 20)
        assert client.send("bank.RequestTransfer", request, principal="carol").result(30).accepted
        client.send("bank.Deposit", movement("pb", 1)).result(30)  # no principal
    events = _wait_settled(bank, {"t-p"})
    who = [(e.aggregate_id, e.type, e.principal) for e in events]
    assert ("pa", "bank.AccountOpened", "alice@example") in who
    assert ("pa", "bank.Deposited", "bob") in who
    # Every event of the transfer, on the transfer and on both accounts, names carol.
    saga = [w for w in who if w[1] != "bank.AccountOpened" and w[2] != "bob"]
    assert Counter(saga) == Counter(
        [
            ("t-p", "bank.TransferRequested", "carol"),
            ("pa", "bank.Withdrawn", "carol"),
            ("t-p", "bank.TransferDebited", "carol"),
            ("pb", "bank.Deposited", "carol"),
            ("t-p", "bank.TransferCompleted", "carol"),
            ("pb", "bank.Deposited", None),
        ]
    )
    results = read_topic(bank.kafka, bank.topics.results)
    principals = {causation_of(m): dict(m.headers() or ()).get(ce.PRINCIPAL) for m in results}
    assert b"carol" in principals.values() and b"alice@example" in principals.values()
