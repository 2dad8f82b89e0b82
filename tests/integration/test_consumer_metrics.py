"""Consumer lag and rebalances on the workers' /metrics through a real rebalance: a second
processor (or sink) joins the group, partitions move, and each partition's lag series is
served by exactly one worker afterwards, so sums over the group count it once."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from processors.topics import ContextTopics
from tests.support.read_side import PROJECTION_NAMES, ReadSideRig
from tests.support.worker_metrics import lag, rebalances, scrape, wait_until
from tests.support.write_side import BankRig, movement, open_account


def _records_on(bank: BankRig, topic: str) -> int:
    """The sum of the partitions' ends: offsets written, markers included."""
    consumer = Consumer({**bank.kafka, "group.id": "lag-test-watermarks"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(6)
        )
    finally:
        consumer.close()


def test_a_processor_rebalance_moves_each_partitions_lag_series_to_its_new_owner(
    bank: BankRig,
) -> None:
    topics = ContextTopics(bank.prefix)
    inputs = {(t, p) for t in (topics.commands, topics.internal_commands) for p in range(6)}
    first = bank.processor("p0")
    with bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(f"lag-{i}")) for i in range(30)]
        assert all(p.result(60).accepted for p in pending)
        pending = [client.send("bank.Deposit", movement(f"lag-{i}", 100)) for i in range(10)]
        # Transfers go on through internal commands, written in the processor's transactions.
        pending += [
            client.send(
                "bank.RequestTransfer",
                {
                    "transfer_id": f"lag-t{i}",
                    "from_account_id": f"lag-{i}",
                    "to_account_id": f"lag-{i + 10}",
                    "amount": {"amount": 10, "currency": "EUR"},
                },
            )
            for i in range(10)
        ]
        assert all(p.result(60).accepted for p in pending)

    # Alone, it owns and reports all twelve input partitions, caught up: no record is
    # waiting, and the commit markers of the transactions are not counted.
    wait_until(lambda: set(lag(first)) == inputs, "the first processor's lag series")
    wait_until(lambda: set(lag(first).values()) == {0.0}, "the processor to catch up")
    assert _records_on(bank, topics.internal_commands) > 0
    time.sleep(2.5)  # a caught-up partition's age stays 0: no marker counts as waiting
    assert set(lag(first, "seconds").values()) == {0.0}
    assert set(lag(first, "seconds")) == inputs
    assert rebalances(first) >= 1
    before = rebalances(first)

    second = bank.processor("p1")

    def split() -> bool:
        mine, theirs = set(lag(first)), set(lag(second))
        return bool(mine) and bool(theirs) and mine | theirs == inputs and not mine & theirs

    wait_until(split, "the lag series to follow the partitions")
    assert rebalances(first) > before and rebalances(second) >= 1
    assert not set(lag(first, "seconds")) & set(lag(second, "seconds"))
    # Partition P of both commands topics moves together (co-partitioned).
    for worker in (first, second):
        mine = lag(worker)
        owned = scrape(worker)["cqrs_assigned_partitions"][()]
        numbers = {p for t, p in mine if t == topics.commands}
        assert numbers == {p for t, p in mine if t == topics.internal_commands}
        assert len(numbers) == owned


def test_a_sink_rebalance_leaves_each_projection_partition_with_one_lag_series(
    read_side: ReadSideRig,
) -> None:
    read_side.bank.processor()
    read_side.projector()
    first = read_side.sink()
    with read_side.client() as client:
        pending = [
            client.send("bank.OpenAccount", open_account(f"sink-lag-{i}")) for i in range(30)
        ]
        assert all(p.result(60).accepted for p in pending)
    read_side.wait_caught_up()
    wait_until(lambda: len(lag(first)) >= len(PROJECTION_NAMES), "the sink's lag series")
    alone = set(lag(first))
    before = rebalances(first)

    second = read_side._start(
        "sink",
        [
            "--prefix",
            read_side.prefix,
            "--schema",
            read_side.schema,
            "--instance-id",
            "r1",
            "--session-timeout",
            "6",
        ],
        ready=True,
    )

    def split() -> bool:
        mine, theirs = set(lag(first)), set(lag(second))
        return bool(theirs) and mine < alone and not mine & theirs

    wait_until(split, "the sink's lag series to follow the partitions")
    assert rebalances(first) > before
    projection_topics = {read_side.bank.topics.projection(n) for n in PROJECTION_NAMES}
    assert {t for t, _ in lag(second)} <= projection_topics


def test_a_restarted_projector_starts_its_lag_at_the_committed_offsets(
    read_side: ReadSideRig,
) -> None:
    read_side.bank.processor()
    projector = read_side.projector()
    read_side.sink()
    events = read_side.bank.topics.events
    with read_side.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(f"re-{i}")) for i in range(30)]
        assert all(p.result(60).accepted for p in pending)
    read_side.wait_caught_up()
    every = {(events, p) for p in range(6)}
    wait_until(lambda: set(lag(projector)) == every, "the projector's lag series")
    wait_until(lambda: set(lag(projector).values()) == {0.0}, "the projector to catch up")

    # After a restart no event arrives: each partition's lag comes from the group's
    # committed offsets, 0 everywhere, not the whole partition.
    projector.stop()
    restarted = read_side.projector()
    wait_until(lambda: set(lag(restarted)) == every, "the restarted projector's lag series")
    time.sleep(3)  # a few lag updates
    assert set(lag(restarted).values()) == {0.0}, lag(restarted)
    assert set(lag(restarted, "seconds").values()) == {0.0}
