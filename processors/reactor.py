"""The reactor: a context's process managers reacting to ANOTHER context's published events.

A process manager may name foreign event types (`bank.TransferCompleted` in shop's). The
command processor only sees its own context's events, so this worker consumes the foreign
contexts' `<other>.events` topics (read_committed), feeds each subscribed event to the
process managers, and produces the commands they issue to the context's own internal
commands topic, `<ctx>.internal-commands`: they are the context's internal commands
(`decides(..., internal=True)`, e.g. shop's `SettlePayment`), which the processor refuses
from the public `<ctx>.commands` topic whatever their id or headers. In Kubernetes only the
processor's and the reactor's Kafka principals may write that topic (docs/security.md).

Per batch, ONE Kafka transaction holds the issued commands and the consumed offsets
(`send_offsets_to_transaction` with the consumer's group metadata), so a reaction's commands
exist exactly when its events count as consumed; a restarted or fenced instance replays
from the last committed offsets, never twice, never skipping. Issued command ids are
derived from the event's ids by the process manager, so even a repeat would be a duplicate
the processor drops. The worker only reads the foreign topics: nothing of the other
context's code is imported, only its published schemas (from the catalog).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry

from processors.consumer_lag import consumer_positions
from processors.domain import BoundedContext, Event, IssueCommand
from processors.partitioning import partition_for
from processors.reactor_metrics import ReactorMetrics
from processors.registry import Registry
from processors.topics import ContextTopics
from schemas.codec import LATEST, CodecError, default_codec
from schemas.wire import headers as ce

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


@dataclass(frozen=True)
class ReactorConfig:
    context: str
    kafka: dict[str, Any] = field(repr=False)  # holds sasl.password when SASL is on
    topic_prefix: str | None = None
    # The topic prefix of each foreign context (default: its name), e.g. {"bank": "bank"}.
    sources: Mapping[str, str] = field(default_factory=dict)
    instance_id: str = "0"
    batch_size: int = 500
    poll_timeout_s: float = 0.1
    operation_timeout_s: float = 10.0

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.topic_prefix or self.context)

    @property
    def group_id(self) -> str:
        return f"{self.topics.prefix}.reactor"

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}.{self.instance_id}"


class NothingToReact(ValueError):
    """The context's process managers name no event of another context."""


