"""Events of `<ctx>.events` as the projector reads them: the Avro value and the CloudEvents
headers of one Faust message (or of a record read again with librdkafka) become a
`SourceEvent` for processors/projector/batch.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from processors.domain import Event
from processors.projections import EventMeta
from processors.projector.batch import SourceEvent
from processors.registry import Registry, UnknownMessageType
from schemas.codec import LATEST, Codec, CodecError
from schemas.wire import headers as ce


class Undecodable(Exception):
    pass


@dataclass(frozen=True)
class RereadMessage:
    """A record read again with librdkafka, with the attributes of a Faust message that the
    projector uses."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, msg: Message) -> RereadMessage:
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.value(), msg.headers() or [])


def decode_event(message: Any, codec: Codec, registry: Registry) -> SourceEvent:
    """The event and its envelope; Undecodable when the value, a header or the event type
    cannot be read."""
    if message.value is None:
        raise Undecodable("no value")
    try:
        decoded = codec.decode_message(message.value, LATEST)
        envelope = ce.CloudEventHeaders.from_kafka(message.headers)
        aggregate = registry.aggregate_for_event(decoded.schema.name)
    except (CodecError, ce.HeaderError, UnknownMessageType) as exc:
        raise Undecodable(str(exc)) from exc
    if envelope.aggregate_version is None:
        raise Undecodable(f"no {ce.AGGREGATE_VERSION} header")
    meta = EventMeta(
        event_id=envelope.id,
        aggregate_type=aggregate.name,
        aggregate_id=envelope.subject,
        version=envelope.aggregate_version,
        time=envelope.time,
        partition=message.partition,
        offset=message.offset,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        principal=envelope.principal,
        traceparent=envelope.traceparent,
    )
    return SourceEvent(Event(decoded.schema.name, decoded.record), meta)
