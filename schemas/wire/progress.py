"""Progress on projection topics: the extension headers that say where a row came from, and
the checkpoint records (docs/read-side.md).

- `ce_sourcepartition`: the partition of `<ctx>.events` the record was derived from; the
  record is on the same partition number of the projection topic.
- `ce_sourceoffset` (rows only): the offset of the event whose processing published it.
- `ce_checkpoint`: every row change caused by events of that partition up to this offset
  has been published on this partition at or before this record.

A checkpoint record (`cqrs.ProjectionCheckpoint`, keyed `__cqrs_checkpoint__:<source
partition>`) moves the checkpoint past events that changed no row of the projection.
Consumers tell it from a row by `ce_type`; compaction keeps the latest one per partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.wire import headers as ce

# Extension attribute names (the headers are `ce_<name>`).
SOURCE_PARTITION_ATTR = "sourcepartition"
SOURCE_OFFSET_ATTR = "sourceoffset"
CHECKPOINT_ATTR = "checkpoint"
SOURCE_PARTITION = f"ce_{SOURCE_PARTITION_ATTR}"
SOURCE_OFFSET = f"ce_{SOURCE_OFFSET_ATTR}"
CHECKPOINT = f"ce_{CHECKPOINT_ATTR}"

CHECKPOINT_TYPE = "cqrs.ProjectionCheckpoint"
# No row key may start with it: a row would share the checkpoint records' compaction key.
CHECKPOINT_KEY_PREFIX = "__cqrs_checkpoint__:"


class BadProgressHeaders(ValueError):
    pass


def checkpoint_key(source_partition: int) -> bytes:
    """The key of the checkpoint records of one source partition."""
    return f"{CHECKPOINT_KEY_PREFIX}{source_partition}".encode()


def row_headers(
    *,
    topic: str,
    key: str,
    row_type: str,
    source: str,
    source_partition: int,
    source_offset: int,
    checkpoint: int,
    cause_id: str,
    time: dt.datetime,
    correlation_id: str | None,
    traceparent: str | None,
) -> ce.KafkaHeaders:
    """A row's headers. The event whose processing published it (at `source_offset`) gives
    the row its time, causation (`cause_id`), correlation and trace context."""
    partition, offset = str(source_partition), str(source_offset)
    return ce.CloudEventHeaders(
        # Deterministic: a redelivered event republishes the same record id.
        id=f"{topic}:{key}:{partition}:{offset}",
        type=row_type,
        source=source,
        subject=key,
        time=time,
        correlation_id=correlation_id,
        causation_id=cause_id,
        traceparent=traceparent,
        extensions={
            SOURCE_PARTITION_ATTR: partition,
            SOURCE_OFFSET_ATTR: offset,
            CHECKPOINT_ATTR: str(checkpoint),
        },
    ).to_kafka()


def checkpoint_headers(
    *, topic: str, source: str, source_partition: int, checkpoint: int
) -> ce.KafkaHeaders:
    """A checkpoint record's headers; its `ce_time` is when it is published."""
    key = checkpoint_key(source_partition).decode()
    position = str(checkpoint)
    return ce.CloudEventHeaders(
        # Deterministic: publishing the same checkpoint again gives the same record id.
        id=f"{topic}:{key}:{position}",
        type=CHECKPOINT_TYPE,
        source=source,
        subject=key,
        time=ce.now(),
        extensions={SOURCE_PARTITION_ATTR: str(source_partition), CHECKPOINT_ATTR: position},
    ).to_kafka()


def header_map(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> dict[str, str]:
    """Kafka headers (confluent-kafka's list, aiokafka's tuple or a mapping) as text: the
    sink reads only the few it needs, without building a whole `CloudEventHeaders`."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = {}
    for name, value in items:
        if value is not None:
            out[name] = value if isinstance(value, str) else bytes(value).decode()
    return out


def is_checkpoint(headers: Mapping[str, str]) -> bool:
    """Whether a projection-topic record (its headers as text) is a checkpoint record."""
    return headers.get(ce.TYPE) == CHECKPOINT_TYPE


def read_progress(headers: Mapping[str, str]) -> tuple[int, int, int | None]:
    """(source partition, checkpoint, source offset or None) of a projection record."""
    try:
        offset = headers.get(SOURCE_OFFSET)
        return (
            int(headers[SOURCE_PARTITION]),
            int(headers[CHECKPOINT]),
            None if offset is None else int(offset),
        )
    except KeyError as exc:
        raise BadProgressHeaders(f"projection record without header {exc.args[0]}") from None
    except ValueError as exc:
        raise BadProgressHeaders(
            f"projection record with a malformed progress header: {exc}"
        ) from None
