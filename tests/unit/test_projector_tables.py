"""The pure parts of processors/projector/tables.py: which projection-topic records are
table rows, and what Faust's recovery writes from a batch of them (a recording store stands
in for RocksDB)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from processors.projector.tables import ProjectionTable, is_row, last_offsets
from schemas.wire.progress import checkpoint_key

TOPIC = "bank.projection.accounts"


def test_rows_are_keyed_and_valued_and_checkpoint_records_are_not_rows() -> None:
    assert is_row(b"acc-1", b"\xc3\x01row")
    assert not is_row(checkpoint_key(3), b"\xc3\x01checkpoint")
    assert not is_row(b"", None)  # the progress records of earlier versions
    assert not is_row(None, None)
    assert not is_row(b"acc-1", None)  # the projector writes no tombstones


def test_last_offsets_are_per_partition() -> None:
    assert last_offsets([(0, 4), (1, 2), (0, 9), (0, 7)]) == {0: 9, 1: 2}
    assert last_offsets([]) == {}


class RecordingStore:
    def __init__(self) -> None:
        self.applied: list[tuple[bytes, bytes]] = []
        self.offsets: dict[TP, int] = {}

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        self.applied += [(to_key(e.message.key), to_value(e.message.value)) for e in batch]

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset


def event(partition: int, offset: int, key: bytes | None, value: bytes | None) -> Any:
    message = SimpleNamespace(
        tp=TP(TOPIC, partition), partition=partition, offset=offset, key=key, value=value
    )
    return SimpleNamespace(message=message)


def fake_table(store: RecordingStore) -> Any:
    return SimpleNamespace(data=store, _to_key=lambda k: k, _to_value=lambda v: v)


def test_faust_recovery_applies_the_rows_and_moves_the_offsets_past_checkpoint_records() -> None:
    store = RecordingStore()
    batch = [
        event(0, 10, b"a", b"1"),
        event(0, 11, checkpoint_key(0), b"checkpoint"),
        event(1, 5, b"b", b"2"),
        event(0, 12, b"", None),
        event(1, 6, checkpoint_key(1), b"checkpoint"),
    ]
    ProjectionTable.apply_changelog_batch(fake_table(store), batch)
    assert store.applied == [(b"a", b"1"), (b"b", b"2")]
    assert store.offsets == {TP(TOPIC, 0): 12, TP(TOPIC, 1): 6}


def test_a_batch_of_checkpoint_records_only_writes_no_row_but_its_offsets() -> None:
    store = RecordingStore()
    batch = [event(2, 40, checkpoint_key(2), b"c"), event(2, 41, checkpoint_key(2), b"c")]
    ProjectionTable.apply_changelog_batch(fake_table(store), batch)
    assert store.applied == []
    assert store.offsets == {TP(TOPIC, 2): 41}


def test_delivered_offsets_become_the_persisted_offsets() -> None:
    store = RecordingStore()
    table = SimpleNamespace(data=store, changelog_topic_name=TOPIC)
    ProjectionTable.persist_offsets(table, {0: 100, 5: 7})
    assert store.offsets == {TP(TOPIC, 0): 100, TP(TOPIC, 5): 7}
