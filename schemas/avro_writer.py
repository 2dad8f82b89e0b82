"""Generated Avro writers: Python source made from a parsed schema and compiled once, writing
the same bytes as fastavro's `schemaless_writer` several times faster for the small records
of the hot paths (no per-call schema walk, no writer object, no stream).

`compile_writer(parsed, prefix)` returns `encode(record) -> bytes` (the `prefix`, then the
Avro body), or None when the schema uses a construct the generator does not handle (unions
other than null plus one type, logical types other than timestamp-millis and date, ...):
the caller then uses fastavro. The generated code accepts only the exact Python types it
knows (`str`, `int` within range, `bool`, `float`, `bytes`, `dict`, `list`/`tuple`,
`None`, aware `datetime`, `date`) and raises `_Unsupported` (or any error) for anything
else, including values fastavro may still accept or must reject: the caller then writes the
record with fastavro, which gives fastavro's bytes or fastavro's error. So the output is
fastavro's for every record, only faster for the common ones.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_MISSING = object()


class _Unsupported(Exception):
    """A value (or a schema) the generated code does not write: use fastavro."""


def _long(n: int, out: bytearray) -> None:
    if type(n) is not int or not -(2**63) <= n < 2**63:
        raise _Unsupported
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _int(n: int, out: bytearray) -> None:
    if type(n) is not int or not -(2**31) <= n < 2**31:
        raise _Unsupported
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _string(s: str, out: bytearray) -> None:
    if type(s) is not str:
        raise _Unsupported
    data = s.encode()
    _long(len(data), out)
    out += data


def _bytes(b: bytes, out: bytearray) -> None:
    if type(b) is not bytes:
        raise _Unsupported
    _long(len(b), out)
    out += b


def _boolean(v: bool, out: bytearray) -> None:
    if v is True:
        out.append(1)
    elif v is False:
        out.append(0)
    else:
        raise _Unsupported


def _null(v: None, out: bytearray) -> None:
    if v is not None:
        raise _Unsupported


_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


def _double(v: float, out: bytearray) -> None:
    if type(v) is not float:
        raise _Unsupported
    out += _pack_double(v)


def _float(v: float, out: bytearray) -> None:
    if type(v) is not float:
        raise _Unsupported
    out += _pack_float(v)


def _timestamp_millis(v: Any, out: bytearray) -> None:
    if type(v) is dt.datetime and v.tzinfo is not None:
        delta = v - _EPOCH
        _long((delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000, out)
    else:
        _long(v, out)


def _date(v: Any, out: bytearray) -> None:
    if type(v) is dt.date:
        _int(v.toordinal() - _DAYS_SHIFT, out)
    else:
        _int(v, out)


_PRIMITIVE_WRITERS = {
    "null": "_null",
    "boolean": "_boolean",
    "int": "_int",
    "long": "_long",
    "float": "_float",
    "double": "_double",
    "bytes": "_bytes",
    "string": "_string",
}
_LOGICAL_WRITERS = {("long", "timestamp-millis"): "_timestamp_millis", ("int", "date"): "_date"}


class _Generator:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.functions: dict[str, list[str]] = {}  # record name -> its function's lines
        self.names: dict[str, str] = {}  # record name -> function name
        self.constants: dict[str, Any] = {}
        self.count = 0

    def fresh(self, kind: str) -> str:
        self.count += 1
        return f"_{kind}{self.count}"

    def constant(self, value: Any) -> str:
        name = self.fresh("c")
        self.constants[name] = value
        return name

    def writer(self, schema: Any) -> str:
        """The name of a function `(value, out)` that writes `schema`."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_WRITERS:
                return _PRIMITIVE_WRITERS[schema]
            if schema not in self.named:
                raise _Unsupported(f"unknown type {schema}")
            return self.writer(self.named[schema])
        if isinstance(schema, list):
            return self.union(schema)
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            found = _LOGICAL_WRITERS.get((kind, logical))
            if found is None:
                raise _Unsupported(f"logical type {logical} on {kind}")
            return found
        if kind in _PRIMITIVE_WRITERS:
            return _PRIMITIVE_WRITERS[kind]
        if kind == "record":
            return self.record(schema)
        if kind == "enum":
            return self.enum(schema)
        if kind == "array":
            return self.array(schema)
        if kind == "map":
            return self.map(schema)
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
        write = self.writer(other)
        name = self.fresh("union")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if v is None:",
            f"        out.append({2 * null_index})",
            "    else:",
            f"        out.append({2 * (1 - null_index)})",
            f"        {write}(v, out)",
        ]
        return name

    def record(self, schema: dict[str, Any]) -> str:
        full = schema["name"]
        if full in self.names:
            return self.names[full]
        name = self.fresh("record")
        self.names[full] = name
        lines = [
            f"def {name}(r, out):",
            "    if type(r) is not dict:",
            "        raise _Unsupported",
            "    get = r.get",
        ]
        self.functions[name] = lines  # before the fields: a recursive type finds it
        for field in schema["fields"]:
            ftype = field["type"]
            write = self.writer(ftype)
            key = repr(field["name"])
            lines.append(f"    v = get({key}, _MISSING)")
            lines.append("    if v is _MISSING:")
            if "default" in field and not _bytes_like(ftype, self.named):
                lines.append(f"        v = {self.constant(field['default'])}")
            elif isinstance(ftype, list) and "null" in ftype:
                lines.append("        v = None")
            else:
                lines.append("        raise _Unsupported")
            lines.append(f"    {write}(v, out)")
        return name

    def enum(self, schema: dict[str, Any]) -> str:
        indexes = {symbol: index for index, symbol in enumerate(schema["symbols"])}
        table = self.constant(indexes)
        name = self.fresh("enum")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not str:",
            "        raise _Unsupported",
            f"    _long({table}[v], out)",
        ]
        return name

    def array(self, schema: dict[str, Any]) -> str:
        write = self.writer(schema["items"])
        name = self.fresh("array")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not list and type(v) is not tuple:",
            "        raise _Unsupported",
            "    if v:",
            "        _long(len(v), out)",
            "        for item in v:",
            f"            {write}(item, out)",
            "    out.append(0)",
        ]
        return name

    def map(self, schema: dict[str, Any]) -> str:
        write = self.writer(schema["values"])
        name = self.fresh("map")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not dict:",
            "        raise _Unsupported",
            "    if v:",
            "        _long(len(v), out)",
            "        for key, item in v.items():",
            "            _string(key, out)",
            f"            {write}(item, out)",
            "    out.append(0)",
        ]
        return name

    def fixed(self, schema: dict[str, Any]) -> str:
        name = self.fresh("fixed")
        self.functions[name] = [
            f"def {name}(v, out):",
            f"    if type(v) is not bytes or len(v) != {int(schema['size'])}:",
            "        raise _Unsupported",
            "    out += v",
        ]
        return name


