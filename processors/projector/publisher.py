"""The projector's output: every publication of a batch (processors/projector/batch.py)
encoded as a record of `<ctx>.projection.<name>` (processors/projector/records.py) and
produced through a confluent-kafka (librdkafka) producer rather than Faust's aiokafka one:
about ten times less Python per record, idempotent, ordered per partition.

`publish` returns once the broker acknowledged every record of the batch; a record that
cannot be delivered stops the worker (the restart replays the batch). The offsets the
records reached are kept per topic and partition (`take_delivered`): the projection topics
of stateful projections are their tables' changelogs, and Faust's recovery starts after
the last of them (processors/projector/tables.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from processors.faust_app import exit_now
from processors.projections import EventMeta
from processors.projector.batch import BatchOutcome, Publication
from processors.projector.metrics import ProjectorMetrics
from processors.projector.records import KafkaRecord, encode, record_size
from processors.topics import ContextTopics
from schemas.codec import Codec
from schemas.wire.limits import DERIVED_MAX_RECORD_BYTES

log = logging.getLogger(__name__)


class RowPublisher:
    def __init__(
        self,
        kafka: dict[str, Any],
        topics: ContextTopics,
        source: str,
        codec: Codec,
        metrics: ProjectorMetrics,
    ) -> None:
        self.topics, self.source, self.codec, self.metrics = topics, source, codec, metrics
        self._delivery_errors: list[KafkaError] = []
        self._delivered: dict[tuple[str, int], int] = {}  # last offset per (topic, partition)
        self._producer = Producer(
            {
                **kafka,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "batch.num.messages": 10_000,
                "message.max.bytes": DERIVED_MAX_RECORD_BYTES + 64 * 1024,
                "on_delivery": self._on_delivery,
            }
        )

    async def publish(self, outcome: BatchOutcome) -> None:
        """Produce every publication of `outcome`, then wait until all are delivered."""
        produce = self._producer.produce
        for pub in outcome.publications:
            record = self._fitting(encode(pub, self.topics, self.source, self.codec), pub)
            while True:
                try:
                    produce(
                        record.topic,
                        record.value,
                        record.key,
                        partition=record.partition,
                        headers=record.headers,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.get_running_loop().run_in_executor(
                        None, self._producer.poll, 0.05
                    )
            if not pub.is_marker:
                self.metrics.published.labels(pub.projection.name).inc()
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self._producer.flush, 60.0
        )
        if remaining or self._delivery_errors:
            errors = self._delivery_errors[:3]
            exit_now(f"{remaining} projection records undelivered, errors: {errors}")

    def _fitting(self, record: KafkaRecord, pub: Publication) -> KafkaRecord:
        """A row over the derived record limit would fail delivery, and the projector would
        fail on the same event after every restart: the read side would stall for good. Such
        a row is refused instead (a failure, like an event the projection cannot apply); a
        checkpoint record takes its place so the partition's checkpoint still advances."""
        size = record_size(record)
        if size <= DERIVED_MAX_RECORD_BYTES:
            return record
        cause = pub.cause
        assert cause is not None  # checkpoint records are small
        self.metrics.failures.labels("too_large").inc()
        log.error(
            "projection %s refuses row %r: %s bytes, over the %s-byte limit (event %s, %s[%d]@%d)",
            pub.projection.name,
            record.key[:80],
            f"{size:,}",
            f"{DERIVED_MAX_RECORD_BYTES:,}",
            cause.event_id,
            self.topics.events,
            cause.partition,
            cause.offset,
            extra=event_fields(cause),
        )
        return encode(pub.as_marker(), self.topics, self.source, self.codec)

    def take_delivered(self) -> dict[tuple[str, int], int]:
        """The last offset delivered per (topic, partition) since the previous call."""
        delivered, self._delivered = self._delivered, {}
        return delivered

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)
            return
        where = (msg.topic(), msg.partition())
        offset = msg.offset()
        if offset > self._delivered.get(where, -1):
            self._delivered[where] = offset


def event_fields(meta: EventMeta) -> dict[str, Any]:
    """The `extra=` of a log line about one event: its partition and the id of the command
    that caused it (processors/logs.py writes them)."""
    fields: dict[str, Any] = {"partition": meta.partition}
    if meta.causation_id is not None:
        fields["command_id"] = meta.causation_id
    return fields
