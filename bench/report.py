"""Shared shape and formatting of benchmark figures, so both sides print alike.

A side's figures are a plain dict (JSON-friendly), as `run_peer` returns them:

    {"system": str, "accounts": int, "commands": int, "accepted": int, "rejected": int,
     "write_cmds_per_s": float, "e2e_cmds_per_s": float,
     "write_latency_ms": {"p50", "p95", "p99"}, "visible_latency_ms": {"p50", "p95", "p99"},
     "peak_rss_mb": {process name: float}, "correct": bool, ...}

Rates count every command of the workload (openings included, accepted + rejected).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from cqrsctl.driver import PERCENTILES

# (path into the figures, label, whether a larger value is better)
METRICS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("write_cmds_per_s",), "write side, commands/s", True),
    (("e2e_cmds_per_s",), "end to end, commands/s", True),
    *(
        ((group, f"p{p}"), f"{label} p{p}, ms", False)
        for group, label in (
            ("write_latency_ms", "call to result"),
            ("visible_latency_ms", "call to visible"),
        )
        for p in PERCENTILES
    ),
)


def _get(figures: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = figures
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def total_rss_mb(figures: Mapping[str, Any]) -> float | None:
    rss = figures.get("peak_rss_mb")
    return float(sum(rss.values())) if rss else None


def median_figures(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers become the median over the runs (per leaf); everything else is taken from
    the first run, except `correct`, which holds only if every run was correct."""
    if not runs:
        raise ValueError("no runs to summarise")

    def merge(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, bool):
            return all(values)
        if isinstance(first, int | float):
            return statistics.median(values)
        if isinstance(first, Mapping):
            return {key: merge([v[key] for v in values if key in v]) for key in first}
        return first

    merged = merge(list(runs))
    merged["runs"] = len(runs)
    return merged


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return "-"
    return f"{ours / peer:.2f}x"


def comparison_table(
    ours: Mapping[str, Any] | None, peer: Mapping[str, Any] | None, title: str = "Benchmark"
) -> Table:
    """Figures side by side. A side given as None gets no column; with both sides there is
    a ratio column, always ours / peer (above 1 is better for rates, below 1 for latencies
    and memory)."""
    sides = [side for side in (ours, peer) if side is not None]
    if not sides:
        raise ValueError("no figures to show")
    both = len(sides) == 2
    table = Table(title=title)
    table.add_column("figure")
    for side, default in ((ours, "ours"), (peer, "peer")):
        if side is not None:
            table.add_column(str(side.get("system", default)), justify="right")
    if both:
        table.add_column("ours / peer", justify="right")
    table.add_column("better", justify="center")

    def row(label: str, values: list[float | None], better: str, ratio: bool = True) -> None:
        cells = [_fmt(value) for value in values]
        if both:
            cells.append(_ratio(values[0], values[1]) if ratio else "")
        table.add_row(label, *cells, better)

    for path, label, higher_is_better in METRICS:
        row(label, [_get(side, path) for side in sides], "↑" if higher_is_better else "↓")
    row("peak RSS, all processes, MB", [total_rss_mb(side) for side in sides], "↓")
    names = sorted({name for side in sides for name in side.get("peak_rss_mb") or {}})
    for name in names:
        row(
            f"  peak RSS {name}, MB",
            [_get(side, ("peak_rss_mb", name)) for side in sides],
            "",
            False,
        )
    for key in ("accepted", "rejected", "correct"):
        cells = [str(side.get(key, "-")) for side in sides]
        table.add_row(key, *cells, *([""] if both else []), "")
    return table


def print_comparison(
    ours: Mapping[str, Any] | None,
    peer: Mapping[str, Any] | None,
    title: str = "Benchmark",
    console: Console | None = None,
) -> None:
    (console or Console()).print(comparison_table(ours, peer, title))
