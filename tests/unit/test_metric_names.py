"""The metric-name registry reads the names from the code's metrics classes, expands them
the way prometheus-client writes samples, leaves the default registry as it was, and works
beside a worker running in the same process."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from deploy.metric_names import (
    ROLES,
    collect_here,
    exported_names,
    role_metrics,
    roles_exporting,
    sample_names,
)
from processors.projector.metrics import ProjectorMetrics


def test_each_role_exports_its_own_metrics_with_prometheus_client_suffixes() -> None:
    assert ROLES == ("processor", "projector", "sink", "gateway")
    processor = exported_names(["processor"])
    assert {"cqrs_commands_total", "cqrs_commands_created", "cqrs_assigned_partitions"} <= processor
    assert {"cqrs_batch_seconds_bucket", "cqrs_batch_seconds_sum"} <= processor
    assert {"cqrs_batch_seconds_count"} <= processor
    # A counter's family name alone is never a sample.
    assert "cqrs_commands" not in processor
    assert roles_exporting("cqrs_consumer_lag") == {"projector", "sink"}
    assert roles_exporting("gateway_http_requests_total") == {"gateway"}
    # The default collectors every /metrics serves.
    assert roles_exporting("process_cpu_seconds_total") == set(ROLES)


def test_reading_the_names_leaves_the_default_registry_untouched() -> None:
    before = set(REGISTRY._names_to_collectors)
    here = collect_here()
    assert set(REGISTRY._names_to_collectors) == before
    assert {role: frozenset(names) for role, names in here.items()} == role_metrics()


def test_a_worker_in_this_process_does_not_collide_with_the_reading() -> None:
    running = ProjectorMetrics()  # as a projector in this process would have registered
    try:
        role_metrics.cache_clear()
        assert "cqrs_projector_events_total" in exported_names(["projector"])
    finally:
        for metric in (*vars(running).values(), running.lag.gauge):
            if isinstance(metric, MetricWrapperBase):
                REGISTRY.unregister(metric)


def test_sample_names_follow_the_metric_type() -> None:
    registry = CollectorRegistry()
    Counter("x", "help", registry=registry)
    Histogram("y_seconds", "help", registry=registry)
    names = {n.sample for family in registry.collect() for n in sample_names(family)}
    assert names == {
        "x_total",
        "x_created",
        "y_seconds_bucket",
        "y_seconds_count",
        "y_seconds_sum",
        "y_seconds_created",
    }
