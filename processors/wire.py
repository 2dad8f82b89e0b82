"""Maps Kafka records to the processor's values and back: decoding commands, and the values
and headers of events, results and process-manager commands. The wire contract itself
(header names, ids, size rules, dead letters) is `schemas.wire`; docs/wire-format.md
describes it."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message

from processors.command_handler import AggregateEntry, CommandMessage, Decided, Issued, dedup_key
from processors.domain import AggregateType
from schemas.codec import LATEST, Codec, CodecError, default_codec
from schemas.wire import headers as ce
from schemas.wire.dead_letter import Original, Undecodable
from schemas.wire.limits import MAX_ID_BYTES, clip_detail, event_id, result_id, utf8_len

_codec: Codec = default_codec()

_INTERNAL = ce.INTERNAL.encode()


def parse_command(msg: Message, internal: bool = False) -> CommandMessage | Undecodable:
    """Decode one message of `<ctx>.commands` (or, `internal`, of `<ctx>.internal-commands`),
    or say why it cannot be a command."""
    value = msg.value()
    key = msg.key()
    if value is None:
        return Undecodable("EmptyValue", "the message has no value")
    if key is None:
        return Undecodable("MissingKey", "the message has no key (the aggregate id)")
    if len(key) > MAX_ID_BYTES:
        return Undecodable(
            "OversizedId",
            f"the key (aggregate id) is {len(key)} bytes; at most {MAX_ID_BYTES} are allowed",
        )
    try:
        key_text = key.decode()
    except UnicodeDecodeError:
        return Undecodable("BadKey", "the key is not UTF-8")
    try:
        # Into the latest version of the command's schema: old clients, new code.
        decoded = _codec.decode_message(value, LATEST)
    except CodecError as exc:
        return Undecodable(type(exc).__name__, str(exc))
    try:
        envelope = ce.CloudEventHeaders.from_kafka(msg.headers(), ())
    except ce.HeaderError as exc:
        return Undecodable("MalformedHeader", f"bad command header: {exc}")
    if not envelope.id:  # the one attribute the processor needs
        return Undecodable("MissingHeader", f"the command has no {ce.ID} header (its id)")
    for name, text in (
        (ce.ID, envelope.id),
        (ce.CORRELATION_ID, envelope.correlation_id),
        (ce.PRINCIPAL, envelope.principal),
    ):
        if text is not None and (size := utf8_len(text)) > MAX_ID_BYTES:
            return Undecodable(
                "OversizedId",
                f"the {name} header is {size} bytes; at most {MAX_ID_BYTES} are allowed",
            )
    return CommandMessage(
        partition=msg.partition(),
        offset=msg.offset(),
        key=key_text,
        command_id=envelope.id,
        command_type=decoded.schema.name,
        data=decoded.record,
        correlation_id=envelope.correlation_id,
        expected_version=envelope.expected_version,
        principal=envelope.principal,
        internal=internal,
        traceparent=envelope.traceparent,
    )


def original(msg: Message) -> Original:
    """A consumed record, as the dead-letter queue keeps it."""
    return Original(
        msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or []
    )


# -- headers of what a command causes: each carries the command's principal and trace -------


def event_headers(
    stamp: ce.Stamp, event_type: str, cmd: CommandMessage, version: int, prefix: str
) -> ce.KafkaHeaders:
    # Positional: this runs for every event, and keywords cost a third more.
    return ce.CloudEventHeaders(
        event_id(prefix, cmd.key, version),  # id
        event_type,  # type
        stamp.source,  # source
        cmd.key,  # subject
        stamp.time,  # time
        cmd.correlation_id or cmd.command_id,  # correlation_id
        cmd.command_id,  # causation_id
        version,  # aggregate_version
        None,  # expected_version
        cmd.principal,  # principal
        None,  # command_topic
        cmd.traceparent,  # traceparent
    ).to_kafka()


def result_headers(stamp: ce.Stamp, cmd: CommandMessage) -> ce.KafkaHeaders:
    """The causation id names the command, so a client can match results without decoding.
    `ce_commandtopic` says which commands topic the command came from (public or internal):
    a restarted processor keeps the two topics' command ids apart in its dedup window."""
    return ce.CloudEventHeaders(
        result_id(cmd.command_id),  # id
        "cqrs.CommandResult",  # type
        stamp.source,  # source
        cmd.key,  # subject
        stamp.time,  # time
        cmd.correlation_id or cmd.command_id,  # correlation_id
        cmd.command_id,  # causation_id
        None,  # aggregate_version
        None,  # expected_version
        cmd.principal,  # principal
        ce.INTERNAL if cmd.internal else ce.PUBLIC,  # command_topic
        cmd.traceparent,  # traceparent
    ).to_kafka()


def issued_command_headers(
    stamp: ce.Stamp, issued: Issued, cause: CommandMessage
) -> ce.KafkaHeaders:
    """A process manager's command carries the principal and trace of the command that
    triggered it, so every event of a saga names who started it."""
    return ce.CloudEventHeaders(
        id=issued.command_id,
        type=issued.command.type,
        source=stamp.source,
        subject=issued.aggregate_id,
        time=stamp.time,
        correlation_id=cause.correlation_id or cause.command_id,
        causation_id=cause.command_id,
        principal=cause.principal,
        traceparent=cause.traceparent,
    ).to_kafka()


# -- results -------------------------------------------------------------------------------


def result_command_id(msg: Message) -> str | None:
    for k, v in msg.headers() or ():
        if k == ce.CAUSATION_ID and v is not None:
            return v.decode()
    return None


def result_dedup_key(msg: Message) -> str | None:
    """The dedup-window key of the command a result answers (see `dedup_key`)."""
    command_id = result_command_id(msg)
    if command_id is None:
        return None
    internal = any(k == ce.COMMAND_TOPIC and v == _INTERNAL for k, v in msg.headers() or ())
    return dedup_key(command_id, internal)


def encode_result(d: Decided, positions: list[tuple[str, int, int]]) -> bytes:
    return _codec.encode(
        "cqrs.CommandResult",
        {
            "command_id": d.message.command_id,
            "command_type": d.message.command_type,
            "aggregate_id": d.message.key,
            "status": d.status,
            "reason": d.reason,
            "detail": clip_detail(d.detail),
            "version": d.version,
            "events": [{"topic": t, "partition": p, "offset": o} for t, p, o in positions],
            "processed_at": int(time.time() * 1000),
        },
    )


# -- snapshots ------------------------------------------------------------------------------


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
