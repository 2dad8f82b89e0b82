"""The consumer metrics every consuming worker exports: lag per assigned partition, in
records and in seconds, and the consumer group's rebalances.

Lag in records is the partition's end (high watermark, or the last stable offset of a
read_committed consumer) minus the next offset the worker will process. A worker whose
next offset stops at a commit marker (the projector: Faust's acknowledged offsets) names
the topics only transactions write (`<ctx>.events`): there the last offset below the end
is always a marker, never a record, so one is taken off and a caught-up partition shows 0.
The librdkafka workers pass their consumer's position, which moves past markers itself.

Lag in seconds is how long the oldest record still to process has been waiting, measured
with the worker's clock from samples of the end offset (`LagClock`): the record at the
next offset arrived between the last sample whose end was at or below it and the first
whose end passed it. The resolution is the sampling interval (about a second); a backlog
found at start-up counts from the first sample.

`update` takes every partition the worker owns at that moment; the series of any other
partition (revoked, lost) are removed, so a sum over the workers of a group counts each
partition once after a rebalance.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

Partition = tuple[str, int]  # (topic, partition)
MAX_SAMPLES = 512


class LagClock:
    """When the end offset of one partition grew: `(time, end)` samples, oldest first."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.max_samples = max_samples
        self.samples: list[tuple[float, int]] = []

    def observe(self, now: float, end: int) -> None:
        if self.samples and end < self.samples[-1][1]:
            self.samples.clear()  # the partition was truncated or recreated
        if not self.samples or end > self.samples[-1][1]:
            self.samples.append((now, end))
            if len(self.samples) > self.max_samples:
                # Coarser, never shorter: the oldest sample stays.
                self.samples = self.samples[::2]

    def waiting_since(self, position: int) -> float | None:
        """When the record at `position` was first seen below the end; None when none
        waits. Samples the position has passed are dropped."""
        drop = 0
        while drop < len(self.samples) and self.samples[drop][1] <= position:
            drop += 1
        del self.samples[:drop]
        return self.samples[0][0] if self.samples else None


class ConsumerLag:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["topic", "partition"]
        self.records = Gauge(
            "cqrs_consumer_lag_records",
            "Records behind the partition's end (commit markers not counted)",
            labels,
            registry=registry,
        )
        self.seconds = Gauge(
            "cqrs_consumer_lag_seconds",
            "How long the oldest record not yet processed has been waiting (0: caught up)",
            labels,
            registry=registry,
        )
        self.rebalances = Counter(
            "cqrs_consumer_rebalances_total",
            "Partition assignments this worker received from its consumer group",
            registry=registry,
        )
        self._clocks: dict[Partition, LagClock] = {}

    def update(
        self,
        positions: Mapping[Partition, tuple[int, int]],
        transactional: Collection[str] = (),
        now: float | None = None,
    ) -> None:
        """`positions`: (end offset, next offset to process) of every partition the worker
        owns now; the series of every other partition are removed. `transactional`: topics
        only transactions write (their last offset is a marker)."""
        now = time.monotonic() if now is None else now
        for (topic, partition), (end, position) in positions.items():
            if topic in transactional and end > position:
                end -= 1
            clock = self._clocks.setdefault((topic, partition), LagClock())
            clock.observe(now, end)
            since = clock.waiting_since(position)
            labels = (topic, str(partition))
            self.records.labels(*labels).set(max(0, end - position))
            self.seconds.labels(*labels).set(0.0 if since is None else now - since)
        for gone in set(self._clocks) - set(positions):
            self.forget(*gone)

    def forget(self, topic: str, partition: int) -> None:
        """Remove a partition's series (revoked or lost)."""
        self._clocks.pop((topic, partition), None)
        for gauge in (self.records, self.seconds):
            with contextlib.suppress(KeyError):  # no series yet
                gauge.remove(topic, str(partition))


def consumer_positions(
    consumer: Consumer, owned: list[TopicPartition], start_at: dict[Partition, int]
) -> dict[Partition, tuple[int, int]]:
    """(end, next offset) of each owned partition, for `ConsumerLag.update`, from a
    librdkafka consumer whose loop handles every record consume() returned before calling
    it again: its position is then the next offset to process, and librdkafka moves it past
    commit markers once it has fetched them. A partition with no position yet (nothing
    fetched) starts at its committed offset, else its first; those are looked up here and
    kept in `start_at` (the caller drops a revoked partition's entry)."""
    positions: dict[Partition, tuple[int, int]] = {}
    unknown: list[TopicPartition] = []
    for tp in consumer.position(owned):
        where = (tp.topic, tp.partition)
        start = tp.offset if tp.offset >= 0 else start_at.get(where)
        if start is None:
            unknown.append(tp)
            continue
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0:
            positions[where] = (high, start)
    if unknown:
        with contextlib.suppress(KafkaException):
            for tp in consumer.committed(unknown, timeout=1):
                low, _ = consumer.get_watermark_offsets(tp, cached=True)
                start = tp.offset if tp.offset >= 0 else low
                if start >= 0:  # used from the next call on
                    start_at[(tp.topic, tp.partition)] = start
    return positions
