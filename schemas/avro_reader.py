"""Generated Avro readers: Python source made from a parsed schema and compiled once, reading
a body written with that same schema (no resolution) into the same values as fastavro's
`schemaless_reader` with that schema and no reader schema.

`compile_reader(parsed)` returns `read(data, pos) -> (record, end)`, or None when the schema
uses a construct the generator does not handle (see schemas/avro_writer.py: the same set):
the caller then uses fastavro. On a body it cannot read (ends early, bad UTF-8, an enum or
union index out of range, a long of more than ten bytes) it raises; the caller then reads
the body with fastavro, which names what is wrong.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from schemas.avro_codegen import CodeGenerator, compile_module, generate

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()


def _long(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > 63:
            raise ValueError("varint too long")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise ValueError("varint past 64 bits")
    return (n >> 1) ^ -(n & 1), pos


def _int(data: bytes, pos: int) -> tuple[int, int]:
    value, pos = _long(data, pos)
    return value, pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError("past the end")
    return data[pos:end].decode(), end


def _bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError("past the end")
    return data[pos:end], end


def _boolean(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise ValueError("not a boolean")
    return byte == 1, pos + 1


def _null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


_unpack_double = struct.Struct("<d").unpack_from
_unpack_float = struct.Struct("<f").unpack_from


def _double(data: bytes, pos: int) -> tuple[float, int]:
    return _unpack_double(data, pos)[0], pos + 8


def _float(data: bytes, pos: int) -> tuple[float, int]:
    return _unpack_float(data, pos)[0], pos + 4


def _timestamp_millis(data: bytes, pos: int) -> tuple[dt.datetime, int]:
    millis, pos = _long(data, pos)
    return _EPOCH + dt.timedelta(microseconds=millis * 1000), pos


def _date(data: bytes, pos: int) -> tuple[dt.date, int]:
    days, pos = _long(data, pos)
    return dt.date.fromordinal(days + _DAYS_SHIFT), pos


class _Generator(CodeGenerator):
    """Functions `(data, pos) -> (value, pos)`."""

    def union(self, null_index: int, other: str) -> str:
        name = self.fresh("union")
        self.functions[name] = [
            f"def {name}(data, pos):",
            "    index = data[pos]",
            f"    if index == {2 * null_index}:",
            "        return None, pos + 1",
            f"    if index != {2 * (1 - null_index)}:",
            "        raise ValueError('union index out of range')",
            f"    return {other}(data, pos + 1)",
        ]
        return name

    def record(self, name: str, schema: dict[str, Any]) -> None:
        lines = [f"def {name}(data, pos):"]
        self.functions[name] = lines  # before the fields: a recursive type finds it
        values = []
        for index, field in enumerate(schema["fields"]):
            read = self.function_for(field["type"])
            lines.append(f"    v{index}, pos = {read}(data, pos)")
            values.append(f"{field['name']!r}: v{index}")
        lines.append(f"    return {{{', '.join(values)}}}, pos")

    def enum(self, schema: dict[str, Any]) -> str:
        symbols = self.constant(tuple(schema["symbols"]))
        name = self.fresh("enum")
        self.functions[name] = [
            f"def {name}(data, pos):",
            "    index, pos = _long(data, pos)",
            "    if index < 0:",
            "        raise ValueError('enum index out of range')",
            f"    return {symbols}[index], pos",
        ]
        return name

    def array(self, items: str) -> str:
        return self._blocks(
            "array",
            "[]",
            ["    append = value.append"],
            [f"            item, pos = {items}(data, pos)", "            append(item)"],
        )

    def map(self, values: str) -> str:
        return self._blocks(
            "map",
            "{}",
            [],
            [
                "            key, pos = _string(data, pos)",
                f"            value[key], pos = {values}(data, pos)",
            ],
        )

    def _blocks(self, kind: str, start: str, setup: list[str], add: list[str]) -> str:
        """An array or a map: blocks of items, a negative count followed by a byte size."""
        name = self.fresh(kind)
        self.functions[name] = [
            f"def {name}(data, pos):",
            f"    value = {start}",
            *setup,
            "    count, pos = _long(data, pos)",
            "    while count:",
            "        if count < 0:",
            "            count = -count",
            "            _, pos = _long(data, pos)",
            "        for _ in range(count):",
            *add,
            "        count, pos = _long(data, pos)",
            "    return value, pos",
        ]
        return name

    def fixed(self, size: int) -> str:
        name = self.fresh("fixed")
        self.functions[name] = [
            f"def {name}(data, pos):",
            f"    end = pos + {size}",
            "    if end > len(data):",
            "        raise ValueError('past the end')",
            "    return data[pos:end], end",
        ]
        return name


# For hand-written readers of one schema (producers/result_reader.py).
read_long, read_string = _long, _string

_HELPERS = {
    "_long": _long,
    "_int": _int,
    "_string": _string,
    "_bytes": _bytes,
    "_boolean": _boolean,
    "_null": _null,
    "_double": _double,
    "_float": _float,
    "_timestamp_millis": _timestamp_millis,
    "_date": _date,
}


def source_of(parsed: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The generated module's source and its constants, or None if unsupported."""
    generator = _Generator(dict(parsed.get("__named_schemas", {})))
    found = generate(generator, parsed, ["read = {top}"])
    return None if found is None else (found[0], generator.constants)


def compile_reader(parsed: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, int]] | None:
    """`read(data, pos) -> (value, end)`, or None if the schema is not supported."""
    found = source_of(parsed)
    if found is None:
        return None
    source, constants = found
    label = f"<avro reader {parsed.get('name', parsed)}>"
    return compile_module(source, label, {**_HELPERS, **constants})["read"]  # type: ignore[no-any-return]
