"""`python -m bench --charts DIR`: each live run's charts, drawn by the demo's chart module,
from synthetic samples (no broker: the drawing is a pure function of the records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_pipeline import write_run_charts
from bench.run import _charts_folder
from cqrsctl.driver import Drive

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _drive(total: int = 400) -> Drive:
    drive = Drive(total)
    for i in range(total):
        drive.sent_at[i] = 100.0 + i * 0.01
        # The last few never got a result: they must not be drawn as latencies.
        drive.result_at[i] = 0.0 if i >= total - 5 else drive.sent_at[i] + 0.005 + (i % 7) * 0.01
    return drive


def test_each_stage_writes_three_png_charts_named_after_it(tmp_path: Path) -> None:
    matplotlib_image = pytest.importorskip("matplotlib.image")
    lag = {
        "processor": [(100.0 + t / 4, float(max(0, 50 - t))) for t in range(20)],
        "sink": [(100.0 + t / 4, float(t % 5)) for t in range(20)],
    }
    written = write_run_charts(tmp_path, "full", _drive(), lag)
    written += write_run_charts(tmp_path, "paced", _drive(100), {})

    names = ["full-throughput.png", "full-latency.png", "full-lag.png"]
    names += ["paced-throughput.png", "paced-latency.png", "paced-lag.png"]
    assert written == [str(tmp_path / n) for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
        pixels = matplotlib_image.imread(tmp_path / name)  # decodes: a whole image
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0.01, f"{name} is blank"


def test_charts_of_several_runs_go_to_one_folder_each(tmp_path: Path) -> None:
    assert _charts_folder(None, 0, 3) is None
    assert _charts_folder(tmp_path, 0, 1) == tmp_path
    assert _charts_folder(tmp_path, 1, 3) == tmp_path / "run-2"
