"""The schema catalog: every `.avsc` file of every root, parsed once, fingerprinted, looked up.

A root is one context's schema folder (`SchemaRoot`): `<root>/<kind>/<Name>.v<N>.avsc` (the
kind folder is optional), one named type per file, every version kept. The default catalog
reads the runtime's own records (`schemas/cqrs/`) plus the schema folder of every bounded
context installed under the `kafka_cqrs.contexts` entry point, so a new context needs no
change here. `Catalog.load(folder)` reads a folder whose subfolders are contexts
(`<folder>/<context>/<kind>/...`), e.g. a copy of the schemas under test.

A file may refer to a named type defined in another file by its full name (`"bank.Money"`).
Such references resolve to version 1 of that type unless the file pins another version with
a top-level `"references": {"bank.Money": 2}`; so publishing a new version of a shared type
never changes the fingerprint of a schema already in use. The catalog inlines the referenced
definitions, which makes every entry a self-contained schema with a stable fingerprint.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import fastavro

from schemas.fingerprint import crc64_avro, to_wire
from schemas.validation import (
    NAMED_TYPES,
    PRIMITIVES,
    ValidationError,
    Validator,
    compile_validator,
)

__all__ = [
    "RUNTIME_ROOT",
    "Catalog",
    "CatalogError",
    "SchemaEntry",
    "SchemaRoot",
    "UnknownSchema",
    "ValidationError",
    "default_catalog",
    "default_roots",
]

# The entry-point group bounded contexts register under (the runtime's registry reads it too).
CONTEXTS_ENTRY_POINT = "kafka_cqrs.contexts"
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


@dataclass(frozen=True, slots=True)
class SchemaRoot:
    """One context's schema folder: every `*.avsc` below it belongs to `context`, whose name
    is also the namespace (or namespace prefix) of its records."""

    context: str
    folder: Path


RUNTIME_ROOT = SchemaRoot("cqrs", Path(__file__).resolve().parent / "cqrs")


class ContextSchemas(Protocol):
    """What the catalog reads from a registered context: its name and its schema folder."""

    @property
    def name(self) -> str: ...

    @property
    def schema_root(self) -> Path | None: ...


class CatalogError(Exception):
    """The schema tree is unusable: a bad file name or JSON, an unknown type, a version gap."""


class UnknownSchema(CatalogError, LookupError):
    """A look-up by name, version or fingerprint found nothing."""


@dataclass(frozen=True, eq=False, slots=True)
class SchemaEntry:
    """One version of one named schema. `schema` is self-contained (shared types inlined,
    full names) and `parsed` is its fastavro form; treat both as read-only."""

    name: str
    version: int
    context: str
    kind: str
    path: Path
    relative: str  # `<context>/<kind>/<file>`, the file's label in messages and listings
    schema: dict[str, Any] = field(repr=False)
    parsed: dict[str, Any] = field(repr=False)
    canonical_form: str = field(repr=False)
    fingerprint: int
    compatibility: str | None = None
    validator: Validator | None = field(default=None, repr=False)
    fingerprint_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint_bytes", to_wire(self.fingerprint))

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint's 8 bytes in wire order (little-endian), as hex."""
        return self.fingerprint_bytes.hex()

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def validate(self, record: Any) -> None:
        """Raise `ValidationError` naming the first field of `record` that breaks the schema."""
        if self.validator is not None:
            self.validator(record)


