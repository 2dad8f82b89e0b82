"""One Kafka record as an operator sees it: position, key, headers (CloudEvents parsed) and the
value decoded through the schema catalog. Used by `cqrsctl tail` and `cqrsctl dlq`.

Bad bytes never raise: a value that is not single-object encoded Avro of a known schema
becomes a decode error with its reason, and the record is still shown.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from schemas.codec import MAGIC, Codec, CodecError
from schemas.wire import headers as ce

VALUE_PREVIEW_BYTES = 64  # of an undecodable value, shown as hex


@dataclass(frozen=True, slots=True)
class RecordView:
    """A decoded record. `schema` is the writer schema's label (`bank.Deposited v2`), None for
    a tombstone or a value that could not be decoded (then `error` says why)."""

    topic: str
    partition: int
    offset: int
    timestamp: dt.datetime | None
    key: str | None
    headers: list[tuple[str, str | None]]
    cloudevent: dict[str, Any] | None
    header_error: str | None
    schema: str | None
    value: Any
    error: str | None
    value_size: int
    value_preview: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "key": self.key,
            "headers": dict(self.headers),
            "cloudevent": self.cloudevent,
            "header_error": self.header_error,
            "schema": self.schema,
            "value": self.value,
            "error": self.error,
            "value_size": self.value_size,
            "value_preview_hex": self.value_preview,
        }


def view(msg: Message, codec: Codec) -> RecordView:
    """Decode `msg` (a record without an error) for display; never raises for bad bytes."""
    raw_headers = msg.headers() or []
    cloudevent, header_error = _cloudevent(raw_headers)
    value = msg.value()
    schema = error = preview = None
    decoded: Any = None
    if value is not None:
        try:
            found = codec.decode_message(value)
            schema, decoded = found.writer.label, jsonable(found.record, codec)
        except CodecError as exc:
            error = f"{type(exc).__name__}: {exc}"
            preview = value[:VALUE_PREVIEW_BYTES].hex()
    kind, stamp = msg.timestamp()
    return RecordView(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp=None
        if kind == TIMESTAMP_NOT_AVAILABLE
        else dt.datetime.fromtimestamp(stamp / 1000, dt.UTC),
        key=text(msg.key()),
        headers=[(name, text(raw)) for name, raw in raw_headers],
        cloudevent=cloudevent,
        header_error=header_error,
        schema=schema,
        value=decoded,
        error=error,
        value_size=len(value or b""),
        value_preview=preview,
    )


def text(raw: bytes | str | None) -> str | None:
    """Bytes as UTF-8 text; bytes that are not UTF-8 as `0x<hex>`."""
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def jsonable(value: Any, codec: Codec) -> Any:
    """A decoded Avro value as JSON-ready data. Bytes that hold a single-object encoded record
    (an aggregate snapshot's state) are decoded too; other bytes become base64."""
    if isinstance(value, dict):
        return {k: jsonable(v, codec) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, codec) for v in value]
    if isinstance(value, bytes):
        if value.startswith(MAGIC):
            try:
                nested = codec.decode_message(value)
                return {"schema": nested.writer.label, "value": jsonable(nested.record, codec)}
            except CodecError:
                pass
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cloudevent(raw: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The CloudEvents attributes of a record, or None when it has no ce_ headers at all;
    malformed ones give an error text instead of an exception."""
    raw = list(raw)
    if not any(name.startswith("ce_") for name, _ in raw):
        return None, None
    try:
        found = ce.CloudEventHeaders.from_kafka(raw)
    except ce.HeaderError as exc:
        return None, str(exc)
    attributes = {
        "id": found.id,
        "type": found.type,
        "source": found.source,
        "subject": found.subject,
        "time": ce.format_time(found.time),
        "correlation_id": found.correlation_id,
        "causation_id": found.causation_id,
        "aggregate_version": found.aggregate_version,
        "expected_version": found.expected_version,
    }
    attributes.update(found.extensions)
    return {k: v for k, v in attributes.items() if v is not None}, None
