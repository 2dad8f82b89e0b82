"""Projection records on the wire: `<ctx>.projection.<name>`, keyed by the row key, valued
with the row in Avro single-object encoding, with CloudEvents headers plus three extension
attributes saying where the row came from (docs/read-side.md):

- `ce_sourcepartition`: the partition of `<ctx>.events` the row was derived from; the record
  is on the same partition number of the projection topic.
- `ce_sourceoffset`: the offset of the event whose processing published this record.
- `ce_checkpoint`: every row change caused by events of that partition up to this offset
  has been published on this partition at or before this record.

A checkpoint record (`cqrs.ProjectionCheckpoint`, keyed `__cqrs_checkpoint__:<source
partition>`, with the same CloudEvents headers minus the causation/correlation ids and
`ce_sourceoffset`) moves the checkpoint past events that changed no row of the projection.
Consumers tell it from a row by `ce_type`; compaction keeps the latest one per partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from processors.projector.batch import RESERVED_KEY_PREFIX, Publication
from processors.topics import ContextTopics
from schemas import headers as ce
from schemas.codec import Codec

SOURCE_PARTITION = "ce_sourcepartition"
SOURCE_OFFSET = "ce_sourceoffset"
CHECKPOINT = "ce_checkpoint"
CHECKPOINT_KEY_PREFIX = RESERVED_KEY_PREFIX  # no row key may start with it
CHECKPOINT_TYPE = "cqrs.ProjectionCheckpoint"
CONTENT_TYPE = b"application/avro"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    key: bytes
    value: bytes | None
    headers: Headers


def checkpoint_key(source_partition: int) -> bytes:
    """The key of the checkpoint records of one source partition."""
    return f"{CHECKPOINT_KEY_PREFIX}{source_partition}".encode()


def encode(pub: Publication, topics: ContextTopics, source: bytes, codec: Codec) -> KafkaRecord:
    topic = topics.projection(pub.projection.name)
    partition = str(pub.partition).encode()
    checkpoint = str(pub.checkpoint).encode()
    if pub.key is None:
        return _encode_checkpoint(pub, topics, topic, source, codec)
    cause = pub.cause
    assert cause is not None and pub.row is not None
    offset = str(cause.offset).encode()
    key = pub.key.encode()
    headers = [
        (ce.SPECVERSION, b"1.0"),
        # Deterministic: a redelivered event republishes the same record id.
        (ce.ID, b"%s:%s:%s:%s" % (topic.encode(), key, partition, offset)),
        (ce.TYPE, pub.projection.row_schema.encode()),
        (ce.SOURCE, source),
        (ce.TIME, ce.format_time(cause.time).encode()),
        (ce.SUBJECT, key),
        (ce.CONTENT_TYPE, CONTENT_TYPE),
        (ce.CAUSATION_ID, cause.event_id.encode()),
        (SOURCE_PARTITION, partition),
        (SOURCE_OFFSET, offset),
        (CHECKPOINT, checkpoint),
    ]
    if cause.correlation_id is not None:
        headers.append((ce.CORRELATION_ID, cause.correlation_id.encode()))
    value = codec.encode(pub.projection.row_schema, pub.row)
    return KafkaRecord(topic, pub.partition, key, value, headers)


def _encode_checkpoint(
    pub: Publication, topics: ContextTopics, topic: str, source: bytes, codec: Codec
) -> KafkaRecord:
    key = checkpoint_key(pub.partition)
    partition = str(pub.partition).encode()
    checkpoint = str(pub.checkpoint).encode()
    headers = [
        (ce.SPECVERSION, b"1.0"),
        # Deterministic: publishing the same checkpoint again gives the same record id.
        (ce.ID, b"%s:%s:%s" % (topic.encode(), key, checkpoint)),
        (ce.TYPE, CHECKPOINT_TYPE.encode()),
        (ce.SOURCE, source),
        (ce.TIME, ce.format_time(ce.now()).encode()),
        (ce.SUBJECT, key),
        (ce.CONTENT_TYPE, CONTENT_TYPE),
        (SOURCE_PARTITION, partition),
        (CHECKPOINT, checkpoint),
    ]
    value = codec.encode(
        CHECKPOINT_TYPE,
        {
            "projection": pub.projection.name,
            "source_topic": topics.events,
            "source_partition": pub.partition,
            "checkpoint": pub.checkpoint,
        },
    )
    return KafkaRecord(topic, pub.partition, key, value, headers)


def record_size(record: KafkaRecord) -> int:
    """The bytes of key and value, which the derived record limit bounds."""
    return len(record.value or b"") + len(record.key)


def is_checkpoint(headers: Mapping[str, str]) -> bool:
    """Whether a projection-topic record (its headers as text) is a checkpoint record."""
    return headers.get(ce.TYPE) == CHECKPOINT_TYPE


class BadProgressHeaders(ValueError):
    pass


def header_map(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> dict[str, str]:
    """Kafka headers (confluent-kafka's list, aiokafka's tuple or a mapping) as text."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = {}
    for name, value in items:
        if value is not None:
            out[name] = value if isinstance(value, str) else bytes(value).decode()
    return out


def read_progress(headers: Mapping[str, str]) -> tuple[int, int]:
    """(source partition, checkpoint) of a projection record or marker."""
    try:
        return int(headers[SOURCE_PARTITION]), int(headers[CHECKPOINT])
    except KeyError as exc:
        raise BadProgressHeaders(f"projection record without header {exc.args[0]}") from None
    except ValueError as exc:
        raise BadProgressHeaders(
            f"projection record with a malformed progress header: {exc}"
        ) from None
