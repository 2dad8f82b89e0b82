"""Our half of the benchmark: the bank workload through the whole pipeline (command client ->
Kafka -> transactional command processor -> projector -> sink -> Postgres), on the stack that
`cqrsctl up` runs (or CQRS_KAFKA_BOOTSTRAP_SERVERS / CQRS_POSTGRES_DSN).

    .venv/bin/python -m bench.bench_pipeline --accounts 1000 --commands 100000

Each run gets fresh topics (prefix `bench<id>-<run>`) and a fresh Postgres schema, both
deleted afterwards. Durable settings throughout: the client and every producer use
`acks=all` with idempotence, the processor commits one Kafka transaction per batch
(`send_offsets_to_transaction`), and Postgres keeps fsync and synchronous_commit on.

Three runs, each over the same seeded workload (cqrsctl/workload.py; rates count every command,
openings included, accepted + rejected, as the peer does):

1. `drain`: the commands are produced first (the processor is not running); then the
   processor starts and we time it from ready until its committed offsets reach the end
   of `<prefix>.commands` (polled every 50 ms): the write side's commands/s, with nothing
   else competing. Then the projector and the sink start, and we time them until every
   projection's checkpoint in Postgres passes the last event: the read side's rate.
2. `full`: every worker ready first, then the client sends with a window of W commands
   awaiting their result (many clients at once). End to end = from the first command
   sent until every projection's checkpoint in Postgres has passed every accepted
   command's event; latencies: send -> result, and send -> visible in Postgres.
3. `paced`: like `full`, but paced at half the full run's end-to-end rate: the latency
   figures the target names (p99 send -> visible at half the maximum rate).
4. `split` (only when asked for, `--stages split`): like `drain`, but the read side one
   worker at a time, each alone: the projector, timed from ready until its committed
   offsets on `<prefix>.events` pass the last event, then the sink over the projection
   topics the projector filled, timed until every checkpoint passed the last event. Each
   one's CPU per command is its own cost (in `drain` the sink polls while it waits for the
   projector).

"Visible" is measured as the peer's is: a thread here LISTENs on the sink's NOTIFY channel
and notes, on the machine-wide monotonic clock, when each new checkpoint became visible; a
command is visible once every projection's checkpoint of its partition has passed its
event. Every process's peak RSS (VmHWM) and CPU time are reported too: on this shared
machine CPU per command is steadier than wall-clock rates.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
import typer
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql
from rich.console import Console

from bench.economy import Reading, StackMeter, cost_per_command, print_economy
from bench.report import median_figures, print_comparison
from cqrsctl.driver import ACCEPTED, Drive, Driver, percentiles
from cqrsctl.workload import (
    DEFAULT_ACCOUNTS,
    DEFAULT_COMMANDS,
    DEFAULT_SEED,
    WorkloadError,
    WorkloadSpec,
    expected_outcome,
    iter_commands,
)
from deploy.local.pipeline import Pipeline, PipelineSpec, WorkerFailed, create_context_topics
from deploy.local.pipeline import vm_hwm_mb as _vm_hwm_mb
from processors.registry import default_registry
from processors.settings import SettingsError, load_settings
from processors.topic_reader import last_event_offsets
from processors.topics import ContextTopics, declared_topics
from sinks.db import CHECKPOINT_CHANNEL

CONTEXT = "bank"
DEFAULT_WINDOW = 5000
START_TIMEOUT_S = 120.0
STALL_TIMEOUT_S = 120.0  # no progress for this long fails the run
SYSTEM = "ours (Kafka + Faust + Postgres)"


class BenchError(RuntimeError):
    """A run could not complete; the message says which part failed."""


# -- measuring -----------------------------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process and all its threads so far."""
    with open(f"/proc/{pid or 'self'}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CheckpointRecorder:
    """Notes when each checkpoint of one schema became visible: LISTENs on the sink's NOTIFY
    channel (delivered at commit) and reads `cqrs_checkpoints` after each notification."""

    def __init__(self, dsn: str, schema: str, projections: list[str]) -> None:
        self.dsn, self.schema, self.projections = dsn, schema, projections
        # per partition: times, and the lowest checkpoint over the projections at that time
        self.history: dict[int, tuple[list[float], list[int]]] = {}
        self._lowest: dict[int, int] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)

    def __enter__(self) -> CheckpointRecorder:
        self._thread.start()
        if not self._ready.wait(30):
            raise BenchError(f"cannot LISTEN on Postgres: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHECKPOINT_CHANNEL)))
                self._ready.set()
                while not self._stop.is_set():
                    mine = False
                    for note in conn.notifies(timeout=0.2, stop_after=1):
                        mine = mine or note.payload == self.schema
                    if mine:
                        self._read(conn, time.monotonic())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            with self._changed:
                self._changed.notify_all()

    def _read(self, conn: psycopg.Connection[Any], at: float) -> None:
        query = sql.SQL(
            "SELECT projection, source_partition, source_offset FROM {}.cqrs_checkpoints"
        ).format(sql.Identifier(self.schema))
        try:
            rows = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            return
        per: dict[int, dict[str, int]] = {}
        for projection, partition, offset in rows:
            per.setdefault(partition, {})[projection] = offset
        with self._changed:
            for partition, offsets in per.items():
                if len(offsets) < len(self.projections):
                    continue
                lowest = min(offsets.get(p, -1) for p in self.projections)
                if lowest > self._lowest.get(partition, -1):
                    self._lowest[partition] = lowest
                    times, values = self.history.setdefault(partition, ([], []))
                    times.append(at)
                    values.append(lowest)
            self._changed.notify_all()

    def wait_past(
        self, ends: Mapping[int, int], timeout: float, check: Callable[[], None] | None = None
    ) -> float:
        """Until every partition's lowest checkpoint reached `ends`; returns when that
        became visible. The timeout restarts whenever a checkpoint moves."""
        deadline = time.monotonic() + timeout
        seen = dict(self._lowest)
        while True:
            with self._changed:
                if self._error is not None:
                    raise BenchError(f"checkpoint listener failed: {self._error}")
                behind = {p: o for p, o in ends.items() if self._lowest.get(p, -1) < o}
                if not behind:
                    return max(
                        (self.visible_at(p, o) for p, o in ends.items()), default=time.monotonic()
                    )
                self._changed.wait(0.5)
                now = dict(self._lowest)
            if check is not None:
                check()
            if now != seen:
                seen, deadline = now, time.monotonic() + timeout
            elif time.monotonic() > deadline:
                raise BenchError(
                    f"the read model did not move for {timeout:g} s; behind (partition: needed "
                    f"offset): {behind}, at {now}"
                )

    def visible_at(self, partition: int, offset: int) -> float:
        """When the lowest checkpoint of `partition` first reached `offset`."""
        times, values = self.history[partition]
        return times[bisect.bisect_left(values, offset)]


def ms_percentiles(seconds: list[float]) -> dict[str, float]:
    return {k: v * 1000 for k, v in percentiles(seconds).items()} if seconds else {}


# -- the stack, topics and schemas ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    kafka: dict[str, Any]
    dsn: str
    work_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "CQRS_KAFKA_BOOTSTRAP_SERVERS": self.kafka["bootstrap.servers"],
            "CQRS_POSTGRES_DSN": self.dsn,
        }


