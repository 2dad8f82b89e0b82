"""The pure part of `cqrsctl projections list|status`: progress from checkpoints and ends."""

from __future__ import annotations

import pytest

from cqrsctl.projections_cmd import bar
from sinks.progress import ProjectionProgress, estimate, measure

NOW = 1_000_000.0


def sample(checkpoints: dict[int, int], at: float = NOW, **times: int) -> ProjectionProgress:
    ends = {0: 10, 1: 5, 2: 0}
    oldest = {int(p.removeprefix("p")): ms for p, ms in times.items()}
    return measure("accounts", checkpoints, ends, oldest, at)


def test_a_caught_up_projection_has_no_lag_even_with_markers_after_its_checkpoint() -> None:
    # Partition 0 ends at 10 but its checkpoint is 8: offset 9 is a transaction marker, so no
    # committed event follows (no time given).
    progress = sample({0: 8, 1: 4})
    assert (progress.applied, progress.lag_events, progress.lag_seconds) == (14, 0, 0.0)
    assert progress.progress == 1.0
    assert progress.state == "live"


def test_lag_counts_offsets_behind_and_seconds_since_the_oldest_unapplied_event() -> None:
    progress = sample({0: 3}, p0=int((NOW - 7.5) * 1000), p1=int((NOW - 2) * 1000))
    assert [p.lag for p in progress.partitions] == [6, 5, 0]
    assert progress.applied == 4
    assert progress.lag_events == 11
    assert progress.lag_seconds == pytest.approx(7.5)
    assert progress.progress == pytest.approx(4 / 15)


def test_the_rate_and_the_time_left_come_from_two_samples() -> None:
    first = sample({0: 1}, p0=0, p1=0)
    later = sample({0: 5}, at=NOW + 2, p0=0, p1=0)
    estimated = estimate(first, later)
    assert estimated.rate == 2.0  # 4 offsets in 2 s
    assert estimated.eta_seconds == pytest.approx((4 + 5) / 2.0)
    stalled = estimate(later, sample({0: 5}, at=NOW + 3, p0=0, p1=0))
    assert (stalled.rate, stalled.eta_seconds) == (0.0, None)
    done = estimate(later, sample({0: 9, 1: 4}, at=NOW + 3))
    assert done.eta_seconds == 0.0
    with pytest.raises(ValueError, match="after"):
        estimate(later, first)


def test_as_dict_is_what_json_output_prints() -> None:
    row = estimate(sample({0: 1}, p0=0, p1=0), sample({0: 5}, at=NOW + 2, p0=0, p1=0)).as_dict()
    assert row["projection"] == "accounts"
    assert (row["applied"], row["lag_events"], row["rate"], row["eta_seconds"]) == (6, 9, 2.0, 4.5)
    assert row["partitions"][0] == {"partition": 0, "checkpoint": 5, "end": 10, "lag": 4}


def test_the_progress_bar() -> None:
    assert bar(0.5, width=10) == "[#####.....]  50%"
    assert bar(1.0, width=4) == "[####] 100%"
