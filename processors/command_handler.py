"""Decides one command against the in-memory state of its partition; no Kafka I/O here.

The command processor (the imperative shell) feeds it decoded messages and turns what it
returns into produced records inside one Kafka transaction per batch. Every change it makes
to memory is journalled per batch, so an aborted transaction rolls memory back with it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.domain import AggregateType, Command, CommandOutcome, Event, IssueCommand, Rejected
from processors.partitioning import partition_for
from processors.registry import Registry, UnknownMessageType
from schemas.wire.headers import trace_id

log = logging.getLogger(__name__)

ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
CONFLICT = "CONFLICT"


@dataclass(slots=True)
class AggregateEntry:
    state: Any
    version: int


@dataclass(slots=True)
class PartitionState:
    """What a processor owns for one assigned partition."""

    aggregates: dict[tuple[str, str], AggregateEntry] = field(default_factory=dict)
    # Dedup window: command dedup key -> the encoded result first published for it (None while
    # the result is being built in the current batch).
    results: OrderedDict[str, bytes | None] = field(default_factory=OrderedDict)


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """A command as it came off `<ctx>.commands` (or, `internal`, off
    `<ctx>.internal-commands`), already decoded. `principal`: its `ce_principal` header;
    `traceparent`: its valid W3C `traceparent` header, carried onto what it causes."""

    partition: int
    offset: int
    key: str
    command_id: str
    command_type: str
    data: Mapping[str, Any]
    correlation_id: str | None
    expected_version: int | None
    principal: str | None = None
    internal: bool = False
    traceparent: str | None = None

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.command_id, self.internal)


def log_extra(msg: CommandMessage) -> dict[str, Any]:
    """The fields of a log line about one command (processors/logs.py)."""
    return {
        "partition": msg.partition,
        "command_id": msg.command_id,
        "trace_id": trace_id(msg.traceparent),
    }


def dedup_key(command_id: str, internal: bool) -> str:
    """A command's key in the dedup window. The ids of the two commands topics are kept
    apart: a client that sends a public command with the id a process manager will use
    does not turn that process manager's command into a duplicate."""
    return f"internal\x00{command_id}" if internal else command_id


@dataclass(frozen=True, slots=True)
class Issued:
    """A command a process manager issues, with the aggregate and partition it goes to."""

    command_id: str
    command: Command
    aggregate_id: str
    partition: int


class NoTarget(Exception):
    """A process manager issued a command no aggregate of the registry takes."""


@dataclass(slots=True)
class Decided:
    """The outcome of a command that was not a duplicate."""

    message: CommandMessage
    aggregate: AggregateType[Any] | None
    status: str
    reason: str
    detail: str
    version: int
    events: list[Event]
    issued: list[Issued]
    snapshot_state: Any = None
    # The aggregate's entry before this command, so `retract` can undo just this command.
    previous: AggregateEntry | None = None


@dataclass(frozen=True, slots=True)
class Duplicate:
    message: CommandMessage


Outcome = Decided | Duplicate