def default_target(work_dir: Path) -> Target:
    settings = load_settings()
    return Target(settings.kafka.client_config(), settings.postgres_dsn, work_dir)


@contextlib.contextmanager
def fresh_run(
    target: Target, name: str, extra_args: Mapping[str, list[str]] | None = None
) -> Iterator[Pipeline]:
    """Topics, a schema and worker folders for one run; all removed afterwards."""
    prefix = schema = name
    create_context_topics(target.kafka, CONTEXT, prefix)
    folder = target.work_dir / name
    spec = PipelineSpec(
        log_dir=folder / "logs",
        data_dir=folder / "data",
        context=CONTEXT,
        prefix=prefix,
        schema=schema,
        instance_id="bench-0",
        env=target.env,
        extra_args=extra_args or {},
        log_level="WARNING",
    )
    pipeline = Pipeline(spec)
    try:
        yield pipeline
    finally:
        pipeline.stop()
        _drop_run(target, prefix, schema)
        shutil.rmtree(folder / "data", ignore_errors=True)


def _drop_run(target: Target, prefix: str, schema: str) -> None:
    ctx = default_registry().context(CONTEXT)
    topics = [spec.name for spec in declared_topics(ctx, prefix)]
    admin = AdminClient(target.kafka)
    internal = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
    for future in admin.delete_topics(sorted({*topics, *internal})).values():
        with contextlib.suppress(Exception):
            future.result(30)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _committed(admin: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    listed = admin.list_consumer_group_offsets([request])[group].result(10)
    return {tp.partition: tp.offset for tp in listed.topic_partitions}


def _end_offsets(kafka: dict[str, Any], topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({**kafka, "group.id": "bench-offsets"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def _read_balances(dsn: str, schema: str) -> dict[str, int]:
    query = sql.SQL("SELECT account_id, balance FROM {}.accounts").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(query).fetchall())


def _count_event_log(dsn: str, schema: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.event_log").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


# -- the client, in its own process (as the peer's writer is) ------------------------------


def _client_main(
    kafka: dict[str, Any],
    prefix: str,
    spec: WorkloadSpec,
    mode: str,
    rate: float | None,
    window: int | None,
    conn: Connection,
) -> None:
    """Child process: send the workload (mode "results": await every result; "preload":
    only produce, nothing is running yet) and send back the records."""
    try:
        from producers.command_client import CommandClient

        awaiting = mode == "results"
        from processors.gc_tuning import tune_gc

        client = CommandClient(kafka, CONTEXT, topic_prefix=prefix, await_results=awaiting)
        tune_gc()  # as the processor does: what start-up allocated is frozen
        conn.send(("ready", None))
        conn.recv()
        cpu_before = cpu_seconds()
        if awaiting:
            drive = Driver(client, spec.total).send_all(
                iter_commands(spec), rate=rate, window=window, timeout=STALL_TIMEOUT_S
            )
        else:
            drive = Drive(spec.total)
            for index, (kind, data) in enumerate(iter_commands(spec)):
                drive.sent_at[index] = time.monotonic()
                client.send(kind, data)
            client.flush(STALL_TIMEOUT_S)
        cpu_used = cpu_seconds() - cpu_before
        client.close()
        payload = {"drive": drive, "peak_rss_mb": _vm_hwm_mb(), "cpu_s": cpu_used}
        conn.send(("done", payload))
    except BaseException:
        conn.send(("error", f"client failed:\n{traceback.format_exc()}"))
        raise


class ClientProcess:
    def __init__(
        self,
        target: Target,
        prefix: str,
        spec: WorkloadSpec,
        mode: str,
        rate: float | None = None,
        window: int | None = None,
    ):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_client_main,
            args=(target.kafka, prefix, spec, mode, rate, window, child),
            name="bench client",
        )

    def start(self) -> ClientProcess:
        self.process.start()
        self._expect("ready", START_TIMEOUT_S, None)
        return self

    def go(self) -> None:
        self.conn.send("go")

    def finish(self, check: Callable[[], None] | None, timeout: float) -> dict[str, Any]:
        try:
            return dict(self._expect("its records", timeout, check))
        finally:
            self.process.join(30)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join()

    def _expect(self, what: str, timeout: float, check: Callable[[], None] | None) -> Any:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.5):
            if not self.process.is_alive():
                raise BenchError(f"the client exited (code {self.process.exitcode}) before {what}")
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise BenchError(f"the client gave no {what} within {timeout:.0f} s")
        tag, payload = self.conn.recv()
        if tag == "error":
            raise BenchError(payload)
        return payload


# -- the runs ------------------------------------------------------------------------------


def _worker_usage(pipeline: Pipeline, cpu_before: Mapping[str, float]) -> dict[str, Any]:
    return {
        "peak_rss_mb": pipeline.peak_rss_mb(),
        "cpu_s": {
            role: cpu_seconds(pid) - cpu_before.get(role, 0.0)
            for role, pid in pipeline.pids().items()
        },
    }


def _cpu_now(pipeline: Pipeline) -> dict[str, float]:
    return {role: cpu_seconds(pid) for role, pid in pipeline.pids().items()}


def _meter(target: Target) -> StackMeter | None:
    return StackMeter.for_target(target.kafka["bootstrap.servers"])


def _stack_usage(
    meter: StackMeter | None,
    counters_before: Reading | None,
    cpu_before: Reading | None,
    prefix: str,
    commands: int,
) -> dict[str, Any]:
    """The broker's and Postgres' share of a phase: CPU from `cpu_before` (read when the
    phase's clock started), the broker's counters from `counters_before` (read before the
    phase's workers started: JmxTool takes seconds) until now."""
    if meter is None or counters_before is None or cpu_before is None:
        return {"unmeasured": "not the local stack: its processes and JMX are not readable"}
    after = meter.reading()
    usage = meter.usage(cpu_before, after, prefix, commands)
    counted = meter.usage(counters_before, after, prefix, commands)
    if "broker" in counted:
        usage["broker"] = counted["broker"]
    return usage


def _reading(meter: StackMeter | None, counters: bool = True) -> Reading | None:
    return None if meter is None else meter.reading(counters=counters)


def _timed_phase(
    name: str,
    commands: int,
    pipeline: Pipeline,
    roles: list[str],
    meter: StackMeter | None,
    say: Callable[[str], None],
    until: Callable[[], float],
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """Start `roles` and, once ready, time them until `until()` returns (when the phase
    ended, on the monotonic clock). Returns the seconds, the workers' usage and the
    stack's (the broker's counters are read before the start: JmxTool takes seconds)."""
    counters_before = _reading(meter)
    pipeline.start(roles)
    pipeline.wait_ready(START_TIMEOUT_S, roles=roles)
    started, cpu_before = time.monotonic(), _cpu_now(pipeline)
    stack_before = _reading(meter, counters=False)
    say(f"{name}: {' and '.join(roles)} running")
    seconds = until() - started
    usage = _worker_usage(pipeline, cpu_before)
    return seconds, usage, _stack_usage(meter, counters_before, stack_before, name, commands)


def _committed_past(
    target: Target, group: str, topic: str, end: Mapping[int, int], who: str, pipeline: Pipeline
) -> Callable[[], float]:
    """An `until` for `_timed_phase`: `_wait_committed`, then the time."""

    def until() -> float:
        _wait_committed(target, group, topic, end, who, pipeline)
        return time.monotonic()

    return until


def _drain_processor(
    target: Target, spec: WorkloadSpec, name: str, pipeline: Pipeline, say: Callable[[str], None]
) -> dict[str, Any]:
    """Pre-load the commands topic (nothing running), then time the processor alone from
    ready until its committed offsets reach the end of `<prefix>.commands`."""
    topics = ContextTopics(name)
    partitions = default_registry().context(CONTEXT).partitions
    say(f"{name}: producing {spec.total:,} commands to {topics.commands}")
    client = ClientProcess(target, name, spec, "preload").start()
    client.go()
    preload = client.finish(None, STALL_TIMEOUT_S * 5)
    end = _end_offsets(target.kafka, topics.commands, partitions)
    group = f"{name}.command-processor"
    until = _committed_past(target, group, topics.commands, end, "processor", pipeline)
    write_s, usage, stack = _timed_phase(
        name, spec.total, pipeline, ["processor"], _meter(target), say, until
    )
    return {
        "write_s": write_s,
        "client_cpu_s": preload["cpu_s"],
        "processor_cpu_s": usage["cpu_s"].get("processor"),
        "peak_rss_mb": usage["peak_rss_mb"],
        "stack": stack,
    }


def _wait_committed(
    target: Target,
    group: str,
    topic: str,
    end: Mapping[int, int],
    who: str,
    pipeline: Pipeline,
) -> None:
    """Until `group`'s committed offsets on `topic` reach `end` (next offset to read, per
    partition; polled every 50 ms). A stall of STALL_TIMEOUT_S fails the run."""
    admin = AdminClient(target.kafka)  # one client: a new one per poll costs a connection
    last_move, seen = time.monotonic(), -1
    while True:
        done = _committed(admin, group, topic, len(end))
        if all((done.get(p) or 0) >= end[p] for p in end):
            return
        total_done = sum(max(0, v or 0) for v in done.values())
        now = time.monotonic()
        if total_done != seen:
            seen, last_move = total_done, now
        elif now - last_move > STALL_TIMEOUT_S:
            raise BenchError(f"the {who} stalled at {total_done} of {sum(end.values())}")
        pipeline.check()
        time.sleep(0.05)


def run_drain(target: Target, spec: WorkloadSpec, name: str, say: Callable[[str], None]) -> dict:
    """Stage by stage over a pre-loaded commands topic: the processor alone, then the
    projector and sink together over the events it wrote."""
    topics = ContextTopics(name)
    partitions = default_registry().context(CONTEXT).partitions
    with fresh_run(target, name) as pipeline:
        write = _drain_processor(target, spec, name, pipeline, say)
        last = last_event_offsets(target.kafka, topics.events, partitions)
        projections = [p.name for p in default_registry().context(CONTEXT).projections]
        with CheckpointRecorder(target.dsn, name, projections) as recorder:
            read_s, usage, read_stack = _timed_phase(
                name,
                spec.total,
                pipeline,
                ["projector", "sink"],
                _meter(target),
                say,
                lambda: recorder.wait_past(last, STALL_TIMEOUT_S, pipeline.check),
            )
    return {
        "write_cmds_per_s": spec.total / write["write_s"],
        "read_cmds_per_s": spec.total / read_s,
        "wall_s": {"write": write["write_s"], "read": read_s},
        "cpu_s": {
            "client": write["client_cpu_s"],
            "processor": write["processor_cpu_s"],
            "projector": usage["cpu_s"].get("projector"),
            "sink": usage["cpu_s"].get("sink"),
        },
        "peak_rss_mb": {**write["peak_rss_mb"], **usage["peak_rss_mb"]},
        "phases": {"write": write["stack"], "read": read_stack},
    }


def _retire(pipeline: Pipeline, role: str) -> None:
    """Stop one worker for good: `pipeline.check()` then no longer counts it as failed."""
    pipeline.stop(roles=[role])
    pipeline.workers.pop(role, None)


def run_split(target: Target, spec: WorkloadSpec, name: str, say: Callable[[str], None]) -> dict:
    """Like `run_drain`, but the read side one worker at a time, each the only worker
    running: the projector alone, timed from ready until its committed offsets on
    `<prefix>.events` pass the last event of every partition; then the sink alone over the
    projection topics the projector filled, timed until every checkpoint in Postgres passed
    the last event. Each one's CPU is its own cost, free of polling while it waits for the
    other (in `drain` the sink is fed at the projector's pace)."""
    topics = ContextTopics(name)
    partitions = default_registry().context(CONTEXT).partitions
    projections = [p.name for p in default_registry().context(CONTEXT).projections]
    with fresh_run(target, name) as pipeline:
        write = _drain_processor(target, spec, name, pipeline, say)
        _retire(pipeline, "processor")
        last = last_event_offsets(target.kafka, topics.events, partitions)
        meter = _meter(target)
        past = {p: o + 1 for p, o in last.items()}
        group = f"{name}.projector"
        until = _committed_past(target, group, topics.events, past, "projector", pipeline)
        projector_s, projector, projector_stack = _timed_phase(
            name, spec.total, pipeline, ["projector"], meter, say, until
        )
        _retire(pipeline, "projector")
        with CheckpointRecorder(target.dsn, name, projections) as recorder:
            sink_s, sink, sink_stack = _timed_phase(
                name,
                spec.total,
                pipeline,
                ["sink"],
                meter,
                say,
                lambda: recorder.wait_past(last, STALL_TIMEOUT_S, pipeline.check),
            )
    return {
        "write_cmds_per_s": spec.total / write["write_s"],
        "projector_cmds_per_s": spec.total / projector_s,
        "sink_cmds_per_s": spec.total / sink_s,
        "wall_s": {"write": write["write_s"], "projector": projector_s, "sink": sink_s},
        "cpu_s": {
            "client": write["client_cpu_s"],
            "processor": write["processor_cpu_s"],
            "projector": projector["cpu_s"].get("projector"),
            "sink": sink["cpu_s"].get("sink"),
        },
        "peak_rss_mb": {
            **write["peak_rss_mb"],
            **projector["peak_rss_mb"],
            **sink["peak_rss_mb"],
        },
        "phases": {"write": write["stack"], "projector": projector_stack, "sink": sink_stack},
    }


def run_live(
    target: Target,
    spec: WorkloadSpec,
    name: str,
    say: Callable[[str], None],
    *,
    rate: float | None = None,
    window: int | None = DEFAULT_WINDOW,
    charts: Path | None = None,
    stage: str = "full",
) -> dict[str, Any]:
    """Every worker ready, then the client drives the workload; timed until Postgres
    reflects every accepted command. With `charts`, the workers' lag is sampled during the
    run and its charts are written there (`write_run_charts`)."""
    projections = [p.name for p in default_registry().context(CONTEXT).projections]
    with fresh_run(target, name) as pipeline:
        pipeline.start()
        pipeline.wait_ready(START_TIMEOUT_S)
        sampler = None
        if charts is not None:
            from cqrsctl.run_charts import LagSampler

            ports = {role: w.health_port for role, w in pipeline.workers.items()}
            sampler = LagSampler(ports).start()
        with CheckpointRecorder(target.dsn, name, projections) as recorder:
            client = ClientProcess(target, name, spec, "results", rate, window).start()
            meter = _meter(target)
            counters_before = _reading(meter)  # JmxTool first: its requests cost the broker
            stack_before = _reading(meter, counters=False)
            cpu_before = _cpu_now(pipeline)
            how = f"paced at {rate:,.0f}/s" if rate else f"window {window}"
            say(f"{name}: sending {spec.total:,} commands ({how})")
            client.go()
            sent = client.finish(pipeline.check, STALL_TIMEOUT_S * 20)
            drive: Drive = sent["drive"]
            say(f"{name}: every result in; waiting for Postgres")
            visible = recorder.wait_past(
                drive.last_event_offsets(), STALL_TIMEOUT_S, pipeline.check
            )
            if sampler is not None:
                sampler.stop()
            usage = _worker_usage(pipeline, cpu_before)
            stack = _stack_usage(meter, counters_before, stack_before, name, spec.total)
            visible_latency = [
                recorder.visible_at(p, o) - s
                for s, p, o, outcome in zip(
                    drive.sent_at,
                    drive.event_partition,
                    drive.event_offset,
                    drive.outcome,
                    strict=True,
                )
                if outcome == ACCEPTED and p >= 0
            ]
        written = []
        if sampler is not None and charts is not None:
            written = write_run_charts(charts, stage, drive, sampler.samples)
        balances = _read_balances(target.dsn, name)
        logged = _count_event_log(target.dsn, name)
    first = drive.first_sent
    return {
        **({"charts": written} if written else {}),
        "drive": drive,
        "balances": balances,
        "event_log_rows": logged,
        "offered_rate": rate,
        "window": window,
        "write_cmds_per_s": spec.total / (drive.last_result - first),
        "e2e_cmds_per_s": spec.total / (visible - first),
        "wall_s": {"results": drive.last_result - first, "e2e": visible - first},
        "write_latency_ms": ms_percentiles(drive.result_latencies()),
        "visible_latency_ms": ms_percentiles(visible_latency),
        "cpu_s": {"client": sent["cpu_s"], **usage["cpu_s"], **stack.get("cpu_s", {})},
        "peak_rss_mb": {"client": sent["peak_rss_mb"], **usage["peak_rss_mb"]},
        **{k: v for k, v in stack.items() if k != "cpu_s"},
    }


def write_run_charts(
    folder: Path, stage: str, drive: Drive, lag: Mapping[str, list[tuple[float, float]]]
) -> list[str]:
    """`<stage>-throughput.png`, `<stage>-latency.png` and `<stage>-lag.png` of one live
    run in `folder`, drawn by the demo's chart module (cqrsctl/run_charts.py)."""
    from cqrsctl.run_charts import write_charts

    paths = write_charts(
        folder, drive.sent_at, drive.result_at, lag, title=f"bench {stage}", prefix=f"{stage}-"
    )
    return [str(p) for p in paths]


def check_correctness(spec: WorkloadSpec, live: Mapping[str, Any]) -> list[str]:
    """Differences from the reference model (empty when the run got everything right)."""
    model = expected_outcome(iter_commands(spec))
    drive: Drive = live["drive"]
    problems = []
    accepted = [o == ACCEPTED for o in drive.outcome]
    if accepted != model.accepted:
        pairs = enumerate(zip(accepted, model.accepted, strict=True))
        first = next(i for i, (a, b) in pairs if a != b)
        problems.append(f"command {first} accepted={accepted[first]}, model says otherwise")
    if dict(drive.rejections) != dict(model.rejections):
        problems.append(f"rejections {dict(drive.rejections)} != model {dict(model.rejections)}")
    if drive.events != model.events or live["event_log_rows"] != model.events:
        problems.append(
            f"{drive.events} events in results, {live['event_log_rows']} in event_log; "
            f"the model expects {model.events}"
        )
    if live["balances"] != model.balances:
        wrong = [k for k in model.balances if live["balances"].get(k) != model.balances[k]]
        problems.append(f"{len(wrong)} balances in Postgres differ from the model")
    return problems


def run_ours(
    accounts: int = DEFAULT_ACCOUNTS,
    commands: int = DEFAULT_COMMANDS,
    *,
    seed: int = DEFAULT_SEED,
    window: int = DEFAULT_WINDOW,
    paced_share: float = 0.5,
    stages: tuple[str, ...] = ("drain", "full", "paced"),
    say: Callable[[str], None] = lambda line: None,
    work_dir: Path | None = None,
    charts: Path | None = None,
) -> dict[str, Any]:
    """One benchmark of our pipeline; returns the figures in bench/report.py's shape, plus
    `drain` and `paced` sections. Latencies in the main figures are the full run's; the
    paced run's are under `paced`. With `charts`, the full and paced runs' charts go
    there (full-*.png, paced-*.png)."""
    if unknown := [s for s in stages if s not in STAGES]:
        raise BenchError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    spec = WorkloadSpec(accounts=accounts, commands=commands, seed=seed)
    run_id = secrets.token_hex(3)
    load_before = os.getloadavg()
    folder = Path(work_dir or tempfile.mkdtemp(prefix="cqrs-bench-"))
    target = default_target(folder)
    figures: dict[str, Any] = {"system": SYSTEM, "accounts": accounts, "seed": seed}
    try:
        if "drain" in stages:
            figures["drain"] = run_drain(target, spec, f"bench{run_id}-drain", say)
        if "split" in stages:
            figures["split"] = run_split(target, spec, f"bench{run_id}-split", say)
        if "full" in stages:
            full = run_live(target, spec, f"bench{run_id}-full", say, window=window, charts=charts)
            figures["full"] = full
        if "paced" in stages:
            base = figures.get("full", {}).get("e2e_cmds_per_s")
            if base is None:
                raise BenchError("the paced run needs the full run's rate (stage 'full')")
            rate = base * paced_share
            figures["paced"] = run_live(
                target,
                spec,
                f"bench{run_id}-paced",
                say,
                rate=rate,
                window=None,
                charts=charts,
                stage="paced",
            )
    finally:
        if work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return summarise(spec, figures, load_before)


def summarise(
    spec: WorkloadSpec, figures: dict[str, Any], load_before: tuple[float, ...]
) -> dict[str, Any]:
    """The comparison's shape: write side from the drain run (else the full run), end to
    end and latencies from the full run; per-process peak RSS is the highest seen."""
    out: dict[str, Any] = {k: v for k, v in figures.items() if k not in STAGES}
    out["commands"] = spec.total
    problems: list[str] = []
    peaks: dict[str, float] = {}
    for key in STAGES:
        section = figures.get(key)
        if section is None:
            continue
        for name, mb in section.get("peak_rss_mb", {}).items():
            if mb is not None:
                peaks[name] = max(peaks.get(name, 0.0), mb)
        if "drive" in section:
            problems += [f"{key}: {p}" for p in check_correctness(spec, section)]
            out[key] = _section(section)
        else:
            out[key] = dict(section)
    full = figures.get("full")
    if full is not None:
        drive = full["drive"]
        out.update(
            accepted=drive.accepted,
            rejected=drive.rejected,
            events=drive.events,
            rejections=dict(drive.rejections),
            e2e_cmds_per_s=full["e2e_cmds_per_s"],
            write_latency_ms=full["write_latency_ms"],
            visible_latency_ms=full["visible_latency_ms"],
        )
    drain = figures.get("drain") or figures.get("split")
    if drain is not None:
        out["write_cmds_per_s"] = drain["write_cmds_per_s"]
    elif full is not None:
        out["write_cmds_per_s"] = full["write_cmds_per_s"]
    _add_costs(out, spec.total)
    out["peak_rss_mb"] = peaks
    out["correct"] = not problems
    out["problems"] = problems
    out["loadavg_before"] = list(load_before)
    out["loadavg_after"] = list(os.getloadavg())
    out["machine"] = machine()
    return out


STAGES = ("drain", "split", "full", "paced")
WRITE_PROCESSES = ("processor", "broker", "postgres")
READ_PROCESSES = ("projector", "sink", "broker", "postgres")
# (stage, phase, the processes it measures, the key of its rate)
PHASES = (
    ("drain", "write", WRITE_PROCESSES, "write_cmds_per_s"),
    ("drain", "read", READ_PROCESSES, "read_cmds_per_s"),
    ("split", "write", WRITE_PROCESSES, "write_cmds_per_s"),
    ("split", "projector", ("projector", "broker", "postgres"), "projector_cmds_per_s"),
    ("split", "sink", ("sink", "broker", "postgres"), "sink_cmds_per_s"),
)
PHASE_LABELS = {
    ("drain", "write"): "drain: processor alone",
    ("drain", "read"): "drain: projector + sink",
    ("split", "write"): "split: processor alone",
    ("split", "projector"): "split: projector alone",
    ("split", "sink"): "split: sink alone",
}


def _add_costs(out: dict[str, Any], commands: int) -> None:
    """CPU µs per command of every process, their total and cores / total, per phase."""
    for stage, phase, processes, rate_key in PHASES:
        section = out.get(stage)
        if section is None:
            continue
        phases = section.setdefault("phases", {})
        cpu = {**section.get("cpu_s", {}), **phases.get(phase, {}).get("cpu_s", {})}
        rate = section.get(rate_key)
        phases.setdefault(phase, {})["cost"] = cost_per_command(cpu, commands, processes, rate)
    for key in ("full", "paced"):
        section = out.get(key)
        if section is not None:
            rate = section.get("e2e_cmds_per_s")
            section["cost"] = cost_per_command(section.get("cpu_s", {}), commands, None, rate)


def economy_rows(
    figures: Mapping[str, Any],
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(label, cost) and (label, broker figures) for each phase that has them."""
    costs: list[tuple[str, Any]] = []
    brokers: list[tuple[str, Any]] = []
    sections: list[tuple[str, Any]] = [
        (label, ((figures.get(stage) or {}).get("phases") or {}).get(phase))
        for (stage, phase), label in PHASE_LABELS.items()
    ]
    sections += [
        ("full load: end to end", figures.get("full")),
        ("paced: end to end", figures.get("paced")),
    ]
    for label, section in sections:
        if not section:
            continue
        if "cost" in section:
            costs.append((label, section["cost"]))
        if "broker" in section:
            brokers.append((label, section["broker"]))
    return costs, brokers


def _section(live: Mapping[str, Any]) -> dict[str, Any]:
    drive: Drive = live["drive"]
    kept = {k: v for k, v in live.items() if k not in ("drive", "balances")}
    kept.update(accepted=drive.accepted, rejected=drive.rejected, events=drive.events)
    return kept


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1)}


def print_ours(figures: Mapping[str, Any], console: Console) -> None:
    """The figures only ours has: stage by stage, the paced run, CPU per command."""
    from rich.table import Table

    total = figures["commands"]
    table = Table(title="ours, stage by stage")
    table.add_column("run")
    table.add_column("commands/s", justify="right")
    table.add_column("result p50/p95/p99 ms", justify="right")
    table.add_column("visible p50/p95/p99 ms", justify="right")
    table.add_column("CPU µs/command: client/processor/projector/sink", justify="right")

    def lat(section: Mapping[str, Any], key: str) -> str:
        values = section.get(key) or {}
        return " / ".join(f"{values[p]:,.0f}" for p in ("p50", "p95", "p99") if p in values)

    def cpu(section: Mapping[str, Any]) -> str:
        used = section.get("cpu_s", {})
        return " / ".join(
            f"{1e6 * used[r] / total:,.0f}" if used.get(r) is not None else "-"
            for r in ("client", "processor", "projector", "sink")
        )

    drain = figures.get("drain")
    if drain:
        table.add_row("drain: processor alone", f"{drain['write_cmds_per_s']:,.0f}", "", "", "")
        table.add_row(
            "drain: projector + sink", f"{drain['read_cmds_per_s']:,.0f}", "", "", cpu(drain)
        )
    split = figures.get("split")
    if split:
        table.add_row("split: processor alone", f"{split['write_cmds_per_s']:,.0f}", "", "", "")
        for role in ("projector", "sink"):
            table.add_row(
                f"split: {role} alone",
                f"{split[f'{role}_cmds_per_s']:,.0f}",
                "",
                "",
                cpu({"cpu_s": {role: split["cpu_s"].get(role)}}),
            )
    for key, label in (("full", "full load"), ("paced", "paced")):
        section = figures.get(key)
        if not section:
            continue
        if key == "paced":
            label = f"paced at {section['offered_rate']:,.0f}/s"
        else:
            label = f"{label}, window {section['window']}"
        table.add_row(
            f"{label}: end to end",
            f"{section['e2e_cmds_per_s']:,.0f}",
            lat(section, "write_latency_ms"),
            lat(section, "visible_latency_ms"),
            cpu(section),
        )
    console.print(table)
    print_economy(*economy_rows(figures), console)
    unmeasured = {
        section.get("unmeasured")
        for section in (figures.get("full"), figures.get("paced"), *_stage_phases(figures))
        if section
    } - {None}
    for note in sorted(unmeasured):
        console.print(f"not measured: {note}")


def _stage_phases(figures: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        section
        for stage in ("drain", "split")
        for section in ((figures.get(stage) or {}).get("phases") or {}).values()
    ]


def main(
    accounts: int = typer.Option(DEFAULT_ACCOUNTS, min=1, help="accounts opened first"),
    commands: int = typer.Option(DEFAULT_COMMANDS, min=0, help="deposits and withdrawals"),
    seed: int = typer.Option(DEFAULT_SEED, help="workload seed"),
    runs: int = typer.Option(1, min=1, help="repeat and report the median of each figure"),
    window: int = typer.Option(DEFAULT_WINDOW, min=1, help="commands in flight at full load"),
    stages: str = typer.Option(
        "drain,full,paced", help="which runs, comma-separated (drain, split, full, paced)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Run the workload through our pipeline and print its figures."""
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console.width = 150  # the tables are wide; a log file has room
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    try:
        results = [
            run_ours(accounts, commands, seed=seed, window=window, stages=chosen, say=console.log)
            for _ in range(runs)
        ]
    except (BenchError, WorkerFailed, WorkloadError, SettingsError, psycopg.Error) as failed:
        typer.echo(f"benchmark failed: {failed}", err=True)
        if isinstance(failed, WorkerFailed):
            typer.echo(failed.log_tail, err=True)
        raise typer.Exit(1) from None
    figures = median_figures(results) if runs > 1 else results[0]
    if as_json:
        typer.echo(json.dumps(figures, indent=2, default=str))
        return
    print_comparison(figures, None, title=f"ours: A={accounts:,} C={commands:,}", console=console)
    print_ours(figures, console)
    for problem in figures["problems"]:
        console.print(f"[red]incorrect:[/red] {problem}")


if __name__ == "__main__":
    typer.run(main)
