"""Maps Kafka records to the processor's values and back: decoding commands, and encoding
events, results and snapshots with their CloudEvents headers. The one place where the
runtime meets the wire contract (see docs/wire-format.md)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from processors.command_handler import (
    ACCEPTED,
    AggregateEntry,
    CommandMessage,
    Decided,
    dedup_key,
)
from processors.domain import AggregateType, Command, IssueCommand
from schemas import headers as ce
from schemas.codec import LATEST, Codec, CodecError, default_codec

log = logging.getLogger(__name__)

CONTENT_TYPE = b"application/avro"
SPEC_VERSION = b"1.0"
# Values of a result's ce_commandtopic header.
INTERNAL = b"internal"
PUBLIC = b"public"

MAX_ID_BYTES = 1024
"""The longest aggregate id (the key), command id or correlation id accepted, in UTF-8 bytes.
Each is repeated in the key and headers of every record a command causes, and becomes a
primary key on the read side (a Postgres btree entry holds at most about 2.7 kB)."""

DEFAULT_MAX_RECORD_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes`: the largest record a producer will send. The
broker's default topic limit (`max.message.bytes`, 1,048,588) is above it."""

MAX_DETAIL_CHARS = 2000  # a result's human-readable detail is clipped to this

# What librdkafka counts against message.max.bytes, bounded from above: the key, the value,
# each header's name and value with their length prefixes, and a fixed record overhead.
_RECORD_OVERHEAD = 64
_HEADER_OVERHEAD = 10
_VERSION = re.compile(rb"-?[0-9]{1,19}")

