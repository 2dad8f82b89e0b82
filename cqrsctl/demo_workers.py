"""The workers `cqrsctl demo` leaves behind: its state folder (`<state>/demo`), the record
`--keep-running` writes of the workers it left (`workers.json`, role -> pid), stopping those
(and the demo's Prometheus) for `demo --stop` or the next demo, and starting that Prometheus
(deploy/local/prometheus.py) scraping the demo's workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

WORKERS_FILE = "workers.json"


def demo_dir() -> Path:
    from deploy.local.state import state_dir

    return state_dir() / "demo"


def record_kept(pids: dict[str, int]) -> None:
    """Record the workers a `--keep-running` demo leaves, for `stop_kept` to find."""
    (demo_dir() / WORKERS_FILE).write_text(json.dumps(pids))


def stop_kept(console: Console) -> int:
    """Stop the workers (and the Prometheus) a previous `--keep-running` demo left, if they
    are still ours."""
    from deploy.local import prometheus
    from deploy.local.pipeline import WORKER_MARKER
    from deploy.local.processes import stop_process

    stopped = 0
    if prometheus.stop(demo_dir(), keep_data=False):
        console.print("stopped the prometheus a previous demo left running")
        stopped += 1
    path = demo_dir() / WORKERS_FILE
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return stopped
    for role, pid in kept.items():
        if stop_process(int(pid), WORKER_MARKER, timeout=30):
            console.print(f"stopped the {role} a previous demo left running (pid {pid})")
            stopped += 1
    path.unlink(missing_ok=True)
    return stopped


def start_prometheus(console: Console, pipeline: Any) -> str:
    """Prometheus scraping the demo's workers, waited for until it scraped each one (so the
    run is on its record from the first command); returns its URL."""
    from deploy.local import prometheus

    workers = list(pipeline.workers.values())
    with console.status("starting prometheus"):
        prom, _ = prometheus.start(demo_dir(), workers)
        roles = {w.role for w in workers}
        seen = prometheus.wait_scraped(prom, roles)
    up = sorted(r for r in roles if seen.get(r) == "1")
    not_yet = sorted(roles - set(up))
    console.print(
        f"prometheus: {prom.url} (pid {prom.pid}), scraping {', '.join(sorted(roles))}"
        + (f"; not scraped as up yet: {', '.join(not_yet)}" if not_yet else "; all up"),
        soft_wrap=True,
    )
    return prom.url
