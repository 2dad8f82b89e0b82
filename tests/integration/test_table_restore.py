"""A projector's Faust table without local state is filled from its changelog, the
projection topic, in bulk before Faust starts (processors/projector/table_restore.py): the
databases hold what Faust's own recovery would have written (rows, not checkpoint records),
read back through Faust's store, and the persisted offsets tell Faust's recovery that
nothing is left to read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from faust.types import TP

from processors.faust_app import make_app
from processors.projector.table_restore import restore_tables
from processors.projector.tables import projection_table
from processors.settings import KafkaSettings
from processors.topics import DERIVED
from schemas.wire.progress import checkpoint_key


@pytest.fixture
def table(
    kafka_config: dict[str, Any],
    create_topics: Callable[..., list[str]],
    ctx_name: str,
    tmp_path: Path,
) -> Any:
    """A table of two partitions, as the projector makes them, and its projection topic."""
    settings = KafkaSettings(bootstrap_servers=kafka_config["bootstrap.servers"])
    app = make_app(f"{ctx_name}.projector", settings, tmp_path, partitions=2)
    table = projection_table(app, "rows", f"{ctx_name}.projection.rows", 2)
    create_topics({table.changelog_topic_name: 2}, dict(DERIVED))
    return table


def test_a_table_without_local_state_is_filled_as_faust_recovery_would_fill_it(
    kafka_config: dict[str, Any], table: Any
):
    topic = table.changelog_topic_name
    producer = Producer(kafka_config)
    for key, value, partition in [
        (b"a", b"1", 0),
        (b"b", b"2", 0),
        (checkpoint_key(0), b"checkpoint", 0),  # not a row
        (b"a", b"3", 0),  # a newer value of a
        (b"", None, 0),  # a progress record of earlier versions: not a row either
        (b"c", b"4", 1),
        (checkpoint_key(1), b"checkpoint", 1),
    ]:
        producer.produce(topic, value, key, partition)
    assert producer.flush(30) == 0

    restored = restore_tables(kafka_config, {"rows": table})
    assert [(r.table, r.rows) for r in restored] == [("rows", 4)]

    store = table.data
    try:
        assert store.persisted_offset(TP(topic, 0)) == 4  # the last record, a row or not
        assert store.persisted_offset(TP(topic, 1)) == 1
        assert {k: v for k, v in store._db_for_partition(0).items() if k != store.offset_key} == {
            b"a": b"3",
            b"b": b"2",
        }
        assert {k: v for k, v in store._db_for_partition(1).items() if k != store.offset_key} == {
            b"c": b"4"
        }
    finally:
        for db in store._dbs.values():
            db.close()
        store._dbs.clear()

    # Local databases exist now: they are Faust's to bring up to date, not replaced.
    assert restore_tables(kafka_config, {"rows": table}) == []


def test_a_partition_of_checkpoint_records_only_gets_its_offset_and_no_row(
    kafka_config: dict[str, Any], table: Any
):
    topic = table.changelog_topic_name
    producer = Producer(kafka_config)
    for _ in range(3):
        producer.produce(topic, b"checkpoint", checkpoint_key(1), 1)
    assert producer.flush(30) == 0
    assert [r.rows for r in restore_tables(kafka_config, {"rows": table})] == [0]
    store = table.data
    try:
        assert store.persisted_offset(TP(topic, 1)) == 2
        assert [k for k, _ in store._db_for_partition(1).items() if k != store.offset_key] == []
        assert not store.partition_path(0).exists()
    finally:
        for db in store._dbs.values():
            db.close()
        store._dbs.clear()


def test_an_empty_changelog_leaves_no_database(kafka_config: dict[str, Any], table: Any):
    assert [(r.table, r.rows) for r in restore_tables(kafka_config, {"rows": table})] == [
        ("rows", 0)
    ]
    assert not any(table.data.partition_path(p).exists() for p in range(2))


def test_a_changelog_not_read_to_its_end_in_time_is_an_error(
    kafka_config: dict[str, Any], table: Any
):
    producer = Producer(kafka_config)
    producer.produce(table.changelog_topic_name, b"1", b"a", 0)
    assert producer.flush(30) == 0
    with pytest.raises(TimeoutError, match=r"partitions \[0, 1\] not read to their end"):
        restore_tables(kafka_config, {"rows": table}, timeout=0.0)
