"""The projector's Faust tables, whose changelog is the projection topic itself.

A stateful projection's table (RocksDB) is declared with `changelog_topic=` its projection
topic, `<ctx>.projection.<name>` (a rebuilt generation's: `<ctx>.projection.<name>_gN`), so
there is no `<app id>-<name>-changelog` topic and each changed row reaches the broker once.
Table partition p is projection partition p: Faust keys a table write on the partition of
the current event, and the publisher writes what events partition p derives to projection
partition p (processors/projector/records.py).

- Faust's own changelog send is switched off (`on_key_set`): the projector's publisher
  writes the row, with its key, Avro value and CloudEvents headers (docs/wire-format.md).
  The value in the table is the same bytes as the record's value (the same row, encoded
  the same way). Faust does not declare the topic either (`on_start`): it is the context's.
- What Faust keeps per partition to know where its recovery starts (the persisted changelog
  offset, which its send callback used to write) is set from the publisher's delivery
  reports instead (`persist_offsets`), once the batch's rows are in RocksDB.
- A projection topic also carries checkpoint records (key `__cqrs_checkpoint__:<p>`, and,
  from earlier versions, records without a key or value). They are not rows: Faust's
  recovery (`apply_changelog_batch`) and the bulk restore
  (processors/projector/table_restore.py) skip them (`is_row`), while their offsets still
  count as read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.types import TP, EventT

from schemas.wire.progress import CHECKPOINT_KEY_PREFIX

_CHECKPOINT_PREFIX = CHECKPOINT_KEY_PREFIX.encode()


def is_row(key: bytes | None, value: bytes | None) -> bool:
    """Whether a projection-topic record is a table row: keyed, valued, and not a
    checkpoint record (docs/wire-format.md, "Projection topics")."""
    return bool(key) and value is not None and not key.startswith(_CHECKPOINT_PREFIX)  # type: ignore[union-attr]


def last_offsets(positions: Iterable[tuple[Any, int]]) -> dict[Any, int]:
    """The highest offset per partition (any hashable: a number or a `TP`)."""
    last: dict[Any, int] = {}
    for where, offset in positions:
        if offset > last.get(where, -1):
            last[where] = offset
    return last


class ProjectionTable(faust.Table):
    """A Faust table whose changelog (the projection topic) the projector writes itself."""

    async def on_start(self) -> None:
        # Faust's Collection.on_start also declares (creates) the changelog topic; the
        # projection topic is the context's, created by `cqrsctl topics create` and checked
        # by the projector before Faust starts, and the projector may not create topics.
        await self.add_runtime_dependency(self.data)

    def on_key_set(self, key: Any, value: Any) -> None:
        # Faust would send the key and value to the changelog here (Table.on_key_set); the
        # publisher writes the projection record instead. Tables have no TTL (no window).
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        raise RuntimeError(f"{self.name}: projection rows are never deleted from the table")

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Faust's recovery: the rows of `batch` into RocksDB, not its checkpoint records;
        the persisted offset of each partition is the batch's last offset, rows or not."""
        events = list(batch)
        rows = [e for e in events if is_row(e.message.key, e.message.value)]
        if rows:
            self.data.apply_changelog_batch(rows, to_key=self._to_key, to_value=self._to_value)
        for tp, offset in last_offsets((e.message.tp, e.message.offset) for e in events).items():
            self.data.set_persisted_offset(tp, offset)

    def persist_offsets(self, delivered: Mapping[int, int]) -> None:
        """`delivered`: per partition, the last offset the publisher's records reached on
        the projection topic; the rows up to there are in RocksDB (stored before publishing),
        so a recovery of these partitions may start after them."""
        topic = self.changelog_topic_name
        for partition, offset in delivered.items():
            self.data.set_persisted_offset(TP(topic, partition), offset)


def projection_table(app: faust.App, name: str, topic: str, partitions: int) -> ProjectionTable:
    """The table of stateful projection `name` (raw bytes: Avro-encoded rows), with
    `topic`, its projection topic, as changelog."""
    changelog = app.topic(
        topic,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,  # declared by the context (cqrsctl topics create), not by Faust
    )
    table = ProjectionTable(
        app,
        name=name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        changelog_topic=changelog,
        beacon=app.tables.beacon,
    )
    return app.tables.add(table)
