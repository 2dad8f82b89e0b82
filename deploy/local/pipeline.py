"""The pipeline's worker processes on this machine: the command processor, the projector and
the sink (and the gateway, the reactor), each a child process (`python -m cqrsctl.main run
<role> ...`) with its own health port and log file. The one harness of `cqrsctl demo`,
`cqrsctl up --pipeline`, the benchmark, the integration tests and the fault run.

    with Pipeline(PipelineSpec(log_dir=..., data_dir=..., env=...)) as pipeline:
        pipeline.start()          # all three roles
        pipeline.wait_ready(120)  # /readyz of each, or WorkerFailed with the log tail
        ...
        pipeline.check()          # WorkerFailed if a worker has exited
        pipeline.peak_rss_mb()    # VmHWM of each worker, while they run
    # stopped: SIGTERM, then SIGKILL after the grace period

    worker = WorkerProcess("processor", args, log_dir / "p0.log").start()  # one role alone
    worker.wait_ready(90)     # or WorkerFailed
    worker.kill()             # SIGKILL, like a power cut; worker.stop() is SIGTERM

A worker that exits is reported as one line naming it and its exit code, plus the tail of
its log (WorkerFailed.log_tail, also attached as a note that tracebacks show), never as a
traceback of ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.processes import free_port, tail

ROLES = ("processor", "projector", "sink")
# What `cmdline` of every worker we start contains, so a recorded PID is checked to still
# be ours before it is signalled.
WORKER_MARKER = "cqrsctl.main"


def create_context_topics(
    kafka: Mapping[str, object], context: str = "bank", prefix: str | None = None
) -> list[str]:
    """Create the context's declared topics that are missing, then wait until every
    partition answers an offsets request: metadata names a leader a moment before the
    leader serves the partition (NOT_LEADER_FOR_PARTITION in between). Returns the topics
    created."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from processors.registry import default_registry
    from processors.topic_admin import create_topics
    from processors.topics import declared_topics

    specs = declared_topics(default_registry().context(context), prefix)
    created = create_topics(dict(kafka), specs)
    consumer = Consumer({**kafka, "group.id": "cqrs-topic-check"})
    try:
        deadline = time.monotonic() + 60
        for spec in specs:
            for partition in range(spec.partitions):
                while True:
                    try:
                        consumer.get_watermark_offsets(
                            TopicPartition(spec.name, partition), timeout=10
                        )
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
    finally:
        consumer.close()
    return created


class WorkerFailed(RuntimeError):
    """A worker exited, or did not become ready in time."""

    def __init__(self, role: str, message: str, log_path: Path, log_tail: str) -> None:
        super().__init__(f"{role}: {message} (log: {log_path})")
        self.role = role
        self.log_path = log_path
        self.log_tail = log_tail
        # Shown under a traceback (a failing test), not by str() (the CLIs' one line).
        self.add_note(f"last lines of {log_path}:\n{log_tail}")


@dataclass(frozen=True)
class PipelineSpec:
    """Where the workers log and keep data, and how they reach Kafka and Postgres.

    `env` is added to this process's environment for the children (typically the
    connection variables, so every worker uses the same stack). `extra_args` adds options
    per role, e.g. {"sink": ["--batch-max", "10000"]}; `role_env` adds variables per role,
    e.g. the sink's own Postgres login (deploy/local/postgres_roles.py)."""

    log_dir: Path
    data_dir: Path
    context: str = "bank"
    prefix: str | None = None
    schema: str | None = None
    instance_id: str = "local-0"
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    role_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    log_level: str = "INFO"
    log_format: str = "text"

    def args(self, role: str) -> list[str]:
        args = ["--context", self.context, "--log-level", self.log_level]
        args += ["--log-format", self.log_format]
        if self.prefix:
            args += ["--prefix", self.prefix]
        if role == "processor":
            args += ["--instance-id", self.instance_id]
        elif role == "projector":
            args += ["--data-dir", str(self.data_dir / "projector")]
        elif role == "sink" and self.schema:
            args += ["--schema", self.schema]
        return [*args, *self.extra_args.get(role, ())]


