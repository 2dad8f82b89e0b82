"""The domain API: what a bounded context declares, in the decider style.

Domain modules import only this module and the standard library. Commands, events and
states are plain dicts shaped like their Avro records, so the runtime hands the codec's
output straight to the decider without a conversion layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

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


@dataclass(frozen=True)
class AggregateType(Generic[S]):
    """One aggregate type: its commands, events and the three pure functions that define it.

    `state` is None until the aggregate's first event; `decide` must handle that.
    `to_record`/`from_record` map the state to and from its Avro state record (without the
    version, which the runtime owns), so the runtime can keep a compacted state changelog.
    """

    name: str
    id_field: str
    command_types: frozenset[str]
    event_types: frozenset[str]
    state_schema: str
    decide: Callable[[Command, S | None], Decision]
    evolve: Callable[[S | None, Event], S]
    to_record: Callable[[S], Record]
    from_record: Callable[[Record], S]

    def fold(self, events: Sequence[Event], state: S | None = None) -> S | None:
        for event in events:
            state = self.evolve(state, event)
        return state


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

    def __post_init__(self) -> None:
        if self.package is None:
            return
        home = Path(str(files(self.package)))
        for attribute, folder in (("schema_root", "schemas"), ("migrations", "migrations")):
            if getattr(self, attribute) is None and (home / folder).is_dir():
                object.__setattr__(self, attribute, home / folder)
