"""The domain API: what a bounded context declares, in the decider style.

Domain modules import only this module (and `processors.projections` for read models) and
the standard library. Commands and events are plain dicts shaped like their Avro records, so
the runtime hands the codec's output straight to the decider without a conversion layer; an
aggregate's state is a dataclass whose fields are those of its Avro state record.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

if TYPE_CHECKING:
    from processors.projections import Projection

Record = dict[str, Any]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Command:
    """A request to change one aggregate; `type` is the Avro full name, e.g. `bank.Deposit`."""

    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A fact about one aggregate; `type` is the Avro full name, e.g. `bank.Deposited`."""

    type: str
    data: Record


@dataclass(frozen=True, slots=True)
class Rejected:
    """A command that breaks a business rule. `reason` is a stable code clients can switch on."""

    reason: str
    detail: str = ""


Decision = Sequence[Event] | Rejected


# `data` is the record as a dict, or the TypedDict a function annotates it with.
Decider = Callable[[Any, S], Decision]
Evolver = Callable[[S, Any], S]


class AggregateType(Generic[S]):
    """One aggregate type in the decider style: an initial state, and per command type a pure
    `decide`, per event type a pure `evolve`, each declared once with a decorator:

        ACCOUNT = AggregateType("bank.Account", id_field="account_id", initial_state=Account())

        @ACCOUNT.decides("OpenAccount")
        def open_account(data, state): ...  # -> [Event(...), ...] | Rejected(...)

        @ACCOUNT.evolves("AccountOpened")
        def opened(state, data): ...  # -> the next state

    A command type that only the context's process managers may issue is declared with
    `@ACCOUNT.decides("RecordTransferDebit", internal=True)`: clients cannot send it (the
    processor refuses it on the public commands topic, reason `internal_command`; see
    docs/write-side.md). Every other command type is public.

    A short type name is qualified with the aggregate's namespace (`OpenAccount` ->
    `bank.OpenAccount`). The command and event type sets are those of the declared functions,
    so the registry routes by them and nothing repeats them. A new aggregate starts at
    `initial_state`, so neither function ever sees None.

    The state is a dataclass whose fields are those of its Avro state record (`state_schema`,
    by default `<Name>State`, e.g. `bank.AccountState`) without the `version`, which the
    runtime owns: the record mapping is derived from it, and the registry checks the fields
    against the schema when it loads the context.
    """

    def __init__(
        self, name: str, *, id_field: str, initial_state: S, state_schema: str | None = None
    ) -> None:
        if not is_dataclass(initial_state) or isinstance(initial_state, type):
            raise TypeError(f"{name}: initial_state must be a dataclass instance")
        namespace, dot, _ = name.rpartition(".")
        if not dot:
            raise ValueError(f"aggregate name {name!r} must be a full name, e.g. 'bank.Account'")
        self.name = name
        self.namespace = namespace
        self.id_field = id_field
        self.initial_state = initial_state
        self.state_type: type[S] = type(initial_state)
        self.state_schema = state_schema or f"{name}State"
        self._deciders: dict[str, Decider[S]] = {}
        self._evolvers: dict[str, Evolver[S]] = {}
        self._internal: set[str] = set()

    def __repr__(self) -> str:
        return f"AggregateType({self.name!r})"

    # -- declaring ---------------------------------------------------------------------------

    def full_name(self, type_name: str) -> str:
        """`OpenAccount` -> `bank.OpenAccount`; a name with a dot is already full."""
        return type_name if "." in type_name else f"{self.namespace}.{type_name}"

    def decides(
        self, command_type: str, *, internal: bool = False
    ) -> Callable[[Decider[S]], Decider[S]]:
        """Declare the function that decides one command type: `(data, state) -> Decision`.
        `internal=True`: only the context's process managers may issue this command type."""
        full = self.full_name(command_type)

        def register(function: Decider[S]) -> Decider[S]:
            if full in self._deciders:
                raise ValueError(f"{self.name}: command {full} is decided twice")
            self._deciders[full] = function
            if internal:
                self._internal.add(full)
            return function

        return register

    def evolves(self, *event_types: str) -> Callable[[Evolver[S]], Evolver[S]]:
        """Declare the function that applies one or more event types: `(state, data) -> S`."""
        names = [self.full_name(t) for t in event_types]

        def register(function: Evolver[S]) -> Evolver[S]:
            for full in names:
                if full in self._evolvers:
                    raise ValueError(f"{self.name}: event {full} is evolved twice")
                self._evolvers[full] = function
            return function

        return register

    @property
    def command_types(self) -> frozenset[str]:
        return frozenset(self._deciders)

    @property
    def internal_command_types(self) -> frozenset[str]:
        """The command types only process managers may issue (`decides(..., internal=True)`)."""
        return frozenset(self._internal)

    @property
    def public_command_types(self) -> frozenset[str]:
        """The command types clients may send."""
        return frozenset(self._deciders.keys() - self._internal)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._evolvers)

    # -- the decider -------------------------------------------------------------------------

    def decide(self, command: Command, state: S) -> Decision:
        decider = self._deciders.get(command.type)
        if decider is None:
            return Rejected("unknown_command", f"{self.name} cannot handle {command.type}")
        return decider(command.data, state)

    def evolve(self, state: S, event: Event) -> S:
        evolver = self._evolvers.get(event.type)
        if evolver is None:
            raise ValueError(f"{self.name} cannot apply {event.type}")
        return evolver(state, event.data)

    def fold(self, events: Sequence[Event], state: S | None = None) -> S:
        """The state after `events`, from `state` (default: the initial state)."""
        current = self.initial_state if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    # -- the state record --------------------------------------------------------------------

    def to_record(self, state: S) -> Record:
        """The state as its Avro state record, without the version."""
        instance: Any = state  # a dataclass instance, checked in __init__
        return asdict(instance)

    def from_record(self, record: Mapping[str, Any]) -> S:
        """The state from its Avro state record (fields the dataclass lacks are ignored)."""
        return self.state_type(**{name: record[name] for name in self.state_fields()})

    def state_fields(self) -> tuple[str, ...]:
        """The state dataclass's field names: its Avro state record's, less `version`."""
        state_type: Any = self.state_type
        return tuple(f.name for f in fields(state_type))

    # -- typed messages ------------------------------------------------------------------------

    def message_types(self) -> dict[str, type]:
        """The TypedDict each command and event type's data is annotated with, where one is:
        the `data` parameter of its `decides` or `evolves` function. An evolver of several
        event types annotated with a union picks the member named like each type
        (`Deposited | Withdrawn`). The registry checks these against the Avro schemas."""
        found: dict[str, type] = {}
        for table, position in ((self._deciders, 0), (self._evolvers, 1)):
            for type_name, function in table.items():
                typed = _data_annotation(function, position, type_name)
                if typed is not None:
                    found[type_name] = typed
        return found


