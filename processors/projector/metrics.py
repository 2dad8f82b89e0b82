"""Prometheus metrics of the projector."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from processors.consumer_lag import ConsumerLag

BATCH_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ProjectorMetrics:
    def __init__(self) -> None:
        self.events = Counter("cqrs_projector_events_total", "Events consumed")
        self.applied = Counter(
            "cqrs_projector_applied_total", "Event applications that changed a row"
        )
        self.redelivered = Counter(
            "cqrs_projector_redelivered_total",
            "Event applications skipped because the row already had them",
        )
        self.failures = Counter(
            "cqrs_projector_failures_total",
            "Events skipped because they could not be decoded or applied, or rows refused",
            ["reason"],
        )
        self.reread = Counter(
            "cqrs_projector_reread_events_total",
            "Events Faust fetched and dropped before the agent saw them, read again from Kafka",
        )
        self.published = Counter(
            "cqrs_projector_records_total", "Records published per projection", ["projection"]
        )
        self.batch_size = Histogram(
            "cqrs_projector_batch_size", "Events per batch", buckets=BATCH_SIZES
        )
        self.batch_seconds = Histogram(
            "cqrs_projector_batch_seconds",
            "Time to project, store and publish one batch",
            buckets=SECONDS,
        )
        self.lag = ConsumerLag()
