"""Avro schemas as JSON Schema, and JSON documents as Avro records.

The gateway takes a command as a plain JSON object shaped like its Avro record (no union
wrappers, unlike Avro's own JSON encoding): `{"account_id": "a1", "amount": {"amount": 5,
"currency": "EUR"}, "transfer_id": null}`. `to_json_schema` describes exactly that shape
(JSON Schema 2020-12, as OpenAPI 3.1 uses), and `from_json` turns a parsed JSON document
into the Python values the catalog's validator and the Avro codec take.

`text_logical=True` describes values as the gateway *returns* them from Postgres: dates
and timestamps as ISO 8601 strings rather than Avro's integers.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from typing import Any

from schemas.validation import FLOAT_MAX, INT_RANGE, LONG_RANGE, PRIMITIVES


class UnsupportedSchema(ValueError):
    """The Avro schema uses something JSON Schema cannot express here (a recursive type)."""


_TEXT_LOGICAL = {
    "timestamp-millis": "date-time",
    "timestamp-micros": "date-time",
    "local-timestamp-millis": "date-time",
    "local-timestamp-micros": "date-time",
    "date": "date",
    "time-millis": "time",
    "time-micros": "time",
}
_TEXT_FORMATS = frozenset(_TEXT_LOGICAL.values())


def to_json_schema(avro: Any, *, text_logical: bool = False) -> dict[str, Any]:
    """The JSON Schema of JSON documents shaped like records of `avro` (a self-contained
    schema: every named type defined before its first reference, as the catalog makes)."""
    return _Converter(text_logical).convert(avro)


class _Converter:
    def __init__(self, text_logical: bool) -> None:
        self.text_logical = text_logical
        self.named: dict[str, dict[str, Any]] = {}
        self.in_progress: set[str] = set()

    def convert(self, node: Any) -> dict[str, Any]:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return self._primitive(node)
            if node in self.in_progress:
                raise UnsupportedSchema(f"{node} refers to itself; recursive types are not mapped")
            if node not in self.named:
                raise UnsupportedSchema(f"{node} is used before it is defined")
            return copy.deepcopy(self.named[node])
        if isinstance(node, list):
            return self._union(node)
        kind = node["type"]
        if kind in ("record", "error"):
            return self._define(node, self._record)
        if kind == "enum":
            return self._define(node, self._enum)
        if kind == "fixed":
            return self._define(node, self._fixed)
        if kind == "array":
            return {"type": "array", "items": self.convert(node["items"])}
        if kind == "map":
            return {"type": "object", "additionalProperties": self.convert(node["values"])}
        logical = node.get("logicalType")
        if self.text_logical and logical in _TEXT_LOGICAL:
            return {"type": "string", "format": _TEXT_LOGICAL[logical]}
        out = self.convert(kind)
        if logical == "uuid" and out.get("type") == "string":
            out["format"] = "uuid"
        elif logical:
            out["description"] = f"Avro logical type {logical}"
        return out

    def _define(self, node: dict[str, Any], build: Any) -> dict[str, Any]:
        name = node["name"]
        self.in_progress.add(name)
        out = build(node)
        self.in_progress.discard(name)
        if node.get("doc"):
            out["description"] = node["doc"]
        self.named[name] = out
        return copy.deepcopy(out)

    def _record(self, node: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in node["fields"]:
            prop = self.convert(field["type"])
            if field.get("doc"):
                served_as_text = self.text_logical and prop.get("format") in _TEXT_FORMATS
                note = " Served as ISO 8601 text." if served_as_text else ""
                prop["description"] = field["doc"] + note
            if "default" in field:
                prop["default"] = field["default"]
            else:
                required.append(field["name"])
            properties[field["name"]] = prop
        out: dict[str, Any] = {
            "type": "object",
            "title": node["name"],
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out

    def _enum(self, node: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "title": node["name"], "enum": list(node["symbols"])}

    def _fixed(self, node: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "string",
            "title": node["name"],
            "contentEncoding": "base64",
            "description": f"{node['size']} bytes, base64",
        }

    def _primitive(self, name: str) -> dict[str, Any]:
        if name == "int":
            return {
                "type": "integer",
                "format": "int32",
                "minimum": INT_RANGE[0],
                "maximum": INT_RANGE[1],
            }
        if name == "long":
            return {
                "type": "integer",
                "format": "int64",
                "minimum": LONG_RANGE[0],
                "maximum": LONG_RANGE[1],
            }
        if name == "float":
            return {
                "type": "number",
                "format": "float",
                "minimum": -FLOAT_MAX,
                "maximum": FLOAT_MAX,
            }
        if name == "double":
            return {"type": "number", "format": "double"}
        if name == "bytes":
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": name}  # null, boolean, string

    def _union(self, branches: list[Any]) -> dict[str, Any]:
        converted = [self.convert(b) for b in branches]
        others = [c for c in converted if c.get("type") != "null"]
        simple = isinstance(others[0].get("type"), str) if len(others) == 1 else False
        if len(converted) == 2 and len(others) == 1 and simple and others[0]["type"] != "object":
            # ["null", X] with X a scalar: one schema whose type list admits null.
            out = dict(others[0])
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
            return out
        return {"anyOf": converted}


# -- JSON document -> Avro record ----------------------------------------------------------


def from_json(avro: Any, value: Any) -> Any:
    """`value` (parsed JSON) with the Avro schema's JSON-specific spellings undone:
    integral numbers written as `1.0` become ints where Avro wants an int or long, and
    base64 strings become bytes. Anything else is left for the validator to judge, so the
    validator, not this function, names what is wrong."""
    return _Decoder(avro).decode(avro, value)


class _Decoder:
    def __init__(self, avro: Any) -> None:
        self.named: dict[str, Any] = {}
        self._index(avro)

    def _index(self, node: Any) -> None:
        """Every named definition, wherever it sits: a value may skip the first use."""
        if isinstance(node, list):
            for branch in node:
                self._index(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                self.named.setdefault(node["name"], node)
            for field in node.get("fields", ()):
                self._index(field["type"])
            for key in ("items", "values"):
                if key in node:
                    self._index(node[key])
            if isinstance(kind, dict | list):
                self._index(kind)

    def decode(self, node: Any, value: Any) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return _primitive_from_json(node, value)
            return self.decode(self.named.get(node, "null"), value)
        if isinstance(node, list):
            return self._union(node, value)
        kind = node["type"]
        if kind in ("record", "error"):
            if not isinstance(value, Mapping):
                return value
            fields = {f["name"]: f["type"] for f in node["fields"]}
            return {k: (self.decode(fields[k], v) if k in fields else v) for k, v in value.items()}
        if kind == "fixed":
            return _bytes_from_json(value)
        if kind == "enum":
            return value
        if kind == "array":
            if not isinstance(value, list):
                return value
            return [self.decode(node["items"], item) for item in value]
        if kind == "map":
            if not isinstance(value, Mapping):
                return value
            return {k: self.decode(node["values"], v) for k, v in value.items()}
        return self.decode(kind, value)

    def _union(self, branches: list[Any], value: Any) -> Any:
        if value is None:
            return None
        for branch in branches:
            if _json_shape_fits(self._resolve(branch), value):
                return self.decode(branch, value)
        return value

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.named.get(node, node)
        return node


def _json_shape_fits(node: Any, value: Any) -> bool:
    kind = node if isinstance(node, str) else node.get("type")
    if isinstance(kind, dict | list):
        return True
    if kind in ("record", "error", "map"):
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, list)
    if kind in ("string", "enum", "bytes", "fixed"):
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long", "float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return kind != "null"


def _primitive_from_json(name: str, value: Any) -> Any:
    if name in ("int", "long") and isinstance(value, float) and value.is_integer():
        return int(value)  # JSON Schema counts 1.0 as an integer; so does the gateway
    if name == "bytes":
        return _bytes_from_json(value)
    return value


def _bytes_from_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value  # the validator reports "expected bytes" at this field's path
