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

from schemas.avro_codegen import CodeGenerator, Unsupported, compile_module, generate

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_MISSING = object()


# Raised for a value (or a schema) the generated code does not write: use fastavro.
_Unsupported = Unsupported


def _long(n: int, out: bytearray) -> None:
    if type(n) is not int or not -(2**63) <= n < 2**63:
        raise _Unsupported
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


# _long's body again rather than a call: ints are on every record's hot path.
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


class _Generator(CodeGenerator):
    """Functions `(value, out)` that append the value's Avro body to `out`, or raise
    `_Unsupported` for a value they do not write."""

    def union(self, null_index: int, other: str) -> str:
        name = self.fresh("union")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if v is None:",
            f"        out.append({2 * null_index})",
            "    else:",
            f"        out.append({2 * (1 - null_index)})",
            f"        {other}(v, out)",
        ]
        return name

    def record(self, name: str, schema: dict[str, Any]) -> None:
        lines = [
            f"def {name}(r, out):",
            "    if type(r) is not dict:",
            "        raise _Unsupported",
            "    get = r.get",
        ]
        self.functions[name] = lines  # before the fields: a recursive type finds it
        for field in schema["fields"]:
            ftype = field["type"]
            write = self.function_for(ftype)
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

    def enum(self, schema: dict[str, Any]) -> str:
        table = self.constant({symbol: i for i, symbol in enumerate(schema["symbols"])})
        name = self.fresh("enum")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not str:",
            "        raise _Unsupported",
            f"    _long({table}[v], out)",
        ]
        return name

    def array(self, items: str) -> str:
        name = self.fresh("array")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not list and type(v) is not tuple:",
            "        raise _Unsupported",
            "    if v:",
            "        _long(len(v), out)",
            "        for item in v:",
            f"            {items}(item, out)",
            "    out.append(0)",
        ]
        return name

    def map(self, values: str) -> str:
        name = self.fresh("map")
        self.functions[name] = [
            f"def {name}(v, out):",
            "    if type(v) is not dict:",
            "        raise _Unsupported",
            "    if v:",
            "        _long(len(v), out)",
            "        for key, item in v.items():",
            "            _string(key, out)",
            f"            {values}(item, out)",
            "    out.append(0)",
        ]
        return name

    def fixed(self, size: int) -> str:
        name = self.fresh("fixed")
        self.functions[name] = [
            f"def {name}(v, out):",
            f"    if type(v) is not bytes or len(v) != {size}:",
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


_HELPERS = {
    "_Unsupported": _Unsupported,
    "_MISSING": _MISSING,
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
_ENCODE = [
    "def encode(record, prefix=_prefix):",
    "    out = bytearray(prefix)",
    "    {top}(record, out)",
    "    return bytes(out)",
]


def source_of(parsed: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The generated module's source and its constants, or None if unsupported."""
    generator = _Generator(dict(parsed.get("__named_schemas", {})))
    found = generate(generator, parsed, _ENCODE)
    return None if found is None else (found[0], generator.constants)


def compile_writer(parsed: dict[str, Any], prefix: bytes = b"") -> Callable[[Any], bytes] | None:
    """`encode(record) -> prefix + Avro body`, or None if the schema is not supported. The
    function raises for any value it does not write (see the module docstring)."""
    found = source_of(parsed)
    if found is None:
        return None
    source, constants = found
    label = f"<avro writer {parsed.get('name', parsed)}>"
    namespace = {**_HELPERS, "_prefix": prefix, **constants}
    return compile_module(source, label, namespace)["encode"]  # type: ignore[no-any-return]
