"""Avro Parsing Canonical Form and the CRC-64-AVRO (Rabin) fingerprint of a schema.

Spec: https://avro.apache.org/docs/1.12.0/specification/#parsing-canonical-form-for-schemas
and https://avro.apache.org/docs/1.12.0/specification/#schema-fingerprints.
The fingerprint is implemented here (a few lines, straight from the spec) rather than taken
from fastavro, so that the tests can cross-check two independent implementations.
"""

from __future__ import annotations

import json
from typing import Any

from fastavro.schema import to_parsing_canonical_form

EMPTY_64 = 0xC15D213AA4D7A795  # the spec's seed: the fingerprint of the empty string


def _table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY_64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint of `data`, as an unsigned integer.

    Java's `SchemaNormalization.fingerprint64` returns the same bits as a signed long."""
    fp = EMPTY_64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any) -> str:
    """The Parsing Canonical Form of a self-contained schema: parsed JSON, a primitive's name,
    or JSON text (a string starting with `{`, `[` or `"`)."""
    if isinstance(schema, str) and schema[:1] in ("{", "[", '"'):
        schema = json.loads(schema)
    return to_parsing_canonical_form(schema)


def fingerprint(schema: Any) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form (UTF-8), unsigned."""
    return crc64_avro(canonical_form(schema).encode("utf-8"))


def to_wire(fp: int) -> bytes:
    """The 8 bytes of a fingerprint as they appear in a single-object message (little-endian)."""
    return fp.to_bytes(8, "little")


def as_signed(fp: int) -> int:
    """The fingerprint as Java's `long` (what Avro's test data and Java APIs show)."""
    return fp - (1 << 64) if fp >= 1 << 63 else fp
