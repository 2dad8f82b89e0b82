"""Reading a schema tree: the `.avsc` files of each root, their names, versions, pins and
compatibility levels checked, and their references to other files inlined. schemas/catalog.py
builds its entries from what this returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.validation import NAMED_TYPES, PRIMITIVES

FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")
COMPATIBILITY_LEVELS = frozenset(
    {
        *("BACKWARD", "FORWARD", "FULL"),
        *("BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE"),
        "NONE",
    }
)  # `schemas.compatibility.Level`
# Attributes of ours at the top of a file; Avro ignores them, the inlined copies drop them.
_CATALOG_ATTRIBUTES = ("references", "compatibility")


class CatalogError(Exception):
    """The schema tree is unusable: a bad file name or JSON, an unknown type, a version gap."""


@dataclass(frozen=True, slots=True)
class SchemaRoot:
    """One context's schema folder: every `*.avsc` below it belongs to `context`, whose name
    is also the namespace (or namespace prefix) of its records."""

    context: str
    folder: Path


@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    where: str  # the path relative to the root, for messages
    context: str
    kind: str
    name: str
    version: int
    raw: dict[str, Any]
    pins: dict[str, int]
    compatibility: str | None


def read_sources(roots: Sequence[SchemaRoot]) -> dict[tuple[str, int], Source]:
    """Every schema file of `roots` by (full name, version), in file order; refuses a name
    defined twice and versions with gaps."""
    sources = [
        _read_source(root, path) for root in roots for path in sorted(root.folder.rglob("*.avsc"))
    ]
    index: dict[tuple[str, int], Source] = {}
    for source in sources:
        key = (source.name, source.version)
        if key in index:
            raise CatalogError(
                f"{source.where}: {source.name} v{source.version} is also defined in "
                f"{index[key].where}"
            )
        index[key] = source
    _check_contiguous(index)
    return index


def expand(source: Source, index: Mapping[tuple[str, int], Source]) -> dict[str, Any]:
    """`source`'s schema with every referenced type inlined and every name written in full."""
    return _Expander(index).expand_file(source)


def _read_source(root: SchemaRoot, path: Path) -> Source:
    rel = path.relative_to(root.folder)
    where = f"{root.context}/{rel.as_posix()}"
    match = FILE_NAME.match(path.name)
    if match is None:
        raise CatalogError(f"{where}: file name must be <Name>.v<N>.avsc with N >= 1")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("type") not in NAMED_TYPES:
        raise CatalogError(f"{where}: the top level must be a named type (record, enum, fixed)")
    if not isinstance(raw.get("name"), str):
        raise CatalogError(f"{where}: the top-level type has no name")
    full = _full_name(raw["name"], raw.get("namespace"), "")
    namespace, _, simple = full.rpartition(".")
    if simple != match["name"]:
        raise CatalogError(f"{where}: file name says {match['name']} but the schema is {full}")
    context = root.context
    if namespace != context and not namespace.startswith(context + "."):
        raise CatalogError(
            f"{where}: namespace {namespace!r} must be the context name {context!r} "
            f"(or start with '{context}.')"
        )
    return Source(
        path=path,
        where=where,
        context=context,
        kind="/".join(rel.parts[:-1]),
        name=full,
        version=int(match["version"]),
        raw=raw,
        pins=_read_pins(where, raw.get("references", {})),
        compatibility=_read_level(where, raw.get("compatibility")),
    )


def _read_pins(where: str, pins: Any) -> dict[str, int]:
    valid = isinstance(pins, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in pins.items()
    )
    if not valid:
        raise CatalogError(f'{where}: "references" must map full type names to versions >= 1')
    return dict(pins)


def _read_level(where: str, level: Any) -> str | None:
    if level is None:
        return None
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        allowed = ", ".join(sorted(COMPATIBILITY_LEVELS))
        raise CatalogError(f'{where}: "compatibility" must be one of {allowed}, got {level!r}')
    return level.upper()


def _check_contiguous(index: Mapping[tuple[str, int], Source]) -> None:
    versions: dict[str, list[int]] = {}
    for name, version in index:
        versions.setdefault(name, []).append(version)
    for name, found in versions.items():
        found.sort()
        if found != list(range(1, len(found) + 1)):
            missing = sorted(set(range(1, found[-1] + 1)) - set(found))
            raise CatalogError(
                f"{name}: versions {found} must run from v1 without gaps (missing: "
                + ", ".join(f"v{v}" for v in missing)
                + ")"
            )


def _full_name(name: str, namespace: str | None, enclosing: str) -> str:
    if "." in name:
        return name
    space = enclosing if namespace is None else namespace
    return f"{space}.{name}" if space else name


class _Expander:
    """Inlines referenced named types from other files and writes every name in full, so the
    result parses on its own and its canonical form is that of the schema readers see."""

    def __init__(self, index: Mapping[tuple[str, int], Source]) -> None:
        self._index = index
        self._defined: set[str] = set()

    def expand_file(self, source: Source) -> dict[str, Any]:
        return self._definition(source.raw, "", source)

    def _node(self, node: Any, namespace: str, source: Source) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            full = _full_name(node, None, namespace)
            if full in self._defined:
                return full
            external = self._external(full, source)
            return self._definition(external.raw, "", external)
        if isinstance(node, list):
            return [self._node(branch, namespace, source) for branch in node]
        if not isinstance(node, dict):
            raise CatalogError(f"{source.where}: not a schema: {node!r}")
        kind = node.get("type")
        if kind in NAMED_TYPES:
            return self._definition(node, namespace, source)
        if kind == "array":
            return {**node, "items": self._node(node.get("items"), namespace, source)}
        if kind == "map":
            return {**node, "values": self._node(node.get("values"), namespace, source)}
        if isinstance(kind, str) and kind in PRIMITIVES:
            return node  # possibly with a logicalType
        # {"type": <a schema>}: a wrapped reference or nested definition
        return self._node(kind, namespace, source)

    def _definition(self, node: dict[str, Any], namespace: str, source: Source) -> dict[str, Any]:
        if not isinstance(node.get("name"), str):
            raise CatalogError(f"{source.where}: a {node.get('type')} needs a name")
        full = _full_name(node["name"], node.get("namespace"), namespace)
        if full in self._defined:
            raise CatalogError(f"{source.where}: {full} is defined twice")
        self._defined.add(full)
        own_namespace = full.rpartition(".")[0]
        skipped = ("namespace", *_CATALOG_ATTRIBUTES)
        out = {key: value for key, value in node.items() if key not in skipped}
        out["name"] = full
        if node["type"] in ("record", "error"):
            fields = node.get("fields")
            if not isinstance(fields, list):
                raise CatalogError(f"{source.where}: record {full} needs a list of fields")
            out["fields"] = [
                {**f, "type": self._node(f.get("type"), own_namespace, source)} for f in fields
            ]
        return out

    def _external(self, full: str, source: Source) -> Source:
        version = source.pins.get(full, 1)
        found = self._index.get((full, version))
        if found is not None:
            return found
        if any(name == full for name, _ in self._index):
            raise CatalogError(f"{source.where}: refers to {full} v{version}, which does not exist")
        raise CatalogError(
            f"{source.where}: unknown type {full!r}: not a primitive, not defined earlier in "
            "the file, and no schema file defines it"
        )
