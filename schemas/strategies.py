"""Hypothesis strategies that generate valid records for any catalog schema.

A test helper: it imports hypothesis (a dev dependency), so runtime code must not import it.
Generated values are ones that survive an Avro round trip unchanged (floats representable
in 32 bits for `float`, no NaN, timestamps truncated to the logical type's precision).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from schemas.catalog import SchemaEntry
from schemas.validation import INT_RANGE, LONG_RANGE

_UTC = st.just(dt.UTC)
_MIN_TIME = dt.datetime(1900, 1, 1)
_MAX_TIME = dt.datetime(2200, 1, 1)


def records(schema: SchemaEntry | Any) -> st.SearchStrategy[Any]:
    """Values valid for `schema` (a catalog entry or an expanded schema with full names)."""
    node = schema.schema if isinstance(schema, SchemaEntry) else schema
    return _Builder().build(node)


def _truncate_to_millis(moment: Any) -> Any:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(*INT_RANGE),
    "long": st.integers(*LONG_RANGE),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=64),
    "string": st.text(max_size=40),
}

_LOGICAL: dict[str, st.SearchStrategy[Any]] = {
    "timestamp-millis": st.datetimes(_MIN_TIME, _MAX_TIME, timezones=_UTC).map(_truncate_to_millis),
    "timestamp-micros": st.datetimes(_MIN_TIME, _MAX_TIME, timezones=_UTC),
    "date": st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1)),
    "time-millis": st.times().map(_truncate_to_millis),
    "time-micros": st.times(),
    "uuid": st.uuids(),
}


class _Builder:
    def __init__(self) -> None:
        self._named: dict[str, st.SearchStrategy[Any]] = {}

    def build(self, node: Any) -> st.SearchStrategy[Any]:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return _PRIMITIVES[node]
            return st.deferred(lambda: self._named[node])
        if isinstance(node, list):
            return st.one_of([self.build(branch) for branch in node])
        kind = node["type"]
        if kind in ("record", "error"):
            name = node["name"]
            self._named[name] = st.deferred(lambda: fields)  # for recursive references
            fields = st.fixed_dictionaries(
                {field["name"]: self.build(field["type"]) for field in node["fields"]}
            )
            self._named[name] = fields
            return fields
        if kind == "enum":
            self._named[node["name"]] = st.sampled_from(node["symbols"])
            return self._named[node["name"]]
        if kind == "fixed":
            size = node["size"]
            self._named[node["name"]] = st.binary(min_size=size, max_size=size)
            return self._named[node["name"]]
        if kind == "array":
            return st.lists(self.build(node["items"]), max_size=4)
        if kind == "map":
            return st.dictionaries(st.text(max_size=10), self.build(node["values"]), max_size=4)
        logical = node.get("logicalType")
        if logical in _LOGICAL:
            return _LOGICAL[logical]
        return self.build(kind)
