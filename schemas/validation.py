"""Strict record validation against a self-contained Avro schema, naming the failing field.

fastavro's writer is lenient (it writes `True` into a long, ignores unknown keys) and its
errors do not always say which field failed. The command client must reject a bad command
before it leaves the process with a message that names the field, so each schema is
compiled once into a tree of small check functions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})

INT_RANGE = (-(1 << 31), (1 << 31) - 1)
LONG_RANGE = (-(1 << 63), (1 << 63) - 1)
FLOAT_MAX = 3.4028234663852886e38

Check = Callable[[Any, str], None]
Validator = Callable[[Any], None]


class ValidationError(ValueError):
    """A record does not conform to its schema. `path` is the dotted field path
    (`amount.currency`, `events[2].offset`), empty for the record itself."""

    def __init__(self, schema: str, path: str, reason: str) -> None:
        self.schema = schema
        self.path = path
        self.reason = reason
        where = f"field '{path}'" if path else "record"
        super().__init__(f"{schema}: {where}: {reason}")


class _Invalid(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def describe(value: Any) -> str:
    """A short description of a value for error messages: its type and a clipped repr."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def compile_validator(schema: Any, name: str) -> Validator:
    """Compile an expanded schema (full names, every named type defined before use) into a
    function that raises `ValidationError` naming the first failing field."""
    check = _compile(schema, {})

    def validate(record: Any) -> None:
        try:
            check(record, "")
        except _Invalid as exc:
            raise ValidationError(name, exc.path, exc.reason) from None

    return validate


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ranged_int(kind: str, low: int, high: int) -> Check:
    def check(value: Any, path: str) -> None:
        if not _is_int(value):
            raise _Invalid(path, f"expected {kind}, got {describe(value)}")
        if not low <= value <= high:
            raise _Invalid(path, f"{kind} out of range [{low}, {high}]: {value}")

    return check


def _check_null(value: Any, path: str) -> None:
    if value is not None:
        raise _Invalid(path, f"expected null, got {describe(value)}")


def _check_boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _Invalid(path, f"expected boolean, got {describe(value)}")


