"""The gateway's Prometheus metrics, in a registry of its own (several apps may share a
process in tests; the default registry would refuse the second set of names)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_http_request_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_http_requests_in_flight", "HTTP requests being answered.", registry=r
        )
        self.commands = Counter(
            "gateway_commands",
            "Commands by type and outcome (queued, accepted, rejected, conflict, invalid, "
            "timeout, unavailable).",
            ["type", "outcome"],
            registry=r,
        )
        self.waiting = Gauge(
            "gateway_commands_in_flight",
            "Commands being submitted: validated, produced, awaiting Kafka's acknowledgement "
            "and, with ?wait, their result or read model.",
            registry=r,
        )
        self.result_seconds = Histogram(
            "gateway_command_result_seconds",
            "From producing a command to its result arriving (requests with ?wait), by type.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
