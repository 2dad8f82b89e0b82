"""How fast a projection is rebuilt beside the live one (issue 18): the rebuilding
projector's and sink's events/s and CPU µs per event, and the seconds from `cqrsctl
projections rebuild` until the swap. Runs on the stack that `cqrsctl up` runs (or
CQRS_KAFKA_BOOTSTRAP_SERVERS / CQRS_POSTGRES_DSN).

    .venv/bin/python -m bench.bench_rebuild --events 1000000 [--projection accounts] [--json]

One run, on fresh topics (prefix `rebuild<id>`) and a fresh Postgres schema, both deleted
afterwards:

1. load: the bank workload (cqrsctl/workload.py), sized to at least N events, is produced to
   `<prefix>.commands`; the command processor drains it while the shared projector and
   sink bring generation 1 of every projection up to date (real events, written by the
   real processor; not timed);
2. rebuild: `cqrsctl projections rebuild P --no-wait` (the operator's command), then
   generation 2's own projector and sink (`cqrsctl run projector|sink --projection P
   --generation 2`), then `cqrsctl projections rebuild P --generation 2`, which swaps once
   generation 2 has caught up. The shared workers keep running (idle: nothing new is sent).
   Timed: events/s from the new workers ready until generation 2's checkpoints in Postgres
   pass the last event; over that span, the CPU of each new worker (its process tree), of
   the broker and of Postgres, per event; and the seconds from the first command until the
   second one returns with the swap done;
3. check: the swapped-in table equals the retired one (the same fold of the same events).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import typer
from confluent_kafka.admin import AdminClient
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.bench_pipeline import (
    CONTEXT,
    STALL_TIMEOUT_S,
    START_TIMEOUT_S,
    BenchError,
    CheckpointRecorder,
    ClientProcess,
    Target,
    _committed,
    _end_offsets,
    default_target,
    fresh_run,
)
from bench.economy import StackMeter
from bench.process_cpu import per_command_us, tree_cpu_seconds
from cqrsctl.workload import (
    DEFAULT_ACCOUNTS,
    DEFAULT_SEED,
    WorkloadError,
    WorkloadSpec,
    expected_outcome,
    iter_commands,
)
from deploy.local.pipeline import Pipeline, WorkerFailed, WorkerProcess
from processors.generations import GenerationNames
from processors.registry import default_registry
from processors.settings import SettingsError
from processors.topic_reader import last_event_offsets
from processors.topics import ContextTopics

GENERATION = 2
ROLES = ("projector", "sink")


def sized_workload(events: int, accounts: int, seed: int) -> tuple[WorkloadSpec, int]:
    """The smallest workload of this seed with at least `events` events (every accepted
    command records one), and its exact number of events."""
    spec = WorkloadSpec(accounts=accounts, commands=max(0, events - accounts), seed=seed)
    while True:
        found = expected_outcome(iter_commands(spec)).events
        if found >= events:
            return spec, found
        missing = events - found
        spec = WorkloadSpec(accounts, spec.commands + missing + missing // 10 + 1, seed)


def load(
    target: Target, pipeline: Pipeline, name: str, spec: WorkloadSpec, say: Callable[[str], None]
) -> dict[int, int]:
    """Produce the workload, let the processor drain it and the shared read side catch up;
    the offset of the last event per partition."""
    topics = ContextTopics(name)
    ctx = default_registry().context(CONTEXT)
    say(f"load: producing {spec.total:,} commands to {topics.commands}")
    client = ClientProcess(target, name, spec, "preload").start()
    client.go()
    client.finish(None, STALL_TIMEOUT_S * 20)
    end = _end_offsets(target.kafka, topics.commands, ctx.partitions)
    pipeline.start()
    pipeline.wait_ready(START_TIMEOUT_S)
    say("load: the processor drains them; the shared projector and sink follow")
    admin = AdminClient(target.kafka)
    group, last_move, seen = f"{name}.command-processor", time.monotonic(), -1
    while True:
        done = _committed(admin, group, topics.commands, ctx.partitions)
        if all((done.get(p) or 0) >= end[p] for p in end):
            break
        total = sum(max(0, v or 0) for v in done.values())
        if total != seen:
            seen, last_move = total, time.monotonic()
        elif time.monotonic() - last_move > STALL_TIMEOUT_S:
            raise BenchError(f"the processor stalled at {total:,} of {sum(end.values()):,}")
        pipeline.check()
        time.sleep(0.5)
    pipeline.stop(roles=["processor"])  # nothing more to decide; the read side stays up
    last = last_event_offsets(target.kafka, topics.events, ctx.partitions)
    shared = [pipeline.workers[role] for role in ROLES]

    def check() -> None:
        for worker in shared:
            worker.check()

    with CheckpointRecorder(target.dsn, name, [p.name for p in ctx.projections]) as recorder:
        recorder.wait_past(last, STALL_TIMEOUT_S, check)
    say("load: generation 1 of every projection is up to date")
    return last


def cli(target: Target, name: str, *args: str) -> subprocess.Popen[str]:
    """`cqrsctl projections ARGS` on this run's topics and schema, as an operator runs it."""
    cmd = [sys.executable, "-m", "cqrsctl.main", "projections", *args]
    cmd += ["--context", CONTEXT, "--prefix", name, "--schema", name]
    env = {**os.environ, **target.env}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finished(proc: subprocess.Popen[str], what: str, timeout: float) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"{what} did not return within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise BenchError(f"{what} failed (exit {proc.returncode}): {err.strip()}")
    return out.strip()


