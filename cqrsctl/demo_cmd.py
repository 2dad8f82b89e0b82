"""`cqrsctl demo`: the main job. Brings the local stack up (unless CQRS_KAFKA_BOOTSTRAP_SERVERS
and CQRS_POSTGRES_DSN point elsewhere), creates the topics, starts the command processor, the
projector and the sink as child processes, drives the benchmark's bank workload through the
command client, waits until Postgres reflects every accepted command (the read-your-writes
checkpoints, not a sleep), prints a short report (cqrsctl/demo_report.py), and stops the
workers it started.

With --observability it also starts a real Prometheus (deploy/local/prometheus.py, the one
`cqrsctl up --observability` runs) scraping those workers, with its own folder
`<state>/demo/prometheus`; it lives as long as the workers: stopped (and its data deleted)
at the end, or left running with them by --keep-running until `demo --stop`. Starting that
Prometheus, recording kept workers and stopping them is cqrsctl/demo_workers.py.

Account ids carry a fresh run tag (`<tag>-acc-000042`), so every demo opens its own accounts
and its outcome can be checked against the workload's reference model, run after run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cqrsctl.console import cli_name, fail, out_console
from cqrsctl.demo_report import print_report
from cqrsctl.demo_workers import demo_dir, record_kept, start_prometheus, stop_kept

CONTEXT = "bank"


def _uses_local_stack() -> bool:
    from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN

    return not (os.environ.get(ENV_BOOTSTRAP) and os.environ.get(ENV_PG_DSN))


def _tagged(commands: Iterator[tuple[str, dict[str, Any]]], tag: str) -> Iterator[Any]:
    for kind, data in commands:
        data = {**data, "account_id": f"{tag}-{data['account_id']}"}
        yield kind, data


def demo(
    accounts: int = typer.Option(200, min=1, help="Accounts opened first."),
    commands: int = typer.Option(20_000, min=0, help="Deposits and withdrawals after that."),
    seed: int = typer.Option(6, help="Workload seed (same seed, same commands)."),
    window: int = typer.Option(
        5000, min=1, help="Most commands awaiting their result at once (many clients)."
    ),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    schema: str = typer.Option(None, help="Postgres schema (default: the DSN's search_path)."),
    keep_running: bool = typer.Option(
        False, "--keep-running", help="Leave the workers running (stop them with --stop)."
    ),
    stop: bool = typer.Option(
        False, "--stop", help="Only stop the workers a --keep-running demo left, then exit."
    ),
    timeout: float = typer.Option(
        120.0, min=1, help="Fail when nothing moves for this many seconds."
    ),
    report_json: Path = typer.Option(
        None, "--report-json", help="Also write the report's figures to this file (JSON)."
    ),
    charts: Path = typer.Option(
        None,
        "--charts",
        help="Also write PNG charts of throughput, latency and consumer lag over the run "
        "into this folder (needs the `charts` extra: matplotlib).",
    ),
    observability: bool = typer.Option(
        False,
        "--observability",
        help="Also start Prometheus (Debian's package) on 127.0.0.1, scraping the demo's "
        "workers; it stops with them (--keep-running keeps it until --stop).",
    ),
) -> None:
    """Run the whole pipeline on a bank workload and show the read model."""
    console = out_console()
    if stop:
        if not stop_kept(console):
            console.print("no demo workers were left running")
        return
    if charts is not None:
        from cqrsctl.run_charts import ChartsUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except ChartsUnavailable as exc:
            fail(str(exc))
    if observability:
        from deploy.local.prometheus import PrometheusError, binary

        try:
            binary()  # fails now, before anything starts, when it is missing
        except PrometheusError as exc:
            fail(str(exc), code=1)
    import psycopg
    from confluent_kafka import KafkaException

    from deploy.local.errors import StackError
    from deploy.local.pipeline import WorkerFailed
    from processors.settings import SettingsError
    from sinks.db import ReadModelError

    try:
        _run(
            console,
            accounts,
            commands,
            seed,
            window,
            prefix,
            schema,
            keep_running,
            timeout,
            report_json,
            charts,
            observability,
        )
    except WorkerFailed as failed:
        console.print(failed.log_tail, markup=False, highlight=False, style="dim")
        fail(str(failed), code=1)
    except (
        StackError,
        SettingsError,
        KafkaException,
        psycopg.Error,
        ReadModelError,
        DemoError,
    ) as exc:
        fail(str(exc).strip(), code=1)


class DemoError(RuntimeError):
    pass


def _run(
    console: Console,
    accounts: int,
    commands: int,
    seed: int,
    window: int,
    prefix: str | None,
    schema: str | None,
    keep_running: bool,
    timeout: float,
    report_json: Path | None,
    charts: Path | None = None,
    observability: bool = False,
) -> None:
    from cqrsctl.driver import DriveError, Driver
    from cqrsctl.stack_cmd import mask_dsn
    from cqrsctl.workload import WorkloadSpec, expected_outcome, iter_commands
    from deploy.local import stack
    from deploy.local.pipeline import Pipeline, PipelineSpec, create_context_topics
    from processors.settings import load_settings
    from producers.command_client import CommandClient
    from sinks.checkpoints import CheckpointWaiter, ReadModelTimeout
    from sinks.db import resolve_schema

    stop_kept(console)
    if _uses_local_stack():
        with console.status("starting the local stack (Kafka, Postgres)"):
            stack.up(started_by="cqrsctl demo")
    settings = load_settings()
    kafka = settings.kafka.client_config()
    topic_prefix = prefix or CONTEXT
    console.print(
        f"kafka {settings.kafka.bootstrap_servers}, postgres {mask_dsn(settings.postgres_dsn)}"
    )
    with console.status("creating topics"):
        created = create_context_topics(kafka, CONTEXT, topic_prefix)
    console.print(f"topics: {len(created)} created under prefix {topic_prefix!r}")

    read_schema = resolve_schema(settings.postgres_dsn, schema)
    spec_options: dict[str, Any] = {}
    read_dsn = settings.postgres_dsn
    if _uses_local_stack():
        from deploy.local import postgres_roles
        from processors.registry import default_registry

        # As in Kubernetes: the migration role migrates once, the sink logs in as a writer
        # (--no-migrate), the demo's own reads as a reader.
        bank = default_registry().context(CONTEXT)
        logins = postgres_roles.prepare(settings.postgres_dsn, read_schema, bank)
        spec_options = postgres_roles.spec_options(logins)
        read_dsn = logins.query_dsn

    folder = demo_dir()
    # Projector tables are restored from the projection topics on start; a folder left by
    # an earlier stack would hold rows of topics that no longer exist.
    shutil.rmtree(folder / "data", ignore_errors=True)
    spec = PipelineSpec(
        log_dir=folder / "logs",
        data_dir=folder / "data",
        context=CONTEXT,
        prefix=prefix,
        schema=schema,
        instance_id="demo-0",
        env={
            "CQRS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "CQRS_POSTGRES_DSN": settings.postgres_dsn,
        },
        **spec_options,
    )
    pipeline = Pipeline(spec)
    try:
        with console.status("starting the processor, projector and sink"):
            pipeline.start()
            pipeline.wait_ready(timeout)
        pids = ", ".join(f"{role} {pid}" for role, pid in pipeline.pids().items())
        console.print(f"workers ready ({pids}); logs in {spec.log_dir}")
        prom_url = start_prometheus(console, pipeline) if observability else None

        sampler = None
        if charts is not None:
            from cqrsctl.run_charts import LagSampler

            ports = {role: w.health_port for role, w in pipeline.workers.items()}
            sampler = LagSampler(ports).start()
        work = WorkloadSpec(accounts=accounts, commands=commands, seed=seed)
        tag = f"d{secrets.token_hex(2)}"
        client = CommandClient(kafka, CONTEXT, topic_prefix=topic_prefix)
        try:
            driver = Driver(client, work.total)
            with _progress(console) as progress:
                sent_task = progress.add_task("sent", total=work.total)
                done_task = progress.add_task("results", total=work.total)

                def show(sent: int, resolved: int) -> None:
                    progress.update(sent_task, completed=sent)
                    progress.update(done_task, completed=resolved)

                try:
                    drive = driver.send_all(
                        _tagged(iter_commands(work), tag),
                        window=window,
                        progress=show,
                        check=pipeline.check,
                        timeout=timeout,
                    )
                except DriveError as exc:
                    pipeline.check()
                    raise DemoError(str(exc)) from None
                show(drive.sent, drive.resolved)
        finally:
            client.close()

        from producers.command_results import EventPosition

        events_topic = f"{topic_prefix}.events"
        positions = [
            EventPosition(events_topic, p, o) for p, o in drive.last_event_offsets().items()
        ]
        projections = _projections()
        with (
            console.status("waiting until Postgres reflects every accepted command"),
            CheckpointWaiter(read_dsn, read_schema, events_topic=events_topic) as w,
        ):
            for name in projections:
                while True:
                    try:
                        w.wait(name, positions, min(timeout, 2.0))
                        break
                    except ReadModelTimeout:
                        pipeline.check()
                        if time.monotonic() - drive.last_result > timeout:
                            raise
        visible = time.monotonic()
        if sampler is not None and charts is not None:
            from cqrsctl.run_charts import write_charts

            sampler.stop()
            written = write_charts(charts, drive.sent_at, drive.result_at, sampler.samples)
            console.print(f"charts: {', '.join(str(p) for p in written)}", soft_wrap=True)
        model = expected_outcome(iter_commands(work))
        figures = print_report(console, drive, visible, model, read_dsn, read_schema, tag)
        if report_json is not None:
            figures.update(
                prefix=topic_prefix,
                schema=read_schema,
                tag=tag,
                workers=pipeline.pids(),
                prometheus=prom_url,
            )
            report_json.write_text(json.dumps(figures, indent=2))
        if keep_running:
            kept = pipeline.pids()
            record_kept(kept)
            also = f", prometheus {prom_url}" if prom_url else ""
            console.print(
                f"workers left running: {', '.join(f'{r} {p}' for r, p in kept.items())}"
                f"{also}; stop them with `{cli_name()} demo --stop`",
                soft_wrap=True,
            )
    finally:
        if not keep_running:
            with console.status("stopping the workers"):
                pipeline.stop()
                if observability:
                    from deploy.local import prometheus

                    prometheus.stop(folder, keep_data=False)


def _projections() -> list[str]:
    from processors.registry import default_registry

    return [p.name for p in default_registry().context(CONTEXT).projections]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
