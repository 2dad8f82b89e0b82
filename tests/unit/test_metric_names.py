"""The metric-name registry reads the names from the code's metrics classes, expands them
the way prometheus-client writes samples, leaves the default registry as it was, and works
beside a worker running in the same process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from deploy.metric_names import (
    ROLES,
    collect_here,
    exported_names,
    role_metrics,
    roles_exporting,
)
from processors.projector.metrics import ProjectorMetrics


def test_each_role_exports_its_own_metrics_with_prometheus_client_suffixes() -> None:
    assert ROLES == ("processor", "projector", "sink", "reactor", "gateway")
    processor = exported_names(["processor"])
    assert {"cqrs_commands_total", "cqrs_commands_created", "cqrs_assigned_partitions"} <= processor
    assert {"cqrs_batch_seconds_bucket", "cqrs_batch_seconds_sum"} <= processor
    assert {"cqrs_batch_seconds_count"} <= processor
    # A counter's family name alone is never a sample.
    assert "cqrs_commands" not in processor
    for name in (
        "cqrs_consumer_lag_records",
        "cqrs_consumer_lag_seconds",
        "cqrs_consumer_rebalances_total",
    ):
        assert roles_exporting(name) == {"processor", "projector", "sink", "reactor"}, name
    assert roles_exporting("cqrs_transaction_aborts_total") == {"processor", "reactor"}
    assert roles_exporting("cqrs_reactor_commands_total") == {"reactor"}
    assert roles_exporting("gateway_http_requests_total") == {"gateway"}
    # The default collectors every /metrics serves.
    assert roles_exporting("process_cpu_seconds_total") == set(ROLES)


def test_reading_the_names_leaves_the_default_registry_untouched() -> None:
    before = set(REGISTRY._names_to_collectors)
    here = collect_here()
    assert set(REGISTRY._names_to_collectors) == before
    assert {role: frozenset(names) for role, names in here.items()} == role_metrics()
    assert all(len(names) > 20 for names in here.values())


def test_a_worker_in_this_process_does_not_collide_with_the_reading() -> None:
    running = ProjectorMetrics()  # as a projector in this process would have registered
    try:
        role_metrics.cache_clear()
        assert "cqrs_projector_events_total" in exported_names(["projector"])
    finally:
        lag = running.lag
        for metric in (*vars(running).values(), lag.records, lag.seconds, lag.rebalances):
            if isinstance(metric, MetricWrapperBase):
                REGISTRY.unregister(metric)


# --- against what /metrics serves ------------------------------------------------------------


def exposition(role: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.metric_names", "--exposition", role],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus (.ci/run does)"
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("role", ROLES)
def test_the_registry_holds_exactly_the_samples_the_role_serves(role: str) -> None:
    served = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition(role).splitlines()
        if line and not line.startswith("#")
    }
    assert served == exported_names([role])


@pytest.mark.parametrize("role", ROLES)
def test_each_roles_metrics_follow_prometheus_naming_conventions(role: str) -> None:
    # promtool's lint: counters end in _total, snake_case, base units, no reserved suffixes.
    proc = promtool_check_metrics(exposition(role))
    assert proc.returncode == 0 and not proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_naming_lint_bites() -> None:
    bad = "# HELP fooBar x\n# TYPE fooBar counter\nfooBar 1\n"
    proc = promtool_check_metrics(bad)
    assert proc.returncode != 0 and "fooBar" in proc.stdout + proc.stderr
