"""The registry of metric names: every series name each role's `/metrics` can serve.

The dashboard (deploy/k8s/base/monitoring/dashboard.json) and the alert rules
(deploy/k8s/base/monitoring/alerts.yaml) are checked against it, so a query that names a
metric the code does not export fails a test instead of drawing an empty panel.

The names are read from the code, not typed out here: each role's metrics class
(`ROLE_METRICS`) is instantiated, into a private prometheus-client registry when its
constructor takes one, else into the default registry and unregistered again, and its
metric families are expanded into the sample names prometheus-client writes: `_total` and
`_created` for a counter, `_bucket`, `_count`, `_sum` and `_created` for a histogram, and
so on. The default registry's own collectors (`process_*`, `python_*`) are served by every
role too. This runs in a fresh interpreter (`python -m deploy.metric_names --json`), so a
worker running in the calling process, whose metrics already sit in the default registry,
does not collide with it. `python -m deploy.metric_names` lists the names per role.

`EXTERNAL` lists the few series that come from elsewhere than a worker's `/metrics`, with
their source; a dashboard or rule may use them as well.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

# role -> the metrics classes its process instantiates ("module:Class").
ROLE_METRICS: dict[str, tuple[str, ...]] = {
    "processor": ("processors.metrics:ProcessorMetrics",),
    "projector": ("processors.projector.metrics:ProjectorMetrics",),
    "sink": ("sinks.metrics:SinkMetrics",),
    "gateway": ("producers.gateway.metrics:GatewayMetrics",),
}
ROLES = tuple(ROLE_METRICS)

# Series a dashboard or rule may use that no worker serves: name -> where it comes from.
EXTERNAL: dict[str, str] = {
    "up": "Prometheus itself: 1 when the last scrape of a target succeeded, else 0",
}

# Sample-name suffixes prometheus-client writes per metric type.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class MetricName:
    """One sample name, the family it belongs to and the family's type."""

    sample: str
    family: str
    type: str


def sample_names(family: Metric) -> list[MetricName]:
    """The sample names prometheus-client writes for one metric family."""
    return [
        MetricName(family.name + suffix, family.name, family.type)
        for suffix in _SUFFIXES.get(family.type, ("",))
    ]


def _metric_objects(obj: Any, depth: int = 2) -> list[MetricWrapperBase]:
    """The metric objects held in an instance's attributes (and one level of helpers, such
    as the consumer-lag gauge's wrapper)."""
    found: list[MetricWrapperBase] = []
    for value in vars(obj).values():
        if isinstance(value, MetricWrapperBase):
            found.append(value)
        elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, type):
            if isinstance(value, CollectorRegistry):
                continue
            found += _metric_objects(value, depth - 1)
    return found


def _load(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _families_of(cls: type) -> list[Metric]:
    """Instantiate a metrics class without leaving anything in the default registry."""
    params = inspect.signature(cls).parameters
    if "registry" in params:
        registry = CollectorRegistry(auto_describe=True)
        cls(registry=registry)
        return list(registry.collect())
    instance = cls()
    metrics = _metric_objects(instance)
    try:
        return [family for m in metrics for family in m.describe()]
    finally:
        for m in metrics:
            REGISTRY.unregister(m)


def _default_collector_families() -> list[Metric]:
    """Families of the default registry's built-in collectors (process, platform, gc)."""
    registry = CollectorRegistry()
    from prometheus_client import gc_collector, platform_collector, process_collector

    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    return list(registry.collect())


def collect_here() -> dict[str, list[MetricName]]:
    """role -> every sample name its /metrics serves, read in this process."""
    common = [n for f in _default_collector_families() for n in sample_names(f)]
    return {
        role: common
        + [n for spec in specs for f in _families_of(_load(spec)) for n in sample_names(f)]
        for role, specs in ROLE_METRICS.items()
    }


@cache
def role_metrics() -> dict[str, frozenset[MetricName]]:
    """role -> every sample name its /metrics serves (its own metrics and the default
    collectors'), read in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.metric_names", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reading the metric names failed: {proc.stderr.strip()}")
    return {
        role: frozenset(MetricName(*row) for row in rows)
        for role, rows in json.loads(proc.stdout).items()
    }


def exported_names(roles: Iterable[str] = ROLES) -> frozenset[str]:
    """Sample names the given roles export."""
    metrics = role_metrics()
    return frozenset(n.sample for role in roles for n in metrics[role])


def roles_exporting(sample: str) -> frozenset[str]:
    """The roles whose /metrics serve this sample name."""
    return frozenset(
        role for role, names in role_metrics().items() if sample in {n.sample for n in names}
    )


def known_names() -> frozenset[str]:
    """What a dashboard or rule may name: every role's samples plus `EXTERNAL`."""
    return exported_names() | frozenset(EXTERNAL)


def main(argv: list[str]) -> int:
    names = collect_here()
    if argv == ["--json"]:
        rows = {
            role: sorted([n.sample, n.family, n.type] for n in ns) for role, ns in names.items()
        }
        print(json.dumps(rows))
        return 0
    if argv:
        print("usage: python -m deploy.metric_names [--json]", file=sys.stderr)
        return 2
    for role, ns in names.items():
        for n in sorted(ns, key=lambda n: n.sample):
            print(f"{role}\t{n.type}\t{n.sample}")
    for name, source in EXTERNAL.items():
        print(f"external\t-\t{name}\t({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
