"""The transactional command processor: the imperative shell around the deciders.

One consumer group on `<ctx>.commands` (clients' commands) and `<ctx>.internal-commands`
(the commands process managers issue, written only by the processor); each instance owns the
aggregates of the partitions it is assigned, the same-numbered partition of both topics (the
range assignor co-partitions topics of equal partition count). Per batch, in ONE Kafka
transaction: the events, the command results, the aggregate snapshots, the commands that
process managers issue, dead letters, and the consumed offsets of both topics
(`send_offsets_to_transaction` with the consumer's group metadata, so a zombie that lost its
partitions cannot commit). Either all of it becomes visible to read_committed readers, or
none of it does.

Here: the poll loop, deciding a batch, and aborting and replaying it. Its collaborators:
processors/processor_config.py (settings), processors/input_partitions.py (rebalances and
lag), processors/batch_publish.py (the batch's records), processors/transactional_producer.py
(the producer's transactional steps).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry

from processors import wire
from processors.batch_publish import DecidedCommand, produce_events, publish_outcomes
from processors.command_handler import (
    ACCEPTED,
    CommandHandler,
    Decided,
    Duplicate,
    log_extra,
)
from processors.gc_tuning import tune_gc
from processors.group_watch import GroupWatch
from processors.input_partitions import InputPartitions
from processors.metrics import ProcessorMetrics
from processors.outputs import OutputBuilder, OutputRefused, Outputs, SnapshotRefused
from processors.processor_config import ProcessorConfig
from processors.registry import Registry
from processors.topic_admin import TopicsNotReady, check_declared_topics
from processors.topics import TopicSpec
from processors.tracing import CommandSpans
from processors.transactional_producer import commit, flush, new_producer, start_transactions
from processors.watchdog import Watchdog
from schemas.wire import headers as ce
from schemas.wire.dead_letter import Undecodable, dead_letter

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)


class CommandProcessor:
    def __init__(
        self,
        config: ProcessorConfig,
        registry: Registry,
        metrics_registry: CollectorRegistry = REGISTRY,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: a span per command (processors/tracing.py); None, the default: none."""
        self.config = config
        self.topics = config.topics
        ctx = registry.context(config.context)
        self.partitions = ctx.partitions
        self.handler = CommandHandler(registry, config.context, ctx.partitions, config.dedup_window)
        self.outputs = OutputBuilder(
            self.topics.prefix, self.topics.events, config.max_record_bytes
        )
        self.metrics = ProcessorMetrics(metrics_registry)
        self._spans = CommandSpans(tracer) if tracer is not None else None
        self.source = f"/{config.context}/command-processor"
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.last_loop_at = time.monotonic()
        self._fatal: KafkaError | None = None
        self._last_error: KafkaError | None = None
        self._watchdog: Watchdog | None = None
        self.group_watch = GroupWatch()
        self._inputs = InputPartitions(
            config, self.handler, self.metrics, self.ready, self.group_watch
        )
        self._consumer = Consumer(
            {
                **config.consumer_settings(),
                **self.group_watch.consumer_config(),
                "error_cb": self._on_client_error,
            }
        )
        self._producer = new_producer(config, self._on_client_error)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _on_client_error(self, err: KafkaError) -> None:
        """A fatal client error (fenced by a newer incarnation with our instance id, or a
        broken idempotent producer) never heals: this incarnation can do no more useful work.
        Transient errors (broker down, coordinator moving) are librdkafka's to retry."""
        self._last_error = err
        if err.fatal():
            self._fatal = err
            self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> None:
        tune_gc()
        self._watchdog = Watchdog()
        # The clients are closed here on every way out: a Consumer left to the interpreter's
        # exit is destroyed there and may call back into Python mid-finalisation, a segfault
        # (confluent-kafka-python#358, #265), seen as exit -11 after a refused password.
        try:
            start_transactions(self._producer, lambda: self._last_error)
            self._check_inputs()
            self._consumer.subscribe(
                list(self._inputs.names),
                on_assign=self._inputs.on_assign,
                on_revoke=self._inputs.on_revoke,
            )
            while not self._stop.is_set():
                self.last_loop_at = time.monotonic()
                messages = self._consumer.consume(
                    self.config.batch_size, self.config.poll_timeout_s
                )
                if messages:
                    self._process_batch(messages)
                self._inputs.update_lag(self._consumer)
                if self.group_watch.stuck():
                    raise SystemExit(f"command processor stopped: {self.group_watch.why()}")
        finally:
            self._close()
        if self._fatal is not None:
            raise SystemExit(f"command processor stopped: fatal Kafka error: {self._fatal.str()}")

    def _check_inputs(self) -> None:
        """Both commands topics exist with the context's partition count: a missing internal
        topic would leave process managers' commands undeliverable, and a different count
        would break the co-partitioning that keeps one writer per aggregate."""
        specs = [TopicSpec(name, self.partitions) for name in self._inputs.names]
        try:
            check_declared_topics(self.config.kafka, specs)
        except (TopicsNotReady, KafkaException) as exc:
            raise SystemExit(f"command processor stopped: {exc}") from None

    def _close(self) -> None:
        self._consumer.close()
        if self._fatal is None:
            try:
                self._producer.flush(10)
            except KafkaException as exc:
                # Stopping because of a fatal error already (e.g. fenced while committing):
                # say so in the log, and let the reason we are stopping be the exit message.
                log.warning("producer flush on close failed: %s", exc.args[0])
        # Nothing still queued matters (a fenced producer may deliver nothing; what an
        # unfinished transaction wrote is aborted by the next incarnation), so the handle is
        # destroyed now, not at exit. Producer.close() would abort and flush without a timeout.
        self._producer.purge()
        del self._producer

    # -- one batch, one transaction --------------------------------------------------------

    def _process_batch(self, messages: list[Message]) -> None:
        started = time.monotonic()
        self.handler.begin_batch()
        first_offsets: dict[tuple[str, int], int] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        try:
            self._producer.begin_transaction()
            stamp = ce.Stamp(self.source)
            decided, duplicates = self._decide_all(stamp, messages, first_offsets, next_offsets)
            # Events must be acknowledged before results can name their offsets.
            flush(self._producer, self.config.operation_timeout_s)
            publish_outcomes(
                self._producer, self.topics, self.handler, self.outputs, stamp, decided, duplicates
            )
            offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
            # Bounded: without a timeout librdkafka retries forever, e.g. after a broker
            # restart while the group rebalances; an abort and a replay recover instead.
            # Its timeout is not always honoured (see processors/watchdog.py): hence the
            # watchdog around it.
            with self._bounded("send_offsets_to_transaction"):
                self._producer.send_offsets_to_transaction(
                    offsets,
                    self._consumer.consumer_group_metadata(),
                    self.config.operation_timeout_s,
                )
            commit(self._producer, self.config.operation_timeout_s)
        except KafkaException as exc:
            self._recover(exc, first_offsets)
            return
        except SnapshotRefused as refused:
            # Rare: an aggregate's state outgrew what Kafka takes during this batch. Undo the
            # batch and replay it checking that aggregate's snapshot after every command, so
            # the command that made it too large is rejected instead of retried forever.
            if refused.aggregate in self.outputs.strict:
                raise RuntimeError(
                    f"snapshot refused under per-command checks: {refused}"
                ) from refused
            log.warning("replaying the batch: %s", refused)
            self.outputs.strict.add(refused.aggregate)
            self.metrics.aborts.inc()
            self.handler.rollback()
            self._abort_and_rewind(first_offsets)
            return
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.metrics.batch_size.observe(len(messages))
        # Per (status, reason) once per batch: labels() costs as much as deciding a deposit.
        if log.isEnabledFor(logging.DEBUG):
            for d, _, _ in decided:
                if d.status != ACCEPTED:
                    _log_outcome(d)
        for (status, reason), count in Counter((d.status, d.reason) for d, _, _ in decided).items():
            self.metrics.commands.labels(status, reason).inc(count)
        self.metrics.duplicates.inc(len(duplicates))

    def _decide_all(
        self,
        stamp: ce.Stamp,
        messages: list[Message],
        first_offsets: dict[tuple[str, int], int],
        next_offsets: dict[tuple[str, int], int],
    ) -> tuple[list[DecidedCommand], list[Duplicate]]:
        decided: list[DecidedCommand] = []
        duplicates: list[Duplicate] = []
        spans = self._spans
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal() or err.code() == KafkaError._FATAL:
                    # Nothing of this batch is produced yet; the transaction is aborted by
                    # whoever fenced us (or times out), so stopping loses nothing.
                    self._fatal = err
                    self._stop.set()
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if partition not in self.handler.owned:
                continue  # revoked while the batch was in flight
            first_offsets.setdefault((topic, partition), offset)
            next_offsets[(topic, partition)] = offset + 1
            parsed = wire.parse_command(msg, internal=topic == self.topics.internal_commands)
            if isinstance(parsed, Undecodable):
                self._dead_letter(stamp, msg, parsed)
                continue
            if spans is not None:
                # What the command causes carries the span's traceparent from here on.
                parsed, span = spans.start(parsed)
            outcome = self.handler.handle(parsed)
            if isinstance(outcome, Duplicate):
                duplicates.append(outcome)
            else:
                # Output Kafka would refuse turns the command into a rejection here, before
                # any of it is produced, rather than into an abort that would come back forever.
                outcome, outputs = settle(self.handler, self.outputs, stamp, outcome)
                pending = produce_events(self._producer, self.topics.events, outcome, outputs)
                decided.append((outcome, pending, outputs))
            if spans is not None:
                spans.end(span, outcome)
        return decided, duplicates

    def _dead_letter(self, stamp: ce.Stamp, msg: Message, why: Undecodable) -> None:
        self.metrics.dead_letters.labels(why.error_type).inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            why.error_type,
            why.reason,
            extra=_fields(msg.partition(), _header_text(msg, ce.ID)),
        )
        key, value, headers = dead_letter(
            wire.original(msg), why, stamp.time_header, self.config.max_record_bytes
        )
        self._producer.produce(
            self.topics.dlq, value, key, partition=msg.partition(), headers=headers
        )

    def _recover(self, exc: KafkaException, first_offsets: dict[tuple[str, int], int]) -> None:
        """Abort, roll memory back, and rewind to the batch's first offsets. A producer that
        cannot abort was fenced or failed fatally: another instance owns our partitions now,
        so stop and let the supervisor start a fresh incarnation."""
        err = exc.args[0] if exc.args else None
        self.metrics.aborts.inc()
        self.handler.rollback()
        if not (isinstance(err, KafkaError) and err.txn_requires_abort()):
            self._stop.set()
            why = err.str() if isinstance(err, KafkaError) else str(err)
            raise SystemExit(f"command processor stopped: {why}") from exc
        log.warning("transaction aborted: %s", err)
        self._abort_and_rewind(first_offsets)

    def _abort_and_rewind(self, first_offsets: dict[tuple[str, int], int]) -> None:
        try:
            with self._bounded("abort_transaction"):
                self._producer.abort_transaction(30)
            self._renew_producer()
        except KafkaException as abort_exc:
            self._stop.set()
            raise SystemExit(f"command processor stopped: {abort_exc}") from abort_exc
        for (topic, partition), offset in first_offsets.items():
            if partition in self.handler.owned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _renew_producer(self) -> None:
        """A fresh producer after every abort. With librdkafka (transaction protocol v1)
        the producer epoch survives an abort, so a write of the aborted batch still in
        flight (a broker that went away mid-request) could land after the abort marker and
        be committed with the next batch, which replays the same commands: a duplicate.
        init_transactions on a new producer bumps the epoch, and the broker fences every
        write of the old one, as Kafka's transaction protocol v2 (KIP-890) does by itself."""
        old, self._producer = self._producer, new_producer(self.config, self._on_client_error)
        old.purge()
        with self._bounded("init_transactions"):
            self._producer.init_transactions(30)

    def _bounded(self, what: str) -> contextlib.AbstractContextManager[None]:
        if self._watchdog is None:
            return contextlib.nullcontext()
        return self._watchdog.bounded(what, self.config.operation_timeout_s + 20)


