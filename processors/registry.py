"""Discovers bounded contexts and maps command and event types to their aggregate types.

Contexts register through the `kafka_cqrs.contexts` entry-point group (see pyproject.toml),
so adding a context is a new package plus one entry point: the runtime never imports a
context by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from typing import Any, get_type_hints

from processors.domain import AggregateType, BoundedContext, typed_dicts_in
from schemas.catalog import CONTEXTS_ENTRY_POINT, Catalog, UnknownSchema, default_catalog

ENTRY_POINT_GROUP = CONTEXTS_ENTRY_POINT


class UnknownContext(LookupError):
    pass


class UnknownMessageType(LookupError):
    pass


class ContextError(ValueError):
    """A context's declarations do not match its Avro schemas (found when it is loaded)."""


class Registry:
    def __init__(self, contexts: Iterable[BoundedContext]) -> None:
        self.contexts: dict[str, BoundedContext] = {}
        self._by_command: dict[str, AggregateType[Any]] = {}
        self._by_event: dict[str, AggregateType[Any]] = {}
        self._by_name: dict[str, AggregateType[Any]] = {}
        for ctx in contexts:
            self._add(ctx)

    def _add(self, ctx: BoundedContext) -> None:
        if ctx.name in self.contexts:
            raise ValueError(f"bounded context {ctx.name!r} registered twice")
        self.contexts[ctx.name] = ctx
        for agg in ctx.aggregates:
            self._by_name[agg.name] = agg
            for table, types, kind in (
                (self._by_command, agg.command_types, "command"),
                (self._by_event, agg.event_types, "event"),
            ):
                for type_name in types:
                    if type_name in table:
                        raise ValueError(
                            f"{kind} type {type_name!r} claimed by both "
                            f"{table[type_name].name} and {agg.name}"
                        )
                    table[type_name] = agg

    def context(self, name: str) -> BoundedContext:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise UnknownContext(f"no bounded context {name!r} (known: {known})") from None

    def aggregate(self, name: str) -> AggregateType[Any]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessageType(f"no aggregate type {name!r}") from None

    def aggregate_for_command(self, command_type: str) -> AggregateType[Any]:
        try:
            return self._by_command[command_type]
        except KeyError:
            raise UnknownMessageType(f"no aggregate handles command {command_type!r}") from None

    def aggregate_for_event(self, event_type: str) -> AggregateType[Any]:
        try:
            return self._by_event[event_type]
        except KeyError:
            raise UnknownMessageType(f"no aggregate emits event type {event_type!r}") from None

    def command_types(self) -> list[str]:
        return sorted(self._by_command)


def schema_problems(ctx: BoundedContext, catalog: Catalog) -> list[str]:
    """What in `ctx` disagrees with the catalog: a command or event type without a schema, a
    command schema without the aggregate's id field, a state dataclass whose fields are not
    those of its state record (less `version`). Empty when the context is sound."""
    problems: list[str] = []

    def fields_of(name: str, what: str) -> list[str] | None:
        try:
            return [f["name"] for f in catalog.latest(name).schema.get("fields", ())]
        except UnknownSchema as exc:
            problems.append(f"{what}: {exc}")
            return None

    for agg in ctx.aggregates:
        for command in sorted(agg.command_types):
            names = fields_of(command, f"{agg.name} command")
            if names is not None and agg.id_field not in names:
                problems.append(f"{agg.name} command {command} has no id field {agg.id_field!r}")
        for event in sorted(agg.event_types):
            fields_of(event, f"{agg.name} event")
        record = fields_of(agg.state_schema, f"{agg.name} state")
        if record is not None:
            wanted = set(record) - {"version"}
            declared = set(agg.state_fields())
            if wanted != declared:
                problems.append(
                    f"{agg.name} state {agg.state_type.__name__} fields differ from "
                    f"{agg.state_schema}: missing {sorted(wanted - declared)}, "
                    f"unknown {sorted(declared - wanted)}"
                )
        for type_name, typed in sorted(agg.message_types().items()):
            if type_name in catalog:
                where = f"{agg.name} {typed.__name__} ({type_name})"
                problems += _typed_problems(typed, catalog.latest(type_name).schema, where)
    for pm in ctx.process_managers:
        for event in sorted(pm.event_types):
            fields_of(event, f"process manager {pm.name} event")
    return problems


def _typed_problems(typed: type, record: dict[str, Any], where: str) -> list[str]:
    """A TypedDict's keys against an Avro record's fields, nested records included."""
    schema_fields = {f["name"]: f["type"] for f in record.get("fields", ())}
    keys = set(getattr(typed, "__required_keys__", ())) | set(
        getattr(typed, "__optional_keys__", ())
    )
    problems = []
    if keys != set(schema_fields):
        problems.append(
            f"{where} keys differ from {record['name']}: missing "
            f"{sorted(set(schema_fields) - keys)}, unknown {sorted(keys - set(schema_fields))}"
        )
    hints = get_type_hints(typed)
    for key in sorted(keys & set(schema_fields)):
        nested_records = _records_in(schema_fields[key])
        for nested in typed_dicts_in(hints[key]):
            match = [r for r in nested_records if r["name"].rpartition(".")[2] == nested.__name__]
            for nested_record in match or nested_records[:1]:
                problems += _typed_problems(nested, nested_record, f"{where}.{key}")
    return problems


def _records_in(avro_type: Any) -> list[dict[str, Any]]:
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return [avro_type]
    if isinstance(avro_type, list):
        return [t for branch in avro_type for t in _records_in(branch)]
    return []


@cache
def default_registry() -> Registry:
    """Every context installed in this environment, via entry points, each checked against
    the default catalog (a typo in a type name or a state field fails here, at load)."""
    contexts = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    registry = Registry(contexts)
    catalog = default_catalog()
    for ctx in registry.contexts.values():
        problems = schema_problems(ctx, catalog)
        if problems:
            raise ContextError(f"context {ctx.name!r}: " + "; ".join(problems))
    return registry
