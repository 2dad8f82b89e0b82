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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import fastavro

from schemas.fingerprint import crc64_avro, to_wire
from schemas.schema_files import (
    CatalogError,
    SchemaRoot,
    Source,
    expand,
    read_sources,
)
from schemas.validation import ValidationError, Validator, compile_validator

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


RUNTIME_ROOT = SchemaRoot("cqrs", Path(__file__).resolve().parent / "cqrs")


class ContextSchemas(Protocol):
    """What the catalog reads from a registered context: its name and its schema folder."""

    @property
    def name(self) -> str: ...

    @property
    def schema_root(self) -> Path | None: ...


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


def _load_entries(roots: Sequence[SchemaRoot]) -> list[SchemaEntry]:
    index = read_sources(roots)
    return [_build_entry(source, index) for source in index.values()]


def _build_entry(source: Source, index: Mapping[tuple[str, int], Source]) -> SchemaEntry:
    expanded = expand(source, index)
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
