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

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()


class _Unsupported(Exception):
    """A schema the generator does not handle."""


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


_PRIMITIVE_READERS = {
    "null": "_null",
    "boolean": "_boolean",
    "int": "_int",
    "long": "_long",
    "float": "_float",
    "double": "_double",
    "bytes": "_bytes",
    "string": "_string",
}
_LOGICAL_READERS = {("long", "timestamp-millis"): "_timestamp_millis", ("int", "date"): "_date"}


class _Generator:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.functions: dict[str, list[str]] = {}
        self.names: dict[str, str] = {}
        self.constants: dict[str, Any] = {}
        self.count = 0

    def fresh(self, kind: str) -> str:
        self.count += 1
        return f"_{kind}{self.count}"

    def reader(self, schema: Any) -> str:
        """The name of a function `(data, pos) -> (value, pos)` that reads `schema`."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_READERS:
                return _PRIMITIVE_READERS[schema]
            if schema not in self.named:
                raise _Unsupported(f"unknown type {schema}")
            return self.reader(self.named[schema])
        if isinstance(schema, list):
            return self.union(schema)
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            found = _LOGICAL_READERS.get((kind, logical))
            if found is None:
                raise _Unsupported(f"logical type {logical} on {kind}")
            return found
        if kind in _PRIMITIVE_READERS:
            return _PRIMITIVE_READERS[kind]
        if kind == "record":
            return self.record(schema)
        if kind == "enum":
            return self.enum(schema)
        if kind == "array":
            return self.block("array", schema["items"])
        if kind == "map":
            return self.block("map", schema["values"])
        if kind == "fixed":
            return self.fixed(schema)
        raise _Unsupported(f"type {kind}")

    def union(self, branches: list[Any]) -> str:
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported("a union other than null and one type")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        if other == "null" or isinstance(other, list):
            raise _Unsupported("a union other than null and one type")
        read = self.reader(other)
        name = self.fresh("union")
        self.functions[name] = [
            f"def {name}(data, pos):",
            "    index = data[pos]",
            f"    if index == {2 * null_index}:",
            "        return None, pos + 1",
            f"    if index != {2 * (1 - null_index)}:",
            "        raise ValueError('union index out of range')",
            f"    return {read}(data, pos + 1)",
        ]
        return name

    def record(self, schema: dict[str, Any]) -> str:
        full = schema["name"]
        if full in self.names:
            return self.names[full]
        name = self.fresh("record")
        self.names[full] = name
        lines = [f"def {name}(data, pos):"]
        self.functions[name] = lines  # before the fields: a recursive type finds it
        values = []
        for index, field in enumerate(schema["fields"]):
            read = self.reader(field["type"])
            lines.append(f"    v{index}, pos = {read}(data, pos)")
            values.append(f"{field['name']!r}: v{index}")
        lines.append(f"    return {{{', '.join(values)}}}, pos")
        return name

    def enum(self, schema: dict[str, Any]) -> str:
        symbols = self.fresh("c")
        self.constants[symbols] = tuple(schema["symbols"])
        name = self.fresh("enum")
        self.functions[name] = [
            f"def {name}(data, pos):",
            "    index, pos = _long(data, pos)",
            "    if index < 0:",
            "        raise ValueError('enum index out of range')",
            f"    return {symbols}[index], pos",
        ]
        return name

    def block(self, kind: str, items: Any) -> str:
        read = self.reader(items)
        name = self.fresh(kind)
        if kind == "array":
            start, add = (
                "[]",
                f"            item, pos = {read}(data, pos)\n            append(item)",
            )
            setup = "    append = value.append"
        else:
            start = "{}"
            add = (
                "            key, pos = _string(data, pos)\n"
                f"            value[key], pos = {read}(data, pos)"
            )
            setup = "    pass"
        self.functions[name] = [
            f"def {name}(data, pos):",
            f"    value = {start}",
            setup,
            "    count, pos = _long(data, pos)",
            "    while count:",
            "        if count < 0:",
            "            count = -count",
            "            _, pos = _long(data, pos)",
            "        for _ in range(count):",
            add,
            "        count, pos = _long(data, pos)",
            "    return value, pos",
        ]
        return name

    def fixed(self, schema: dict[str, Any]) -> str:
        size = int(schema["size"])
        name = self.fresh("fixed")
        self.functions[name] = [
            f"def {name}(data, pos):",
            f"    end = pos + {size}",
            "    if end > len(data):",
            "        raise ValueError('past the end')",
            "    return data[pos:end], end",
        ]
        return name


def source_of(parsed: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The generated module's source and its constants, or None if unsupported."""
    generator = _Generator(dict(parsed.get("__named_schemas", {})))
    try:
        top = generator.reader(parsed)
    except _Unsupported:
        return None
    lines: list[str] = []
    for function in generator.functions.values():
        lines.extend(function)
        lines.append("")
    lines += [f"read = {top}"]
    return "\n".join(lines) + "\n", generator.constants


def compile_reader(parsed: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, int]] | None:
    """`read(data, pos) -> (value, end)`, or None if the schema is not supported."""
    found = source_of(parsed)
    if found is None:
        return None
    source, constants = found
    namespace: dict[str, Any] = {
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
        **constants,
    }
    exec(compile(source, f"<avro reader {parsed.get('name', parsed)}>", "exec"), namespace)
    return namespace["read"]  # type: ignore[no-any-return]
