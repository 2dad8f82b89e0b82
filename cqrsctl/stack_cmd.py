"""`cqrsctl up|down|status|smoke`: the local Kafka broker and Postgres cluster."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from cqrsctl.console import (
    FAILED,
    OUTPUT_OPTION,
    UNAVAILABLE,
    OutputFormat,
    cli_name,
    fail,
    out_console,
    print_json,
)

F = TypeVar("F", bound=Callable[..., Any])

STATE_DIR_OPTION = typer.Option(
    None,
    "--state-dir",
    envvar="CQRS_STATE_DIR",
    show_envvar=True,
    help="Folder of the stack's state, data and logs (default: /var/tmp/kafka-cqrs).",
)


# libpq key=value: whitespace may surround "=", and a value is either single-quoted (with
# backslash escapes) or a run of non-blanks. sslpassword is a secret too.
_KV_SECRET = re.compile(r"(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)")
# URL query parameters (postgresql://h/db?password=...).
_QUERY_SECRET = re.compile(r"(?i)([?&]\w*password=)[^&#]*")


def mask_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ***, in URL or key=value form."""
    if "://" not in dsn:
        return _KV_SECRET.sub(r"\1***", dsn)
    scheme, _, rest = dsn.partition("://")
    # The authority ends at the first / ? or #; its user info at the LAST @ (a multi-host
    # authority, h1:5432,h2:5433, is no problem here, unlike for urlsplit).
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = _QUERY_SECRET.sub(r"\1***", tail)
    return f"{scheme}://{authority}{tail}"


def _fail_cleanly(func: F) -> F:
    """Turn expected failures into one `error:` message and exit code 1 (4 when Kafka or
    Postgres cannot be reached), with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg
        from confluent_kafka import KafkaException

        from deploy.local.errors import StackError
        from deploy.local.pipeline import WorkerFailed
        from processors.settings import SettingsError
        from sinks.db import ReadModelError

        try:
            return func(*args, **kwargs)
        except (KafkaException, psycopg.OperationalError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(UNAVAILABLE) from None
        except (
            StackError,
            SettingsError,
            ReadModelError,  # the read models' migrations, for `up --pipeline`
            psycopg.Error,
            OSError,
            ValueError,
        ) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(FAILED) from None
        except WorkerFailed as failed:
            typer.echo(failed.log_tail, err=True)
            typer.echo(f"error: {failed}", err=True)
            raise typer.Exit(FAILED) from None

    return wrapper  # type: ignore[return-value]


@_fail_cleanly
def up(
    state_dir: str | None = STATE_DIR_OPTION,
    pipeline: bool = typer.Option(
        False,
        "--pipeline",
        help="Also create the context's topics and start the command processor, projector "
        "and sink in the background (logs in <state>/pipeline/logs; `down` stops them).",
    ),
    context: str = typer.Option("bank", help="Bounded context of --pipeline."),
    timeout: float = typer.Option(120.0, min=1, help="Seconds the workers may take to be ready."),
    observability: bool = typer.Option(
        False,
        "--observability",
        help="Also start Prometheus (Debian's package) on 127.0.0.1, scraping every "
        "worker of --pipeline (data in <state>/prometheus; `down` stops it).",
    ),
) -> None:
    """Start the local Kafka broker and Postgres (reuses them when already running); with
    --pipeline, a working pipeline you can send commands to and query; with
    --observability, a Prometheus scraping its workers."""
    from deploy.local import stack
    from processors.registry import UnknownContext, default_registry

    if pipeline:
        try:
            default_registry().context(context)
        except UnknownContext as exc:
            fail(str(exc))
    if observability:
        from deploy.local import prometheus

        prometheus.binary()  # fails now, before anything starts, when it is missing
    started = time.monotonic()
    state = stack.up(state_dir)
    typer.echo(f"kafka:    {state.bootstrap_servers} (pid {state.kafka_pid})")
    typer.echo(f"postgres: {mask_dsn(state.postgres_dsn)} (pid {state.postgres_pid})")
    if not pipeline:
        if observability:
            _up_prometheus(state)
        typer.echo(f"state:    {state.state_dir} (ready in {time.monotonic() - started:.1f} s)")
        return
    _up_pipeline(state, context, timeout)
    if observability:
        _up_prometheus(state)
    typer.echo(f"state:    {state.state_dir} (ready in {time.monotonic() - started:.1f} s)")
    _print_next_steps(context, state_dir)


def _up_pipeline(state: Any, context: str, timeout: float) -> None:
    from deploy.local import background

    workers, started = background.start(state, context=context, timeout=timeout)
    verb = "started" if started else "already running"
    for worker in workers:
        typer.echo(f"{worker.role + ':':<9} pid {worker.pid} {verb}, log {worker.log}")


def _up_prometheus(state: Any) -> None:
    from deploy.local import background, prometheus

    workers = background.running(state.state_dir)
    prom, started = prometheus.start(state.state_dir, workers)
    verb = "started" if started else "reloaded"
    jobs = ", ".join(sorted({w.role for w in workers})) or "no worker yet"
    typer.echo(f"prometheus: {prom.url} (pid {prom.pid}) {verb}, scraping {jobs}")


def _print_next_steps(context: str, state_dir: str | None) -> None:
    cli = cli_name()
    typer.echo("next:")
    if state_dir and state_dir != os.environ.get("CQRS_STATE_DIR"):
        # send, query and history find the stack through the variable only.
        typer.echo(f"  export CQRS_STATE_DIR={state_dir}")
    if context == "bank":
        body = '{"account_id": "acc-1", "owner": "Ada", "currency": "EUR"}'
        typer.echo(f"  {cli} send bank.OpenAccount --json '{body}' --wait-for all")
        typer.echo(f"  {cli} query accounts acc-1")
        typer.echo(f"  {cli} history acc-1")
    typer.echo(f"  {cli} send --help          (the command types and their fields)")
    typer.echo(f"  {cli} status")
    typer.echo(f"  {cli} down")


@_fail_cleanly
def down(
    state_dir: str | None = STATE_DIR_OPTION,
    keep_data: bool = typer.Option(
        False, "--keep-data", help="Keep topics and tables for the next `up`."
    ),
) -> None:
    """Stop the workers and the local stack that `up` started, and delete its data
    (unless --keep-data)."""
    from deploy.local import background, prometheus, stack
    from deploy.local.state import state_dir as resolve

    stopped = background.stop(state_dir)
    if stopped:
        typer.echo(f"stopped the workers: {', '.join(stopped)}")
    if prometheus.stop(state_dir, keep_data=keep_data):
        typer.echo("stopped prometheus")
    if stack.down(state_dir, keep_data=keep_data):
        kept = " (data kept)" if keep_data else " and deleted its data"
        typer.echo(f"stopped the local stack in {resolve(state_dir)}{kept}")
    else:
        typer.echo(f"no local stack recorded in {resolve(state_dir)}; nothing to stop")


@_fail_cleanly
def status(
    state_dir: str | None = STATE_DIR_OPTION,
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Where the broker and the database listen and whether they are healthy; with
    `up --pipeline`, also each worker's health and consumer lag. Exit 1 if a part is not."""
    from deploy.local import background, prometheus, stack
    from deploy.local.state import state_dir as resolve

    report = stack.status(state_dir)
    if report is None:
        fail(f"no local stack recorded in {resolve(state_dir)} (run `cqrsctl up`)", code=FAILED)
    workers = background.recorded(state_dir)
    health = {w.role: background.probe(w) for w in workers}
    lag: dict[str, int | None] = {}
    kafka_up = report[0].healthy
    if workers and kafka_up:
        first = workers[0]
        servers = {"bootstrap.servers": report[0].address}
        lag = background.consumer_lag(servers, first.context, first.prefix)
    prom = prometheus.recorded(state_dir)
    prom_health = None
    if prom is not None:
        prom_health = (
            ("healthy" if prometheus.healthy(prom) else "unhealthy")
            if prometheus.running(prom)
            else "not running"
        )
    healthy = (
        all(p.healthy for p in report)
        and all(h == "healthy" for h in health.values())
        and prom_health in (None, "healthy")
    )
    if output is OutputFormat.json:
        print_json(
            {
                "state_dir": str(resolve(state_dir)),
                "healthy": healthy,
                "parts": [
                    {
                        "name": p.name,
                        "address": mask_dsn(p.address),
                        "pid": p.pid,
                        "running": p.running,
                        "healthy": p.healthy,
                    }
                    for p in report
                ],
                "workers": [
                    {
                        "role": w.role,
                        "pid": w.pid,
                        "health": health[w.role],
                        "lag": lag.get(w.role),
                        "log": w.log,
                    }
                    for w in workers
                ],
                "prometheus": None
                if prom is None
                else {"url": prom.url, "pid": prom.pid, "health": prom_health, "log": prom.log},
            }
        )
    else:
        _print_status(resolve(state_dir), report, workers, health, lag)
        if prom is not None:
            color = "green" if prom_health == "healthy" else "red"
            out_console().print(
                f"  {'prometheus':<12} [{color}]{prom_health:<9}[/]  pid {prom.pid:<8} {prom.url}",
                soft_wrap=True,
                highlight=False,
            )
    if not healthy:
        raise typer.Exit(FAILED)


