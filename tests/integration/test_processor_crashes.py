"""Crash safety and rebalances of the command processor, shown by killing real processes."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import defaultdict

from producers.command_client import CommandResult, PendingCommand
from tests.support.write_side import (
    BankRig,
    check_accepted_exactly_once,
    check_event_log,
    fold_balances,
    movement,
    open_account,
    random_workload,
    read_events,
    send_steadily,
)

ACCOUNTS = [f"acct-{i:04d}" for i in range(1000)]


def _open_all(bank: BankRig) -> None:
    with bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        assert all(p.result(120).accepted for p in pending)


def _model_balances(results: list[tuple[tuple[str, dict], CommandResult]]) -> dict[str, int]:
    balances: dict[str, int] = defaultdict(int)
    for (type_, data), result in results:
        if result.accepted:
            sign = 1 if type_ == "bank.Deposit" else -1
            balances[data["account_id"]] += sign * data["amount"]["amount"]
    return dict(balances)


def test_sigkill_during_a_stream_loses_and_duplicates_nothing(bank: BankRig):
    rng = random.Random(7)
    workers = {"p0": bank.processor("p0")}
    _open_all(bank)
    commands = random_workload(ACCOUNTS, 50_000, seed=11)
    sent: list[PendingCommand] = []
    done = threading.Event()
    sender = bank.client()
    send_steadily(sender, commands, 5_000, sent, done)
    kills = 0
    while kills < 5 or not done.is_set():
        time.sleep(rng.uniform(0.5, 2.5))
        workers["p0"].kill()
        kills += 1
        workers["p0"] = bank.processor("p0", ready=False)
    workers["p0"].wait_ready()
    results = [p.result(300) for p in sent]
    sender.close()
    assert kills >= 5
    assert len(results) == 50_000

    events = read_events(bank.kafka, bank.topics.events)
    check_event_log(events)
    by_id = {r.command_id: r for r in results}
    check_accepted_exactly_once(events, by_id)
    accepted = sum(r.accepted for r in results)
    assert 0 < accepted < len(results)  # the workload overdraws sometimes
    model = _model_balances(list(zip(commands, results, strict=True)))
    folded = fold_balances(events)
    assert {a: folded.get(a, 0) for a in ACCOUNTS} == {a: model.get(a, 0) for a in ACCOUNTS}


def test_rebalance_between_two_instances_loses_and_duplicates_nothing(bank: BankRig):
    first = bank.processor("p0")
    _open_all(bank)
    commands = random_workload(ACCOUNTS, 20_000, seed=5)
    sent: list[PendingCommand] = []
    done = threading.Event()
    sender = bank.client()
    send_steadily(sender, commands, 4_000, sent, done)
    time.sleep(1.5)
    second = bank.processor("p1")  # joins: the group rebalances mid-stream
    time.sleep(1.5)
    first.stop()  # leaves: its partitions move to the survivor
    results = [p.result(300) for p in sent]
    sender.close()
    assert second.alive
    assert "assigned [" in second.log_tail(200)

    events = read_events(bank.kafka, bank.topics.events)
    check_event_log(events)
    check_accepted_exactly_once(events, {r.command_id: r for r in results})
    model = _model_balances(list(zip(commands, results, strict=True)))
    folded = fold_balances(events)
    assert {a: folded.get(a, 0) for a in ACCOUNTS} == {a: model.get(a, 0) for a in ACCOUNTS}


def test_a_fenced_twin_exits_instead_of_hanging(bank: BankRig):
    """A second incarnation with the same instance id (a rescheduled pod while the old one
    still runs) fences the first: same group.instance.id and transactional.id. The first must
    stop at once with a clear line, not sit idle until a liveness probe kills it."""
    old = bank.processor("p0")
    client = bank.client()
    try:
        assert client.send("bank.OpenAccount", open_account("twin-a")).result(30).accepted
        new = bank.processor("p0")
        assert old.proc is not None
        try:
            code = old.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"fenced processor still running:\n{old.log_tail()}") from None
        assert code != 0
        assert "command processor stopped" in old.log_tail(), old.log_tail()
        assert "Traceback" not in old.log_tail(), old.log_tail()
        # The survivor owns the partitions and answers.
        assert client.send("bank.Deposit", movement("twin-a", 5)).result(60).accepted
        assert new.alive
    finally:
        client.close()