def typed_dicts_in(annotation: Any) -> list[type]:
    """The TypedDicts an annotation names: itself, or the members of a union."""
    if is_typeddict(annotation):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType):
        return [member for member in get_args(annotation) if is_typeddict(member)]
    return []


def _data_annotation(function: Callable[..., Any], position: int, type_name: str) -> type | None:
    parameters = list(inspect.signature(function).parameters)
    if len(parameters) <= position:
        return None
    try:
        hints = get_type_hints(function)
    except NameError as exc:
        raise TypeError(f"{function.__qualname__}: cannot resolve its annotations: {exc}") from exc
    candidates = typed_dicts_in(hints.get(parameters[position]))
    if len(candidates) == 1:
        return candidates[0]
    simple = type_name.rpartition(".")[2]
    return next((c for c in candidates if c.__name__ == simple), None)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a process manager learns about a command it issued."""

    command_id: str
    accepted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class IssueCommand:
    """A command a process manager wants sent. The id is derived from the process id and the
    step, so a replayed reaction issues the same id and the processor's dedup drops it."""

    command_id: str
    command: Command


Trigger = Event | CommandOutcome


@dataclass(frozen=True)
class ProcessManager:
    """Reacts to events, and to the outcomes of the commands it issued, by issuing commands.

    `event_types` may name another context's published events (`bank.TransferCompleted`):
    the reactor worker feeds those to `react`, and the commands it issues go to this
    context's commands topic in the same Kafka transaction as the consumed offsets.

    It keeps no state of its own: a process's state is an aggregate (e.g. a Transfer), so
    it is event-sourced and exactly-once like any other. `react` is pure, and derives each
    command id from the process id and the step, which makes a repeated reaction harmless.
    `owns_command` tells the runtime which outcomes to feed back to it.
    """

    name: str
    event_types: frozenset[str]
    owns_command: Callable[[str], bool]
    react: Callable[[Trigger], list[IssueCommand]]


@dataclass(frozen=True)
class BoundedContext:
    """Everything one context declares; the runtime reaches contexts only through this.

    `package` is the import package the context lives in (`package=__name__` in its
    `__init__.py`): its `schemas/` folder (`<kind>/<Name>.v<N>.avsc`) is the context's schema
    root and its `migrations/` folder (`NNNN_name.sql`) holds its read models' SQL. Either
    folder may be given explicitly instead (`schema_root`, `migrations`); a folder that does
    not exist means the context has none.
    """

    name: str
    aggregates: Sequence[AggregateType[Any]]
    process_managers: Sequence[ProcessManager] = field(default_factory=tuple)
    partitions: int = 6
    # Read models built from this context's events (processors/projections.py).
    projections: Sequence[Projection] = field(default_factory=tuple)
    package: str | None = None
    schema_root: Path | None = None
    migrations: Path | None = None

    def foreign_event_types(self) -> dict[str, frozenset[str]]:
        """The events of OTHER contexts that this context's process managers react to, per
        context: the event types named in a `ProcessManager.event_types` whose namespace is
        not this context's (e.g. `bank.TransferCompleted` for shop). The reactor
        (processors/reactor.py) consumes them from `<other>.events`."""
        found: dict[str, set[str]] = {}
        for pm in self.process_managers:
            for event_type in pm.event_types:
                namespace = event_type.rpartition(".")[0]
                if namespace != self.name:
                    found.setdefault(namespace, set()).add(event_type)
        return {name: frozenset(types) for name, types in sorted(found.items())}

    @property
    def public_command_types(self) -> frozenset[str]:
        """The command types clients may send, on `<ctx>.commands`."""
        return frozenset(t for agg in self.aggregates for t in agg.public_command_types)

    @property
    def internal_command_types(self) -> frozenset[str]:
        """The command types only this context's process managers issue; the processor
        takes them from `<ctx>.internal-commands` only, which only it may write."""
        return frozenset(t for agg in self.aggregates for t in agg.internal_command_types)

    def __post_init__(self) -> None:
        if self.package is None:
            return
        home = Path(str(files(self.package)))
        for attribute, folder in (("schema_root", "schemas"), ("migrations", "migrations")):
            if getattr(self, attribute) is None and (home / folder).is_dir():
                object.__setattr__(self, attribute, home / folder)
