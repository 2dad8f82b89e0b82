"""Dead letters: a record on `<ctx>.commands` that cannot be a command goes to `<ctx>.dlq`
with its key, value and headers as they were, plus the `dlq_*` headers below."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.wire.limits import MAX_ID_BYTES, record_size

PREFIX = "dlq_"
REASON = "dlq_reason"  # why, for people (at most 4096 bytes)
ERROR_TYPE = "dlq_error_type"  # why, as a code: see ERROR_TYPES
SOURCE_TOPIC = "dlq_source_topic"
SOURCE_PARTITION = "dlq_source_partition"
SOURCE_OFFSET = "dlq_source_offset"
TIME = "dlq_time"  # when it was dead-lettered, as ce_time is written
# Only on a dead letter that had to be cut down to fit: what was cut (`key`, `headers`,
# `value`, comma-separated) and the original value's size in bytes.
TRUNCATED = "dlq_truncated"
ORIGINAL_SIZE = "dlq_original_size"

ERROR_TYPES = {
    "EmptyValue": "the record has no value",
    "MissingKey": "the record has no key (the aggregate id)",
    "BadKey": "the key is not UTF-8",
    "OversizedId": f"the key, ce_id, ce_correlationid or ce_principal is over {MAX_ID_BYTES} bytes",
    "MissingHeader": "the record has no ce_id header, or an empty one",
    "MalformedHeader": "a ce_* header is not UTF-8, ce_specversion is not 1.0, ce_time is not "
    "RFC 3339, or ce_expectedversion is not a plain decimal long",
    "BadMagic": "the value does not start with C3 01 (not Avro single-object encoding)",
    "TruncatedBody": "the value ends before its header or body is complete",
    "UnknownFingerprint": "no schema in the catalog has the value's writer fingerprint",
    "MalformedBody": "the body is not valid Avro for its writer schema",
    "SchemaResolutionError": "the writer's record cannot be read with the latest version of "
    "its schema",
    "UpcastError": "an upcaster failed on the record",
}
"""`dlq_error_type` values the command processor writes, and what each means."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Why a record on a commands topic cannot be a command; it goes to the DLQ."""

    error_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Original:
    """The dead-lettered record, where it was."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


def dead_letter(
    original: Original, why: Undecodable, time_header: bytes, max_record_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    """The DLQ record for `original`: its key, value and headers plus the dlq_* headers. One
    that would be over the size limit is cut down (key, then original headers, then value)
    and says so in `dlq_truncated` and `dlq_original_size`: the whole original stays on the
    commands topic, at the partition and offset the headers name, for its retention."""
    key, value = original.key, original.value
    headers = dead_letter_headers(original, why, time_header)
    if record_size(key, value, headers) <= max_record_bytes:
        return key, value, headers
    cut: list[str] = []
    if key is not None and len(key) > MAX_ID_BYTES:
        key = key[:MAX_ID_BYTES]
        cut.append("key")
    own = [h for h in headers if h[0].startswith(PREFIX)]
    if record_size(key, None, headers) > max_record_bytes // 2:
        headers = own
        cut.append("headers")
    if record_size(key, value, headers) > max_record_bytes - 200:
        cut.append("value")
    headers = [
        *headers,
        (TRUNCATED, ",".join(cut).encode()),
        (ORIGINAL_SIZE, str(len(value or b"")).encode()),
    ]
    if value is not None and "value" in cut:
        value = value[: max(0, max_record_bytes - record_size(key, None, headers))]
    return key, value, headers


def dead_letter_headers(
    original: Original, why: Undecodable, time_header: bytes
) -> list[tuple[str, bytes | None]]:
    kept = [(k, v) for k, v in original.headers if not k.startswith(PREFIX)]
    return [
        *kept,
        (REASON, why.reason.encode(errors="replace")[:4096]),
        (ERROR_TYPE, why.error_type.encode()),
        (SOURCE_TOPIC, original.topic.encode()),
        (SOURCE_PARTITION, str(original.partition).encode()),
        (SOURCE_OFFSET, str(original.offset).encode()),
        (TIME, time_header),
    ]
