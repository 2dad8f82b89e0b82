"""CloudEvents attributes as Kafka headers (the Kafka protocol binding, binary mode).

Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md
Each attribute is a header `ce_<attribute>` with a UTF-8 value; the data content type is the
plain `content-type` header. The message value is the Avro single-object encoded record and
the message key is the aggregate id, so any consumer can route and trace without our code.
The W3C trace context travels in the plain `traceparent` header, where OpenTelemetry's Kafka
instrumentations look for it.

Every header of every record is built by `CloudEventHeaders.to_kafka` and read by
`CloudEventHeaders.from_kafka`; the names are the constants below.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SPECVERSION_VALUE = "1.0"
AVRO_CONTENT_TYPE = "application/avro"

# Header names.

SPECVERSION = "ce_specversion"
ID = "ce_id"
TYPE = "ce_type"
SOURCE = "ce_source"
TIME = "ce_time"
SUBJECT = "ce_subject"
CONTENT_TYPE = "content-type"
CORRELATION_ID = "ce_correlationid"
CAUSATION_ID = "ce_causationid"
AGGREGATE_VERSION = "ce_aggregateversion"
EXPECTED_VERSION = "ce_expectedversion"
# Who caused the command and so its events: a CloudEvents extension attribute `principal`,
# set by the gateway from the verified token (or by a Kafka client for itself).
PRINCIPAL = "ce_principal"
# On command results: which commands topic the command came from, `public` or `internal`.
COMMAND_TOPIC = "ce_commandtopic"
# W3C Trace Context (https://www.w3.org/TR/trace-context/#traceparent-header).
TRACEPARENT = "traceparent"

# Values of a result's ce_commandtopic header.
PUBLIC = "public"
INTERNAL = "internal"

REQUIRED = (SPECVERSION, ID, TYPE, SOURCE, TIME, SUBJECT)
_KNOWN = frozenset(
    {
        *REQUIRED,
        CONTENT_TYPE,
        CORRELATION_ID,
        CAUSATION_ID,
        AGGREGATE_VERSION,
        EXPECTED_VERSION,
        PRINCIPAL,
        COMMAND_TOPIC,
        TRACEPARENT,
    }
)
_LONG_MAX = 2**63 - 1
_SPECVERSION_HEADER = (SPECVERSION, SPECVERSION_VALUE.encode())
_AVRO_HEADER = (CONTENT_TYPE, AVRO_CONTENT_TYPE.encode())

KafkaHeaders = list[tuple[str, bytes]]


class HeaderError(ValueError):
    """A CloudEvents header is missing or malformed; `header` names it."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header


class MissingHeader(HeaderError):
    pass