def _print_status(
    folder: Any, report: list[Any], workers: list[Any], health: dict[str, str], lag: dict[str, Any]
) -> None:
    console = out_console()
    console.print(f"local stack in {folder}", soft_wrap=True)
    for part in report:
        if part.healthy:
            state = "[green]healthy[/]  "
        elif part.running:
            state = "[red]unhealthy[/]"
        else:
            state = "[red]unhealthy[/] (not running)"
        # The address goes last and is never wrapped: people copy it from here.
        console.print(
            f"  {part.name:<12} {state}  pid {part.pid or '-':<8} {mask_dsn(part.address)}",
            soft_wrap=True,
            highlight=False,
        )
    if not workers:
        return
    console.print("workers (up --pipeline)", soft_wrap=True)
    for worker in workers:
        said = health[worker.role]
        color = "green" if said == "healthy" else "red"
        behind = lag.get(worker.role)
        lag_text = "lag ?" if behind is None else f"lag {behind}"
        console.print(
            f"  {worker.role:<12} [{color}]{said:<9}[/]  pid {worker.pid:<8} "
            f"{lag_text:<10} {worker.log}",
            soft_wrap=True,
            highlight=False,
        )


@_fail_cleanly
def smoke() -> None:
    """Check the stack end to end: a Kafka transaction read back read_committed, a Postgres row."""
    from deploy.local import smoke as smoke_check
    from processors.settings import load_settings

    settings = load_settings()
    typer.echo(
        f"kafka {settings.kafka.bootstrap_servers}, postgres {mask_dsn(settings.postgres_dsn)}"
    )
    smoke_check.run(
        settings.kafka.client_config(), settings.postgres_dsn, lambda line: typer.echo(f"  {line}")
    )
    typer.echo("smoke: OK")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("smoke")(smoke)
