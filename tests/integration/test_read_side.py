"""The read side against the real broker and Postgres, with the processor, the projector
and the sink as real processes: end to end, redelivery, aborted transactions."""

from __future__ import annotations

import random
import time
from typing import Any

from confluent_kafka import Producer

from processors.topics import ContextTopics
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.read_side import (
    ReadSideRig,
    committed_offsets,
    fold_accounts,
    fold_daily_totals,
    metric,
    pg_accounts,
    pg_daily_totals,
    pg_snapshot,
    read_events,
    tables_state,
)

CURRENCIES = {"EUR": 100, "USD": 50}


def accounts() -> dict[str, str]:
    out = {}
    for currency, n in CURRENCIES.items():
        out |= {f"{currency.lower()}-{i:03d}": currency for i in range(n)}
    return out


def workload(owned: dict[str, str], n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Deposits, withdrawals (some overdraw and are rejected) and transfers, each in the
    account's own currency."""
    rng = random.Random(seed)
    ids = sorted(owned)
    commands = []
    for i in range(n):
        account = rng.choice(ids)
        money = {"amount": rng.randint(1, 10_000), "currency": owned[account]}
        roll = rng.random()
        if roll < 0.55:
            commands.append(("bank.Deposit", {"account_id": account, "amount": money}))
        elif roll < 0.93:
            commands.append(("bank.Withdraw", {"account_id": account, "amount": money}))
        else:
            to = rng.choice([a for a in ids if owned[a] == owned[account] and a != account])
            transfer = {"transfer_id": f"t{i}", "from_account_id": account, "to_account_id": to}
            commands.append(("bank.RequestTransfer", {**transfer, "amount": money}))
    return commands


def run_workload(rig: ReadSideRig, n: int, seed: int) -> int:
    """Open the accounts, close a few empty ones, send `n` commands; returns how many
    transfers were accepted (their later steps run in the processor's saga)."""
    owned = accounts()
    with rig.client() as client:
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": f"owner {a}", "currency": c})
            for a, c in owned.items()
        ]
        assert all(p.result(60).accepted for p in opens)
        closes = [client.send("bank.CloseAccount", {"account_id": a}) for a in list(owned)[:5]]
        assert all(p.result(60).accepted for p in closes)
        pending = [(t, client.send(t, d)) for t, d in workload(owned, n, seed)]
        results = [(t, p.result(120)) for t, p in pending]
    accepted = [r for _, r in results if r.accepted]
    assert 0 < len(accepted) < len(results)
    return sum(1 for t, r in results if t == "bank.RequestTransfer" and r.accepted)


def settle(rig: ReadSideRig, transfers: int, timeout: float = 120.0) -> None:
    """Until every transfer ended and the read side passed every event."""
    deadline = time.monotonic() + timeout
    with rig.pg() as conn:
        while True:
            rig.wait_caught_up(max(1.0, deadline - time.monotonic()))
            (ended,) = conn.execute(
                "SELECT count(*) FROM event_log"
                " WHERE type IN ('bank.TransferCompleted', 'bank.TransferFailed')"
            ).fetchone()
            if ended == transfers:
                return
            assert time.monotonic() < deadline, f"{ended} of {transfers} transfers ended"
            time.sleep(0.2)


def check_equals_the_events(rig: ReadSideRig) -> None:
    events = read_events(rig.kafka, rig.bank.topics.events)
    with rig.pg() as conn:
        assert pg_accounts(conn) == fold_accounts(events)
        totals = pg_daily_totals(conn)
        assert totals == fold_daily_totals(rig.kafka, rig.bank.topics.events)
        # daily_totals hold the same money as the balances, per currency
        for currency in CURRENCIES:
            (balances,) = conn.execute(
                "SELECT sum(balance) FROM accounts WHERE currency = %s", (currency,)
            ).fetchone()
            net = sum(d - w for (c, _), (d, w, _) in totals.items() if c == currency)
            assert net == balances > 0
        logged = conn.execute(
            "SELECT aggregate_id, version, type, source_partition, source_offset FROM event_log"
        ).fetchall()
        assert sorted(logged) == sorted(
            (e.aggregate_id, e.version, e.type, e.partition, e.offset) for e in events
        )