class CommandHandler:
    def __init__(self, registry: Registry, context: str, partitions: int, dedup_window: int):
        self.registry = registry
        self.context = registry.context(context)
        self.partitions = partitions
        self.dedup_window = dedup_window
        self.owned: dict[int, PartitionState] = {}
        self._undo_aggregates: dict[tuple[int, tuple[str, str]], AggregateEntry | None] = {}
        self._undo_results: list[tuple[int, str]] = []
        self._process_managers = list(self.context.process_managers)
        # A processor answers only its own context's commands, even when the registry holds
        # other contexts whose aggregates would happily decide them.
        self._command_types = frozenset(
            t for agg in self.context.aggregates for t in agg.command_types
        )
        self._aggregate_names = [agg.name for agg in self.context.aggregates]
        self._internal_types = self.context.internal_command_types

    # -- ownership -------------------------------------------------------------------------

    def assign(self, partition: int, state: PartitionState) -> None:
        self.owned[partition] = state

    def revoke(self, partition: int) -> None:
        self.owned.pop(partition, None)

    # -- the batch journal -----------------------------------------------------------------

    def begin_batch(self) -> None:
        self._undo_aggregates.clear()
        self._undo_results.clear()

    def rollback(self) -> None:
        """Forget everything the current batch did to memory (its transaction aborted)."""
        for (partition, key), previous in self._undo_aggregates.items():
            owned = self.owned.get(partition)
            if owned is None:
                continue
            if previous is None:
                owned.aggregates.pop(key, None)
            else:
                owned.aggregates[key] = previous
        for partition, command_id in self._undo_results:
            owned = self.owned.get(partition)
            if owned is not None:
                owned.results.pop(command_id, None)
        self.begin_batch()

    def remember_result(self, partition: int, key: str, encoded: bytes) -> None:
        results = self.owned[partition].results
        results[key] = encoded
        while len(results) > self.dedup_window:
            results.popitem(last=False)

    def first_result(self, partition: int, key: str) -> bytes | None:
        return self.owned[partition].results.get(key)

    # -- deciding --------------------------------------------------------------------------

    def handle(self, msg: CommandMessage) -> Outcome:
        owned = self.owned[msg.partition]
        key = msg.dedup_key
        if key in owned.results:
            return Duplicate(msg)
        owned.results[key] = None
        self._undo_results.append((msg.partition, key))
        return self._decide(owned, msg)

    def _reject(self, msg: CommandMessage, reason: str, detail: str, version: int = 0) -> Decided:
        return Decided(msg, None, REJECTED, reason, detail, version, [], [])

    def retract(self, d: Decided, reason: str, detail: str) -> Decided:
        """Reject a decided command after all, undoing what it did to memory: the processor
        found that its output cannot be written (over Kafka's size limit, or not encodable).
        Process managers learn the rejection as they would any other."""
        msg = d.message
        version = d.version - len(d.events)
        if d.status == ACCEPTED and d.aggregate is not None:
            aggregates = self.owned[msg.partition].aggregates
            key = (d.aggregate.name, msg.key)
            if d.previous is None:
                aggregates.pop(key, None)
            else:
                aggregates[key] = d.previous
        rejected = Decided(msg, d.aggregate, REJECTED, reason, detail, version, [], [])
        try:
            rejected.issued = self._react(rejected)
        except NoTarget as exc:
            log.error(
                "command %s: dropping the commands issued on its rejection: %s",
                msg.command_id,
                exc,
                extra=log_extra(msg),
            )
        return rejected

    def _decide(self, owned: PartitionState, msg: CommandMessage) -> Decided:
        if msg.command_type not in self._command_types:
            detail = f"{msg.command_type} is not a command of context {self.context.name}"
            return self._reject(msg, "unknown_command", detail)
        try:
            agg = self.registry.aggregate_for_command(msg.command_type)
        except UnknownMessageType as exc:
            return self._reject(msg, "unknown_command", str(exc))
        if msg.command_type in self._internal_types and not msg.internal:
            detail = (
                f"{msg.command_type} is an internal command of context {self.context.name}: "
                "only its process managers issue it"
            )
            return self._reject(msg, "internal_command", detail)
        nul_field = _field_with_nul(msg.data)
        if nul_field is not None:
            # Avro allows NUL in strings, Postgres text and jsonb do not: one such command
            # would stop every read model's sink, so it is refused at the door.
            detail = f"field {nul_field!r} contains a NUL character"
            return self._reject(msg, "invalid_text", detail)
        aggregate_id = msg.data.get(agg.id_field)
        if aggregate_id != msg.key:
            detail = f"key {msg.key!r} is not the command's {agg.id_field} {aggregate_id!r}"
            return self._reject(msg, "key_mismatch", detail)
        expected_partition = partition_for(msg.key, self.partitions)
        if expected_partition != msg.partition:
            detail = (
                f"aggregate {msg.key!r} belongs on partition {expected_partition}, the command "
                f"arrived on {msg.partition}: produce with a murmur2 partitioner"
            )
            return self._reject(msg, "wrong_partition", detail)
        key = (agg.name, msg.key)
        entry = owned.aggregates.get(key)
        if entry is None:
            # Consumers know an aggregate by its id alone (the key, ce_subject, event ids,
            # read-model rows): two types sharing one id would interleave their versions.
            for other in self._aggregate_names:
                if other != agg.name and (other, msg.key) in owned.aggregates:
                    detail = f"{msg.key!r} is already the id of a {other}"
                    return self._reject(msg, "id_in_use", detail)
        version = entry.version if entry else 0
        if msg.expected_version is not None and msg.expected_version != version:
            detail = f"expected version {msg.expected_version}, aggregate is at {version}"
            return Decided(msg, agg, CONFLICT, "version_conflict", detail, version, [], [])
        state = entry.state if entry else agg.initial_state
        try:
            decision = agg.decide(Command(msg.command_type, msg.data), state)
        except Exception as exc:  # a bug in domain code must not stop the partition
            detail = f"{agg.name}.decide raised {type(exc).__name__}: {exc}"
            return Decided(msg, agg, REJECTED, "decide_failed", detail, version, [], [])
        if isinstance(decision, Rejected):
            decided = Decided(msg, agg, REJECTED, decision.reason, decision.detail, version, [], [])
        else:
            events = list(decision)
            try:
                for event in events:
                    state = agg.evolve(state, event)
            except Exception as exc:
                detail = f"{agg.name}.evolve raised {type(exc).__name__}: {exc}"
                return Decided(msg, agg, REJECTED, "evolve_failed", detail, version, [], [])
            version += len(events)
            undo_key = (msg.partition, key)
            if undo_key not in self._undo_aggregates:
                self._undo_aggregates[undo_key] = entry
            owned.aggregates[key] = AggregateEntry(state, version)
            decided = Decided(msg, agg, ACCEPTED, "", "", version, events, [], state, entry)
        try:
            decided.issued = self._react(decided)
        except NoTarget as exc:
            return self.retract(decided, "invalid_output", str(exc))
        return decided

    def _react(self, decided: Decided) -> list[Issued]:
        """Process managers react in the same transaction as the command that triggered them,
        so their commands are issued exactly once."""
        issued: list[IssueCommand] = []
        command_id = decided.message.command_id
        # Only a command the processor itself issued (on the internal topic) reports back to
        # a process manager: a client cannot borrow a process manager's command ids.
        internal = decided.message.internal
        for pm in self._process_managers:
            if internal and pm.owns_command(command_id):
                accepted = decided.status == ACCEPTED
                issued += pm.react(CommandOutcome(command_id, accepted, decided.reason))
            for event in decided.events:
                if event.type in pm.event_types:
                    issued += pm.react(event)
        return [self._target(issue) for issue in issued]

    def _target(self, issue: IssueCommand) -> Issued:
        """Where a process manager's command goes: its aggregate id and partition."""
        command = issue.command
        try:
            agg = self.registry.aggregate_for_command(command.type)
            aggregate_id = str(command.data[agg.id_field])
        except Exception as exc:
            raise NoTarget(f"command {command.type}: no target: {exc!r}") from exc
        partition = partition_for(aggregate_id, self.partitions)
        return Issued(issue.command_id, command, aggregate_id, partition)


def _field_with_nul(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a NUL character, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _field_with_nul(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _field_with_nul(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None
