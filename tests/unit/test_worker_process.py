"""The worker harness (deploy/local/pipeline.py) on a worker that cannot start: the failure
is one line naming the role and its exit code, and the log's tail travels with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.pipeline import WorkerFailed, WorkerProcess


def test_a_worker_that_exits_at_start_fails_its_wait_with_its_exit_code_and_log(
    tmp_path: Path,
) -> None:
    worker = WorkerProcess("no-such-role", [], tmp_path / "logs" / "w.log").start()
    with pytest.raises(WorkerFailed) as failed:
        worker.wait_ready(60)
    assert str(failed.value).startswith("no-such-role: exited with code 2 (log: ")
    assert "\n" not in str(failed.value)
    assert "no-such-role" in failed.value.log_tail  # the CLI's own usage error
    assert failed.value.__notes__ == [f"last lines of {worker.log_path}:\n{worker.log_tail()}"]
    assert not worker.alive
    assert worker.stop() == 2  # stopping an exited worker only collects its code


def test_a_worker_never_started_has_nothing_to_stop(tmp_path: Path) -> None:
    worker = WorkerProcess("processor", [], tmp_path / "p.log")
    assert worker.pid is None and not worker.alive
    assert worker.stop() is None
    worker.kill()  # nothing to kill: no error
