"""The scrape config of `cqrsctl up --observability`: one job per role, every target a
worker's health port on loopback, the namespace label the dashboard filters on."""

from __future__ import annotations

from deploy.local.background import RecordedWorker
from deploy.local.prometheus import scrape_config


def test_one_job_per_role_with_the_workers_health_ports_and_the_namespace_label() -> None:
    workers = [
        RecordedWorker("processor", 10, 9101, "p.log"),
        RecordedWorker("projector", 11, 9102, "j.log"),
        RecordedWorker("sink", 12, 9103, "s.log"),
        RecordedWorker("processor", 13, 9104, "p2.log"),
    ]
    config = scrape_config(workers)
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert set(jobs) == {"processor", "projector", "sink"}
    assert jobs["processor"] == [
        {"targets": ["127.0.0.1:9101", "127.0.0.1:9104"], "labels": {"namespace": "local"}}
    ]
    assert jobs["sink"][0]["targets"] == ["127.0.0.1:9103"]
    assert config["global"]["scrape_interval"] == "2s"


def test_no_worker_no_job() -> None:
    assert scrape_config([])["scrape_configs"] == []


def test_promtool_accepts_the_config(tmp_path) -> None:
    import json
    import shutil
    import subprocess

    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)")
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(scrape_config([RecordedWorker("sink", 1, 9103, "s.log")])))
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
