"""CloudEvents attributes as Kafka headers (the Kafka protocol binding, binary mode).

Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md
Each attribute is a header `ce_<attribute>` with a UTF-8 value; the data content type is the
plain `content-type` header. The message value is the Avro single-object encoded record and
the message key is the aggregate id, so any consumer can route and trace without our code.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections.abc import Iterable, Mapping
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
    }
)

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
    """The envelope of one command or event.

    `id`: the command id (commands) or the event's own unique id (events). `type`: the Avro
    full name of the value's record. `subject`: the aggregate id. `aggregate_version`
    (events): the aggregate's version after the event. `expected_version` (commands,
    optional): the version the sender expects the aggregate to be at. `principal`: who
    caused the command (commands) or the command that caused the event (events).
    """

    id: str
    type: str
    source: str
    subject: str
    time: dt.datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    aggregate_version: int | None = None
    expected_version: int | None = None
    principal: str | None = None
    content_type: str = AVRO_CONTENT_TYPE
    # Other ce_* attributes found when reading (name without the prefix -> value), kept so a
    # forwarder (e.g. to the DLQ) can pass them on.
    extensions: Mapping[str, str] = field(default_factory=dict)

    def to_kafka(self) -> KafkaHeaders:
        """Headers for confluent-kafka's `produce(headers=...)`."""
        headers = [
            (SPECVERSION, b"1.0"),
            (ID, self.id.encode()),
            (TYPE, self.type.encode()),
            (SOURCE, self.source.encode()),
            (TIME, format_time(self.time).encode()),
            (SUBJECT, self.subject.encode()),
            (CONTENT_TYPE, self.content_type.encode()),
        ]
        if self.correlation_id is not None:
            headers.append((CORRELATION_ID, self.correlation_id.encode()))
        if self.causation_id is not None:
            headers.append((CAUSATION_ID, self.causation_id.encode()))
        if self.aggregate_version is not None:
            headers.append((AGGREGATE_VERSION, str(self.aggregate_version).encode()))
        if self.expected_version is not None:
            headers.append((EXPECTED_VERSION, str(self.expected_version).encode()))
        if self.principal is not None:
            headers.append((PRINCIPAL, self.principal.encode()))
        for name, value in self.extensions.items():
            headers.append((f"ce_{name}", value.encode()))
        return headers

    @classmethod
    def from_kafka(
        cls, headers: Iterable[tuple[str, bytes | str | None]] | None
    ) -> CloudEventHeaders:
        """Read confluent-kafka's `msg.headers()` (a list of (name, bytes) or None).

        Headers with a None value count as absent; when a header repeats, the last one wins;
        unknown non-ce headers are ignored. Raises `MissingHeader` or `MalformedHeader`."""
        values = _collect(headers)
        specversion = _required(values, SPECVERSION)
        if specversion != SPECVERSION_VALUE:
            raise MalformedHeader(
                SPECVERSION,
                f"header {SPECVERSION}: expected {SPECVERSION_VALUE!r}, got {specversion!r}",
            )
        extensions = {}
        if len(values) > len(_KNOWN) or not _KNOWN.issuperset(values):
            extensions = {
                name[3:]: value
                for name, value in values.items()
                if name.startswith("ce_") and name not in _KNOWN
            }
        return cls(
            id=_required(values, ID),
            type=_required(values, TYPE),
            source=_required(values, SOURCE),
            subject=_required(values, SUBJECT),
            time=parse_time(_required(values, TIME), TIME),
            correlation_id=values.get(CORRELATION_ID),
            causation_id=values.get(CAUSATION_ID),
            aggregate_version=_optional_version(values, AGGREGATE_VERSION),
            expected_version=_optional_version(values, EXPECTED_VERSION),
            principal=values.get(PRINCIPAL),
            content_type=values.get(CONTENT_TYPE, AVRO_CONTENT_TYPE),
            extensions=extensions,
        )


def new_id() -> str:
    """A fresh unique id for ce_id (a random UUID)."""
    return str(uuid.uuid4())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. `2024-05-01T12:00:00.123456Z`."""
    if moment.tzinfo is None:
        raise ValueError("ce_time needs a timezone-aware datetime (use UTC)")
    if moment.tzinfo is not dt.UTC:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def parse_time(text: str, header: str = TIME) -> dt.datetime:
    """Parse an RFC 3339 timestamp (any offset, `Z` accepted) into an aware UTC datetime."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MalformedHeader(header, f"header {header}: not an RFC 3339 timestamp: {text!r}")
    return moment if moment.tzinfo is dt.UTC else moment.astimezone(dt.UTC)


def _collect(headers: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, raw in headers or ():
        if raw is None:
            continue
        try:
            values[name] = raw if isinstance(raw, str) else raw.decode()
        except UnicodeDecodeError:
            if name in _KNOWN or name.startswith("ce_"):
                raise MalformedHeader(name, f"header {name}: value is not UTF-8: {raw!r}") from None
        except AttributeError:
            values[name] = bytes(raw).decode()  # a bytearray or memoryview
    return values


def _required(values: Mapping[str, str], name: str) -> str:
    value = values.get(name)
    if value is None:
        raise MissingHeader(name, f"missing required header {name}")
    if not value:
        raise MalformedHeader(name, f"header {name} is empty")
    return value


def _optional_version(values: Mapping[str, str], name: str) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise MalformedHeader(name, f"header {name}: expected a non-negative integer, got {text!r}")
    return int(text)


_clock_cache: tuple[int, bytes] = (-1, b"")


def time_header_value() -> bytes:
    """ce_time for "now" (millisecond precision), formatted at most once per millisecond:
    at tens of thousands of records a second, formatting dominates otherwise."""
    global _clock_cache
    millis = time.time_ns() // 1_000_000
    cached_millis, value = _clock_cache
    if millis != cached_millis:
        moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        value = (moment.isoformat(timespec="milliseconds")[:-6] + "Z").encode()
        _clock_cache = (millis, value)
    return value


class IdSequence:
    """Unique ids for ce_id without a syscall per id: a random 122-bit UUID4 prefix chosen
    once per sequence, then a counter (`<uuid>-<n>`). Unique across processes by the prefix."""

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())
        self._next = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._next)}"
