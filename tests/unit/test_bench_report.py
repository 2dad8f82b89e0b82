"""Shared benchmark formatting: percentiles, medians over runs, the side-by-side table."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench.report import comparison_table, median_figures
from cqrsctl.driver import percentiles


def render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_percentiles_interpolate_between_ranks():
    values = list(range(1, 101))  # 1..100
    found = percentiles(values)
    assert found["p50"] == pytest.approx(50.5)
    assert found["p95"] == pytest.approx(95.05)
    assert found["p99"] == pytest.approx(99.01)
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([3, 1, 2], points=(0, 100)) == {"p0": 1, "p100": 3}


def test_percentiles_refuse_empty_samples_and_impossible_points():
    with pytest.raises(ValueError, match="empty"):
        percentiles([])
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentiles([1.0], points=(101,))


def test_median_figures_takes_the_median_of_each_number_all_of_correctness():
    runs = [
        {"system": "x", "write_cmds_per_s": 10.0, "peak_rss_mb": {"w": 1.0}, "correct": True},
        {"system": "x", "write_cmds_per_s": 30.0, "peak_rss_mb": {"w": 5.0}, "correct": False},
        {"system": "x", "write_cmds_per_s": 20.0, "peak_rss_mb": {"w": 3.0}, "correct": True},
    ]
    merged = median_figures(runs)
    assert merged["write_cmds_per_s"] == 20.0
    assert merged["peak_rss_mb"] == {"w": 3.0}
    assert merged["correct"] is False
    assert merged["system"] == "x" and merged["runs"] == 3


def test_table_shows_both_sides_and_the_ratio_ours_over_peer():
    ours = {"system": "ours", "e2e_cmds_per_s": 6000.0, "peak_rss_mb": {"a": 100.0, "b": 50.0}}
    peer = {"system": "peer", "e2e_cmds_per_s": 1000.0, "peak_rss_mb": {"writer": 50.0}}
    text = render(comparison_table(ours, peer))
    e2e = next(line for line in text.splitlines() if "end to end" in line)
    assert "6,000" in e2e and "1,000" in e2e and "6.00x" in e2e
    rss = next(line for line in text.splitlines() if "all processes" in line)
    assert "150" in rss and "3.00x" in rss
    assert "peak RSS writer" in text and "peak RSS a" in text


def test_table_of_one_side_has_no_ratio_column():
    text = render(comparison_table(None, {"system": "peer", "write_cmds_per_s": 500.0}))
    assert "ours / peer" not in text
    assert "500" in text
    with pytest.raises(ValueError, match="no figures"):
        comparison_table(None, None)
