"""Projection records on the wire: `<ctx>.projection.<name>`, keyed by the row key, valued
with the row in Avro single-object encoding, with the headers of `schemas.wire.progress`
(CloudEvents plus where the row came from; docs/read-side.md)."""

from __future__ import annotations

from dataclasses import dataclass

from processors.projector.batch import Publication
from processors.topics import ContextTopics
from schemas.codec import Codec
from schemas.wire import progress

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    key: bytes
    value: bytes | None
    headers: Headers


def encode(pub: Publication, topics: ContextTopics, source: str, codec: Codec) -> KafkaRecord:
    topic = topics.projection(pub.projection.name)
    if pub.key is None:
        return _encode_checkpoint(pub, topics, topic, source, codec)
    cause = pub.cause
    assert cause is not None and pub.row is not None
    headers = progress.row_headers(
        topic=topic,
        key=pub.key,
        row_type=pub.projection.row_schema,
        source=source,
        source_partition=pub.partition,
        source_offset=cause.offset,
        checkpoint=pub.checkpoint,
        cause_id=cause.event_id,
        time=cause.time,
        correlation_id=cause.correlation_id,
        traceparent=cause.traceparent,
    )
    value = codec.encode(pub.projection.row_schema, pub.row)
    return KafkaRecord(topic, pub.partition, pub.key.encode(), value, headers)


def _encode_checkpoint(
    pub: Publication, topics: ContextTopics, topic: str, source: str, codec: Codec
) -> KafkaRecord:
    headers = progress.checkpoint_headers(
        topic=topic, source=source, source_partition=pub.partition, checkpoint=pub.checkpoint
    )
    value = codec.encode(
        progress.CHECKPOINT_TYPE,
        {
            "projection": pub.projection.name,
            "source_topic": topics.events,
            "source_partition": pub.partition,
            "checkpoint": pub.checkpoint,
        },
    )
    return KafkaRecord(topic, pub.partition, progress.checkpoint_key(pub.partition), value, headers)


def record_size(record: KafkaRecord) -> int:
    """The bytes of key and value, which the derived record limit bounds."""
    return len(record.value or b"") + len(record.key)
