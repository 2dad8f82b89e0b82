"""Prometheus metrics of the command processor."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from processors.consumer_lag import ConsumerLag


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        # A registry of its own for a second processor in one process (tests); the default
        # one is what /metrics serves.
        self.commands = Counter(
            "cqrs_commands_total",
            "Commands decided, by status and reason",
            ["status", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "cqrs_command_duplicates_total", "Commands whose id was seen before", registry=registry
        )
        self.dead_letters = Counter(
            "cqrs_dead_letters_total",
            "Messages sent to the dead-letter topic",
            ["error_type"],
            registry=registry,
        )
        self.aborts = Counter(
            "cqrs_transaction_aborts_total", "Kafka transactions aborted", registry=registry
        )
        self.batch_seconds = Histogram(
            "cqrs_batch_seconds",
            "Time to decide and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.batch_size = Histogram(
            "cqrs_batch_size",
            "Commands per batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.assigned = Gauge(
            "cqrs_assigned_partitions", "Command partitions owned", registry=registry
        )
        # Lag of both commands topics' owned partitions, and the group's rebalances.
        self.lag = ConsumerLag(registry)
