"""Schema compatibility by Avro's schema-resolution rules, and the catalog-wide check.

Spec: https://avro.apache.org/docs/1.12.0/specification/#schema-resolution.
A reader schema can read data written with a writer schema when resolution cannot fail:

* BACKWARD: the new version reads data written with the old one (new reader, old writer).
* FORWARD: the old version reads data written with the new one (old reader, new writer).
* FULL: both.

Each has a `_TRANSITIVE` form, as in the Confluent Schema Registry: the plain form checks a
new version against the one before it, the transitive form against every earlier version.
The default level is FULL_TRANSITIVE. The events topic is kept forever and is read by
services that upgrade at different times: a projection decodes every old event straight
into the newest schema (backward, from every version, not only the previous one), and an
old projection must keep working while the command processor already writes the new
version (forward). Confluent's default, BACKWARD, assumes every consumer upgrades before
producers, which an event store cannot promise.

A schema file may set the level for the step that introduces it with a top-level
`"compatibility"` (any level above, or NONE). A version that declares NONE is a boundary:
the versions before it are read through an upcaster, not by resolution, so the transitive
checks of later versions reach back only as far as that version.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from schemas.catalog import Catalog, SchemaEntry
from schemas.validation import NAMED_TYPES, PRIMITIVES


class Level(enum.StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def backward(self) -> bool:
        """New versions must read data written with old ones."""
        return self.name.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Old versions must read data written with new ones."""
        return self.name.startswith(("FORWARD", "FULL"))

    @property
    def transitive(self) -> bool:
        """Checked against every earlier version, not only the previous one."""
        return self.name.endswith("_TRANSITIVE")


DEFAULT_LEVEL = Level.FULL_TRANSITIVE

# Writer type -> reader types it may be promoted to.
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One way resolution fails. `direction` is "backward" or "forward"; `path` is the
    field path in the reader's terms (`amount.currency`, `events[]`), empty for the root."""

    direction: str
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"field '{self.path}'" if self.path else "record"
        return f"{self.direction}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class StepReport:
    """The check of one pair of versions of one schema: `new` and the earlier `old` (its
    predecessor, or any earlier version for a transitive level)."""

    old: SchemaEntry
    new: SchemaEntry
    level: Level
    problems: tuple[Incompatibility, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.old.name} v{self.old.version} -> v{self.new.version} ({self.level})"
        if self.ok:
            return f"{head}: compatible"
        return f"{head}: " + "; ".join(str(problem) for problem in self.problems)


def resolution_problems(reader: Any, writer: Any) -> list[tuple[str, str]]:
    """(path, reason) for every way data written with `writer` could fail to resolve into
    `reader`. Both are self-contained schemas with full names (`SchemaEntry.schema`)."""
    return _Resolver(reader, writer).run()


def check_compatibility(
    old: SchemaEntry | Any, new: SchemaEntry | Any, level: Level = DEFAULT_LEVEL
) -> list[Incompatibility]:
    old_schema = old.schema if isinstance(old, SchemaEntry) else old
    new_schema = new.schema if isinstance(new, SchemaEntry) else new
    problems: list[Incompatibility] = []
    if level.backward:
        problems += [
            Incompatibility("backward", path, reason)
            for path, reason in resolution_problems(reader=new_schema, writer=old_schema)
        ]
    if level.forward:
        problems += [
            Incompatibility("forward", path, reason)
            for path, reason in resolution_problems(reader=old_schema, writer=new_schema)
        ]
    return problems


def configured_level(entry: SchemaEntry) -> Level:
    """The level for the step that introduces `entry`: its own declaration or the default."""
    return Level(entry.compatibility) if entry.compatibility else DEFAULT_LEVEL


def required_pairs(
    versions: tuple[SchemaEntry, ...], level: Level | None = None
) -> list[tuple[SchemaEntry, SchemaEntry, Level]]:
    """(old, new, level) for every pair of versions of one schema that must be compatible:
    each version with its predecessor, or with every earlier version back to the latest one
    that declared NONE for a transitive level. `level` overrides the configured levels."""
    pairs = []
    boundary = 0  # index of the earliest version the transitive checks reach
    for index, new in enumerate(versions):
        if index == 0:
            continue
        step_level = level if level is not None else configured_level(new)
        if step_level is Level.NONE:
            boundary = index
        earliest = boundary if step_level.transitive else index - 1
        pairs += [(old, new, step_level) for old in versions[earliest:index]]
    return pairs


def check_catalog(catalog: Catalog, level: Level | None = None) -> list[StepReport]:
    """Check every pair of versions the levels require (see `required_pairs`); `level`
    overrides the configured levels. A NONE pair is reported, with no problems."""
    reports = []
    for name in catalog.names():
        for old, new, pair_level in required_pairs(catalog.versions(name), level):
            problems = () if pair_level is Level.NONE else check_compatibility(old, new, pair_level)
            reports.append(StepReport(old, new, pair_level, tuple(problems)))
    return reports


# -- resolution ----------------------------------------------------------------------------


def _collect_named(node: Any, into: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, into)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in NAMED_TYPES:
            into.setdefault(node["name"], node)
            for field in node.get("fields", ()):
                _collect_named(field["type"], into)
        elif kind == "array":
            _collect_named(node["items"], into)
        elif kind == "map":
            _collect_named(node["values"], into)
        elif not isinstance(kind, str):
            _collect_named(kind, into)
    return into


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _simple(name: str) -> str:
    return name.rpartition(".")[2]