def _fields(partition: int, command_id: str | None) -> dict[str, Any]:
    """The `extra=` of a log line about one command (processors/logs.py writes them)."""
    fields: dict[str, Any] = {"partition": partition}
    if command_id is not None:
        fields["command_id"] = command_id
    return fields


def _header_text(msg: Message, name: str) -> str | None:
    """A header of a record that may be malformed: its text, or None."""
    for key, value in msg.headers() or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")[:200]
    return None


def _log_outcome(d: Decided) -> None:
    msg = d.message
    log.debug(
        "%s %s %s on %s: %s %s",
        d.status.lower(),
        msg.command_type,
        msg.command_id,
        msg.key,
        d.reason,
        d.detail,
        extra=log_extra(msg),
    )


def settle(
    handler: CommandHandler, outputs: OutputBuilder, stamp: ce.Stamp, d: Decided
) -> tuple[Decided, Outputs]:
    """The outcome of a decided command and its records: `d`'s own, or, when they cannot be
    written, those of its rejection (`handler.retract` undoes its memory changes)."""
    try:
        return d, outputs.build(stamp, d)
    except OutputRefused as refused:
        rejected = handler.retract(d, refused.reason, refused.detail)
    try:
        return rejected, outputs.build(stamp, rejected)
    except OutputRefused as again:
        # Only commands that process managers issue in reaction to the rejection can be
        # left over; they cannot be written either.
        msg = d.message
        log.error(
            "command %s: dropping %d process-manager commands: %s",
            msg.command_id,
            len(rejected.issued),
            again,
            extra=log_extra(msg),
        )
        rejected.issued = []
        return rejected, outputs.build(stamp, rejected)