def generation_workers(target: Target, name: str, projection: str, folder: Path) -> list[Any]:
    own = ["--context", CONTEXT, "--prefix", name, "--log-level", "WARNING"]
    own += ["--projection", projection, "--generation", str(GENERATION)]
    data = ["--data-dir", str(folder / "data" / f"projector-g{GENERATION}")]
    args = {"projector": [*own, *data], "sink": [*own, "--schema", name]}
    logs = folder / "logs"
    return [
        WorkerProcess(role, args[role], logs / f"{role}-g{GENERATION}.log", target.env).start()
        for role in ROLES
    ]


def rebuild(
    target: Target,
    name: str,
    projection: str,
    last: Mapping[int, int],
    events: int,
    folder: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Rebuild `projection` as generation 2 and swap it in; the figures."""
    ctx = default_registry().context(CONTEXT)
    found = next(p for p in ctx.projections if p.name == projection)
    names = GenerationNames.of(name, found, GENERATION)
    meter = StackMeter.for_target(target.kafka["bootstrap.servers"])
    started = time.monotonic()
    say(f"rebuild: cqrsctl projections rebuild {projection} --no-wait")
    finished(cli(target, name, "rebuild", projection, "--no-wait"), "rebuild --no-wait", 120)
    workers = generation_workers(target, name, projection, folder)
    swap_cmd = None
    try:
        with CheckpointRecorder(target.dsn, name, [names.checkpoint_key]) as recorder:
            for worker in workers:
                worker.wait_ready(START_TIMEOUT_S)
            ready = time.monotonic()
            cpu_before = {w.role: tree_cpu_seconds(w.pid) for w in workers}
            stack_before = meter.reading(counters=False) if meter else None
            say(f"rebuild: generation {GENERATION} workers ready, building")
            swap_cmd = cli(target, name, "rebuild", projection, "--generation", str(GENERATION))

            def check() -> None:
                for worker in workers:
                    worker.check()
                if swap_cmd.poll() not in (None, 0):
                    raise BenchError(f"the swap command failed: {swap_cmd.communicate()[1]}")

            caught_up = recorder.wait_past(last, STALL_TIMEOUT_S, check)
            cpu_s: dict[str, float | None] = {
                w.role: tree_cpu_seconds(w.pid) - cpu_before[w.role] for w in workers
            }
            peak = {w.role: w.peak_rss_mb() for w in workers}
            if meter is not None and stack_before is not None:
                cpu_s.update(
                    meter.usage(stack_before, meter.reading(counters=False), name, 0)["cpu_s"]
                )
        say("rebuild: caught up; waiting for the swap")
        swapped_line = finished(swap_cmd, "rebuild --generation", STALL_TIMEOUT_S)
        swapped = time.monotonic()
    finally:
        for worker in workers:
            worker.stop()
        if swap_cmd is not None and swap_cmd.poll() is None:
            swap_cmd.kill()
            swap_cmd.communicate()
    build_s = caught_up - ready
    return {
        "projection": projection,
        "events": events,
        "events_per_s": events / build_s,
        "build_s": build_s,
        "start_s": ready - started,
        "until_swap_s": swapped - started,
        "swap_after_caught_up_s": swapped - caught_up,
        "cpu_s": cpu_s,
        "cpu_us_per_event": {k: per_command_us(v, events) for k, v in cpu_s.items()},
        "peak_rss_mb": peak,
        "swap_output": swapped_line,
        "differences": table_differences(target.dsn, name, found.table_name),
    }


def table_differences(dsn: str, schema: str, table: str) -> int:
    """Rows in one of the retired and the live generation's tables and not in the other."""
    old, new = (sql.Identifier(schema, f"{table}_g{n}") for n in (1, GENERATION))
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM (TABLE {old} EXCEPT TABLE {new}) a)"
        " + (SELECT count(*) FROM (TABLE {new} EXCEPT TABLE {old}) b)"
    ).format(old=old, new=new)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else -1