class WorkerProcess:
    """One worker role as a child process. `env` is added to this process's environment as
    it is when `start()` runs."""

    def __init__(
        self,
        role: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.role = role
        self.args = list(args)
        self.log_path = log_path
        self.env = dict(env or {})
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", WORKER_MARKER, "run", self.role, *self.args]
        cmd += ["--health-port", str(self.health_port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                # Its own process group: a Ctrl-C in the terminal reaches us, and we stop
                # the workers in order, instead of every process at once.
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """/readyz answers 200: the worker has its partitions and serves them."""
        return self._answers("/readyz")

    def healthy(self) -> bool:
        """/healthz answers 200: the worker's loop is alive (what a liveness probe asks)."""
        return self._answers("/healthz")

    def _answers(self, path: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}{path}"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Until /readyz answers; WorkerFailed if the worker exits first or is not ready in
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            self.check()
            if time.monotonic() > deadline:
                raise self.failed(f"not ready within {timeout:.0f} s")
            time.sleep(0.1)
        return self

    def failed(self, message: str) -> WorkerFailed:
        return WorkerFailed(self.role, message, self.log_path, self.log_tail())

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failed(f"exited with code {self.proc.returncode}")

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log_path, lines)

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the most memory the process has held resident; None once it has exited."""
        if not self.alive:
            return None
        return vm_hwm_mb(self.pid)

    def terminate(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if never started).
        A stopped (SIGSTOP) worker is continued first: it could not act on the SIGTERM."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
        self.terminate()
        return self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, an open transaction stays open."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def vm_hwm_mb(pid: int | None = None) -> float | None:
    """Peak resident set size of a process (VmHWM in /proc/<pid>/status), in MB."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Pipeline:
    """The workers of one pipeline (one topic prefix, one read-model schema)."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.workers: dict[str, WorkerProcess] = {}

    def start(self, roles: Iterable[str] = ROLES) -> Pipeline:
        for role in roles:
            if role not in ROLES:
                raise ValueError(f"unknown worker role {role!r} (known: {', '.join(ROLES)})")
            if role in self.workers and self.workers[role].alive:
                continue
            log_path = self.spec.log_dir / f"{role}.log"
            env = {**self.spec.env, **self.spec.role_env.get(role, {})}
            worker = WorkerProcess(role, self.spec.args(role), log_path, env)
            self.workers[role] = worker.start()
        return self

    def wait_ready(self, timeout: float = 120.0, roles: Iterable[str] | None = None) -> None:
        """Until every (given) worker answers /readyz; WorkerFailed if one exits first."""
        waiting = [self.workers[r] for r in (roles or self.workers)]
        deadline = time.monotonic() + timeout
        while waiting:
            for worker in list(waiting):
                worker.check()
                if worker.ready():
                    waiting.remove(worker)
            if waiting and time.monotonic() > deadline:
                raise waiting[0].failed(f"not ready within {timeout:.0f} s")
            if waiting:
                time.sleep(0.1)

    def check(self) -> None:
        """Raise WorkerFailed for the first worker that is no longer running."""
        for worker in self.workers.values():
            worker.check()

    def peak_rss_mb(self) -> dict[str, float]:
        found = {role: w.peak_rss_mb() for role, w in self.workers.items()}
        return {role: mb for role, mb in found.items() if mb is not None}

    def pids(self) -> dict[str, int]:
        return {role: w.pid for role, w in self.workers.items() if w.alive and w.pid}

    def stop(self, timeout: float = 30.0, roles: Iterable[str] | None = None) -> dict[str, int]:
        """SIGTERM to every (given) worker at once, then wait; SIGKILL after `timeout`.
        Returns each worker's exit code."""
        chosen = [self.workers[r] for r in (roles or list(self.workers)) if r in self.workers]
        for worker in chosen:
            worker.terminate()
        codes = {}
        for worker in chosen:
            code = worker.wait_stopped(timeout)
            if code is not None:
                codes[worker.role] = code
        return codes

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
