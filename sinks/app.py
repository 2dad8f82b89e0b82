"""The sink worker: a librdkafka consumer over the projection topics that writes each batch
to Postgres in ONE transaction: version-guarded upserts of the newest row per key, the
checkpoints per (projection, source partition), the consumer's next offset per partition
(`cqrs_sink_offsets`), and a NOTIFY on channel `cqrs_checkpoint` (payload: the schema) that
Postgres delivers at commit, so readers waiting for their writes wake up without polling
(sinks/checkpoints.py).

The offsets are stored with the rows they cover ("storing offsets outside Kafka", as
Kafka's consumer documentation describes it), and a newly assigned partition starts from
the stored offset: after any crash, the database holds every record up to its stored
position and none past it is skipped. Kafka's committed offsets of the group are written
after each transaction as a copy, for lag tools, and used only when Postgres has no position
yet (the first start after an upgrade). A redelivered record is harmless anyway: the rows'
guards ignore what is not newer.

It is a plain consumer, not a Faust agent, because a framework's own bookkeeping of
acknowledged offsets cannot be tied to a database transaction; storing the positions with
the rows can (docs/reliability.md has the fault runs behind this).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from processors.gc_tuning import tune_gc
from processors.generations import generation_name, select
from processors.group_watch import GroupWatch
from processors.projections import Projection
from processors.registry import Registry
from processors.settings import KafkaSettings
from processors.topic_admin import check_declared_topics
from processors.topics import ContextTopics, TopicSpec
from schemas.codec import CodecError, default_codec
from schemas.wire import headers as ce
from schemas.wire.progress import BadProgressHeaders, header_map, is_checkpoint, read_progress
from sinks.batch import SinkBatch, SinkRecord, reduce_batch, skipped_offsets
from sinks.db import CHECKPOINT_CHANNEL, connect
from sinks.generations import RETIRED_ROUTE, read_routes
from sinks.metrics import SinkMetrics
from sinks.progress_metrics import PROGRESS_EVERY_S, ProgressMetrics, ProgressMonitor
from sinks.tables import (
    SELECT_OFFSETS,
    UPSERT_CHECKPOINT,
    UPSERT_OFFSET,
    TableWriter,
    table_writer,
)

log = logging.getLogger(__name__)

RETRIES = 8  # per transaction, for a database that is restarting or briefly unreachable
LAG_EVERY_S = 1.0

Position = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    context: str
    kafka: KafkaSettings
    dsn: str = field(repr=False)  # may hold a password
    schema: str
    topic_prefix: str | None = None
    batch_max: int = 5000
    batch_wait_s: float = 0.02
    session_timeout_s: float = 10.0
    instance_id: str | None = None  # static group membership when set
    progress_every_s: float = PROGRESS_EVERY_S  # projection progress metrics; 0 = off
    # Write only generation `generation` (>= 2) of this projection, in its own group.
    projection: str | None = None
    generation: int = 1

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.topic_prefix or self.context)

    @property
    def group_id(self) -> str:
        if self.projection is None:
            return sink_group_id(self.topics.prefix)
        own = generation_name(self.projection, self.generation)
        return f"{sink_group_id(self.topics.prefix)}.{own}"


def sink_group_id(prefix: str) -> str:
    """The sink's consumer group."""
    return f"{prefix}.sink"