def run(
    events: int, projection: str, accounts: int, seed: int, say: Callable[[str], None]
) -> dict[str, Any]:
    spec, exact = sized_workload(events, accounts, seed)
    name = f"rebuild{secrets.token_hex(3)}"
    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="cqrs-bench-rebuild-"))
    target = default_target(folder)
    try:
        with fresh_run(target, name) as pipeline:
            loaded = time.monotonic()
            last = load(target, pipeline, name, spec, say)
            load_s = time.monotonic() - loaded
            figures = rebuild(target, name, projection, last, exact, folder / name, say)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures.update(
        commands=spec.total,
        accounts=accounts,
        load_s=load_s,
        loadavg_before=list(load_before),
        loadavg_after=list(os.getloadavg()),
    )
    return figures


def print_figures(f: Mapping[str, Any], console: Console) -> None:
    table = Table(
        title=f"rebuild of {f['projection']} from {f['events']:,} events "
        f"(load average {f['loadavg_before'][0]:.1f} before, {f['loadavg_after'][0]:.1f} after)"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row(
        "events/s (projector + sink of generation 2, ready to caught up)",
        f"{f['events_per_s']:,.0f}",
    )
    table.add_row("seconds: workers starting", f"{f['start_s']:.1f}")
    table.add_row("seconds: building (ready to caught up)", f"{f['build_s']:.1f}")
    table.add_row("seconds: caught up to swapped", f"{f['swap_after_caught_up_s']:.1f}")
    table.add_row("seconds: `rebuild` until the swap", f"{f['until_swap_s']:.1f}")
    for process, us in f["cpu_us_per_event"].items():
        shown = "-" if us is None else f"{us:,.1f}"
        table.add_row(f"CPU µs per event: {process}", shown)
    for process, mb in f["peak_rss_mb"].items():
        table.add_row(f"peak RSS MB: {process}", "-" if mb is None else f"{mb:,.0f}")
    table.add_row("swapped table vs retired: rows differing", str(f["differences"]))
    table.add_row(
        "(setup) commands loaded, seconds to load and bring g1 up",
        f"{f['commands']:,}, {f['load_s']:.0f}",
    )
    console.print(table)


def main(
    events: int = typer.Option(1_000_000, min=1, help="events in <ctx>.events to rebuild from"),
    projection: str = typer.Option("accounts", help="the projection to rebuild"),
    accounts: int = typer.Option(DEFAULT_ACCOUNTS, min=1, help="accounts of the workload"),
    seed: int = typer.Option(DEFAULT_SEED, help="workload seed"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Rebuild one projection from N events beside the live one and time it."""
    console = Console(stderr=as_json)
    known = [p.name for p in default_registry().context(CONTEXT).projections]
    if projection not in known:
        typer.echo(f"error: no projection {projection!r} (known: {', '.join(known)})", err=True)
        raise typer.Exit(2)
    try:
        figures = run(events, projection, accounts, seed, console.log)
    except (BenchError, WorkerFailed, WorkloadError, SettingsError, psycopg.Error) as failed:
        typer.echo(f"benchmark failed: {failed}", err=True)
        if isinstance(failed, WorkerFailed):
            typer.echo(failed.log_tail, err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
    else:
        print_figures(figures, console)
    if figures["differences"]:
        typer.echo(f"incorrect: {figures['differences']} rows differ", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
