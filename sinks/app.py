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

This module is the consumer loop, its partition assignment and its metrics;
sinks/records.py decodes a batch, sinks/batch_writer.py writes it to Postgres, and
sinks/config.py holds the worker's configuration and consumer group.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Sequence

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from processors.gc_tuning import tune_gc
from processors.generations import projections_to_run
from processors.group_watch import GroupWatch
from processors.projections import Projection
from processors.registry import Registry
from processors.topic_admin import check_declared_topics
from processors.topics import TopicSpec
from schemas.codec import default_codec
from sinks.batch import Position, SinkBatch, reduce_batch
from sinks.batch_writer import BatchWriter
from sinks.config import SinkConfig
from sinks.metrics import SinkMetrics
from sinks.progress_metrics import ProgressMetrics, ProgressMonitor
from sinks.records import RecordReader

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


class Sink:
    def __init__(self, config: SinkConfig, registry: Registry) -> None:
        self.config = config
        ctx = registry.context(config.context)
        self.projections: Sequence[Projection] = projections_to_run(
            ctx.projections, config.projection, config.generation
        )
        self.partitions = ctx.partitions
        self.topics = config.topics
        self.codec = default_codec()
        self.by_topic = {self.topics.projection(p.name): p for p in self.projections}
        self.metrics = SinkMetrics()
        self.reader = RecordReader(self.by_topic, self.codec, self.metrics)
        self.writer = BatchWriter(
            config.dsn, config.schema, self.projections, self.codec.catalog, self.metrics
        )
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
        self._lag_at = 0.0
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
                # One fetch per 50 ms while projection records trickle in (the batch waits
                # batch_wait_s for more anyway), not one per projector produce.
                "fetch.min.bytes": 256 * 1024,
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
        self.writer.close()

    # -- assignment: positions come from Postgres ------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.writer.stored_offsets(sorted({tp.topic for tp in partitions}))
        for tp in partitions:
            position = (tp.topic, tp.partition)
            if position in stored:
                tp.offset = stored[position]
                self._next[position] = tp.offset
                self.reader.last_seen[position] = tp.offset - 1
            else:  # no position in Postgres yet: the group's offset in Kafka, else earliest
                self.reader.last_seen.pop(position, None)
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
        self.reader.check_contiguous(good)
        records, oldest_event = self.reader.records(good)
        batch = reduce_batch(records)
        batch.oldest_event = oldest_event
        offsets: dict[Position, int] = {}
        for m in good:
            position = (m.topic(), m.partition())
            offsets[position] = max(offsets.get(position, 0), m.offset() + 1)
        started = time.monotonic()
        self.writer.write(batch, offsets)
        self._count(batch, time.monotonic() - started)
        self._next.update(offsets)
        # A copy for lag tools; the position that counts is the one just committed.
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=True,
        )

    # -- records ---------------------------------------------------------------------------

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
