"""The topics a bounded context declares: names, partition counts and configs.

`cqrsctl topics create` and the Kubernetes KafkaTopic manifests are both derived from this
one list, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.domain import BoundedContext
from schemas.wire.limits import DERIVED_MAX_RECORD_BYTES

DELETE_FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1"}
COMPACTED = {"cleanup.policy": "compact"}
# Derived topics take rows up to DERIVED_MAX_RECORD_BYTES (schemas/wire/limits.py).
DERIVED = {**COMPACTED, "max.message.bytes": str(DERIVED_MAX_RECORD_BYTES + 64 * 1024)}
# Results and dead letters are operational records, not the event store: a week is plenty
# for clients awaiting results and for operators inspecting dead letters.
ONE_WEEK = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContextTopics:
    """Topic names of one bounded context (or of a test's private copy of one)."""

    prefix: str

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def internal_commands(self) -> str:
        """Commands the processor's process managers issue; only the processor writes it."""
        return f"{self.prefix}.internal-commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def results(self) -> str:
        return f"{self.prefix}.command-results"

    @property
    def aggregates(self) -> str:
        return f"{self.prefix}.aggregates"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def projection(self, name: str) -> str:
        return f"{self.prefix}.projection.{name}"


def declared_topics(
    ctx: BoundedContext, prefix: str | None = None, projections: tuple[str, ...] | None = None
) -> list[TopicSpec]:
    """Every topic of a context. Commands (public and internal), events, results and
    aggregates share one partition count, so an aggregate's records land on the same
    partition number everywhere. Projection
    topics (default: the context's declared projections) have that count too: the projector
    writes what it derives from events partition P to partition P of each projection topic,
    which keeps the sink's per-partition checkpoints exact (docs/read-side.md)."""
    if projections is None:
        projections = tuple(p.name for p in ctx.projections)
    names = ContextTopics(prefix or ctx.name)
    n = ctx.partitions
    specs = [
        TopicSpec(names.commands, n, dict(ONE_WEEK)),
        TopicSpec(names.internal_commands, n, dict(ONE_WEEK)),
        TopicSpec(names.events, n, dict(DELETE_FOREVER)),
        TopicSpec(names.results, n, dict(ONE_WEEK)),
        TopicSpec(names.aggregates, n, dict(COMPACTED)),
        TopicSpec(names.dlq, n, dict(ONE_WEEK)),
    ]
    specs += [TopicSpec(names.projection(p), n, dict(DERIVED)) for p in projections]
    return specs
