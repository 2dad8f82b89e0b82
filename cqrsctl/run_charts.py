"""PNG charts of one run (`cqrsctl demo --charts DIR`, `python -m bench --charts DIR`):
throughput, latency and lag over time.

    sampler = LagSampler({"processor": 8081, "projector": 8082, "sink": 8083})
    sampler.start()                     # scrapes each worker's /metrics every 0.25 s
    ...                                 # the run
    sampler.stop()
    write_charts(DIR, sent_at, result_at, sampler.samples)   # -> the PNG paths
    write_charts(DIR, ..., prefix="full-")   # full-throughput.png, ... (one per bench run)

`sent_at` and `result_at` are per-command monotonic times (0 = no result); lag is the sum
of each role's `cqrs_consumer_lag_records` gauge. matplotlib is the optional extra `charts`
(`pip install -e '.[charts]'`; `make install` installs it).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAG_METRIC = "cqrs_consumer_lag_records"
CHART_FILES = ("throughput.png", "latency.png", "lag.png")


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ChartsUnavailable(
            "--charts needs matplotlib: pip install -e '.[charts]' (make install does)"
        ) from None


def scrape_lag(port: int, timeout: float = 1.0) -> float | None:
    """The sum of the worker's consumer-lag gauge series, None when it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == LAG_METRIC:
            total += sum(sample.value for sample in family.samples)
    return total


@dataclass
class LagSampler:
    """Samples each worker's lag in a background thread: `samples[role]` = [(t, lag)]."""

    ports: Mapping[str, int]
    interval: float = 0.25
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LagSampler:
        self._thread = threading.Thread(target=self._loop, name="lag-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            for role, port in self.ports.items():
                lag = scrape_lag(port)
                if lag is not None:
                    self.samples.setdefault(role, []).append((time.monotonic(), lag))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _bins(start: float, end: float) -> float:
    """About 40 bins over the run, at least 0.1 s each."""
    return max(0.1, (end - start) / 40)


def write_charts(
    folder: Path,
    sent_at: Sequence[float],
    result_at: Sequence[float],
    lag: Mapping[str, Sequence[tuple[float, float]]],
    title: str = "demo",
    prefix: str = "",
) -> list[Path]:
    """Write throughput.png, latency.png and lag.png (each name after `prefix`) into
    `folder`; returns their paths."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    done = [(s, r) for s, r in zip(sent_at, result_at, strict=True) if r > 0]
    start = min(sent_at) if len(sent_at) else 0.0
    end = max([r for _, r in done] + [t for series in lag.values() for t, _ in series] + [start])
    width = _bins(start, end)
    count = int((end - start) / width) + 1
    centers = [(i + 0.5) * width for i in range(count)]

    sent_rate = [0.0] * count
    result_rate = [0.0] * count
    latencies: list[list[float]] = [[] for _ in range(count)]
    for s in sent_at:
        sent_rate[min(count - 1, int((s - start) / width))] += 1 / width
    for s, r in done:
        i = min(count - 1, int((r - start) / width))
        result_rate[i] += 1 / width
        latencies[i].append((r - s) * 1000)

    paths = []
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(centers, sent_rate, label="sent")
    ax.plot(centers, result_rate, label="results")
    ax.set(title=f"{title}: throughput", xlabel="seconds into the run", ylabel="commands/s")
    ax.legend()
    paths.append(_save(fig, folder / f"{prefix}{CHART_FILES[0]}"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for q in (50, 95, 99):
        points = [(c, _quantile(v, q / 100)) for c, v in zip(centers, latencies, strict=True) if v]
        ax.plot([c for c, _ in points], [v for _, v in points], label=f"p{q}")
    ax.set(
        title=f"{title}: send -> result latency",
        xlabel="seconds into the run",
        ylabel="ms",
    )
    ax.legend()
    paths.append(_save(fig, folder / f"{prefix}{CHART_FILES[1]}"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for role, series in lag.items():
        ax.plot([t - start for t, _ in series], [v for _, v in series], label=role)
    ax.set(title=f"{title}: consumer lag", xlabel="seconds into the run", ylabel="records")
    if lag:
        ax.legend()
    paths.append(_save(fig, folder / f"{prefix}{CHART_FILES[2]}"))
    plt.close("all")
    return paths


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _save(fig: object, path: Path) -> Path:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    return path
