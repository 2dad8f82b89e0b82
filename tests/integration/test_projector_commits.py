"""Faust's committed offsets on a transactional topic: after the read side has caught up, a
clean stop of the projector leaves its group's offsets within one batch of the end of
`<ctx>.events`, so a restart replays at most a batch per partition (issue 14's target)."""

from __future__ import annotations

from tests.support.read_side import ReadSideRig, committed_offsets
from tests.support.write_side import read_events

BATCH_MAX = 2000  # the projector's default --batch-max


def test_a_clean_stop_leaves_the_projector_committed_within_a_batch_of_the_end(
    read_side: ReadSideRig,
):
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(), read_side.sink()
    accounts = [f"c-{i:02d}" for i in range(40)]
    with read_side.client() as client:
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": a, "currency": "EUR"})
            for a in accounts
        ]
        assert all(p.result(60).accepted for p in opens)
        money = {"amount": 3, "currency": "EUR"}
        for _ in range(5):  # many small transactions: each leaves a commit marker
            sent = [
                client.send("bank.Deposit", {"account_id": a, "amount": money}) for a in accounts
            ]
            assert all(p.result(60).accepted for p in sent)
    read_side.wait_caught_up()
    assert projector.stop() == 0

    group, topics = read_side.projector_group()
    committed = committed_offsets(read_side.kafka, group, topics)
    last = {}
    for event in read_events(read_side.kafka, topics[0]):
        last[event.partition] = max(last.get(event.partition, -1), event.offset)
    behind = {p: last[p] + 1 - max(committed[(topics[0], p)], 0) for p in last}
    print(f"offsets a restart would read again, per partition: {behind}")
    assert all(n <= BATCH_MAX for n in behind.values()), behind
    # A clean stop after catching up commits everything processed: nothing is replayed.
    assert sum(max(n, 0) for n in behind.values()) == 0, behind