class Reactor:
    def __init__(
        self,
        config: ReactorConfig,
        registry: Registry,
        metrics_registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.config = config
        self.metrics = ReactorMetrics(metrics_registry)
        self._owned: list[TopicPartition] = []
        self._start_at: dict[tuple[str, int], int] = {}  # for the lag (consumer_positions)
        self._lag_at = 0.0
        self.registry = registry
        self.ctx: BoundedContext = registry.context(config.context)
        subscribed = self.ctx.foreign_event_types()
        if not subscribed:
            raise NothingToReact(f"context {self.ctx.name!r} reacts to no event of another context")
        self.event_types = frozenset(t for types in subscribed.values() for t in types)
        self.source_topics = [
            ContextTopics(config.sources.get(name, name)).events for name in subscribed
        ]
        self.topics = config.topics
        self.source = f"/{self.ctx.name}/reactor"
        self.codec = default_codec()
        self.ready = threading.Event()
        self.last_loop_at = time.monotonic()
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        self._consumer = Consumer(
            {
                **config.kafka,
                "group.id": config.group_id,
                "group.instance.id": config.transactional_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "error_cb": self._on_error,
            }
        )
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **self.config.kafka,
                "transactional.id": self.config.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "error_cb": self._on_error,
            }
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> None:
        try:
            self._producer.init_transactions(30)
            self._consumer.subscribe(
                self.source_topics, on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while not self._stop.is_set():
                self.last_loop_at = time.monotonic()
                messages = self._consumer.consume(
                    self.config.batch_size, self.config.poll_timeout_s
                )
                if messages:
                    self._react_batch(messages)
                self._update_lag()
        finally:
            self._consumer.close()
            self._producer.purge()
            del self._producer
        if self._fatal is not None:
            raise SystemExit(f"reactor stopped: fatal Kafka error: {self._fatal.str()}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))
        self._owned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self.metrics.lag.rebalances.inc()
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._owned = [tp for tp in self._owned if (tp.topic, tp.partition) not in gone]
        for where in gone:
            self._start_at.pop(where, None)
            self.metrics.lag.forget(*where)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        positions = consumer_positions(self._consumer, self._owned, self._start_at)
        self.metrics.lag.update(positions, now=now)

    # -- one batch, one transaction --------------------------------------------------------

    def _react_batch(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        following: dict[tuple[str, int], int] = {}
        reacted = ignored = 0
        issued: Counter[str] = Counter()
        try:
            self._producer.begin_transaction()
            stamp = ce.Stamp(self.source)
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        self._fatal = err
                        raise KafkaException(err)
                    continue
                where = (msg.topic(), msg.partition())
                first.setdefault(where, msg.offset())
                following[where] = msg.offset() + 1
                reactions = self._reactions(msg)
                if reactions:
                    reacted += 1
                else:
                    ignored += 1
                for cause, issue in reactions:
                    self._produce(stamp, cause, issue)
                    issued[issue.command.type] += 1
            offsets = [TopicPartition(t, p, o) for (t, p), o in following.items()]
            self._producer.send_offsets_to_transaction(
                offsets, self._consumer.consumer_group_metadata(), self.config.operation_timeout_s
            )
            self._producer.commit_transaction(self.config.operation_timeout_s)
        except KafkaException as exc:
            self._abort(exc, first)
            return
        m = self.metrics
        m.events.labels("true").inc(reacted)
        m.events.labels("false").inc(ignored)
        for command_type, count in issued.items():
            m.issued.labels(command_type).inc(count)

    def _reactions(self, msg: Message) -> list[tuple[ce.CloudEventHeaders, IssueCommand]]:
        headers = dict(msg.headers() or ())
        type_header = headers.get(ce.TYPE)
        if type_header is None or type_header.decode(errors="replace") not in self.event_types:
            return []  # routed by header: events we do not react to are not even decoded
        try:
            decoded = self.codec.decode_message(msg.value(), LATEST)
            cause = ce.CloudEventHeaders.from_kafka(msg.headers(), ())
        except (CodecError, ce.HeaderError) as exc:
            # The other context's committed events; one we cannot read is logged, not ours
            # to dead-letter.
            self.metrics.skipped.inc()
            log.error(
                "skipping %s[%d]@%d: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc,
                extra={"partition": msg.partition()},
            )
            return []
        event = Event(decoded.schema.name, decoded.record)
        issued: list[IssueCommand] = []
        for pm in self.ctx.process_managers:
            if event.type in pm.event_types:
                issued += pm.react(event)
        return [(cause, issue) for issue in issued]

    def _produce(self, stamp: ce.Stamp, cause: ce.CloudEventHeaders, issue: IssueCommand) -> None:
        """The command carries the correlation and trace of the event it reacts to; its
        causation id is the event's id."""
        command = issue.command
        agg = self.registry.aggregate_for_command(command.type)
        target = str(command.data[agg.id_field])
        headers = ce.CloudEventHeaders(
            id=issue.command_id,
            type=command.type,
            source=stamp.source,
            subject=target,
            time=stamp.time,
            correlation_id=cause.correlation_id or cause.id,
            causation_id=cause.id,
            traceparent=cause.traceparent,
        )
        self._producer.produce(
            self.topics.internal_commands,
            self.codec.encode(command.type, dict(command.data)),
            target,
            partition=partition_for(target, self.ctx.partitions),
            headers=headers.to_kafka(),
        )

    def _abort(self, exc: KafkaException, first: dict[tuple[str, int], int]) -> None:
        """Abort and rewind to the batch's first offsets; a producer that cannot abort was
        fenced or failed fatally, so the process exits and its supervisor starts it again."""
        err = exc.args[0] if exc.args else None
        if self._fatal is not None or (isinstance(err, KafkaError) and err.fatal()):
            self._stop.set()
            raise SystemExit(f"reactor stopped: {err}") from exc
        log.warning("transaction aborted: %s", err)
        self.metrics.aborts.inc()
        try:
            self._producer.abort_transaction(30)
        except KafkaException as abort_exc:
            raise SystemExit(f"reactor stopped: {abort_exc}") from abort_exc
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