class Catalog:
    """All schema entries, with look-ups by name (latest version), name + version, fingerprint."""

    def __init__(self, entries: list[SchemaEntry], roots: Sequence[SchemaRoot] = ()) -> None:
        self.roots = tuple(roots)
        self._entries = tuple(sorted(entries, key=lambda e: (e.name, e.version)))
        versions: dict[str, list[SchemaEntry]] = {}
        for entry in self._entries:
            versions.setdefault(entry.name, []).append(entry)
        self._versions = {name: tuple(found) for name, found in versions.items()}
        self._latest = {name: found[-1] for name, found in self._versions.items()}
        by_fp: dict[bytes, SchemaEntry] = {}
        for entry in self._entries:
            # Versions that differ only in docs or defaults share a fingerprint: the bytes
            # are the same, so the latest of them describes the message best.
            by_fp[entry.fingerprint_bytes] = entry
        self.fingerprints: Mapping[bytes, SchemaEntry] = MappingProxyType(by_fp)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> Catalog:
        """Load every `*.avsc` under `folder`, whose subfolders are contexts (default: the
        runtime's records and every installed context's, as `default_roots()` finds them)."""
        if folder is None:
            return cls.from_roots(default_roots())
        base = Path(folder)
        if not base.is_dir():
            raise CatalogError(f"schema folder {base} does not exist")
        loose = sorted(p.name for p in base.glob("*.avsc"))
        if loose:
            raise CatalogError(
                f"{loose[0]}: a schema file must live in a context folder <context>/..."
            )
        return cls.from_roots(
            SchemaRoot(sub.name, sub) for sub in sorted(base.iterdir()) if sub.is_dir()
        )

    @classmethod
    def from_roots(cls, roots: Iterable[SchemaRoot]) -> Catalog:
        """Load every `*.avsc` under each root; two roots may not share a context name."""
        found = tuple(roots)
        seen: dict[str, Path] = {}
        for root in found:
            if not root.folder.is_dir():
                raise CatalogError(
                    f"schema folder {root.folder} of context {root.context!r} does not exist"
                )
            if root.context in seen:
                raise CatalogError(
                    f"context {root.context!r} has two schema folders: {seen[root.context]} "
                    f"and {root.folder}"
                )
            seen[root.context] = root.folder
        return cls(_load_entries(found), found)

    def __iter__(self) -> Iterator[SchemaEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._latest

    @property
    def entries(self) -> tuple[SchemaEntry, ...]:
        return self._entries

    def names(self) -> tuple[str, ...]:
        return tuple(self._versions)

    def contexts(self) -> tuple[str, ...]:
        return tuple(sorted({entry.context for entry in self._entries}))

    def in_context(self, context: str, kind: str | None = None) -> tuple[SchemaEntry, ...]:
        return tuple(
            e for e in self._entries if e.context == context and (kind is None or e.kind == kind)
        )

    def versions(self, name: str) -> tuple[SchemaEntry, ...]:
        found = self._versions.get(name)
        if found is None:
            raise UnknownSchema(self._unknown_name_message(name))
        return found

    def latest(self, name: str) -> SchemaEntry:
        entry = self._latest.get(name)
        if entry is None:
            raise UnknownSchema(self._unknown_name_message(name))
        return entry

    def get(self, name: str, version: int | None = None) -> SchemaEntry:
        if version is None:
            return self.latest(name)
        for entry in self.versions(name):
            if entry.version == version:
                return entry
        known = ", ".join(f"v{e.version}" for e in self.versions(name))
        raise UnknownSchema(f"schema {name} has no version {version} (known: {known})")

    def by_fingerprint(self, fingerprint: int | bytes) -> SchemaEntry:
        key = fingerprint if isinstance(fingerprint, bytes) else to_wire(fingerprint)
        entry = self.fingerprints.get(key)
        if entry is None:
            raise UnknownSchema(f"no schema has fingerprint {key.hex()} (wire order)")
        return entry

    def validate(self, schema: str | SchemaEntry, record: Any, version: int | None = None) -> None:
        """Raise `ValidationError` (naming the field path) unless `record` fits the schema
        (by default the latest version of the name)."""
        entry = schema if isinstance(schema, SchemaEntry) else self.get(schema, version)
        entry.validate(record)

    def _unknown_name_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._latest, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown schema {name!r}{hint}"


def default_roots() -> tuple[SchemaRoot, ...]:
    """The runtime's own records, then the schema folder of every installed bounded context
    (`kafka_cqrs.contexts` entry points; a context without schemas adds nothing)."""
    roots = [RUNTIME_ROOT]
    for point in sorted(entry_points(group=CONTEXTS_ENTRY_POINT), key=lambda p: p.name):
        context: ContextSchemas = point.load()
        if context.schema_root is not None:
            roots.append(SchemaRoot(context.name, Path(context.schema_root)))
    return tuple(roots)


@functools.cache
def default_catalog() -> Catalog:
    """The catalog of the runtime's and the installed contexts' schemas, loaded once."""
    return Catalog.load()


# -- loading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    where: str  # the path relative to the root, for messages
    context: str
    kind: str
    name: str
    version: int
    raw: dict[str, Any]
    pins: dict[str, int]
    compatibility: str | None


def _load_entries(roots: Sequence[SchemaRoot]) -> list[SchemaEntry]:
    sources = [
        _read_source(root, path) for root in roots for path in sorted(root.folder.rglob("*.avsc"))
    ]
    index: dict[tuple[str, int], _Source] = {}
    for source in sources:
        key = (source.name, source.version)
        if key in index:
            raise CatalogError(
                f"{source.where}: {source.name} v{source.version} is also defined in "
                f"{index[key].where}"
            )
        index[key] = source
    _check_contiguous(index)
    return [_build_entry(source, index) for source in sources]


def _read_source(root: SchemaRoot, path: Path) -> _Source:
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
    return _Source(
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


def _check_contiguous(index: Mapping[tuple[str, int], _Source]) -> None:
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


def _build_entry(source: _Source, index: Mapping[tuple[str, int], _Source]) -> SchemaEntry:
    expanded = _Expander(index).expand_file(source)
    try:
        # A fresh named-schema table per entry: v1 and v2 of a type must not collide.
        parsed = fastavro.parse_schema(expanded, named_schemas={})
        canonical = fastavro.schema.to_parsing_canonical_form(expanded)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise CatalogError(f"{source.where}: invalid Avro schema: {exc}") from exc
    return SchemaEntry(
        name=source.name,
        version=source.version,
        context=source.context,
        kind=source.kind,
        path=source.path,
        relative=source.where,
        schema=expanded,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=crc64_avro(canonical.encode("utf-8")),
        compatibility=source.compatibility,
        validator=compile_validator(expanded, source.name),
    )


def _full_name(name: str, namespace: str | None, enclosing: str) -> str:
    if "." in name:
        return name
    space = enclosing if namespace is None else namespace
    return f"{space}.{name}" if space else name


class _Expander:
    """Inlines referenced named types from other files and writes every name in full, so the
    result parses on its own and its canonical form is that of the schema readers see."""

    def __init__(self, index: Mapping[tuple[str, int], _Source]) -> None:
        self._index = index
        self._defined: set[str] = set()

    def expand_file(self, source: _Source) -> dict[str, Any]:
        return self._definition(source.raw, "", source)

    def _node(self, node: Any, namespace: str, source: _Source) -> Any:
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

    def _definition(self, node: dict[str, Any], namespace: str, source: _Source) -> dict[str, Any]:
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

    def _external(self, full: str, source: _Source) -> _Source:
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