def _qualified_aliases(node: dict[str, Any]) -> set[str]:
    namespace = node["name"].rpartition(".")[0]
    return {
        alias if "." in alias or not namespace else f"{namespace}.{alias}"
        for alias in node.get("aliases", ())
    }


class _Resolver:
    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader_root = reader
        self._writer_root = writer
        self._reader_named = _collect_named(reader, {})
        self._writer_named = _collect_named(writer, {})
        self._visited: set[tuple[str, str]] = set()
        self._problems: list[tuple[str, str]] = []

    def run(self) -> list[tuple[str, str]]:
        self._resolve(self._reader_root, self._writer_root, "")
        return self._problems

    def _fail(self, path: str, reason: str) -> None:
        self._problems.append((path, reason))

    def _deref(self, node: Any, named: dict[str, dict[str, Any]]) -> Any:
        while True:
            if isinstance(node, str):
                return node if node in PRIMITIVES else named[node]
            if not isinstance(node, dict):
                return node  # a union
            kind = node.get("type")
            if kind in PRIMITIVES:
                return kind  # logical types resolve by their underlying type
            if kind in NAMED_TYPES or kind in ("array", "map"):
                return node
            node = kind  # {"type": <a schema>}

    @staticmethod
    def _kind(node: Any) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return "union"
        kind = node["type"]
        return "record" if kind == "error" else kind

    @staticmethod
    def _label(node: Any) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return "union"
        if node.get("type") in NAMED_TYPES:
            return f"{node['type']} {node['name']}"
        return str(node.get("type"))

    def _names_match(self, reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        # The spec compares unqualified names; a reader alias may name the writer's type.
        return _simple(reader["name"]) == _simple(writer["name"]) or writer[
            "name"
        ] in _qualified_aliases(reader)

    def _matches(self, reader: Any, writer: Any) -> bool:
        """The spec's "match" (used to pick a union branch), not full resolution."""
        r_kind, w_kind = self._kind(reader), self._kind(writer)
        if r_kind in PRIMITIVES and w_kind in PRIMITIVES:
            return r_kind == w_kind or r_kind in PROMOTIONS.get(w_kind, ())
        if r_kind != w_kind:
            return False
        if r_kind == "array":
            return self._matches(
                self._deref(reader["items"], self._reader_named),
                self._deref(writer["items"], self._writer_named),
            )
        if r_kind == "map":
            return self._matches(
                self._deref(reader["values"], self._reader_named),
                self._deref(writer["values"], self._writer_named),
            )
        if r_kind == "fixed":
            return self._names_match(reader, writer) and reader["size"] == writer["size"]
        if r_kind in ("record", "enum"):
            return self._names_match(reader, writer)
        return r_kind == "union"

    def _resolve(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._deref(reader, self._reader_named)
        writer = self._deref(writer, self._writer_named)
        r_kind, w_kind = self._kind(reader), self._kind(writer)
        if w_kind == "union":
            # Every branch the writer may have chosen must resolve.
            for branch in writer:
                branch = self._deref(branch, self._writer_named)
                if r_kind == "union":
                    self._resolve_into_union(reader, branch, path)
                elif self._matches(reader, branch):
                    self._resolve(reader, branch, path)
                else:
                    self._fail(
                        path,
                        f"writer union branch {self._label(branch)} cannot be read as "
                        f"{self._label(reader)}",
                    )
            return
        if r_kind == "union":
            self._resolve_into_union(reader, writer, path)
            return
        if r_kind == w_kind == "array":
            self._resolve(reader["items"], writer["items"], f"{path}[]")
            return
        if r_kind == w_kind == "map":
            self._resolve(reader["values"], writer["values"], f"{path}{{}}")
            return
        if not self._matches(reader, writer):
            self._fail(
                path, f"writer type {self._label(writer)} cannot be read as {self._label(reader)}"
            )
            return
        if r_kind == "enum":
            self._resolve_enum(reader, writer, path)
        elif r_kind == "record":
            self._resolve_record(reader, writer, path)

    def _resolve_into_union(self, union: list[Any], writer: Any, path: str) -> None:
        for branch in union:
            branch = self._deref(branch, self._reader_named)
            if self._matches(branch, writer):
                self._resolve(branch, writer, path)
                return
        labels = ", ".join(self._label(self._deref(b, self._reader_named)) for b in union)
        self._fail(
            path, f"writer type {self._label(writer)} matches no branch of reader union [{labels}]"
        )

    def _resolve_enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            self._fail(
                path,
                f"reader enum {reader['name']} lacks writer symbols {missing} and has no default",
            )

    def _resolve_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        key = (reader["name"], writer["name"])
        if key in self._visited:  # recursive types, or a pair already checked elsewhere
            return
        self._visited.add(key)
        writer_fields = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            field_path = _join(path, field["name"])
            source = writer_fields.get(field["name"])
            if source is None:
                source = next(
                    (writer_fields[a] for a in field.get("aliases", ()) if a in writer_fields),
                    None,
                )
            if source is not None:
                self._resolve(field["type"], source["type"], field_path)
            elif "default" not in field:
                self._fail(
                    field_path,
                    "the reader's field has no default and the writer does not have it",
                )
