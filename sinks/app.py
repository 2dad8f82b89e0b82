"""The sink worker: a Faust agent over the projection topics that writes each batch
(`stream.take_events`) to Postgres in ONE transaction: version-guarded upserts of the
newest row per key, the checkpoints per (projection, source partition), and a NOTIFY on
channel `cqrs_checkpoint` (payload: the schema) that Postgres delivers at commit, so readers
waiting for their writes wake up without polling (sinks/checkpoints.py).

The batch is acknowledged to Faust only after the commit, and Faust commits offsets of
acknowledged records only: a crash replays records, which the guards make harmless
(effectively once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
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
from processors.projections import Projection
from processors.projector.records import BadProgressHeaders, header_map, read_progress
from processors.registry import Registry
from processors.topics import TopicSpec
from schemas import headers as ce
from schemas.codec import CodecError, default_codec
from sinks.batch import SinkBatch, SinkRecord, reduce_batch, skipped_offsets
from sinks.db import CHECKPOINT_CHANNEL, connect_async
from sinks.metrics import SinkMetrics
from sinks.tables import UPSERT_CHECKPOINT, TableWriter, table_writer

log = logging.getLogger(__name__)

RETRIES = 8  # per batch, for a database that is restarting or briefly unreachable


@dataclass(frozen=True, kw_only=True)
class SinkConfig(WorkerConfig):
    dsn: str
    schema: str
    batch_max: int = 5000

    @property
    def app_id(self) -> str:
        return sink_app_id(self.topics.prefix)


def sink_app_id(prefix: str) -> str:
    """The sink's Faust app id, which is its consumer group."""
    return f"{prefix}.sink"


class Sink:
    def __init__(self, config: SinkConfig, registry: Registry) -> None:
        self.config = config
        ctx = registry.context(config.context)
        self.projections: Sequence[Projection] = tuple(ctx.projections)
        self.partitions = ctx.partitions
        self.topics = config.topics
        self.codec = default_codec()
        self.by_topic = {self.topics.projection(p.name): p for p in self.projections}
        self.writers: dict[str, TableWriter] = {
            p.name: table_writer(p, self.codec.catalog) for p in self.projections
        }
        self.metrics = SinkMetrics()
        self.liveness = Liveness()
        self.positions = PositionTracker()
        self._last_offsets: dict[tuple[str, int], int] = {}
        self.app = make_app(
            config.app_id,
            config.kafka,
            config.data_dir,
            partitions=ctx.partitions,
            session_timeout_s=config.session_timeout_s,
            replication_factor=config.replication_factor,
            instance_id=config.instance_id,
        )
        topic = self.app.topic(*self.by_topic, internal=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.app.agent(topic, name=f"{config.app_id}.write")(self._agent)
        self.app.timer(1.0)(self._tick)
        self.app.task(self._started)

    def prepare_topics(self) -> None:
        required = [TopicSpec(t, self.partitions) for t in self.by_topic]
        internal = internal_topics(self.config.app_id, [], self.partitions)
        prepare_topics(self.config.kafka, required, internal, self.config.replication_factor)

    async def _started(self) -> None:
        self.liveness.started = True
        log.info(
            "sink %s writing %s to schema %s",
            self.config.app_id,
            list(self.by_topic),
            self.config.schema,
        )

    async def _tick(self) -> None:
        self.liveness.beat()
        self.positions.update_lag(self.app, self.metrics.lag, set(self.by_topic))

    def ready(self) -> bool:
        return self.liveness.ready(self.app)

    # -- the agent -------------------------------------------------------------------------

    async def _agent(self, stream: StreamT) -> None:
        try:
            async for batch in stream.take_events(
                self.config.batch_max, within=self.config.batch_wait_s
            ):
                self._check_contiguous(batch)
                records = [r for r in map(self._decode, batch) if r is not None]
                await self._write(reduce_batch(records))
                for event in batch:
                    m = event.message
                    self.positions.advance(m.topic, m.partition, m.offset)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("sink batch failed")
            exit_now(f"sink batch failed: {exc!r}")

    def _check_contiguous(self, batch: Sequence[EventT]) -> None:
        """Projection records are produced without transactions, so within one partition
        every offset holds a record; one this process jumps over was either compacted away
        or lost upstream of the sink (e.g. by the consumer around a rebalance). Counted and
        logged, so such a loss is visible rather than silent."""
        positions = ((e.message.topic, e.message.partition, e.message.offset) for e in batch)
        for topic, partition, first, last in skipped_offsets(self._last_offsets, positions):
            count = last - first + 1
            self.metrics.skipped_offsets.labels(self.by_topic[topic].name).inc(count)
            log.warning(
                "%s[%d]: offsets %d..%d skipped (%d records never seen by this sink)",
                topic,
                partition,
                first,
                last,
                count,
            )

    def _decode(self, event: EventT) -> SinkRecord | None:
        message = event.message
        projection = self.by_topic[message.topic]
        self.metrics.records.labels(projection.name).inc()
        headers = header_map(message.headers)
        try:
            partition, checkpoint = read_progress(headers)
            if message.value is None:
                return SinkRecord(projection, partition, checkpoint, None)
            row = self.codec.decode(message.value, projection.row_schema)
            time_text = headers.get(ce.TIME)
            event_time = ce.parse_time(time_text) if time_text else None
        except (BadProgressHeaders, CodecError, ce.HeaderError) as exc:
            # Nothing the projector writes looks like this; a stray producer does. Skip it:
            # the rows come from the events, which the projector can always publish again.
            self.metrics.undecodable.inc()
            log.error(
                "skipping undecodable record %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            return None
        if partition != message.partition:
            log.error(
                "record %s[%d]@%d names source partition %d; projection topics must have "
                "the partition count of the events topic",
                message.topic,
                message.partition,
                message.offset,
                partition,
            )
        return SinkRecord(projection, partition, checkpoint, row, event_time)

    async def _write(self, batch: SinkBatch) -> None:
        if not batch.rows and not batch.checkpoints:
            return  # only undecodable records
        started = time.monotonic()
        for attempt in range(RETRIES):
            try:
                conn = await self._connection()
                async with conn.transaction(), conn.cursor() as cur:
                    for name, rows in batch.rows.items():
                        writer = self.writers[name]
                        await cur.executemany(
                            writer.upsert, [writer.params(r) for r in rows.values()]
                        )
                    await cur.executemany(
                        UPSERT_CHECKPOINT,
                        [(p, part, off) for (p, part), off in batch.checkpoints.items()],
                    )
                    # Delivered at commit, and only if the transaction commits.
                    await cur.execute(
                        "SELECT pg_notify(%s, %s)", (CHECKPOINT_CHANNEL, self.config.schema)
                    )
                break
            except psycopg.OperationalError as exc:
                self.metrics.retries.inc()
                log.warning("database write failed (attempt %d): %s", attempt + 1, exc)
                await self._drop_connection()
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        else:
            exit_now(f"database unreachable after {RETRIES} attempts")
        self._count(batch, time.monotonic() - started)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            # autocommit: each batch is one explicit transaction block
            self._conn = await connect_async(self.config.dsn, self.config.schema)
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None

    def _count(self, batch: SinkBatch, seconds: float) -> None:
        m = self.metrics
        m.batch_size.observe(batch.records)
        m.commit_seconds.observe(seconds)
        for name, rows in batch.rows.items():
            m.rows.labels(name).inc(len(rows))
        if batch.oldest_event is not None:
            m.latency.observe((dt.datetime.now(dt.UTC) - batch.oldest_event).total_seconds())
