"""`cqrsctl projections list|status`: how far each read model is (sinks/progress.py)."""

from __future__ import annotations

import time
from typing import Any

import typer

from cqrsctl.console import (
    FAILED,
    OUTPUT_OPTION,
    UNAVAILABLE,
    OutputFormat,
    fail,
    out_console,
    print_json,
    settings_or_fail,
)

projections_app = typer.Typer(
    help="Projections: progress per generation (list, status), rebuild beside the live one "
    "and swap, drop a retired generation.",
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
    from sinks.progress import EventsProbe, ProbeError, estimate, read_progress, tracked

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
            entries = tracked(conn, names)
            first = read_progress(conn, probe, entries)
            if interval <= 0:
                return first, resolved
            time.sleep(interval)
            second = read_progress(conn, probe, entries)
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
    columns = ["projection", "generation", "state", "applied", "lag events", "lag"]
    with_rate = any(s.rate is not None for s in samples)
    if with_rate:
        columns += ["events/s", "ETA"]
    if console.is_terminal:
        columns.append("progress")
    for column in columns:
        left = column in ("projection", "generation", "state")
        table.add_column(column, justify="left" if left else "right")
    for s in samples:
        cells = [s.projection, f"g{s.generation}", s.state, str(s.applied), str(s.lag_events)]
        cells.append(_seconds(s.lag_seconds))
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


def _projection(context: str, name: str) -> tuple[Any, Any]:
    from processors.registry import UnknownContext, default_registry

    try:
        ctx = default_registry().context(context)
    except UnknownContext as exc:
        fail(str(exc))
    found = {p.name: p for p in ctx.projections}
    if name not in found:
        fail(f"{ctx.name} has no projection {name!r} (known: {', '.join(found)})")
    return ctx, found[name]


@projections_app.command("rebuild")
def rebuild(
    projection: str = typer.Argument(..., help="The projection to rebuild, e.g. accounts."),
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    schema: str = _SCHEMA,
    generation: int = typer.Option(
        None, min=2, help="The generation to build (default: the next one)."
    ),
    wait: bool = typer.Option(
        True, help="Wait until the new generation has caught up, then swap it in."
    ),
    timeout: float = typer.Option(3600.0, min=1, help="Seconds to wait for the swap."),
) -> None:
    """Build a new generation of a projection beside the live one, and swap it in once it
    has caught up: readers see the old generation until then, and never a half-built table.

    Prepares the generation's table and topic; its workers are
    `cqrsctl run projector|sink --projection NAME --generation N` (they start at offset 0
    of <ctx>.events). With --wait (default), swaps when the new generation has every row of
    the live one at the same or a newer state; exit 3 if that does not happen in --timeout."""
    import psycopg
    from confluent_kafka import KafkaException

    from cqrsctl.console import TIMEOUT
    from processors.generations import GenerationNames
    from processors.topic_admin import create_topics
    from processors.topic_reader import last_event_offsets
    from processors.topics import DERIVED, ContextTopics, TopicSpec
    from sinks.db import connect, resolve_schema
    from sinks.generations import GenerationError, SwapRefused, next_generation, prepare, swap
    from sinks.migrate import MigrationError, migrate

    ctx, found = _projection(context, projection)
    settings = settings_or_fail()
    topic_prefix = prefix or ctx.name
    dsn = settings.postgres_dsn
    try:
        kafka = settings.kafka.client_config()
        events = ContextTopics(topic_prefix).events
        catch_up_to = last_event_offsets(kafka, events, ctx.partitions)
        resolved = resolve_schema(dsn, schema)
        migrate(dsn, resolved, ctx)  # the projection's table exists (e.g. one added since)
        with connect(dsn, resolved) as conn:
            number = generation or next_generation(conn, found.name)
            names = GenerationNames.of(topic_prefix, found, number)
            building = prepare(conn, found, number, names.checkpoint_key, catch_up_to)
        migrate(dsn, resolved, ctx)  # grants on the new table and the catalog
        spec = TopicSpec(names.topic, ctx.partitions, dict(DERIVED))
        create_topics(kafka, [spec])
    except GenerationError as exc:
        fail(str(exc), code=FAILED)
    except (psycopg.Error, MigrationError) as exc:
        fail("postgres: " + " ".join(str(exc).split()), code=UNAVAILABLE)
    except KafkaException as exc:
        fail(f"kafka: {exc}", code=UNAVAILABLE)
    run = f"run projector|sink --context {ctx.name} --projection {found.name} --generation {number}"
    typer.echo(
        f"{found.name} generation {number}: building into {building.relation} from "
        f"{names.topic}; its workers: `cqrsctl {run}`"
    )
    if not wait:
        return
    deadline = time.monotonic() + timeout
    last_reason = ""
    try:
        with connect(dsn, resolved) as conn:
            while True:
                try:
                    live = swap(conn, found, number)
                    break
                except SwapRefused as exc:
                    last_reason = str(exc)
                if time.monotonic() >= deadline:
                    fail(f"not swapped within {timeout:g}s: {last_reason}", code=TIMEOUT)
                time.sleep(1.0)
    except GenerationError as exc:
        fail(str(exc), code=FAILED)
    except psycopg.Error as exc:
        fail("postgres: " + " ".join(str(exc).split()), code=UNAVAILABLE)
    typer.echo(
        f"{found.name} generation {live.generation} is live ({live.relation}); drop the "
        f"retired one with `cqrsctl projections drop {found.name} GENERATION`"
    )


def register(app: typer.Typer) -> None:
    from cqrsctl import projections_drop

    projections_drop.register(projections_app)
    app.add_typer(projections_app, name="projections")
