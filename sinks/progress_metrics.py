"""The figures of `cqrsctl projections status` as metrics: a sink thread samples them.

Every `every_s` seconds the monitor reads each projection's progress (sinks/progress.py)
with its own Postgres connection and Kafka consumer, so a slow read never holds up the
sink's batches, and sets the gauges. Every sink instance exports the same figures (they
describe the read model, not the instance): aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from sinks.db import connect
from sinks.progress import (
    EventsProbe,
    ProbeError,
    ProjectionProgress,
    estimate,
    read_progress,
    tracked,
)

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


class ProgressMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["projection", "generation", "state"]
        self.applied = Gauge(
            "cqrs_projection_applied_offsets",
            "Offsets of <ctx>.events the read model has passed (checkpoints + 1, summed)",
            labels,
            registry=registry,
        )
        self.lag_events = Gauge(
            "cqrs_projection_lag_events",
            "Offsets of <ctx>.events still to apply (transaction markers included)",
            labels,
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "cqrs_projection_lag_seconds",
            "Seconds since the oldest event the read model has not applied (0: caught up)",
            labels,
            registry=registry,
        )
        self.eta_seconds = Gauge(
            "cqrs_projection_eta_seconds",
            "Estimated seconds to catch up at the rate of the last two samples (NaN: no rate)",
            labels,
            registry=registry,
        )

    def set(self, progress: ProjectionProgress) -> None:
        labels = (progress.projection, str(progress.generation), progress.state)
        self.applied.labels(*labels).set(progress.applied)
        self.lag_events.labels(*labels).set(progress.lag_events)
        self.lag_seconds.labels(*labels).set(progress.lag_seconds)
        eta = progress.eta_seconds
        self.eta_seconds.labels(*labels).set(math.nan if eta is None else eta)


class ProgressMonitor:
    """A daemon thread that samples every projection's progress into `metrics`."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        kafka: dict[str, Any],
        events_topic: str,
        partitions: int,
        projections: Sequence[str],
        metrics: ProgressMetrics,
        every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._kafka = kafka
        self._topic = events_topic
        self._partitions = partitions
        self._projections = list(projections)
        self.metrics = metrics
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> ProgressMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        previous: dict[tuple[str, int], ProjectionProgress] = {}
        probe = EventsProbe(self._kafka, self._topic, self._partitions)
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stop.wait(self._every_s if previous else 0.5):
                try:
                    if conn is None or conn.closed:
                        conn = connect(self._dsn, self._schema)
                    entries = tracked(conn, self._projections)
                    for sample in read_progress(conn, probe, entries):
                        earlier = previous.get(sample.key)
                        moved = earlier is not None and sample.at > earlier.at
                        shown = estimate(earlier, sample) if moved else sample
                        self.metrics.set(shown)
                        previous[sample.key] = sample
                except (psycopg.Error, KafkaException, ProbeError) as exc:
                    log.warning("projection progress not sampled: %s", exc)
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            probe.close()
            if conn is not None:
                conn.close()
