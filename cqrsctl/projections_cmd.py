"""`cqrsctl projections list|status`: how far each read model is (sinks/progress.py)."""

from __future__ import annotations

import time
from typing import Any

import typer

from cqrsctl.console import (
    OUTPUT_OPTION,
    UNAVAILABLE,
    OutputFormat,
    fail,
    out_console,
    print_json,
    settings_or_fail,
)

projections_app = typer.Typer(
    help="Projections: applied events, lag, state and time to catch up, per projection.",
    no_args_is_help=True,
)

_CONTEXT = typer.Option("bank", help="Bounded context.")
_PREFIX = typer.Option(None, help="Topic name prefix (default: the context name).")
_SCHEMA = typer.Option(None, help="Postgres schema (default: the DSN's search_path).")
BAR_WIDTH = 20


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}min" if value < 7200 else f"{value / 3600:.1f}h"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text progress bar, e.g. `[#####.....]  50%`."""
    done = min(width, int(fraction * width))
    return f"[{'#' * done}{'.' * (width - done)}] {fraction:4.0%}"


def _sample(
    context: str, prefix: str | None, schema: str | None, only: str | None, interval: float
) -> tuple[list[Any], str]:
    """One sample (interval 0) or two `interval` seconds apart, with rate and ETA."""
    import psycopg
    from confluent_kafka import KafkaException

    from cqrsctl.kafka_checks import Unavailable, require_topics
    from processors.registry import UnknownContext, default_registry
    from processors.topics import ContextTopics
    from sinks.db import connect, resolve_schema
    from sinks.progress import EventsProbe, ProbeError, estimate, read_progress

    settings = settings_or_fail()
    try:
        ctx = default_registry().context(context)
    except UnknownContext as exc:
        fail(str(exc))
    names = [p.name for p in ctx.projections]
    if only is not None and only not in names:
        fail(f"{ctx.name} has no projection {only!r} (known: {', '.join(names)})")
    names = [only] if only else names
    kafka = settings.kafka.client_config()
    events = ContextTopics(prefix or ctx.name).events
    try:
        require_topics(kafka, [events], ctx.name)
    except Unavailable as exc:
        fail(str(exc), code=UNAVAILABLE)
    probe = EventsProbe(kafka, events, ctx.partitions)
    try:
        resolved = resolve_schema(settings.postgres_dsn, schema)
        with connect(settings.postgres_dsn, resolved) as conn:
            first = read_progress(conn, probe, names)
            if interval <= 0:
                return first, resolved
            time.sleep(interval)
            second = read_progress(conn, probe, names)
    except psycopg.Error as exc:
        # psycopg's connection errors add a hint on a second line: keep the error one line.
        fail("postgres: " + " ".join(str(exc).split()), code=UNAVAILABLE)
    except (KafkaException, ProbeError) as exc:
        fail(f"kafka: {exc}", code=UNAVAILABLE)
    finally:
        probe.close()
    return [estimate(a, b) for a, b in zip(first, second, strict=True)], resolved


def _show(samples: list[Any], schema: str, output: OutputFormat, title: str) -> None:
    from rich.table import Table

    if output is OutputFormat.json:
        print_json([s.as_dict() for s in samples])
        return
    console = out_console()
    table = Table(title=f"{title} (schema {schema})")
    columns = ["projection", "state", "applied", "lag events", "lag"]
    with_rate = any(s.rate is not None for s in samples)
    if with_rate:
        columns += ["events/s", "ETA"]
    if console.is_terminal:
        columns.append("progress")
    for column in columns:
        table.add_column(column, justify="left" if column in ("projection", "state") else "right")
    for s in samples:
        cells = [s.projection, s.state, str(s.applied), str(s.lag_events), _seconds(s.lag_seconds)]
        if with_rate:
            cells += [f"{s.rate:.0f}", _seconds(s.eta_seconds)]
        if console.is_terminal:
            cells.append(bar(s.progress))
        table.add_row(*cells)
    console.print(table)


@projections_app.command("list")
def list_projections(
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    schema: str = _SCHEMA,
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Every projection of the context: state, offsets of <ctx>.events applied, lag in events
    and in seconds (one sample; `status` adds the rate and the time to catch up)."""
    samples, resolved = _sample(context, prefix, schema, None, 0)
    _show(samples, resolved, output, f"projections of {context}")


@projections_app.command("status")
def status(
    projection: str = typer.Argument(None, help="One projection (default: all)."),
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    schema: str = _SCHEMA,
    interval: float = typer.Option(
        2.0, min=0.1, help="Seconds between the two samples the rate is measured over."
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Like `list`, measured twice `--interval` apart: also the rate (offsets applied per
    second) and the estimated time to catch up (? when nothing moved), with a progress bar
    on a terminal."""
    samples, resolved = _sample(context, prefix, schema, projection, interval)
    _show(samples, resolved, output, f"projections of {context}")


def register(app: typer.Typer) -> None:
    app.add_typer(projections_app, name="projections")
