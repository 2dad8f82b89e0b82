"""The whole pipeline (processors, projector, sink) as real processes on the fault stack,
kept running by a small supervisor, as Kubernetes would: a worker that exits is started
again, and one whose /healthz stops answering is killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from psycopg.conninfo import make_conninfo

from deploy.local.state import ENV_STATE_DIR, StackState
from deploy.settings import ENV_BOOTSTRAP, ENV_PG_DSN
from tests.integration.workers import Worker

LIVENESS_GRACE_S = 20.0  # /healthz failing this long after it once answered: restart
RESTART_BACKOFF_S = 1.0


class StackWorker(Worker):
    """A Worker whose process reaches the given stack through its environment."""

    def __init__(
        self, role: str, args: list[str], log_dir: Path, name: str, env: dict[str, str]
    ) -> None:
        super().__init__(role, args, log_dir, name)
        self.env = env
        self.seen_healthy = False
        self.unhealthy_since: float | None = None

    def start(self) -> StackWorker:
        cmd = [sys.executable, "-m", "cqrsctl.main", "run", self.role, *self.args]
        cmd += ["--health-port", str(self.health_port)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def healthy(self) -> bool:
        return self._answers("/healthz")

    def ready(self) -> bool:
        return self._answers("/readyz")

    def _answers(self, path: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}{path}"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False


class Pipeline:
    """Named workers ("p0", "p1", "projector", "sink") under supervision."""

    def __init__(self, state: StackState, log_dir: Path, prefix: str, schema: str) -> None:
        self.prefix = prefix
        self.schema = schema
        self.log_dir = log_dir
        self.dsn = make_conninfo(state.postgres_dsn, options=f"-csearch_path={schema}")
        self.env = {
            **os.environ,
            ENV_BOOTSTRAP: state.bootstrap_servers,
            ENV_PG_DSN: self.dsn,
            ENV_STATE_DIR: state.state_dir,
        }
        self.workers: dict[str, StackWorker] = {}
        self.supervised: set[str] = set()
        self.spawns: Counter[str] = Counter()
        self.unplanned_exits: list[tuple[str, int | None]] = []
        self.liveness_restarts: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    # -- workers ---------------------------------------------------------------------------

    def _args(self, name: str) -> tuple[str, list[str]]:
        if name in ("p0", "p1"):
            args = ["--context", "bank", "--prefix", self.prefix, "--instance-id", name]
            return "processor", args
        common = ["--prefix", self.prefix, "--session-timeout", "6", "--batch-wait", "0.05"]
        if name == "projector":
            # Kept across restarts, like a volume.
            return "projector", [*common, "--data-dir", str(self.log_dir / "projector-data")]
        return "sink", [*common, "--schema", self.schema]

    def spawn(self, name: str) -> StackWorker:
        with self._lock:
            role, args = self._args(name)
            self.spawns[name] += 1
            worker = StackWorker(
                role, args, self.log_dir, f"{name}-{self.spawns[name]}", self.env
            ).start()
            self.workers[name] = worker
            self.supervised.add(name)
            return worker

    def kill_and_restart(self, name: str) -> float:
        """SIGKILL, then start a new incarnation at once; returns the restart's time."""
        with self._lock:
            self.workers[name].kill()
            self.spawn(name)
            return time.time()

    def release(self, name: str) -> StackWorker:
        """Take a worker out of supervision (the caller freezes or kills it)."""
        with self._lock:
            self.supervised.discard(name)
            return self.workers.pop(name)

    def wait_ready(self, names: list[str] | None = None, timeout: float = 120.0) -> None:
        """Until each named worker's current incarnation is ready (the supervisor may
        replace one that exits meanwhile)."""
        deadline = time.monotonic() + timeout
        for name in names or list(self.workers):
            while True:
                with self._lock:
                    worker = self.workers[name]
                if worker.alive and worker.ready():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready in {timeout}s:\n{worker.log_tail()}")
                time.sleep(0.2)

    def ready_names(self) -> list[str]:
        with self._lock:
            workers = {n: self.workers[n] for n in self.supervised}
        return [n for n, w in sorted(workers.items()) if w.alive and w.ready()]

    # -- supervision -----------------------------------------------------------------------

    def start_supervising(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                names = sorted(self.supervised)
            for name in names:
                self._check(name)

    def _check(self, name: str) -> None:
        with self._lock:
            # stop() may have given up waiting for this thread (a probe can take seconds):
            # a worker started now would outlive the run (run 56 left a projector behind).
            if name not in self.supervised or self._stop.is_set():
                return
            worker = self.workers[name]
            if not worker.alive:
                code = worker.proc.returncode if worker.proc else None
                self.unplanned_exits.append((name, code))
                time.sleep(RESTART_BACKOFF_S)
                self.spawn(name)
                return
        # Outside the lock: an HTTP probe may take a second.
        if worker.healthy():
            worker.seen_healthy = True
            worker.unhealthy_since = None
            return
        if not worker.seen_healthy:
            return
        now = time.monotonic()
        worker.unhealthy_since = worker.unhealthy_since or now
        if now - worker.unhealthy_since > LIVENESS_GRACE_S:
            with self._lock:
                if (
                    self.workers.get(name) is worker
                    and name in self.supervised
                    and not self._stop.is_set()
                ):
                    self.liveness_restarts.append(name)
                    worker.kill()
                    self.spawn(name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            for worker in self.workers.values():
                if worker.proc is not None and worker.proc.poll() is None:
                    worker.proc.send_signal(signal.SIGCONT)  # a frozen one cannot stop
                worker.stop(20)