def _floating(kind: str, limit: float) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(path, f"expected {kind}, got {describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise _Invalid(path, f"{kind} out of range: {value}") from None
        if math.isfinite(number) and abs(number) > limit:
            raise _Invalid(path, f"{kind} out of range: {value}")

    return check


def _check_string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected string, got {describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(path, "string is not encodable as UTF-8 (lone surrogate)") from None


def _check_bytes(value: Any, path: str) -> None:
    if not isinstance(value, bytes | bytearray):
        raise _Invalid(path, f"expected bytes, got {describe(value)}")


_PRIMITIVE_CHECKS: dict[str, Check] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _ranged_int("int", *INT_RANGE),
    "long": _ranged_int("long", *LONG_RANGE),
    "float": _floating("float", FLOAT_MAX),
    "double": _floating("double", math.inf),
    "bytes": _check_bytes,
    "string": _check_string,
}

# Logical types: fastavro also accepts these Python values for the underlying type.
_LOGICAL_ALTERNATIVES: dict[str, tuple[type, ...]] = {
    "timestamp-millis": (dt.datetime,),
    "timestamp-micros": (dt.datetime,),
    "local-timestamp-millis": (dt.datetime,),
    "local-timestamp-micros": (dt.datetime,),
    "date": (dt.date,),
    "time-millis": (dt.time,),
    "time-micros": (dt.time,),
    "uuid": (uuid.UUID,),
    "decimal": (decimal.Decimal,),
}


def _with_logical(base: Check, logical: str) -> Check:
    alternatives = _LOGICAL_ALTERNATIVES.get(logical)
    if alternatives is None:
        return base

    def check(value: Any, path: str) -> None:
        if isinstance(value, alternatives):
            return
        try:
            base(value, path)
        except _Invalid as exc:
            accepted = " or ".join(t.__name__ for t in alternatives)
            raise _Invalid(path, f"{exc.reason} (or {accepted} for {logical})") from None

    return check


def _compile(node: Any, named: dict[str, Check]) -> Check:
    if isinstance(node, str):
        if node in PRIMITIVES:
            return _PRIMITIVE_CHECKS[node]
        # A reference to a named type defined earlier; looked up at call time so that
        # recursive types work.
        return lambda value, path: named[node](value, path)
    if isinstance(node, list):
        return _compile_union(node, named)
    kind = node["type"]
    if kind in ("record", "error"):
        return _compile_record(node, named)
    if kind == "enum":
        return _register(named, node["name"], _compile_enum(node))
    if kind == "fixed":
        return _register(named, node["name"], _compile_fixed(node))
    if kind == "array":
        return _compile_array(node, named)
    if kind == "map":
        return _compile_map(node, named)
    base = _compile(kind, named)
    logical = node.get("logicalType")
    return _with_logical(base, logical) if logical else base


def _register(named: dict[str, Check], name: str, check: Check) -> Check:
    named[name] = check
    return check


def _compile_record(node: dict[str, Any], named: dict[str, Check]) -> Check:
    record_name = node["name"]
    fields: list[tuple[str, Check, bool]] = []
    named[record_name] = lambda value, path: check(value, path)  # recursion before compile
    for field in node["fields"]:
        fields.append((field["name"], _compile(field["type"], named), "default" in field))
    known = frozenset(name for name, _, _ in fields)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise _Invalid(
                path, f"expected a {record_name} record (a mapping), got {describe(value)}"
            )
        for name, field_check, has_default in fields:
            if name in value:
                field_check(value[name], _join(path, name))
            elif not has_default:
                raise _Invalid(_join(path, name), "missing (the field has no default)")
        if len(value) > len(fields) or not known.issuperset(value):
            extra = sorted(str(key) for key in value if key not in known)
            raise _Invalid(_join(path, extra[0]), f"unknown field: not in {record_name}")

    named[record_name] = check
    return check


def _compile_enum(node: dict[str, Any]) -> Check:
    symbols = frozenset(node["symbols"])
    listed = ", ".join(node["symbols"])

    def check(value: Any, path: str) -> None:
        if not isinstance(value, str) or value not in symbols:
            raise _Invalid(
                path, f"expected one of {node['name']} [{listed}], got {describe(value)}"
            )

    return check


def _compile_fixed(node: dict[str, Any]) -> Check:
    size = node["size"]

    def check(value: Any, path: str) -> None:
        if not isinstance(value, bytes | bytearray) or len(value) != size:
            raise _Invalid(path, f"expected {size} bytes ({node['name']}), got {describe(value)}")

    return check


def _compile_array(node: dict[str, Any], named: dict[str, Check]) -> Check:
    item_check = _compile(node["items"], named)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, list | tuple):
            raise _Invalid(path, f"expected an array (list), got {describe(value)}")
        for index, item in enumerate(value):
            item_check(item, f"{path}[{index}]")

    return check


def _compile_map(node: dict[str, Any], named: dict[str, Check]) -> Check:
    value_check = _compile(node["values"], named)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected a map (dict), got {describe(value)}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(path, f"map keys must be strings, got {describe(key)}")
            value_check(item, f"{path}[{key!r}]")

    return check


def _compile_union(branches: list[Any], named: dict[str, Check]) -> Check:
    checks = [_compile(branch, named) for branch in branches]
    labels = ", ".join(_label(branch) for branch in branches)

    def check(value: Any, path: str) -> None:
        failures: list[_Invalid] = []
        if not checks:
            raise _Invalid(path, "the union is empty: no value is valid")
        for branch_check in checks:
            try:
                branch_check(value, path)
                return
            except _Invalid as exc:
                failures.append(exc)
        # A failure below this level (inside a record branch) is the most useful report.
        deepest = max(failures, key=lambda exc: len(exc.path))
        if deepest.path != path:
            raise deepest
        raise _Invalid(path, f"{describe(value)} matches no branch of the union [{labels}]")

    return check


def _label(branch: Any) -> str:
    if isinstance(branch, str):
        return branch
    if isinstance(branch, dict):
        return str(branch.get("name") or branch.get("type"))
    return "union"
