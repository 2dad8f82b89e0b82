"""Faust's committed offsets on a transactional topic: after the read side has caught up, a
clean stop of the projector leaves its group's offsets at the end of `<ctx>.events`, and so
does a kill -9 once a commit interval has passed, so a restart replays nothing (issue 14's
target: at most a batch per partition)."""

from __future__ import annotations

import time

from tests.support.read_side import ReadSideRig, committed_offsets, metric
from tests.support.write_side import read_events

BATCH_MAX = 2000  # the projector's default --batch-max
COMMIT_INTERVAL_S = 1.0  # processors/faust_app.make_app's default


def _deposit_in_small_transactions(read_side: ReadSideRig) -> None:
    """240 events, sent in six awaited rounds: many small transactions, each of which leaves
    a commit marker (an offset no consumer sees) on its partition."""
    accounts = [f"c-{i:02d}" for i in range(40)]
    with read_side.client() as client:
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": a, "currency": "EUR"})
            for a in accounts
        ]
        assert all(p.result(60).accepted for p in opens)
        money = {"amount": 3, "currency": "EUR"}
        for _ in range(5):
            sent = [
                client.send("bank.Deposit", {"account_id": a, "amount": money}) for a in accounts
            ]
            assert all(p.result(60).accepted for p in sent)


def _uncommitted(read_side: ReadSideRig) -> dict[int, int]:
    """Per partition of `<ctx>.events`: the offsets from the group's committed offset to
    the last event, which a restart reads again (the events among them; transaction markers
    take offsets too)."""
    group, topics = read_side.projector_group()
    committed = committed_offsets(read_side.kafka, group, topics)
    last: dict[int, int] = {}
    for event in read_events(read_side.kafka, topics[0]):
        last[event.partition] = max(last.get(event.partition, -1), event.offset)
    return {p: max(last[p] + 1 - max(committed[(topics[0], p)], 0), 0) for p in last}


def test_a_clean_stop_leaves_the_projector_committed_within_a_batch_of_the_end(
    read_side: ReadSideRig,
):
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(), read_side.sink()
    _deposit_in_small_transactions(read_side)
    read_side.wait_caught_up()
    assert projector.stop() == 0

    behind = _uncommitted(read_side)
    print(f"offsets a restart would read again, per partition: {behind}")
    assert all(n <= BATCH_MAX for n in behind.values()), behind
    # A clean stop after catching up commits everything processed: nothing is replayed.
    assert sum(behind.values()) == 0, behind


def test_a_kill_9_after_a_commit_interval_replays_nothing(read_side: ReadSideRig):
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(), read_side.sink()
    _deposit_in_small_transactions(read_side)
    read_side.wait_caught_up()  # every event is acknowledged to Faust by now
    # Faust commits what was acknowledged at its next commit tick; leave it two.
    time.sleep(2 * COMMIT_INTERVAL_S)
    projector.kill()

    behind = _uncommitted(read_side)
    restarted = read_side.projector()  # its tables are discarded and restored (no clean stop)
    group, topics = read_side.projector_group()
    read_side.wait_group_at_end(group, topics)
    replayed = metric(restarted, "cqrs_projector_events_total")
    print(f"after kill -9: offsets uncommitted {behind}; the restart processed {replayed} events")
    assert sum(behind.values()) == 0, behind
    assert replayed == 0
