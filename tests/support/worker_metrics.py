"""A worker's /metrics read back in tests: every sample by name and labels, its consumer
lag per partition, its rebalances; and a poll until a condition holds."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from deploy.local.pipeline import WorkerProcess

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Series = dict[tuple[str, int], float]  # (topic, partition) -> value


def scrape(worker: WorkerProcess) -> dict[str, dict[Labels, float]]:
    url = f"http://127.0.0.1:{worker.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def lag(worker: WorkerProcess, unit: str = "records") -> Series:
    """`cqrs_consumer_lag_<unit>` per (topic, partition)."""
    series = scrape(worker).get(f"cqrs_consumer_lag_{unit}", {})
    return {(dict(k)["topic"], int(dict(k)["partition"])): v for k, v in series.items()}


def rebalances(worker: WorkerProcess) -> float:
    return scrape(worker)["cqrs_consumer_rebalances_total"][()]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