def _bytes_like(schema: Any, named: dict[str, Any]) -> bool:
    """Whether a default would be JSON text for bytes (fastavro's own business)."""
    if isinstance(schema, str):
        if schema in ("bytes",):
            return True
        target = named.get(schema)
        return isinstance(target, dict) and target.get("type") == "fixed"
    if isinstance(schema, list):
        return bool(schema) and _bytes_like(schema[0], named)
    return schema.get("type") in ("bytes", "fixed")


def source_of(parsed: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The generated module's source and its constants, or None if unsupported."""
    generator = _Generator(dict(parsed.get("__named_schemas", {})))
    try:
        top = generator.writer(parsed)
    except _Unsupported:
        return None
    lines: list[str] = []
    for function in generator.functions.values():
        lines.extend(function)
        lines.append("")
    lines += [
        "def encode(record, prefix=_prefix):",
        "    out = bytearray(prefix)",
        f"    {top}(record, out)",
        "    return bytes(out)",
    ]
    return "\n".join(lines) + "\n", generator.constants


def compile_writer(parsed: dict[str, Any], prefix: bytes = b"") -> Callable[[Any], bytes] | None:
    """`encode(record) -> prefix + Avro body`, or None if the schema is not supported. The
    function raises for any value it does not write (see the module docstring)."""
    found = source_of(parsed)
    if found is None:
        return None
    source, constants = found
    namespace: dict[str, Any] = {
        "_Unsupported": _Unsupported,
        "_MISSING": _MISSING,
        "_prefix": prefix,
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
    exec(compile(source, f"<avro writer {parsed.get('name', parsed)}>", "exec"), namespace)
    return namespace["encode"]  # type: ignore[no-any-return]
