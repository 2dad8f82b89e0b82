"""The projector's batch rules: rows folded per batch, stores, publications in an order
whose checkpoints are exact, markers for partitions a projection ignored, and redelivery."""

from __future__ import annotations

import itertools

from bank.projections import ACCOUNTS, DAILY_TOTALS, EVENT_LOG, PROJECTIONS
from processors.domain import Event
from processors.projector.batch import SourceEvent, last_offsets, project_batch
from tests.unit.test_projections import deposited, meta, opened, withdrawn


class Store:
    """The projector's tables, as the batch logic sees them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}
        self.loads: list[tuple[str, str, int]] = []

    def load(self, projection, key, partition):
        self.loads.append((projection.name, key, partition))
        return self.rows.get((projection.name, key))

    def save(self, outcome) -> None:
        for projection, key, row, _ in outcome.stores:
            self.rows[(projection.name, key)] = row


def ev(event: Event, version: int, offset: int, partition: int = 0, agg: str = "a1"):
    return SourceEvent(event, meta(version, offset, partition=partition, agg=agg))


def run(events, store, projections=PROJECTIONS, ends=None):
    ends = ends or last_offsets((e.meta.partition, e.meta.offset) for e in events)
    outcome = project_batch(projections, events, ends, store.load)
    store.save(outcome)
    return outcome


def complete_through(publications, projection, partition):
    """What a sink that stopped after each record could claim, checked against truth:
    for every prefix of the partition's records, the rows published so far must include
    every change of events at or below the prefix's checkpoint."""
    return [
        (p.key, p.checkpoint)
        for p in publications
        if p.projection is projection and p.partition == partition
    ]


def test_a_batch_folds_each_row_once_and_stores_only_changed_rows():
    store = Store()
    events = [
        ev(opened("a1"), 1, 0, agg="a1"),
        ev(deposited(100, 100, "a1"), 2, 1, agg="a1"),
        ev(opened("a2"), 1, 2, agg="a2"),
        ev(deposited(5, 105, "a1"), 3, 3, agg="a1"),
    ]
    out = run(events, store, projections=(ACCOUNTS,))
    assert [(p.key, p.row["balance"], p.row["version"]) for p in out.publications] == [
        ("a2", 0, 1),
        ("a1", 105, 3),
    ]
    assert sorted(k for _, k, _, _ in out.stores) == ["a1", "a2"]
    assert store.loads == [("accounts", "a1", 0), ("accounts", "a2", 0)]  # once per key
    assert (out.applied, out.skipped) == (4, 0)


def test_checkpoints_never_claim_a_row_published_later():
    store = Store()
    # a1 is touched at offsets 0 and 3, a2 at 1 and 2: a2's record goes first (last touch 2)
    # but may only claim offset 0 complete, because a1's change at offset 0 comes later.
    events = [
        ev(opened("a1"), 1, 0, agg="a1"),
        ev(opened("a2"), 1, 1, agg="a2"),
        ev(deposited(1, 1, "a2"), 2, 2, agg="a2"),
        ev(deposited(1, 1, "a1"), 2, 3, agg="a1"),
        ev(Event("bank.TransferDebited", {"transfer_id": "t"}), 2, 4, agg="t"),
    ]
    out = run(events, store, projections=(ACCOUNTS,))
    assert complete_through(out.publications, ACCOUNTS, 0) == [("a2", -1), ("a1", 4)]


def test_checkpoints_are_exact_for_any_prefix_on_random_batches():
    import random

    rng = random.Random(3)
    for _ in range(200):
        store = Store()
        versions: dict[str, int] = {}
        events = []
        offset = rng.randint(0, 5)
        for _ in range(rng.randint(1, 12)):
            agg = rng.choice("abcd")
            versions[agg] = versions.get(agg, 0) + 1
            event = opened(agg) if versions[agg] == 1 else deposited(1, versions[agg], agg)
            events.append(ev(event, versions[agg], offset, agg=agg))
            offset += rng.randint(1, 3)  # gaps: transaction markers
        out = run(events, store, projections=(ACCOUNTS,))
        published: set[str] = set()
        for pub in out.publications:
            published.add(pub.key)
            done = {e.meta.aggregate_id for e in events if e.meta.offset <= pub.checkpoint}
            assert done <= published, (pub, events)
        assert out.publications[-1].checkpoint == events[-1].meta.offset


def test_a_projection_that_ignores_a_partition_gets_a_progress_marker():
    store = Store()
    events = [
        ev(opened("a1"), 1, 7, partition=2),
        ev(deposited(5, 5, "a1"), 2, 9, partition=4),
    ]
    out = run(events, store, projections=(DAILY_TOTALS,), ends={2: 8, 4: 9})
    markers = [(p.partition, p.checkpoint) for p in out.publications if p.is_marker]
    rows = [(p.partition, p.key, p.checkpoint) for p in out.publications if not p.is_marker]
    assert markers == [(2, 8)]  # ends include an undecodable event at offset 8
    assert rows == [(4, "EUR:2024-05-01:4", 9)]


def test_a_redelivered_batch_publishes_the_current_rows_and_stores_nothing():
    store = Store()
    events = [
        ev(opened("a1"), 1, 0),
        ev(deposited(100, 100, "a1"), 2, 1),
        ev(withdrawn(30, 70, "a1"), 3, 2),
    ]
    first = run(events, store)
    tables = dict(store.rows)
    again = run(events, store)
    assert again.stores == [] and store.rows == tables
    # accounts skips 3, daily_totals 2; event_log is stateless: its rows are rebuilt
    assert (again.applied, again.skipped) == (3, 5)
    assert [(p.key, p.row) for p in again.publications] == [
        (p.key, p.row) for p in first.publications
    ]
    # Part of the batch again (e.g. after a crash mid-way) changes nothing either.
    partly = run(events[1:2], store)
    assert partly.stores == []
    balance = next(p.row for p in partly.publications if p.projection is ACCOUNTS)["balance"]
    assert balance == 70  # the current row, not the row as of the redelivered event


