"""The whole pipeline (processors, projector, sink) as real processes on the fault stack,
kept running by a small supervisor, as Kubernetes would: a worker that exits is started
again, and one whose /healthz stops answering is killed and started again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from psycopg.conninfo import make_conninfo

from deploy.local import postgres_roles
from deploy.local.pipeline import WorkerProcess
from deploy.local.state import ENV_STATE_DIR, StackState
from processors.registry import default_registry
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN

LIVENESS_GRACE_S = 20.0  # /healthz failing this long after it once answered: restart
RESTART_BACKOFF_S = 1.0


class SupervisedPipeline:
    """Named workers ("p0", "p1", "projector", "sink") under supervision."""

    def __init__(self, state: StackState, log_dir: Path, prefix: str, schema: str) -> None:
        self.prefix = prefix
        self.schema = schema
        self.log_dir = log_dir
        self.dsn = make_conninfo(state.postgres_dsn, options=f"-csearch_path={schema}")
        self.env = {
            ENV_BOOTSTRAP: state.bootstrap_servers,
            ENV_PG_DSN: self.dsn,
            ENV_STATE_DIR: state.state_dir,
        }
        bank = default_registry().context("bank")
        self.sink_env, self.sink_args = postgres_roles.sink_env(
            postgres_roles.prepare(self.dsn, schema, bank)
        )
        self.workers: dict[str, WorkerProcess] = {}
        # Per worker name: its current incarnation has answered /healthz once; since when
        # it has not answered.
        self.seen_healthy: dict[str, bool] = {}
        self.unhealthy_since: dict[str, float] = {}
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
        return "sink", [*common, "--schema", self.schema, *self.sink_args]

    def spawn(self, name: str) -> WorkerProcess:
        with self._lock:
            role, args = self._args(name)
            self.spawns[name] += 1
            log_path = self.log_dir / f"{name}-{self.spawns[name]}.log"
            env = {**self.env, **self.sink_env} if role == "sink" else self.env
            worker = WorkerProcess(role, args, log_path, env).start()
            self.workers[name] = worker
            self.seen_healthy[name] = False
            self.unhealthy_since.pop(name, None)
            self.supervised.add(name)
            return worker

    def kill_and_restart(self, name: str) -> float:
        """SIGKILL, then start a new incarnation at once; returns the restart's time."""
        with self._lock:
            self.workers[name].kill()
            self.spawn(name)
            return time.time()

    def release(self, name: str) -> WorkerProcess:
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
            # a worker started now would outlive the run.
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
        healthy = worker.healthy()
        with self._lock:
            if self.workers.get(name) is not worker:
                return  # replaced meanwhile
            if healthy:
                self.seen_healthy[name] = True
                self.unhealthy_since.pop(name, None)
                return
            if not self.seen_healthy[name]:
                return
            now = time.monotonic()
            since = self.unhealthy_since.setdefault(name, now)
        if now - since > LIVENESS_GRACE_S:
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
                worker.stop(20)
