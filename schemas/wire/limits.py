"""Keys and size rules: what a record may hold, and an upper bound of its size as
librdkafka counts it against `message.max.bytes`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_ID_BYTES = 1024
"""The longest aggregate id (the key), command id, correlation id or principal accepted, in
UTF-8 bytes. Each is repeated in the key and headers of every record a command causes, and
becomes a primary key on the read side (a Postgres btree entry holds at most about 2.7 kB)."""

DEFAULT_MAX_RECORD_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes`: the largest record a producer will send. The
broker's default topic limit (`max.message.bytes`, 1,048,588) is above it."""

DERIVED_MAX_RECORD_BYTES = 8 * 1024 * 1024
"""The largest key plus value on a derived topic (projection topics and the projector's
table changelogs). A read-model row can be several times larger than the event it came
from: JSON escapes a control character as six bytes (event_log's payload), and a
projection may gather fields. Larger rows are refused by the projector (counted and logged,
never produced)."""

MAX_DETAIL_CHARS = 2000
"""A result's human-readable detail is clipped to this many characters."""

# What librdkafka counts against message.max.bytes, bounded from above: the key, the value,
# each header's name and value with their length prefixes, and a fixed record overhead.
RECORD_OVERHEAD = 64
HEADER_OVERHEAD = 10


def record_size(key: bytes | str | None, value: bytes | None, headers: Iterable[Any]) -> int:
    """An upper bound of the size librdkafka checks against `message.max.bytes`."""
    size = RECORD_OVERHEAD + utf8_len(key) + len(value or b"")
    for name, header_value in headers:
        size += HEADER_OVERHEAD + utf8_len(name) + len(header_value or b"")
    return size


def utf8_len(text: bytes | str | None) -> int:
    if text is None:
        return 0
    if isinstance(text, bytes):
        return len(text)
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def clip_detail(detail: str) -> str:
    """A result's detail, clipped to MAX_DETAIL_CHARS. Details quote input (ids, fields)
    for people; a 900 kB field must not make the result too large to publish."""
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    return f"{detail[: MAX_DETAIL_CHARS - 20]}... ({len(detail)} chars)"


def snapshot_key(aggregate_type: str, aggregate_id: str) -> str:
    """The key of an aggregate's snapshot on `<ctx>.aggregates`. Type-qualified: compaction
    keeps one record per key, and two aggregate types may use the same id."""
    return f"{aggregate_type}:{aggregate_id}"


def result_id(command_id: str) -> str:
    """The `ce_id` of a command's result."""
    return f"{command_id}:result"


def event_id(prefix: str, aggregate_id: str, version: int) -> str:
    """The `ce_id` of an event: unique, and the same if the event is ever written again."""
    return f"{prefix}:{aggregate_id}:{version}"
