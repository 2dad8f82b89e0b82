"""The metric-name registry reads the names from the code's metrics classes, expands them
the way prometheus-client writes samples, and leaves the default registry as it was."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from deploy.metric_names import (
    ROLES,
    exported_names,
    role_metrics,
    roles_exporting,
    sample_names,
)


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
    role_metrics.cache_clear()
    role_metrics()
    assert set(REGISTRY._names_to_collectors) == before


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