def test_end_to_end_then_a_full_redelivery_changes_nothing(read_side: ReadSideRig):
    read_side.bank.processor("p0", ready=False)
    projector, sink = read_side.projector(ready=False), read_side.sink(ready=False)
    for worker in (*read_side.bank.workers, projector, sink):
        worker.wait_ready(90)
    transfers = run_workload(read_side, 2000, seed=5)
    settle(read_side, transfers)
    check_equals_the_events(read_side)

    # -- redelivery: both consumer groups back to offset 0, everything again ---------------
    with read_side.pg() as conn:
        before = pg_snapshot(conn)
    topics = ContextTopics(read_side.prefix)
    projections_before = {
        n: read_side_last(read_side, topics.projection(n)) for n in ("accounts", "event_log")
    }
    tables_before = tables_state(read_side.kafka, read_side.prefix)
    assert all(values for values, _ in tables_before.values())
    projector.stop()
    sink.stop()
    read_side.reset_to_beginning(*read_side.projector_group())
    read_side.reset_sink_to_beginning()
    projector, sink = read_side.projector(ready=False), read_side.sink(ready=False)
    projector.wait_ready(90), sink.wait_ready(90)
    read_side.wait_group_at_end(*read_side.projector_group())
    read_side.wait_group_at_end(*read_side.sink_group())

    # The replay happened: every event came again, and every guard said "already applied".
    events = len(read_events(read_side.kafka, topics.events))
    assert metric(projector, "cqrs_projector_events_total") >= events
    # accounts and daily_totals skip every event; only event_log (stateless) rebuilds rows
    assert metric(projector, "cqrs_projector_redelivered_total") > events
    assert metric(projector, "cqrs_projector_applied_total") == metric(
        projector, "cqrs_projector_events_total"
    )
    assert metric(sink, "cqrs_sink_records_total") > events
    with read_side.pg() as conn:
        assert pg_snapshot(conn) == before
    tables_after = tables_state(read_side.kafka, read_side.prefix)
    for name, (values, _) in tables_before.items():
        # the replay republishes rows, on the tables' changelogs too, but never changes one
        assert tables_after[name][0] == values, name
    for name, last in projections_before.items():
        assert read_side_last(read_side, topics.projection(name)) == last
    check_equals_the_events(read_side)


def test_the_sink_resumes_from_its_position_in_postgres_not_from_kafka(read_side: ReadSideRig):
    """The sink's positions are stored with its rows. Here the group's offsets in Kafka are
    moved past records the sink never wrote, while it is down: a sink that trusted Kafka's
    offsets (as the Faust sink did) would never write them."""
    read_side.bank.processor("p0", ready=False)
    projector, sink = read_side.projector(ready=False), read_side.sink(ready=False)
    for worker in (*read_side.bank.workers, projector, sink):
        worker.wait_ready(90)
    owned = {f"r-{i:02d}": "EUR" for i in range(30)}
    with read_side.client() as client:
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": a, "currency": c})
            for a, c in owned.items()
        ]
        assert all(p.result(60).accepted for p in opens)
    read_side.wait_caught_up()
    sink.stop()
    group, topics = read_side.sink_group()
    with read_side.pg() as conn:
        stored = dict(
            ((t, p), o)
            for t, p, o in conn.execute(
                "SELECT topic, topic_partition, next_offset FROM cqrs_sink_offsets"
            ).fetchall()
        )
    ends = {k: o for k, o in committed_offsets(read_side.kafka, group, topics).items() if o > 0}
    assert stored == ends  # the copy in Kafka agrees with Postgres after a clean stop

    with read_side.client() as client:  # while the sink is down
        deposits = [
            client.send("bank.Deposit", {"account_id": a, "amount": {"amount": 7, "currency": c}})
            for a, c in owned.items()
        ]
        assert all(p.result(60).accepted for p in deposits)
    read_side.wait_group_at_end(*read_side.projector_group())
    read_side.move_group_to_end(group, topics)
    sink = read_side.sink(ready=False)
    sink.wait_ready(90)
    read_side.wait_caught_up()
    with read_side.pg() as conn:
        balances = dict(conn.execute("SELECT account_id, balance FROM accounts").fetchall())
    assert balances == {a: 7 for a in owned}
    assert metric(sink, "cqrs_sink_records_total") >= len(owned)