class MalformedHeader(HeaderError):
    pass


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower
class CloudEventHeaders:
    """The envelope of one command, event, result or projection record.

    `id`: the command id (commands) or the record's own unique id. `type`: the Avro full name
    of the value's record. `subject`: the aggregate id (the row key on projection topics).
    `aggregate_version` (events): the aggregate's version after the event.
    `expected_version` (commands, optional): the version the sender expects the aggregate to
    be at. `principal`: who caused the command (commands) or the command that caused the
    record. `command_topic` (results): `public` or `internal`. `traceparent`: the W3C trace
    context the record belongs to, if any. `time` is None only when read leniently (see
    `from_kafka`) from a record without `ce_time`.
    """

    id: str
    type: str
    source: str
    subject: str
    time: dt.datetime | None
    correlation_id: str | None = None
    causation_id: str | None = None
    aggregate_version: int | None = None
    expected_version: int | None = None
    principal: str | None = None
    command_topic: str | None = None
    traceparent: str | None = None
    content_type: str = AVRO_CONTENT_TYPE
    # Other ce_* attributes (name without the prefix -> value): read so that a forwarder
    # (e.g. to the DLQ) can pass them on, and written after the attributes above.
    extensions: Mapping[str, str] = field(default_factory=dict)

    def to_kafka(self) -> KafkaHeaders:
        """Headers for confluent-kafka's `produce(headers=...)`."""
        moment, source = self.time, self.source
        if moment is None:
            raise ValueError("ce_time is required to write a record")
        global _shared
        shared = _shared  # read once: another thread may replace it
        if moment is not shared[0] or source is not shared[1]:
            # Records of a batch share source and time: their headers are encoded once.
            shared = (moment, source, (SOURCE, source.encode()), (TIME, time_bytes(moment)))
            _shared = shared
        content_type = self.content_type
        headers = [
            _SPECVERSION_HEADER,
            (ID, self.id.encode()),
            (TYPE, self.type.encode()),
            shared[2],
            shared[3],
            (SUBJECT, self.subject.encode()),
            _AVRO_HEADER
            if content_type is AVRO_CONTENT_TYPE
            else (CONTENT_TYPE, content_type.encode()),
        ]
        append = headers.append
        if self.correlation_id is not None:
            append((CORRELATION_ID, self.correlation_id.encode()))
        if self.causation_id is not None:
            append((CAUSATION_ID, self.causation_id.encode()))
        if self.aggregate_version is not None:
            append((AGGREGATE_VERSION, str(self.aggregate_version).encode()))
        if self.expected_version is not None:
            append((EXPECTED_VERSION, str(self.expected_version).encode()))
        if self.principal is not None:
            append((PRINCIPAL, self.principal.encode()))
        if self.command_topic is not None:
            append((COMMAND_TOPIC, self.command_topic.encode()))
        if self.traceparent is not None:
            append((TRACEPARENT, self.traceparent.encode()))
        if self.extensions:
            for name, value in self.extensions.items():
                append((f"ce_{name}", value.encode()))
        return headers

    @classmethod
    def from_kafka(
        cls,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
        required: Collection[str] = REQUIRED,
    ) -> CloudEventHeaders:
        """Read confluent-kafka's `msg.headers()` (a list of (name, bytes) or None).

        Headers with a None value (or an empty one, when optional) count as absent; when a
        header repeats, the last one wins; unknown non-ce headers are ignored. `required`
        names the headers that must be present (the command processor checks only `ce_id`,
        itself); a string attribute not required reads as "" when absent. An invalid
        `traceparent` reads as None: trace context is never a reason to refuse a record.
        Raises `MissingHeader` or `MalformedHeader`."""
        raw = headers if isinstance(headers, list) else list(headers or ())
        try:  # the common case at C speed: every known header is UTF-8 bytes
            values = {n: v.decode() for n, v in raw if n in _KNOWN and v is not None}
        except (UnicodeDecodeError, AttributeError):
            values = _decode_known(raw)
        for name in required:
            value = values.get(name)
            if value is None:
                raise MissingHeader(name, f"missing required header {name}")
            if not value:
                raise MalformedHeader(name, f"header {name} is empty")
        get = values.get
        specversion = get(SPECVERSION)
        if specversion is not None and specversion != SPECVERSION_VALUE:
            raise MalformedHeader(
                SPECVERSION,
                f"header {SPECVERSION}: expected {SPECVERSION_VALUE!r}, got {specversion!r}",
            )
        moment = get(TIME)
        aggregate_version = get(AGGREGATE_VERSION)
        expected_version = get(EXPECTED_VERSION)
        traceparent = get(TRACEPARENT)
        return cls(
            get(ID, ""),
            get(TYPE, ""),
            get(SOURCE, ""),
            get(SUBJECT, ""),
            parse_time(moment, TIME) if moment else None,
            get(CORRELATION_ID) or None,
            get(CAUSATION_ID) or None,
            _version(AGGREGATE_VERSION, aggregate_version) if aggregate_version else None,
            _version(EXPECTED_VERSION, expected_version, True) if expected_version else None,
            get(PRINCIPAL) or None,
            get(COMMAND_TOPIC) or None,
            valid_traceparent(traceparent) if traceparent else None,
            get(CONTENT_TYPE) or AVRO_CONTENT_TYPE,
            _extensions(raw) if len(raw) > len(values) else {},
        )


class Stamp:
    """The attributes every record of one batch shares (`ce_source`, `ce_time`), fixed
    once per batch: `ce_time` is formatted once rather than once per record."""

    __slots__ = ("source", "time", "time_header")

    def __init__(self, source: str) -> None:
        self.source = source
        _, self.time, self.time_header = _now()


