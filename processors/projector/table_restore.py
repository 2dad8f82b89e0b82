"""Restore the projector's Faust tables from their changelogs in bulk, before Faust starts.

A table's changelog is its projection topic (processors/projector/tables.py): its rows are
put, its checkpoint records skipped (`is_row`), and its last offset, row or not, stored.

Faust restores a table without local state through its own consumer path, one record at a
time (aiokafka's fetcher, Faust's conductor, its recovery queue and per-record bookkeeping):
about 90 CPU µs per row on our machine, minutes for a million rows (docs/benchmarks.md,
"Restoring a projector"). This does what Faust's recovery does
(`ProjectionTable.apply_changelog_batch`: a put per row, then the last offset read as the
partition's persisted offset) with librdkafka and RocksDB write batches, into the same databases
Faust opens (`Store.partition_path`, `Store.rocksdb_options`). Faust's recovery then starts at the
persisted offset and reads only what was written after it.

Only for a table with no local database at all (a new volume, or tables LocalState
discarded): a database that exists is Faust's to bring up to date.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rocksdict
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from processors.projector.tables import is_row

log = logging.getLogger(__name__)

CHUNK = 10_000  # records per consume() call and per write batch


@dataclass(frozen=True)
class Restored:
    table: str
    rows: int  # rows put (checkpoint records skipped)
    seconds: float


def restore_tables(
    kafka: Mapping[str, Any], tables: Mapping[str, Any], timeout: float = 600.0
) -> list[Restored]:
    """Fill each Faust table (name -> `faust.Table`) whose partitions have no local database
    from its changelog. Raises if a changelog cannot be read to its end within `timeout`."""
    done = []
    for name, table in tables.items():
        store = table.data
        partitions = range(table.partitions)
        if any(store.partition_path(p).exists() for p in partitions):
            continue
        log.info("restoring table %s from %s", name, table.changelog_topic_name)
        started = time.monotonic()
        rows = _restore(dict(kafka), table.changelog_topic_name, store, partitions, timeout)
        done.append(Restored(name, rows, time.monotonic() - started))
        log.info(
            "restored table %s: %d rows in %.1f s",
            name,
            rows,
            done[-1].seconds,
        )
    return done


def _restore(
    kafka: dict[str, Any], topic: str, store: Any, partitions: range, timeout: float
) -> int:
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"{topic}-restore",  # never joined or committed: assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # the broker answers at once at the end of a partition
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    dbs: dict[int, Any] = {}
    try:
        # Done with a partition at its end-of-partition event (librdkafka sends one at the
        # end of an empty partition too): no metadata request that a leader change could fail.
        todo = set(partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
        last: dict[int, int] = {}
        rows = 0
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end")
            batches: dict[int, Any] = {}
            # consume() waits out its timeout unless CHUNK records come: short for small tables.
            for msg in consumer.consume(CHUNK, 0.1):
                p = msg.partition()
                if error := msg.error():
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                    elif error.fatal():
                        raise KafkaException(error)
                    else:  # librdkafka retries (a broker restarting, a leader moving)
                        log.warning("restoring %s: %s", topic, error.str())
                    continue
                last[p] = msg.offset()
                key, value = msg.key(), msg.value()
                if not is_row(key, value):
                    continue  # a checkpoint record: not a row of the table
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = rocksdict.WriteBatch(raw_mode=True)
                batch.put(key, value)
                rows += 1
            for p, batch in batches.items():
                _db(dbs, store, p).write(batch)
        for p, offset in last.items():  # a partition of checkpoint records only has one too
            _db(dbs, store, p).put(store.offset_key, str(offset).encode())
        return rows
    finally:
        for db in dbs.values():
            db.close()
        consumer.close()


def _db(dbs: dict[int, Any], store: Any, partition: int) -> Any:
    """The RocksDB database Faust opens for `partition`, opened once."""
    db = dbs.get(partition)
    if db is None:
        path = store.partition_path(partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = dbs[partition] = store.rocksdb_options.open(path)
    return db
