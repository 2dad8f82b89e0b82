"""What a command type looks like: its fields with their Avro types and docs, and an example
JSON body that validates against its schema. Shown by `cqrsctl send <type> --help`."""

from __future__ import annotations

import json
import re
from typing import Any

_EXAMPLE_IN_DOC = re.compile(r"e\.g\. ([A-Za-z0-9_.:-]+?)[).,;]?(?:\s|$)")


def type_label(avro: Any) -> str:
    """A short label of an Avro type: `string`, `long`, `bank.Money`, `null | string`."""
    if isinstance(avro, str):
        return avro
    if isinstance(avro, list):
        return " | ".join(type_label(t) for t in avro)
    kind = avro.get("type")
    if kind in ("record", "enum", "fixed"):
        return str(avro["name"])
    if kind == "array":
        return f"array<{type_label(avro['items'])}>"
    if kind == "map":
        return f"map<{type_label(avro['values'])}>"
    logical = avro.get("logicalType")
    return f"{kind} ({logical})" if logical else str(kind)


def field_rows(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted field name, type, doc) of a record, nested records' fields included."""
    rows = []
    for f in schema.get("fields", ()):
        name = f"{prefix}{f['name']}"
        optional = " (optional)" if "default" in f else ""
        rows.append((name, type_label(f["type"]) + optional, f.get("doc", "")))
        nested = f["type"]
        if isinstance(nested, dict) and nested.get("type") == "record":
            rows.extend(field_rows(nested, f"{name}."))
    return rows


def example_value(avro: Any, doc: str = "", name: str = "") -> Any:
    """A value of the type that validates, taking an `e.g. X` from the doc when it has one."""
    if isinstance(avro, list):  # a union: its first non-null branch
        branches = [t for t in avro if t != "null"]
        return example_value(branches[0], doc, name) if branches else None
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "record":
            return example_record(avro)
        if kind == "enum":
            return avro["symbols"][0]
        if kind == "array":
            return [example_value(avro["items"])]
        if kind == "map":
            return {"key": example_value(avro["values"])}
        if kind == "fixed":
            return "\u0000" * int(avro["size"])
        return example_value(kind, doc, name)
    if avro in ("int", "long"):
        return 1000
    if avro in ("float", "double"):
        return 1.5
    if avro == "boolean":
        return False
    if avro == "null":
        return None
    if avro == "bytes":
        return ""
    found = _EXAMPLE_IN_DOC.search(doc)
    if found and not found.group(1)[0].isdigit():
        return found.group(1)
    return f"{name.replace('_', '-')}-1" if name.endswith("id") else name


def example_record(schema: dict[str, Any]) -> dict[str, Any]:
    """An example body: every field without a default, filled with an example value."""
    return {
        f["name"]: example_value(f["type"], f.get("doc", ""), f["name"])
        for f in schema.get("fields", ())
        if "default" not in f
    }


def describe(command_type: str, cli: str = "cqrsctl") -> str:
    """The fields of a command type and an example `--json` body, as plain text."""
    from schemas.codec import default_codec

    entry = default_codec().catalog.latest(command_type)
    rows = field_rows(entry.schema)
    width = max(len(name) for name, _, _ in rows)
    types = max(len(label) for _, label, _ in rows)
    lines = [f"{command_type} v{entry.version}: {entry.schema.get('doc', '')}".rstrip(), ""]
    lines += [f"  {name:<{width}}  {label:<{types}}  {doc}".rstrip() for name, label, doc in rows]
    example = json.dumps(example_record(entry.schema))
    lines += ["", "example:", f"  {cli} send {command_type} --json '{example}' --wait"]
    return "\n".join(lines)