class Sink:
    def __init__(self, config: SinkConfig, registry: Registry) -> None:
        self.config = config
        ctx = registry.context(config.context)
        self.projections: Sequence[Projection] = (
            tuple(ctx.projections)
            if config.projection is None
            else (select(ctx.projections, config.projection, config.generation),)
        )
        self.partitions = ctx.partitions
        self.topics = config.topics
        self.codec = default_codec()
        self.by_topic = {self.topics.projection(p.name): p for p in self.projections}
        self.writers: dict[str, TableWriter] = {
            p.name: table_writer(p, self.codec.catalog) for p in self.projections
        }
        self.metrics = SinkMetrics()
        self._routed: dict[str, TableWriter] = {}  # by generation table
        self._staged: set[tuple[str, str | None]] = set()  # writers with a staging table
        self.progress = ProgressMonitor(
            config.dsn,
            config.schema,
            config.kafka.client_config(),
            self.topics.events,
            self.partitions,
            [p.name for p in self.projections],
            ProgressMetrics(),
            config.progress_every_s,
        )
        self.last_loop_at = time.monotonic()
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        self._assigned: set[Position] = set()
        self._next: dict[Position, int] = {}  # next offset to write, per assigned partition
        self._last_seen: dict[Position, int] = {}  # for the skipped-offsets check
        self._lag_at = 0.0
        self._conn: psycopg.Connection[Any] | None = None
        self.group_watch = GroupWatch()
        group = config.group_id
        self._consumer = Consumer(
            {
                **config.kafka.client_config(),
                **self.group_watch.consumer_config(),
                "error_cb": self._on_client_error,
                "group.id": group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(config.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(min(1000, config.session_timeout_s * 1000 / 3)),
                "fetch.wait.max.ms": 50,
                **(
                    {"group.instance.id": f"{group}.{config.instance_id}"}
                    if config.instance_id
                    else {}
                ),
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def prepare_topics(self) -> None:
        required = [TopicSpec(t, self.partitions) for t in self.by_topic]
        check_declared_topics(self.config.kafka.client_config(), required)

    def ready(self) -> bool:
        return bool(self._assigned)

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():  # e.g. fenced by a twin with our instance id: never heals
            self._fatal = err
            self._stop.set()

    def run(self) -> None:
        log.info(
            "sink %s writing %s to schema %s",
            self.config.group_id,
            list(self.by_topic),
            self.config.schema,
        )
        try:
            tune_gc()
            self._consumer.subscribe(
                list(self.by_topic),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            # The shared sink reports every generation (sinks/progress.py reads them all).
            if self.config.progress_every_s > 0 and self.config.projection is None:
                self.progress.start()
            while not self._stop.is_set():
                self.last_loop_at = time.monotonic()
                messages = self._consumer.consume(self.config.batch_max, self.config.batch_wait_s)
                if messages:
                    self._handle(messages)
                self._update_lag()
                if self.group_watch.stuck():
                    raise SystemExit(f"sink stopped: {self.group_watch.why()}")
        except psycopg.Error as exc:  # not a restart (those are retried): a bad statement
            log.exception("sink batch failed")
            raise SystemExit(f"sink stopped: batch failed: {exc}") from None
        finally:
            self._close()
        if self._fatal is not None:
            raise SystemExit(f"sink stopped: fatal Kafka error: {self._fatal.str()}")

    def _close(self) -> None:
        # Closed here, not left to interpreter exit (where a Consumer may segfault).
        self.progress.stop()
        self._consumer.close()
        self._drop_connection()

    # -- assignment: positions come from Postgres ------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._transaction(self._stored_offsets, sorted({tp.topic for tp in partitions}))
        for tp in partitions:
            position = (tp.topic, tp.partition)
            if position in stored:
                tp.offset = stored[position]
                self._next[position] = tp.offset
                self._last_seen[position] = tp.offset - 1
            else:  # no position in Postgres yet: the group's offset in Kafka, else earliest
                self._last_seen.pop(position, None)
            self._assigned.add(position)
        consumer.assign(partitions)
        self.metrics.lag.rebalances.inc()
        self.group_watch.progressed()
        log.info(
            "assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{_offset_text(tp.offset)}" for tp in partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to finish: batches are written inside the loop, never across a poll.
        for tp in partitions:
            position = (tp.topic, tp.partition)
            self._assigned.discard(position)
            self._next.pop(position, None)
            self.metrics.lag.forget(*position)
        self.group_watch.progressed()

    def _stored_offsets(self, cur: psycopg.Cursor[Any], topics: list[str]) -> dict[Position, int]:
        cur.execute(SELECT_OFFSETS, (topics,))
        return {(t, p): o for t, p, o in cur.fetchall()}

    # -- one batch, one database transaction -----------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        good: list[Message] = []
        for m in messages:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                self._fatal = err
                self._stop.set()
                return
            else:
                log.warning("consumer error: %s", err.str())
        if not good:
            return
        self._check_contiguous(good)
        records, oldest_event = self._records(good)
        batch = reduce_batch(records)
        batch.oldest_event = oldest_event
        offsets: dict[Position, int] = {}
        for m in good:
            position = (m.topic(), m.partition())
            offsets[position] = max(offsets.get(position, 0), m.offset() + 1)
        started = time.monotonic()
        self._transaction(self._write, batch, offsets)
        self._count(batch, time.monotonic() - started)
        self._next.update(offsets)
        # A copy for lag tools; the position that counts is the one just committed.
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=True,
        )

    def _write(
        self, cur: psycopg.Cursor[Any], batch: SinkBatch, offsets: dict[Position, int]
    ) -> None:
        routes = read_routes(cur, list(self.writers))
        for name, rows in batch.rows.items():
            route = routes.get(name)
            if route == RETIRED_ROUTE:
                continue
            writer = self._writer(cur, name, route)
            with cur.copy(writer.copy) as copy:
                for row in rows.values():
                    copy.write_row(writer.params(row))
            cur.execute(writer.upsert)
        checkpoints = [
            (p, part, off)
            for (p, part), off in batch.checkpoints.items()
            if routes.get(p) != RETIRED_ROUTE
        ]
        if checkpoints:
            cur.executemany(UPSERT_CHECKPOINT, checkpoints)
        cur.executemany(UPSERT_OFFSET, [(t, p, o) for (t, p), o in offsets.items()])
        # Delivered at commit, and only if the transaction commits.
        cur.execute("SELECT pg_notify(%s, %s)", (CHECKPOINT_CHANNEL, self.config.schema))

    def _writer(self, cur: psycopg.Cursor[Any], name: str, relation: str | None) -> TableWriter:
        """The projection's writer, or once it has generations, one for its generation's
        table. Its staging table is created on first use in this connection: a table a
        writer is not used for may since have become a generation (renamed `<table>_g1`)."""
        if relation is None:
            writer = self.writers[name]
        else:
            writer = self._routed.get(relation)
            if writer is None:
                projection = self.writers[name].projection
                writer = table_writer(projection, self.codec.catalog, relation)
                self._routed[relation] = writer
        staged = (name, relation)
        if staged not in self._staged:
            cur.execute(writer.stage)
            self._staged.add(staged)
        return writer

    def _transaction(self, work: Any, *args: Any) -> Any:
        """`work(cursor, *args)` in one transaction, retried while the database restarts."""
        for attempt in range(RETRIES):
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    return work(cur, *args)
            except psycopg.OperationalError as exc:
                self.metrics.retries.inc()
                log.warning("database transaction failed (attempt %d): %s", attempt + 1, exc)
                self._drop_connection()
                time.sleep(min(0.2 * 2**attempt, 5.0))
        raise SystemExit(f"sink stopped: database unreachable after {RETRIES} attempts")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # autocommit: each batch is one explicit transaction block
            self._conn = connect(self.config.dsn, self.config.schema)
            self._staged = set()  # staging tables are per session
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    # -- records ---------------------------------------------------------------------------

    def _check_contiguous(self, messages: Sequence[Message]) -> None:
        """Projection records are produced without transactions, so within one partition
        every offset holds a record; one this process jumps over was either compacted away
        or lost upstream of the sink. Counted and logged, so such a loss is visible."""
        positions = ((m.topic(), m.partition(), m.offset()) for m in messages)
        for topic, partition, first, last in skipped_offsets(self._last_seen, positions):
            count = last - first + 1
            self.metrics.skipped_offsets.labels(self.by_topic[topic].name).inc(count)
            log.warning(
                "%s[%d]: offsets %d..%d skipped (%d records never seen by this sink)",
                topic,
                partition,
                first,
                last,
                count,
                extra={"partition": partition},
            )

    def _records(self, messages: Sequence[Message]) -> tuple[list[SinkRecord], dt.datetime | None]:
        """Every record's checkpoint, and the row of only the newest record per key and
        partition, decoded: decoding is most of a record's cost, and an older row of the
        same key loses anyway. The newest is the one with the highest `ce_sourceoffset`
        (ties: the later record), because a row published for the event at source offset X
        holds every change of its key up to X; `reduce_batch` and the guarded upsert still
        compare the rows themselves. Also the oldest `ce_time` among the rows."""
        out: list[SinkRecord] = []
        newest: dict[tuple[str, int, bytes], tuple[int, Message, SinkRecord]] = {}
        counts: dict[str, int] = {}
        oldest_time: str | None = None
        for m in messages:
            projection = self.by_topic[m.topic()]
            counts[projection.name] = counts.get(projection.name, 0) + 1
            headers = header_map(m.headers())
            try:
                partition, checkpoint, cause = read_progress(headers)
            except BadProgressHeaders as exc:
                self._skip(m, exc)
                continue
            if m.value() is None or is_checkpoint(headers):  # None: earlier versions' markers
                out.append(SinkRecord(projection, partition, checkpoint, None))
                continue
            time_text = headers.get(ce.TIME)
            if time_text is not None and (oldest_time is None or time_text < oldest_time):
                oldest_time = time_text  # RFC 3339 in UTC, as the projector writes it
            progress = SinkRecord(projection, partition, checkpoint, None)
            if cause is None:  # not the projector's: decode it anyway
                if (record := self._decode(m, progress)) is not None:
                    out.append(record)
                continue
            slot = (m.topic(), m.partition(), m.key() or b"")
            held = newest.get(slot)
            if held is not None and held[0] > cause:
                out.append(progress)
                continue
            if held is not None:  # the older row's checkpoint still counts
                out.append(held[2])
            newest[slot] = (cause, m, progress)
        for _, m, progress in newest.values():
            if (record := self._decode(m, progress)) is not None:
                out.append(record)
        for name, n in counts.items():
            self.metrics.records.labels(name).inc(n)
        oldest = None
        if oldest_time is not None:
            with contextlib.suppress(ce.HeaderError):
                oldest = ce.parse_time(oldest_time)
        return out, oldest

    def _decode(self, message: Message, progress: SinkRecord) -> SinkRecord | None:
        """`progress` (a record's checkpoint) with the record's row decoded, or None."""
        partition = progress.source_partition
        try:
            row = self.codec.decode(message.value(), progress.projection.row_schema)
        except CodecError as exc:
            self._skip(message, exc)
            return None
        if partition != message.partition():
            log.error(
                "record %s[%d]@%d names source partition %d; projection topics must have "
                "the partition count of the events topic",
                message.topic(),
                message.partition(),
                message.offset(),
                partition,
                extra={"partition": message.partition()},
            )
        return SinkRecord(progress.projection, partition, progress.checkpoint, row)

    def _skip(self, message: Message, exc: Exception) -> None:
        # Nothing the projector writes looks like this; a stray producer does. Skip it: the
        # rows come from the events, which the projector can always publish again.
        self.metrics.undecodable.inc()
        log.error(
            "skipping undecodable record %s[%d]@%d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            exc,
            extra={"partition": message.partition()},
        )

    # -- metrics ---------------------------------------------------------------------------

    def _count(self, batch: SinkBatch, seconds: float) -> None:
        m = self.metrics
        m.batch_size.observe(batch.records)
        m.commit_seconds.observe(seconds)
        for name, rows in batch.rows.items():
            m.rows.labels(name).inc(len(rows))
        if batch.oldest_event is not None:
            m.latency.observe((dt.datetime.now(dt.UTC) - batch.oldest_event).total_seconds())

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        positions: dict[Position, tuple[int, int]] = {}
        for topic, partition in self._assigned:
            next_offset = self._next.get((topic, partition))
            if next_offset is None:
                continue
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high >= 0:
                positions[(topic, partition)] = (high, next_offset)
        self.metrics.lag.update(positions, now=now)


def _offset_text(offset: int) -> str:
    return str(offset) if offset >= 0 else "committed"
