"""The projector worker: one Faust agent over `<ctx>.events` that keeps each stateful
projection in a Faust table (RocksDB via rocksdict) and publishes changed rows to
`<ctx>.projection.<name>`, which is also the table's changelog
(processors/projector/tables.py): each row reaches the broker once.

Per batch (`stream.take_events`): decode, run processors/projector/batch.py, write the
changed rows to the tables, publish the records, wait until the broker has acknowledged
every one of them, record the offsets they reached as the tables' persisted changelog
offsets, and only then return, which acknowledges the batch's events to Faust. Faust
commits offsets of acknowledged events only, so a committed source offset implies its rows
are on the projection topics. A crash in between replays events: the rows' guards make that a no-op
(apart from publishing the current row again, which the sink's guard ignores). Faust can
drop fetched events before they reach the agent; a batch that passes such events takes
them in again, read from Kafka (processors/fetch_ledger.py).

Decoding is processors/projector/decode.py's, publishing processors/projector/publisher.py's
(librdkafka, not Faust's producer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faust.streams import _current_event  # the context var Faust tables key partitions on
from faust.types import EventT, StreamT

from processors.faust_app import (
    Liveness,
    PositionTracker,
    WorkerConfig,
    exit_now,
    internal_topics,
    make_app,
    prepare_topics,
)
from processors.fetch_ledger import FetchLedger, runs_text
from processors.generations import generation_name, projections_to_run
from processors.projections import Projection
from processors.projector.batch import (
    BatchOutcome,
    SourceEvent,
    last_offsets,
    project_batch,
)
from processors.projector.decode import RereadMessage, Undecodable, decode_event
from processors.projector.metrics import ProjectorMetrics
from processors.projector.publisher import RowPublisher, event_fields
from processors.projector.tables import ProjectionTable, projection_table
from processors.registry import Registry
from processors.topic_reader import read_offsets
from processors.topics import TopicSpec
from schemas.codec import default_codec
from schemas.wire.limits import DERIVED_MAX_RECORD_BYTES

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProjectorConfig(WorkerConfig):
    batch_max: int = 2000
    # Run only generation `generation` (>= 2) of this projection, in its own app (a rebuild).
    projection: str | None = None
    generation: int = 1

    @property
    def app_id(self) -> str:
        return projector_app_id(self.topics.prefix, self.projection, self.generation)


def projector_app_id(prefix: str, projection: str | None = None, generation: int = 1) -> str:
    """The Faust app id: the consumer group and the prefix of the projector's own topics; a
    projector of one rebuilt generation has its own."""
    base = f"{prefix}.projector"
    return base if projection is None else f"{base}.{generation_name(projection, generation)}"


class Projector:
    def __init__(self, config: ProjectorConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        ctx = registry.context(config.context)
        self.projections: Sequence[Projection] = projections_to_run(
            ctx.projections, config.projection, config.generation
        )
        self.partitions = ctx.partitions
        if not self.projections:
            raise ValueError(f"context {ctx.name} declares no projections")
        self.topics = config.topics
        self.codec = default_codec()
        self.source = f"/{ctx.name}/projector"
        self.metrics = ProjectorMetrics()
        self.liveness = Liveness()
        self.positions = PositionTracker()
        self.app = make_app(
            config.app_id,
            config.kafka,
            config.data_dir,
            partitions=ctx.partitions,
            session_timeout_s=config.session_timeout_s,
            replication_factor=config.replication_factor,
            instance_id=config.instance_id,
        )
        self.ledger = FetchLedger({self.topics.events})
        self.app.fetch_ledger = self.ledger
        self.events_topic = self.app.topic(
            self.topics.events, partitions=ctx.partitions, internal=False
        )
        self.tables: dict[str, ProjectionTable] = {
            p.name: projection_table(
                self.app, p.name, self.topics.projection(p.name), ctx.partitions
            )
            for p in self.projections
            if p.stateful
        }
        self._last_offset: dict[int, int] = {}  # per events partition, for _note_jumps
        self.publisher = RowPublisher(
            config.kafka.client_config(), self.topics, self.source, self.codec, self.metrics
        )
        self.app.agent(self.events_topic, name=f"{config.app_id}.project")(self._agent)
        self.app.timer(1.0)(self._tick)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.task(self._started)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare_topics(self) -> None:
        """Check the events and projection topics (the projection topics are the tables'
        changelogs too); create Faust's leader-election topic (see faust_app)."""
        n = self.partitions
        required = [TopicSpec(self.topics.events, n)]
        required += [TopicSpec(self.topics.projection(p.name), n) for p in self.projections]
        internal = internal_topics(self.config.app_id)
        prepare_topics(self.config.kafka, required, internal, self.config.replication_factor)

    async def _started(self) -> None:
        self.liveness.started = True
        log.info("projector %s started: %s", self.config.app_id, [p.name for p in self.projections])

    def _on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        self.metrics.lag.rebalances.inc()

    async def _tick(self) -> None:
        self.liveness.beat()
        events = {self.topics.events}  # written by the processor's transactions only
        self.positions.update_lag(self.app, self.metrics.lag, events, events)

    def ready(self) -> bool:
        return self.liveness.ready(self.app)

    # -- the agent -------------------------------------------------------------------------

    async def _agent(self, stream: StreamT) -> None:
        try:
            async for batch in stream.take_events(
                self.config.batch_max, within=self.config.batch_wait_s
            ):
                await self._process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("projector batch failed")
            exit_now(f"projector batch failed: {exc!r}")

    async def _process(self, batch: Sequence[EventT]) -> None:
        started = time.monotonic()
        context_of: dict[int, EventT] = {}
        offsets: dict[int, list[int]] = {}  # per partition, in delivery order
        for event in batch:
            context_of[event.message.partition] = event
            offsets.setdefault(event.message.partition, []).append(event.message.offset)
        self._note_jumps(offsets)
        messages: list[Any] = [e.message for e in batch]
        if dropped := await self._dropped_records(offsets):
            messages = sorted([*messages, *dropped], key=lambda m: (m.partition, m.offset))
        sources: list[SourceEvent] = []
        for message in messages:
            try:
                sources.append(decode_event(message, self.codec, self.registry))
            except Undecodable as exc:
                # The event stays in the event store; nothing can be projected from it.
                self.metrics.failures.labels("undecodable").inc()
                log.error(
                    "skipping undecodable event %s[%d]@%d: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                    extra={"partition": message.partition},
                )
        ends = last_offsets((m.partition, m.offset) for m in messages)

        def load(projection: Projection, key: str, partition: int) -> dict[str, Any] | None:
            _current_event.set(weakref.ref(context_of[partition]))
            value = self.tables[projection.name].get(key.encode())
            return None if value is None else self.codec.decode(value, projection.row_schema)

        outcome = project_batch(self.projections, sources, ends, load)
        self._store(outcome, context_of)
        await self.publisher.publish(outcome)
        self._persist_offsets()
        for partition, offset in ends.items():
            self.positions.advance(self.topics.events, partition, offset)
        self._count(outcome, len(batch), time.monotonic() - started)

    def _persist_offsets(self) -> None:
        """Tell each table how far its changelog (the projection topic) now reaches: the
        persisted offsets Faust's recovery starts after (processors/projector/tables.py)."""
        delivered: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in self.publisher.take_delivered().items():
            delivered.setdefault(topic, {})[partition] = offset
        for name, table in self.tables.items():
            if offsets := delivered.get(self.topics.projection(name)):
                table.persist_offsets(offsets)

    def _note_jumps(self, offsets: dict[int, list[int]]) -> None:
        """Log where this process's delivered offsets move by more than a transaction marker
        (one offset) or go back: aborted transactions, seeks back and events Faust dropped
        explain such moves; the lines tell them apart when read next to the ledger's."""
        for partition, delivered in offsets.items():
            before = self._last_offset.get(partition)
            for offset in delivered:
                if before is None:
                    log.info(
                        "%s[%d]: first offset %d",
                        self.topics.events,
                        partition,
                        offset,
                        extra={"partition": partition},
                    )
                elif not before < offset <= before + 2:
                    log.info(
                        "%s[%d]: offset %d follows %d",
                        self.topics.events,
                        partition,
                        offset,
                        before,
                        extra={"partition": partition},
                    )
                before = offset
            self._last_offset[partition] = delivered[-1]

    async def _dropped_records(self, offsets: dict[int, list[int]]) -> list[RereadMessage]:
        """The records Faust fetched and dropped on the way to this agent, below events of
        the batch (processors/fetch_ledger.py), read again from Kafka. Acknowledging the
        batch without them would let Faust commit past them; if they cannot be read, the
        worker stops instead, and the next incarnation starts below them. `offsets`: the
        batch's, per partition."""
        dropped = {
            p: holes
            for p, done in offsets.items()
            if (holes := self.ledger.processed((self.topics.events, p), done))
        }
        if not dropped:
            return []
        where = "; ".join(
            f"{self.topics.events}[{p}] offsets {runs_text(h)}" for p, h in dropped.items()
        )
        log.warning("Faust dropped records before the agent saw them; reading again: %s", where)
        found = await asyncio.get_running_loop().run_in_executor(
            None, read_offsets, self.config.kafka.client_config(), self.topics.events, dropped
        )
        for partition, holes in dropped.items():
            got = {m.offset() for m in found if m.partition() == partition}
            if missing := sorted(set(holes) - got):
                exit_now(
                    f"{self.topics.events}[{partition}] offsets {runs_text(missing)} "
                    "were fetched, then dropped by Faust, and cannot be read again"
                )
        reread = [RereadMessage.of(m) for m in found]
        self.metrics.reread.inc(len(reread))
        return reread

    def _store(self, outcome: BatchOutcome, context_of: dict[int, EventT]) -> None:
        for projection, key, row, partition in outcome.stores:
            # Faust writes a table key to the changelog partition and RocksDB instance of
            # the "current event"; make that an event of the row's own source partition.
            _current_event.set(weakref.ref(context_of[partition]))
            value = self.codec.encode(projection.row_schema, row)
            if len(value) + len(key) > DERIVED_MAX_RECORD_BYTES:
                continue  # refused; the publisher counts and logs it
            self.tables[projection.name][key.encode()] = value

    def _count(self, outcome: BatchOutcome, size: int, seconds: float) -> None:
        m = self.metrics
        m.events.inc(size)
        m.batch_size.observe(size)
        m.batch_seconds.observe(seconds)
        m.applied.inc(outcome.applied)
        m.redelivered.inc(outcome.skipped)
        for failure in outcome.failures:
            m.failures.labels("apply").inc()
            log.error(
                "projection %s cannot apply event %s (%s[%d]@%d): %r",
                failure.projection.name,
                failure.meta.event_id,
                self.topics.events,
                failure.meta.partition,
                failure.meta.offset,
                failure.error,
                extra=event_fields(failure.meta),
            )
