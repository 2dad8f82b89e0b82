"""Given / when / then for a context's own tests: one aggregate's decider, pure, no Kafka.

    from processors.testing import given

    given(ACCOUNT, opened, deposited).when(withdraw).then(withdrawn)
    given(ACCOUNT).when(withdraw).then_rejected("account_not_found")

`given` folds the events from the aggregate's initial state, `when` decides one command on
that state, `then` asserts the exact events decided (and that `evolve` applies them; it
returns the state after them) and `then_rejected` the rejection's reason. With
`catalog=default_catalog()` the command and every event decided are also validated against
their Avro schemas, so a test fails on a field the wire would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from processors.domain import AggregateType, Command, Decision, Event, Rejected
from schemas.catalog import Catalog

S = TypeVar("S")


def given(aggregate: AggregateType[S], *events: Event, catalog: Catalog | None = None) -> Given[S]:
    """The aggregate after `events` (none: its initial state)."""
    return Given(aggregate, tuple(events), catalog)


@dataclass(frozen=True)
class Given(Generic[S]):
    aggregate: AggregateType[S]
    events: tuple[Event, ...]
    catalog: Catalog | None = None

    @property
    def state(self) -> S:
        return self.aggregate.fold(self.events)

    def when(self, command: Command | str, data: Mapping[str, Any] | None = None) -> When[S]:
        """Decide `command` (a `Command`, or a type name, short or full, and its data)."""
        if isinstance(command, str):
            command = Command(self.aggregate.full_name(command), dict(data or {}))
        if command.type not in self.aggregate.command_types:
            known = ", ".join(sorted(self.aggregate.command_types))
            raise AssertionError(
                f"{self.aggregate.name} decides no {command.type} (it decides {known})"
            )
        if self.catalog is not None:
            self.catalog.validate(command.type, dict(command.data))
        state = self.state
        return When(self, command, state, self.aggregate.decide(command, state))


@dataclass(frozen=True)
class When(Generic[S]):
    given: Given[S]
    command: Command
    state: S
    decision: Decision

    def then(self, *expected: Event) -> S:
        """Assert the command decided exactly `expected`; returns the state after them."""
        if isinstance(self.decision, Rejected):
            raise AssertionError(
                f"{self.command.type} was rejected ({self.decision.reason}: "
                f"{self.decision.detail}), expected {_types(expected)}"
            )
        decided = list(self.decision)
        if decided != list(expected):
            raise AssertionError(
                f"{self.command.type} decided\n  {decided}\nexpected\n  {list(expected)}"
            )
        if self.given.catalog is not None:
            for event in decided:
                self.given.catalog.validate(event.type, event.data)
        return self.given.aggregate.fold(decided, self.state)

    def then_rejected(self, reason: str) -> Rejected:
        """Assert the command was rejected with `reason`; returns the rejection."""
        if not isinstance(self.decision, Rejected):
            decided = _types(list(self.decision))
            raise AssertionError(f"{self.command.type} decided {decided}, expected {reason}")
        if self.decision.reason != reason:
            raise AssertionError(
                f"{self.command.type} was rejected as {self.decision.reason} "
                f"({self.decision.detail}), expected {reason}"
            )
        return self.decision


def _types(events: Sequence[Event]) -> str:
    return "[" + ", ".join(e.type for e in events) + "]" if events else "no events"
