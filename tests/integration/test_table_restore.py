"""A projector's Faust table without local state is filled from its changelog in bulk before
Faust starts (processors/projector/table_restore.py): the databases hold what Faust's own
recovery would have written, read back through Faust's store, and the persisted offsets
tell Faust's recovery that nothing is left to read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from faust.types import TP

from processors.faust_app import make_app
from processors.projector.table_restore import restore_tables
from processors.settings import KafkaSettings


def _table(kafka_config: dict[str, Any], app_id: str, data_dir: Path) -> Any:
    settings = KafkaSettings(bootstrap_servers=kafka_config["bootstrap.servers"])
    app = make_app(app_id, settings, data_dir, partitions=2)
    return app.Table("rows", partitions=2, key_type=bytes, value_type=bytes)


def test_a_table_without_local_state_is_filled_as_faust_recovery_would_fill_it(
    kafka_config: dict[str, Any],
    create_topics: Callable[..., list[str]],
    ctx_name: str,
    tmp_path: Path,
):
    table = _table(kafka_config, f"{ctx_name}.projector", tmp_path)
    topic = table.changelog_topic_name
    create_topics({topic: 2}, {"cleanup.policy": "compact"})
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


def test_an_empty_changelog_leaves_no_database(
    kafka_config: dict[str, Any],
    create_topics: Callable[..., list[str]],
    ctx_name: str,
    tmp_path: Path,
):
    table = _table(kafka_config, f"{ctx_name}.projector", tmp_path)
    create_topics({table.changelog_topic_name: 2}, {"cleanup.policy": "compact"})
    assert [(r.table, r.rows) for r in restore_tables(kafka_config, {"rows": table})] == [
        ("rows", 0)
    ]
    assert not any(table.data.partition_path(p).exists() for p in range(2))
