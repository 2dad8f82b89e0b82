"""Maps Kafka records to the processor's values and back: decoding commands, and encoding
events, results and snapshots with their CloudEvents headers. The one place where the
runtime meets the wire contract (see docs/wire-format.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from processors.command_handler import AggregateEntry, CommandMessage, Decided
from processors.domain import AggregateType, IssueCommand
from schemas import headers as ce
from schemas.codec import LATEST, Codec, CodecError, default_codec

CONTENT_TYPE = b"application/avro"
SPEC_VERSION = b"1.0"

_codec: Codec = default_codec()


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Why a message on the commands topic cannot be a command; it goes to the DLQ."""

    error_type: str
    reason: str


def encode(type_name: str, record: Mapping[str, Any]) -> bytes:
    return _codec.encode(type_name, record)


class Stamp:
    """Header values every record of one batch shares, computed once per batch rather than
    once per record (formatting a timestamp costs as much as encoding a small event)."""

    __slots__ = ("common", "time")

    def __init__(self, source: str) -> None:
        self.time = ce.time_header_value()
        self.common = [
            (ce.SPECVERSION, SPEC_VERSION),
            (ce.SOURCE, source.encode()),
            (ce.TIME, self.time),
            (ce.CONTENT_TYPE, CONTENT_TYPE),
        ]


def parse_command(msg: Message) -> CommandMessage | Undecodable:
    """Decode one message of `<ctx>.commands`, or say why it cannot be a command."""
    value = msg.value()
    key = msg.key()
    if value is None:
        return Undecodable("EmptyValue", "the message has no value")
    if key is None:
        return Undecodable("MissingKey", "the message has no key (the aggregate id)")
    try:
        key_text = key.decode()
    except UnicodeDecodeError:
        return Undecodable("BadKey", "the key is not UTF-8")
    try:
        # Into the latest version of the command's schema: old clients, new code.
        decoded = _codec.decode_message(value, LATEST)
    except CodecError as exc:
        return Undecodable(type(exc).__name__, str(exc))
    found = {k: v for k, v in (msg.headers() or ()) if v is not None}
    command_id = found.get(ce.ID)
    if not command_id:
        return Undecodable("MissingHeader", f"the command has no {ce.ID} header (its id)")
    expected = found.get(ce.EXPECTED_VERSION)
    try:
        expected_version = int(expected) if expected else None
        correlation = found.get(ce.CORRELATION_ID)
        return CommandMessage(
            partition=msg.partition(),
            offset=msg.offset(),
            key=key_text,
            command_id=command_id.decode(),
            command_type=decoded.schema.name,
            data=decoded.record,
            correlation_id=correlation.decode() if correlation else None,
            expected_version=expected_version,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        return Undecodable("MalformedHeader", f"bad command header: {exc}")


def event_headers(
    stamp: Stamp, event_type: str, cmd: CommandMessage, version: int, prefix: str
) -> list[tuple[str, bytes]]:
    return [
        *stamp.common,
        (ce.ID, f"{prefix}:{cmd.key}:{version}".encode()),
        (ce.TYPE, event_type.encode()),
        (ce.SUBJECT, cmd.key.encode()),
        (ce.CORRELATION_ID, (cmd.correlation_id or cmd.command_id).encode()),
        (ce.CAUSATION_ID, cmd.command_id.encode()),
        (ce.AGGREGATE_VERSION, str(version).encode()),
    ]


def result_headers(stamp: Stamp, cmd: CommandMessage) -> list[tuple[str, bytes]]:
    """The causation id names the command, so a client can match results without decoding."""
    return [
        *stamp.common,
        (ce.ID, f"{cmd.command_id}:result".encode()),
        (ce.TYPE, b"cqrs.CommandResult"),
        (ce.SUBJECT, cmd.key.encode()),
        (ce.CORRELATION_ID, (cmd.correlation_id or cmd.command_id).encode()),
        (ce.CAUSATION_ID, cmd.command_id.encode()),
    ]


def issued_command_headers(
    stamp: Stamp, issued: IssueCommand, aggregate_id: str, cause: CommandMessage
) -> list[tuple[str, bytes]]:
    return [
        *stamp.common,
        (ce.ID, issued.command_id.encode()),
        (ce.TYPE, issued.command.type.encode()),
        (ce.SUBJECT, aggregate_id.encode()),
        (ce.CORRELATION_ID, (cause.correlation_id or cause.command_id).encode()),
        (ce.CAUSATION_ID, cause.command_id.encode()),
    ]


def dead_letter_headers(stamp: Stamp, msg: Message, why: Undecodable) -> list[tuple[str, bytes]]:
    original = [(k, v) for k, v in (msg.headers() or ()) if not k.startswith("dlq_")]
    return [
        *original,
        ("dlq_reason", why.reason.encode(errors="replace")[:4096]),
        ("dlq_error_type", why.error_type.encode()),
        ("dlq_source_topic", msg.topic().encode()),
        ("dlq_source_partition", str(msg.partition()).encode()),
        ("dlq_source_offset", str(msg.offset()).encode()),
        ("dlq_time", stamp.time),
    ]


def result_command_id(msg: Message) -> str | None:
    for k, v in msg.headers() or ():
        if k == ce.CAUSATION_ID and v is not None:
            return v.decode()
    return None


def encode_result(d: Decided, positions: list[tuple[str, int, int]]) -> bytes:
    return _codec.encode(
        "cqrs.CommandResult",
        {
            "command_id": d.message.command_id,
            "command_type": d.message.command_type,
            "aggregate_id": d.message.key,
            "status": d.status,
            "reason": d.reason,
            "detail": d.detail,
            "version": d.version,
            "events": [{"topic": t, "partition": p, "offset": o} for t, p, o in positions],
            "processed_at": int(time.time() * 1000),
        },
    )


def snapshot_key(aggregate_type: str, aggregate_id: str) -> str:
    # Type-qualified: compaction keeps one record per key, and two aggregate types may use
    # the same id.
    return f"{aggregate_type}:{aggregate_id}"


def encode_snapshot(agg: AggregateType[Any], aggregate_id: str, entry: AggregateEntry) -> bytes:
    record = agg.to_record(entry.state)
    record["version"] = entry.version
    return _codec.encode(
        "cqrs.AggregateSnapshot",
        {
            "aggregate_type": agg.name,
            "aggregate_id": aggregate_id,
            "version": entry.version,
            "state": _codec.encode(agg.state_schema, record),
        },
    )


def decode_snapshot(value: bytes) -> tuple[str, str, int, dict[str, Any]]:
    snap = _codec.decode(value, LATEST)
    record = _codec.decode(snap["state"], LATEST)
    return snap["aggregate_type"], snap["aggregate_id"], snap["version"], record