def test_a_failing_event_is_reported_and_the_rest_of_the_batch_goes_on():
    store = Store()
    events = [ev(deposited(5, 5, "ghost"), 2, 0, agg="ghost"), ev(opened("a1"), 1, 1)]
    out = run(events, store, projections=(ACCOUNTS, EVENT_LOG))
    assert [(f.projection.name, f.meta.offset) for f in out.failures] == [("accounts", 0)]
    assert [p.key for p in out.publications if p.projection is ACCOUNTS] == ["a1"]
    assert len([p for p in out.publications if p.projection is EVENT_LOG]) == 2


def test_last_offsets():
    pairs = [(0, 5), (1, 2), (0, 9), (0, 7)]
    assert last_offsets(pairs) == {0: 9, 1: 2}
    assert last_offsets(itertools.chain()) == {}


def test_local_tables_survive_only_a_clean_stop(tmp_path):
    from processors.projector.local_state import LocalState

    tables = tmp_path / "v1" / "tables"
    (tables / "accounts-0.db").mkdir(parents=True)
    state = LocalState(tmp_path, tables)
    assert state.prepare() is True and not tables.exists()  # no marker: a crash, discard
    (tables / "accounts-0.db").mkdir(parents=True)
    state.mark_clean()
    assert state.prepare() is False and (tables / "accounts-0.db").exists()
    assert state.prepare() is True  # the marker vouches for one start only
    assert LocalState(tmp_path, tables).prepare() is False  # nothing to discard


def test_local_tables_of_another_cluster_or_other_topics_are_discarded_even_after_a_clean_stop(
    tmp_path,
):
    from processors.projector.local_state import LocalState

    tables = tmp_path / "v1" / "tables"
    first = {"cluster_id": "c1", "topic_ids": {"x-accounts-changelog": "t1"}}
    state = LocalState(tmp_path, tables)
    assert state.prepare(first) is False  # nothing there yet; the identity is recorded
    (tables / "accounts-0.db").mkdir(parents=True)
    state.mark_clean()
    assert state.prepare(first) is False and tables.exists()  # same Kafka, clean stop: kept
    state.mark_clean()
    recreated = {"cluster_id": "c1", "topic_ids": {"x-accounts-changelog": "t2"}}
    assert state.prepare(recreated) is True and not tables.exists()
    (tables / "accounts-0.db").mkdir(parents=True)
    state.mark_clean()
    rebuilt = {**recreated, "cluster_id": "c2"}
    assert state.prepare(rebuilt) is True and not tables.exists()


def test_a_marker_goes_out_as_a_keyed_typed_checkpoint_record():
    from processors.projector.records import encode
    from processors.topics import ContextTopics
    from schemas.codec import LATEST, default_codec
    from schemas.wire.progress import CHECKPOINT, SOURCE_PARTITION, header_map

    codec = default_codec()
    outcome = run([ev(opened("a1"), 1, 7, partition=3)], Store())
    pub = next(p for p in outcome.publications if p.projection is DAILY_TOTALS)
    assert pub.is_marker
    record = encode(pub, ContextTopics("bank"), "/bank/projector", codec)
    assert (record.topic, record.partition) == ("bank.projection.daily_totals", 3)
    assert record.key == b"__cqrs_checkpoint__:3"
    headers = header_map(record.headers)
    assert headers["ce_type"] == "cqrs.ProjectionCheckpoint"
    assert headers["ce_subject"] == "__cqrs_checkpoint__:3"
    assert headers["ce_id"] == "bank.projection.daily_totals:__cqrs_checkpoint__:3:7"
    assert {"ce_specversion", "ce_source", "ce_time", "content-type"} <= set(headers)
    assert (headers[SOURCE_PARTITION], headers[CHECKPOINT]) == ("3", "7")
    decoded = codec.decode_message(record.value, LATEST)
    assert decoded.schema.name == "cqrs.ProjectionCheckpoint"
    assert decoded.record == {
        "projection": "daily_totals",
        "source_topic": "bank.events",
        "source_partition": 3,
        "checkpoint": 7,
    }


def test_a_row_over_the_record_limit_becomes_a_checkpoint_record_with_its_checkpoint():
    from processors.projector.records import encode, record_size
    from processors.topics import ContextTopics
    from schemas.codec import default_codec
    from schemas.wire.progress import CHECKPOINT, header_map

    outcome = run([ev(opened("a1"), 1, 7, partition=3)], Store())
    pub = next(p for p in outcome.publications if p.projection is ACCOUNTS and p.key)
    topics, codec = ContextTopics("bank"), default_codec()
    record = encode(pub, topics, "/bank/projector", codec)
    assert record_size(record) == len(record.value) + len(record.key)
    marker = encode(pub.as_marker(), topics, "/bank/projector", codec)
    assert (marker.topic, marker.partition) == (record.topic, record.partition)
    assert marker.key == b"__cqrs_checkpoint__:3"
    assert header_map(marker.headers)[CHECKPOINT] == header_map(record.headers)[CHECKPOINT]


def test_a_row_key_in_the_checkpoint_key_space_is_refused():
    from dataclasses import replace

    reserved = replace(ACCOUNTS, key=lambda event, meta: "__cqrs_checkpoint__:0")
    out = run([ev(opened("a1"), 1, 0)], Store(), projections=(reserved,))
    assert [type(f.error) for f in out.failures] == [ValueError]
    assert all(p.is_marker for p in out.publications) and not out.stores
