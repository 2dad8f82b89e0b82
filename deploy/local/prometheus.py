"""A real Prometheus (Debian's `prometheus` package) scraping the local pipeline's workers
(`cqrsctl up --observability`).

It listens on 127.0.0.1 on a free port, keeps its data and log under
`<state>/prometheus/`, and scrapes each recorded worker's health port (`/metrics`) as a
job named after the worker's role (processor, projector, sink, ...), with the label
`namespace="local"`, so the dashboard's queries work unchanged against it.

    prom = start(state_dir, workers)   # written config, started, ready (or PrometheusError)
    recorded(state_dir)                # what prometheus.json holds, or None
    healthy(prom)                      # /-/healthy answers 200
    wait_scraped(prom, {"processor"})  # until each job's targets were scraped as up
    stop(state_dir)                    # SIGTERM, SIGKILL after the grace period
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploy.local.errors import StackError
from deploy.local.processes import free_port, is_our_process, stop_process, tail
from deploy.local.state import state_dir

NAMESPACE = "local"
SCRAPE_INTERVAL = "2s"
RECORD_FILE = "prometheus.json"


class PrometheusError(StackError):
    """Prometheus is not installed, or did not start."""


@dataclass(frozen=True)
class RecordedPrometheus:
    pid: int
    port: int
    config: str
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def folder(directory: str | os.PathLike[str] | None = None) -> Path:
    return state_dir(directory) / "prometheus"


def binary() -> str:
    """The `prometheus` executable, or PrometheusError saying how to install it."""
    found = shutil.which("prometheus")
    if not found:
        raise PrometheusError(
            "prometheus is not installed (Debian: apt-get install prometheus); "
            "--observability needs it"
        )
    return found


def scrape_config(workers: Iterable[Any]) -> dict[str, Any]:
    """One job per role, each target a worker's health port on loopback."""
    jobs: dict[str, list[str]] = {}
    for worker in workers:
        jobs.setdefault(worker.role, []).append(f"127.0.0.1:{worker.health_port}")
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": role,
                "static_configs": [{"targets": targets, "labels": {"namespace": NAMESPACE}}],
            }
            for role, targets in jobs.items()
        ],
    }


def recorded(directory: str | os.PathLike[str] | None = None) -> RecordedPrometheus | None:
    try:
        return RecordedPrometheus(**json.loads((folder(directory) / RECORD_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(prom: RecordedPrometheus | None) -> bool:
    return prom is not None and is_our_process(prom.pid, prom.config)


def healthy(prom: RecordedPrometheus, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{prom.url}/-/healthy", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _ready(prom: RecordedPrometheus) -> bool:
    try:
        with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start(
    directory: str | os.PathLike[str] | None, workers: Iterable[Any], timeout: float = 30.0
) -> tuple[RecordedPrometheus, bool]:
    """Write the scrape config for `workers` and start Prometheus, or reload the running
    one with the new config. Returns it and whether it was started now."""
    here = folder(directory)
    config = here / "prometheus.yml"
    here.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no YAML writer needed.
    config.write_text(json.dumps(scrape_config(workers), indent=2))
    prom = recorded(directory)
    if running(prom):
        assert prom is not None
        _reload(prom)
        return prom, False
    exe = binary()
    port = free_port()
    log = here / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={here / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2d",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    prom = RecordedPrometheus(pid=proc.pid, port=port, config=str(config), log=str(log))
    (here / RECORD_FILE).write_text(json.dumps(asdict(prom), indent=2))
    deadline = time.monotonic() + timeout
    while not _ready(prom):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(directory)
            raise PrometheusError(f"prometheus did not become ready (log: {log}):\n{tail(log, 15)}")
        time.sleep(0.2)
    return prom, True


def _reload(prom: RecordedPrometheus) -> None:
    request = urllib.request.Request(f"{prom.url}/-/reload", method="POST")
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=5):
        pass


def stop(directory: str | os.PathLike[str] | None = None, *, keep_data: bool = True) -> bool:
    """Stop the recorded Prometheus if it is still ours; returns whether it ran."""
    prom = recorded(directory)
    stopped = prom is not None and stop_process(prom.pid, prom.config, timeout=15)
    (folder(directory) / RECORD_FILE).unlink(missing_ok=True)
    if not keep_data:
        shutil.rmtree(folder(directory) / "data", ignore_errors=True)
    return stopped


def query(prom: RecordedPrometheus, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant query through the HTTP API."""
    from urllib.parse import urlencode

    url = f"{prom.url}/api/v1/query?{urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r}: {body.get('error')}")
    return list(body["data"]["result"])


def wait_scraped(
    prom: RecordedPrometheus, jobs: Collection[str], timeout: float = 15.0
) -> dict[str, str]:
    """Until every job in `jobs` has been scraped as up, or `timeout`; returns the `up`
    value last seen per job ("1" up, "0" down; a job not scraped yet is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = query(prom, f'up{{namespace="{NAMESPACE}"}}')
        except (OSError, PrometheusError):
            found = []
        seen = {s["metric"]["job"]: s["value"][1] for s in found}
        if all(seen.get(job) == "1" for job in jobs) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)
