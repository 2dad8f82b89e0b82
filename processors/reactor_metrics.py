"""Prometheus metrics of the reactor."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from processors.consumer_lag import ConsumerLag


class ReactorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "cqrs_reactor_events_total",
            "Events of other contexts consumed, by whether a process manager reacted",
            ["reacted"],
            registry=registry,
        )
        self.issued = Counter(
            "cqrs_reactor_commands_total",
            "Commands the process managers issued, by type",
            ["type"],
            registry=registry,
        )
        self.skipped = Counter(
            "cqrs_reactor_skipped_total",
            "Subscribed events skipped because they could not be decoded",
            registry=registry,
        )
        self.aborts = Counter(
            "cqrs_transaction_aborts_total", "Kafka transactions aborted", registry=registry
        )
        # Lag of the other contexts' events topics, and the group's rebalances.
        self.lag = ConsumerLag(registry)