Headers = list[tuple[str, bytes]]

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
    found = {k: v for k, v in (msg.headers() or ()) if v is not None}
    command_id = found.get(ce.ID)
    if not command_id:
        return Undecodable("MissingHeader", f"the command has no {ce.ID} header (its id)")
    correlation = found.get(ce.CORRELATION_ID)
    principal = found.get(ce.PRINCIPAL)
    for name, text in (
        (ce.ID, command_id),
        (ce.CORRELATION_ID, correlation),
        (ce.PRINCIPAL, principal),
    ):
        if text is not None and len(text) > MAX_ID_BYTES:
            return Undecodable(
                "OversizedId",
                f"the {name} header is {len(text)} bytes; at most {MAX_ID_BYTES} are allowed",
            )
    expected = found.get(ce.EXPECTED_VERSION)
    if expected and not _VERSION.fullmatch(expected):
        # int() would also take b" 7", b"+7" and b"1_0": the contract is a plain decimal.
        shown = expected[:40].decode(errors="replace")
        return Undecodable(
            "MalformedHeader", f"bad command header: {ce.EXPECTED_VERSION} {shown!r} is not a long"
        )
    try:
        expected_version = int(expected) if expected else None
        return CommandMessage(
            partition=msg.partition(),
            offset=msg.offset(),
            key=key_text,
            command_id=command_id.decode(),
            command_type=decoded.schema.name,
            data=decoded.record,
            correlation_id=correlation.decode() if correlation else None,
            expected_version=expected_version,
            principal=principal.decode() if principal else None,
            internal=internal,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        return Undecodable("MalformedHeader", f"bad command header: {exc}")


def _with_principal(headers: Headers, cmd: CommandMessage) -> Headers:
    if cmd.principal is not None:
        headers.append((ce.PRINCIPAL, cmd.principal.encode()))
    return headers


def event_headers(
    stamp: Stamp, event_type: str, cmd: CommandMessage, version: int, prefix: str
) -> list[tuple[str, bytes]]:
    """An event carries the principal of the command that caused it (`ce_principal`)."""
    headers = [
        *stamp.common,
        (ce.ID, f"{prefix}:{cmd.key}:{version}".encode()),
        (ce.TYPE, event_type.encode()),
        (ce.SUBJECT, cmd.key.encode()),
        (ce.CORRELATION_ID, (cmd.correlation_id or cmd.command_id).encode()),
        (ce.CAUSATION_ID, cmd.command_id.encode()),
        (ce.AGGREGATE_VERSION, str(version).encode()),
    ]
    return _with_principal(headers, cmd)


def result_headers(stamp: Stamp, cmd: CommandMessage) -> list[tuple[str, bytes]]:
    """The causation id names the command, so a client can match results without decoding.
    `ce_commandtopic` says which commands topic the command came from (public or internal):
    a restarted processor keeps the two topics' command ids apart in its dedup window."""
    headers = [
        *stamp.common,
        (ce.ID, f"{cmd.command_id}:result".encode()),
        (ce.TYPE, b"cqrs.CommandResult"),
        (ce.SUBJECT, cmd.key.encode()),
        (ce.CORRELATION_ID, (cmd.correlation_id or cmd.command_id).encode()),
        (ce.CAUSATION_ID, cmd.command_id.encode()),
        (ce.COMMAND_TOPIC, INTERNAL if cmd.internal else PUBLIC),
    ]
    return _with_principal(headers, cmd)


def issued_command_headers(
    stamp: Stamp, issued: IssueCommand, aggregate_id: str, cause: CommandMessage
) -> list[tuple[str, bytes]]:
    """A process manager's command carries the principal of the command that triggered it,
    so every event of a saga names who started it."""
    headers = [
        *stamp.common,
        (ce.ID, issued.command_id.encode()),
        (ce.TYPE, issued.command.type.encode()),
        (ce.SUBJECT, aggregate_id.encode()),
        (ce.CORRELATION_ID, (cause.correlation_id or cause.command_id).encode()),
        (ce.CAUSATION_ID, cause.command_id.encode()),
    ]
    return _with_principal(headers, cause)


def record_size(key: bytes | str | None, value: bytes | None, headers: Iterable[Any]) -> int:
    """An upper bound of the size librdkafka checks against `message.max.bytes`."""
    size = _RECORD_OVERHEAD + _utf8_len(key) + len(value or b"")
    for name, header_value in headers:
        size += _HEADER_OVERHEAD + _utf8_len(name) + len(header_value or b"")
    return size


def _utf8_len(text: bytes | str | None) -> int:
    if text is None:
        return 0
    if isinstance(text, bytes):
        return len(text)
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def dead_letter(
    stamp: Stamp, msg: Message, why: Undecodable, max_record_bytes: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The DLQ record for `msg`: its key, value and headers plus the dlq_* headers. One that
    would be over the size limit is cut down (key, then original headers, then value) and
    says so in `dlq_truncated` and `dlq_original_size`: the whole original stays on the
    commands topic, at the partition and offset the headers name, for its retention."""
    key, value = msg.key(), msg.value()
    headers = dead_letter_headers(stamp, msg, why)
    if record_size(key, value, headers) <= max_record_bytes:
        return key, value, headers
    cut: list[str] = []
    if key is not None and len(key) > MAX_ID_BYTES:
        key = key[:MAX_ID_BYTES]
        cut.append("key")
    own = [h for h in headers if h[0].startswith("dlq_")]
    if record_size(key, None, headers) > max_record_bytes // 2:
        headers = own
        cut.append("headers")
    if record_size(key, value, headers) > max_record_bytes - 200:
        cut.append("value")
    headers = [
        *headers,
        ("dlq_truncated", ",".join(cut).encode()),
        ("dlq_original_size", str(len(value or b"")).encode()),
    ]
    if value is not None and "value" in cut:
        value = value[: max(0, max_record_bytes - record_size(key, None, headers))]
    return key, value, headers


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


def result_dedup_key(msg: Message) -> str | None:
    """The dedup-window key of the command a result answers (see `dedup_key`)."""
    command_id = result_command_id(msg)
    if command_id is None:
        return None
    internal = any(k == ce.COMMAND_TOPIC and v == INTERNAL for k, v in msg.headers() or ())
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
            "detail": _clip(d.detail),
            "version": d.version,
            "events": [{"topic": t, "partition": p, "offset": o} for t, p, o in positions],
            "processed_at": int(time.time() * 1000),
        },
    )


def _clip(detail: str) -> str:
    # Details quote input (ids, fields) for people; a 900 kB field must not make the result
    # too large to publish.
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    return f"{detail[: MAX_DETAIL_CHARS - 20]}... ({len(detail)} chars)"


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


# -- everything one decided command writes, checked before any of it is produced ----------


class OutputRefused(Exception):
    """A decided command's output cannot be written; the command is rejected with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SnapshotRefused(Exception):
    """An aggregate's snapshot, encoded once per batch, cannot be written."""

    def __init__(self, aggregate: tuple[str, str], reason: str) -> None:
        super().__init__(f"snapshot of {aggregate[0]} {aggregate[1][:100]!r}: {reason}")
        self.aggregate = aggregate


@dataclass(slots=True)
class Outputs:
    """The encoded records of one decided command, each known to fit under the size limit."""

    events: list[tuple[bytes, Headers]]  # on the command's partition, keyed by its key
    snapshot: bytes | None  # only for aggregates in OutputBuilder.strict
    issued: list[tuple[str, int, bytes, Headers]]  # (key, partition, value, headers)


class OutputBuilder:
    """Encodes the events, snapshot and process-manager commands of a decided command, and
    refuses output that the producer or the broker would refuse: a record over
    `max_record_bytes`, or one its schema does not accept (a balance past the Avro long).

    Producing such a record fails inside the batch's transaction, which aborts, and the
    command comes back: the partition would stall on it forever. Refused here, the command
    is rejected (`too_large`, `invalid_output`) and the partition flows on."""

    def __init__(
        self,
        prefix: str,
        events_topic: str,
        max_record_bytes: int,
        target: Callable[[Command], tuple[str, int]],
    ) -> None:
        self.prefix = prefix
        self.events_topic = events_topic
        self.max_record_bytes = max_record_bytes
        self.target = target
        # Aggregates whose snapshot is encoded and checked after every command. Others are
        # encoded once per batch (`snapshot_value`), which is much cheaper; a snapshot
        # refused there puts its aggregate here and the batch is replayed.
        self.strict: set[tuple[str, str]] = set()
        # Everything in a record but its value is bounded: ids are capped at MAX_ID_BYTES and
        # appear at most 8 times, type names come from the catalog, and the stamp's values
        # are short. A value that leaves this much room fits without adding up the headers.
        longest_name = max(map(len, _codec.catalog.names()), default=0)
        bounded = 8 * MAX_ID_BYTES + 4 * longest_name + 4 * len(prefix) + 1024
        self._room = max_record_bytes - _RECORD_OVERHEAD - 16 * (_HEADER_OVERHEAD + 32) - bounded

    def settle(
        self, stamp: Stamp, d: Decided, retract: Callable[[Decided, str, str], Decided]
    ) -> tuple[Decided, Outputs]:
        """The outputs of `d`; or, when they cannot be written, `retract` turns `d` into a
        rejection (undoing its memory changes) and the rejection's outputs are returned."""
        try:
            return d, self.build(stamp, d)
        except OutputRefused as refused:
            rejected = retract(d, refused.reason, refused.detail)
        try:
            return rejected, self.build(stamp, rejected)
        except OutputRefused as again:
            # Only commands that process managers issue in reaction to the rejection can
            # be left over; they cannot be written either.
            log.error(
                "command %s: dropping %d process-manager commands: %s",
                d.message.command_id,
                len(rejected.issued),
                again,
            )
            rejected.issued = []
            return rejected, self.build(stamp, rejected)

    def build(self, stamp: Stamp, d: Decided) -> Outputs:
        msg = d.message
        events: list[tuple[bytes, Headers]] = []
        snapshot = None
        if d.status == ACCEPTED:
            first_version = d.version - len(d.events) + 1
            for i, event in enumerate(d.events):
                value = self._encode(event.type, event.data, "event")
                headers = event_headers(stamp, event.type, msg, first_version + i, self.prefix)
                self._fit("event", event.type, msg.key, value, headers)
                events.append((value, headers))
            if d.aggregate is not None and (d.aggregate.name, msg.key) in self.strict:
                snapshot = self._snapshot(d)
        issued = [self._issued(stamp, d, issue) for issue in d.issued]
        self._fit_result(d)
        return Outputs(events, snapshot, issued)

    def _encode(self, type_name: str, record: Mapping[str, Any], what: str) -> bytes:
        try:
            return _codec.encode(type_name, record)
        except Exception as exc:  # EncodeError names the field; anything else is a bug
            raise OutputRefused("invalid_output", f"{what} {exc}") from exc

    def _fit(self, kind: str, type_name: str, key: str, value: bytes, headers: Any) -> None:
        if len(value) <= self._room:
            return
        size = record_size(key, value, headers)
        if size > self.max_record_bytes:
            raise OutputRefused(
                "too_large",
                f"the {kind} {type_name} it causes would be {size:,} bytes; Kafka takes at "
                f"most {self.max_record_bytes:,} (message.max.bytes)",
            )

    def _snapshot(self, d: Decided) -> bytes:
        assert d.aggregate is not None
        key = snapshot_key(d.aggregate.name, d.message.key)
        try:
            value = encode_snapshot(
                d.aggregate, d.message.key, AggregateEntry(d.snapshot_state, d.version)
            )
        except Exception as exc:  # to_record is domain code; the codec names the field
            raise OutputRefused(
                "invalid_output", f"snapshot {d.aggregate.state_schema}: {exc}"
            ) from exc
        self._fit("snapshot", d.aggregate.state_schema, key, value, ())
        return value

    def snapshot_value(self, agg: AggregateType[Any], key: str, entry: AggregateEntry) -> bytes:
        """The snapshot of an aggregate's state at the end of a batch."""
        try:
            value = encode_snapshot(agg, key, entry)
        except Exception as exc:
            raise SnapshotRefused((agg.name, key), f"{type(exc).__name__}: {exc}") from exc
        size = record_size(snapshot_key(agg.name, key), value, ())
        if size > self.max_record_bytes:
            raise SnapshotRefused((agg.name, key), f"{size:,} bytes")
        return value

    def _issued(
        self, stamp: Stamp, d: Decided, issue: IssueCommand
    ) -> tuple[str, int, bytes, Headers]:
        command = issue.command
        try:
            target, partition = self.target(command)
        except Exception as exc:
            raise OutputRefused(
                "invalid_output", f"command {command.type}: no target: {exc!r}"
            ) from exc
        if max(_utf8_len(target), _utf8_len(issue.command_id)) > MAX_ID_BYTES:
            raise OutputRefused(
                "too_large",
                f"the command {command.type} it causes names an id over {MAX_ID_BYTES} bytes",
            )
        value = self._encode(command.type, dict(command.data), "command")
        headers = issued_command_headers(stamp, issue, target, d.message)
        self._fit("command", command.type, target, value, headers)
        return target, partition, value, headers

    def _fit_result(self, d: Decided) -> None:
        # Bounded rather than encoded: the events' offsets are known only after they are
        # produced. Ids are capped at parse time and the detail is clipped, so only a
        # command with a great many events, or a very long reason, can be over.
        if len(d.events) < 100 and len(d.reason) < 1000 and self._room > 100_000:
            return
        msg = d.message
        ids = _utf8_len(msg.key) * 3 + _utf8_len(msg.command_id) * 4
        ids += _utf8_len(msg.correlation_id) + len(msg.command_type) * 2
        text = 4 * (min(len(d.detail), MAX_DETAIL_CHARS) + len(d.reason))
        positions = len(d.events) * (len(self.events_topic) + 24)
        size = _RECORD_OVERHEAD + 400 + ids + text + positions
        if size > self.max_record_bytes:
            raise OutputRefused(
                "too_large",
                f"its result, naming {len(d.events)} events, would be about {size:,} bytes; "
                f"Kafka takes at most {self.max_record_bytes:,} (message.max.bytes)",
            )