def read_side_last(rig: ReadSideRig, topic: str) -> dict:
    from tests.support.read_side import last_values

    values, _ = last_values(rig.kafka, topic)
    # checkpoint records are not rows; their last checkpoint depends on batch boundaries
    return {k: v for k, v in values.items() if not k[1].startswith(b"__cqrs_checkpoint__:")}


def _event(type_: str, data: dict, account: str, version: int, prefix: str):
    headers = ce.CloudEventHeaders(
        id=f"{prefix}:{account}:{version}",
        type=type_,
        source="/test/aborted",
        subject=account,
        time=ce.now(),
        correlation_id="c",
        causation_id=f"cmd-{account}-{version}",
        aggregate_version=version,
    )
    return default_codec().encode(type_, data), account.encode(), headers.to_kafka()


def test_an_aborted_transaction_changes_no_row_and_no_table_value(read_side: ReadSideRig):
    """Events in an aborted transaction must not reach any projection: a read_uncommitted
    consumer would apply the aborted deposit as version 3 and then skip the committed one."""
    projector, sink = read_side.projector(ready=False), read_side.sink(ready=False)
    projector.wait_ready(90), sink.wait_ready(90)
    prefix, topic = read_side.prefix, ContextTopics(read_side.prefix).events
    producer = Producer({**read_side.kafka, "transactional.id": f"{prefix}.test-aborted"})
    producer.init_transactions(30)

    def transaction(producer: Producer, events: list[tuple], commit: bool) -> None:
        producer.begin_transaction()
        for value, key, headers in events:
            producer.produce(topic, value, key, partition=0, headers=headers)
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)

    def deposit(account: str, version: int, amount: int, balance: int) -> tuple:
        money = {"amount": amount, "currency": "EUR"}
        data = {"account_id": account, "amount": money, "balance": balance, "transfer_id": None}
        return _event("bank.Deposited", data, account, version, prefix)

    def opened(account: str) -> tuple:
        data = {"account_id": account, "owner": "Ann", "currency": "EUR"}
        return _event("bank.AccountOpened", data, account, 1, prefix)

    transaction(producer, [opened("x"), deposit("x", 2, 100, 100)], commit=True)
    transaction(producer, [deposit("x", 3, 1_000_000, 1_000_100), opened("ghost")], commit=False)
    transaction(producer, [deposit("x", 3, 5, 105)], commit=True)
    del producer  # no librdkafka thread left to outlive the session's broker
    read_side.wait_caught_up(60)

    with read_side.pg() as conn:
        assert conn.execute("SELECT account_id, balance, version FROM accounts").fetchall() == [
            ("x", 105, 3)
        ]
        assert pg_daily_totals(conn) == {
            next(iter(pg_daily_totals(conn))): (105, 0, 2)
        }  # one day, two deposits
        amounts = conn.execute(
            "SELECT payload_json -> 'amount' ->> 'amount' FROM event_log"
            " WHERE type = 'bank.Deposited' ORDER BY version"
        ).fetchall()
        assert amounts == [("100",), ("5",)]
        assert conn.execute("SELECT count(*) FROM event_log").fetchone() == (3,)
    codec = default_codec()
    for name, (values, _) in tables_state(read_side.kafka, prefix).items():
        rows = [codec.decode(v) for v in values.values()]
        assert all(r.get("balance", 0) != 1_000_100 for r in rows), name
        assert all(r.get("deposits", 0) < 1_000_000 for r in rows), name
        assert all(r.get("account_id") != "ghost" for r in rows), name
