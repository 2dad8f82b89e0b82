"""The registry of metric names: every series name each role's `/metrics` can serve.

The dashboard (deploy/k8s/base/monitoring/dashboard.json) and the alert rules
(deploy/k8s/base/monitoring/alerts.yaml) are checked against it, so a query that names a
metric the code does not export fails a test instead of drawing an empty panel.

The names are read from the code, not typed out here: each role's metrics classes
(`ROLE_METRICS`) are instantiated, into a private prometheus-client registry when the
constructor takes one, else into the default registry and unregistered again; each
labelled metric gets one child, and the sample names are those prometheus-client then
writes (`_total` and `_created` of a counter, `_bucket`, `_count`, `_sum` of a histogram,
...). The default registry's own collectors (`process_*`, `python_*`) are served by every
role too. This runs in a fresh interpreter (`python -m deploy.metric_names --json`), so a
worker running in the calling process, whose metrics already sit in the default registry,
does not collide with it. `python -m deploy.metric_names` lists the names per role;
`--exposition ROLE` prints what the role's /metrics serves (for `promtool check metrics`).

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

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

# role -> the metrics classes its process instantiates ("module:Class"). A role that gets
# a new metrics class must list it here.
ROLE_METRICS: dict[str, tuple[str, ...]] = {
    "processor": ("processors.metrics:ProcessorMetrics",),
    "projector": ("processors.projector.metrics:ProjectorMetrics",),
    "sink": ("sinks.metrics:SinkMetrics", "sinks.progress_metrics:ProgressMetrics"),
    "reactor": ("processors.reactor_metrics:ReactorMetrics",),
    "gateway": ("producers.gateway.metrics:GatewayMetrics",),
}
ROLES = tuple(ROLE_METRICS)

# Series a dashboard or rule may use that no worker serves: name -> where it comes from.
EXTERNAL: dict[str, str] = {
    "up": "Prometheus itself: 1 when the last scrape of a target succeeded, else 0",
}


@dataclass(frozen=True)
class MetricName:
    """One sample name, the family it belongs to and the family's type."""

    sample: str
    family: str
    type: str


def _metric_objects(obj: Any, depth: int = 2) -> list[MetricWrapperBase]:
    """The metric objects held in an instance's attributes (and one level of helpers, such
    as the consumer-lag gauge's wrapper)."""
    found: list[MetricWrapperBase] = []
    for value in vars(obj).values():
        if isinstance(value, MetricWrapperBase):
            found.append(value)
        elif (
            depth > 1
            and hasattr(value, "__dict__")
            and not isinstance(value, type | CollectorRegistry)
        ):
            found += _metric_objects(value, depth - 1)
    return found


def _load(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _instantiate(cls: type, registry: CollectorRegistry) -> list[MetricWrapperBase]:
    """An instance of a metrics class (in `registry` when its constructor takes one, else
    in the default registry), every labelled metric with one child; its metric objects."""
    takes_registry = "registry" in inspect.signature(cls).parameters
    instance = cls(registry=registry) if takes_registry else cls()
    metrics = _metric_objects(instance)
    for metric in metrics:
        if metric._labelnames:
            metric.labels(*("x" for _ in metric._labelnames))
    return metrics


def _samples(collectors: Iterable[Collector]) -> list[MetricName]:
    return [
        MetricName(sample.name, family.name, family.type)
        for collector in collectors
        for family in collector.collect()
        for sample in family.samples
    ]


def _default_collectors() -> list[Collector]:
    """The default registry's built-in collectors (process, platform, gc), private copies."""
    from prometheus_client import gc_collector, platform_collector, process_collector

    registry = CollectorRegistry()
    return [
        process_collector.ProcessCollector(registry=registry),
        platform_collector.PlatformCollector(registry=registry),
        gc_collector.GCCollector(registry=registry),
    ]


def _class_samples(cls: type) -> list[MetricName]:
    """The samples of one metrics class, leaving the default registry as it was."""
    metrics = _instantiate(cls, CollectorRegistry())
    try:
        return _samples(metrics)
    finally:
        if "registry" not in inspect.signature(cls).parameters:
            for metric in metrics:
                REGISTRY.unregister(metric)


def collect_here() -> dict[str, list[MetricName]]:
    """role -> every sample name its /metrics serves, read in this process."""
    common = _samples(_default_collectors())
    return {
        role: common + [n for spec in specs for n in _class_samples(_load(spec))]
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


def exposition(role: str) -> str:
    """What the role's /metrics serves, in the Prometheus text format: its metrics classes
    in the default registry (as the worker has them), every labelled metric with one child.
    Changes the default registry: for a fresh interpreter
    (`python -m deploy.metric_names --exposition ROLE`)."""
    for spec in ROLE_METRICS[role]:
        _instantiate(_load(spec), REGISTRY)
    return generate_latest(REGISTRY).decode()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--exposition" and argv[1] in ROLE_METRICS:
        sys.stdout.write(exposition(argv[1]))
        return 0
    if argv not in ([], ["--json"]):
        roles = "|".join(ROLE_METRICS)
        print(
            f"usage: python -m deploy.metric_names [--json | --exposition {{{roles}}}]",
            file=sys.stderr,
        )
        return 2
    names = collect_here()
    if argv == ["--json"]:
        rows = {
            role: sorted({(n.sample, n.family, n.type) for n in ns}) for role, ns in names.items()
        }
        print(json.dumps(rows))
        return 0
    for role, ns in names.items():
        for n in sorted(set(ns), key=lambda n: n.sample):
            print(f"{role}\t{n.type}\t{n.sample}")
    for name, source in EXTERNAL.items():
        print(f"external\t-\t{name}\t({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