def new_id() -> str:
    """A fresh unique id for ce_id (a random UUID)."""
    return str(uuid.uuid4())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`: every writer of
    `ce_time` uses this precision (sub-millisecond digits are dropped, not rounded)."""
    if moment.tzinfo is None:
        raise ValueError("ce_time needs a timezone-aware datetime (use UTC)")
    if moment.tzinfo is not dt.UTC:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"


def parse_time(text: str, header: str = TIME) -> dt.datetime:
    """Parse an RFC 3339 timestamp (any offset, `Z` accepted) into an aware UTC datetime."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MalformedHeader(header, f"header {header}: not an RFC 3339 timestamp: {text!r}")
    return moment if moment.tzinfo is dt.UTC else moment.astimezone(dt.UTC)


# 00-<trace id>-<parent id>-<flags>, lowercase hex; a version other than 00 may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def valid_traceparent(text: str | None) -> str | None:
    """`text` if it is a W3C `traceparent` a tracer would accept, else None."""
    if text is None or len(text) > 512:
        return None
    match = _TRACEPARENT.fullmatch(text)
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest is not None:
        return None
    return text


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent` (32 hex digits), for logs."""
    return traceparent[3:35] if traceparent else None


def new_traceparent() -> str:
    """A fresh sampled `traceparent`: a new trace whose root is the caller."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def _text(name: str, raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode()  # bytes, or a bytearray or memoryview
    except UnicodeDecodeError:
        if name == TRACEPARENT:
            return None  # ignored, like any invalid traceparent
        raise MalformedHeader(name, f"header {name}: value is not UTF-8: {raw!r}") from None


def _decode_known(raw: Iterable[tuple[str, Any]]) -> dict[str, str]:
    values = {}
    for name, value in raw:
        if value is not None and name in _KNOWN and (text := _text(name, value)) is not None:
            values[name] = text
    return values


def _extensions(raw: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Other ce_* attributes, by name without the prefix."""
    found = {}
    for name, value in raw:
        if value is not None and name.startswith("ce_") and name not in _KNOWN:
            found[name[3:]] = _text(name, value) or ""
    return found


def _version(name: str, text: str, signed: bool = False) -> int:
    """A plain decimal long: int() alone would also take " 7", "+7" and "1_0"."""
    digits = text[1:] if signed and text.startswith("-") else text
    if not (0 < len(digits) <= 19 and digits.isascii() and digits.isdigit()):
        kind = "a long" if signed else "a non-negative integer"
        raise MalformedHeader(name, f"header {name}: expected {kind}, got {text[:40]!r}")
    number = int(text)
    if not -_LONG_MAX - 1 <= number <= _LONG_MAX:
        raise MalformedHeader(name, f"header {name}: {text!r} is out of the range of a long")
    return number


_EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)
_clock: tuple[int, dt.datetime, bytes] = (-1, _EPOCH, b"")  # "now", to the millisecond
_last: tuple[dt.datetime, bytes] = (_EPOCH, b"")  # the last other time formatted
# The last (time, source) written, and their headers.
_shared: tuple[dt.datetime, str, tuple[str, bytes], tuple[str, bytes]] = (
    _EPOCH,
    "",
    (SOURCE, b""),
    (TIME, b""),
)


def time_bytes(moment: dt.datetime) -> bytes:
    """`format_time(moment)` encoded. Records of one batch share their stamp's time, and a
    projection row its event's: the value is formatted once for all of them."""
    global _last
    clock = _clock  # read once: another thread may replace it
    if moment is clock[1]:
        return clock[2]
    last, value = _last
    if moment is not last:
        value = format_time(moment).encode()
        _last = (moment, value)
    return value


def _now() -> tuple[int, dt.datetime, bytes]:
    """(milliseconds, datetime, ce_time value) of now, formatted once per millisecond."""
    global _clock
    millis = time.time_ns() // 1_000_000
    clock = _clock  # read once: another thread may replace it
    if millis != clock[0]:
        moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        clock = _clock = (millis, moment, format_time(moment).encode())
    return clock


def time_header_value() -> bytes:
    """ce_time for "now", formatted at most once per millisecond: at tens of thousands of
    records a second, formatting dominates otherwise."""
    return _now()[2]


class IdSequence:
    """Unique ids for ce_id without a syscall per id: a random 122-bit UUID4 prefix chosen
    once per sequence, then a counter (`<uuid>-<n>`). Unique across processes by the prefix."""

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())
        self._next = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._next)}"
