"""A projector's Faust table without local state is filled from its changelog in bulk before
Faust starts (processors/projector/table_restore.py): the databases hold what Faust's own
recovery would have written, read back through Faust's store, and the persisted offsets
tell Faust's recovery that nothing is left to read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from faust.types import TP

from processors.faust_app import make_app
from processors.projector.table_restore import restore_tables
from processors.settings import KafkaSettings


@pytest.fixture
def table(
    kafka_config: dict[str, Any],
    create_topics: Callable[..., list[str]],
    ctx_name: str,
    tmp_path: Path,
) -> Any:
    """A Faust table of two partitions, as the projector makes them, and its changelog."""
    settings = KafkaSettings(bootstrap_servers=kafka_config["bootstrap.servers"])
    app = make_app(f"{ctx_name}.projector", settings, tmp_path, partitions=2)
    table = app.Table("rows", partitions=2, key_type=bytes, value_type=bytes)
    create_topics({table.changelog_topic_name: 2}, {"cleanup.policy": "compact"})
    return table


def test_a_table_without_local_state_is_filled_as_faust_recovery_would_fill_it(
    kafka_config: dict[str, Any], table: Any
):
    topic = table.changelog_topic_name
    producer = Producer(kafka_config)
    for key, value, partition in [
        (b"a", b"1", 0),
        (b"b", b"2", 0),
        (b"a", b"3", 0),  # a newer value of a
        (b"b", None, 0),  # b deleted
        (b"c", b"4", 1),
    ]:
        producer.produce(topic, value, key, partition)
    assert producer.flush(30) == 0

    restored = restore_tables(kafka_config, {"rows": table})
    assert [(r.table, r.rows) for r in restored] == [("rows", 5)]

    store = table.data
    try:
        assert store.persisted_offset(TP(topic, 0)) == 3
        assert store.persisted_offset(TP(topic, 1)) == 0
        assert {k: v for k, v in store._db_for_partition(0).items() if k != store.offset_key} == {
            b"a": b"3"
        }
        assert store._db_for_partition(1)[b"c"] == b"4"
    finally:
        for db in store._dbs.values():
            db.close()
        store._dbs.clear()

    # Local databases exist now: they are Faust's to bring up to date, not replaced.
    assert restore_tables(kafka_config, {"rows": table}) == []


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
