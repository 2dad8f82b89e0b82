"""The read side on the command line: `run projector`, `run sink`, `query`, `history`, `migrate`.

Heavy modules (Faust, psycopg, the projector) are imported inside the commands, so
`cqrsctl --help` stays fast.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from pathlib import Path
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
from cqrsctl.run_cmd import LOG_FORMAT_OPTION, configure_logs, run
from processors.registry import UnknownContext, default_registry


def _instance_id(given: str | None) -> str | None:
    # Static group membership only when asked for: two instances of one group on one host
    # must not share an id (the broker would fence one), so there is no host-name default.
    return given or os.environ.get("CQRS_INSTANCE_ID") or None


_PROJECTION = typer.Option(
    None,
    "--projection",
    help="Run only this projection's generation --generation (a rebuild beside the live one).",
)
_GENERATION = typer.Option(1, "--generation", min=1, help="With --projection: 2 or more.")


def _generation(projection: str | None, generation: int) -> None:
    if (projection is None) != (generation == 1):
        fail("--projection and --generation (2 or more) go together")


def _context(name: str) -> Any:
    try:
        return default_registry().context(name)
    except UnknownContext as exc:
        fail(str(exc))


@run.command("projector")
def projector(
    context: str = typer.Option("bank", help="Bounded context whose projections to run."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    data_dir: Path = typer.Option(
        None, help="Where the RocksDB tables live (default: a folder under the temp dir)."
    ),
    instance_id: str = typer.Option(
        None,
        help="Stable id of this instance: static group membership, so a restart takes its "
        "partitions back at once (default: $CQRS_INSTANCE_ID, else dynamic membership).",
    ),
    health_port: int = typer.Option(8082, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    batch_max: int = typer.Option(2000, min=1, help="Most events per batch."),
    batch_wait: float = typer.Option(
        0.02, min=0.001, help="Seconds a batch waits for more events."
    ),
    session_timeout: float = typer.Option(10.0, min=6.0, help="Consumer group session, s."),
    replication_factor: int = typer.Option(
        -1, help="Replication of the changelog topics Faust creates; -1 = broker default."
    ),
    projection: str = _PROJECTION,
    generation: int = _GENERATION,
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The projector: `<ctx>.events` -> Faust tables -> `<ctx>.projection.<name>`."""
    from processors.faust_app import broker_default_replication, quiet_library_logs, run_worker
    from processors.health import heartbeat_alive, serve_health
    from processors.projector.app import Projector, ProjectorConfig, projector_app_id
    from processors.projector.local_state import LocalState, kafka_identity

    _generation(projection, generation)
    configure_logs(log_level, log_format, context=context, role="projector")
    quiet_library_logs(logging.getLevelName(log_level.upper()))
    settings = settings_or_fail(postgres=False)  # Kafka only
    ctx = _context(context)
    topic_prefix = prefix or ctx.name
    app_id = projector_app_id(topic_prefix, projection, generation)
    config = ProjectorConfig(
        context=ctx.name,
        kafka=settings.kafka,
        data_dir=data_dir or Path(tempfile.gettempdir()) / "kafka-cqrs" / app_id,
        topic_prefix=topic_prefix,
        projection=projection,
        generation=generation,
        batch_max=batch_max,
        batch_wait_s=batch_wait,
        session_timeout_s=session_timeout,
        instance_id=_instance_id(instance_id),
        replication_factor=replication_factor
        if replication_factor > 0
        else broker_default_replication(settings.kafka),
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        worker = Projector(config, default_registry())
    except ValueError as exc:  # an unknown --projection
        fail(f"{ctx.name}: {exc}")
    _prepare(worker)
    local = LocalState(config.data_dir, Path(worker.app.conf.tabledir))
    changelogs = [f"{config.app_id}-{name}-changelog" for name in worker.tables]
    local.prepare(kafka_identity(settings.kafka.client_config(), changelogs))
    if health_port:
        serve_health(health_port, heartbeat_alive(lambda: worker.liveness.last_beat), worker.ready)
    try:
        run_worker(worker.app, log_level, quiet=log_format.lower() == "json")
    except SystemExit as stopped:
        if stopped.code in (0, None):
            local.mark_clean()
        raise


@run.command("sink")
def sink(
    context: str = typer.Option("bank", help="Bounded context whose projections to write."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    schema: str = typer.Option(
        None, help="Postgres schema (default: the DSN's search_path, else public)."
    ),
    migrate: bool = typer.Option(
        True, help="Apply the SQL migrations on start (needs a role that may create tables)."
    ),
    instance_id: str = typer.Option(
        None,
        help="Stable id of this instance: static group membership, so a restart takes its "
        "partitions back at once (default: $CQRS_INSTANCE_ID, else dynamic membership).",
    ),
    health_port: int = typer.Option(8083, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    batch_max: int = typer.Option(5000, min=1, help="Most records per database transaction."),
    batch_wait: float = typer.Option(
        0.02, min=0.001, help="Seconds a batch waits for more records."
    ),
    session_timeout: float = typer.Option(10.0, min=6.0, help="Consumer group session, s."),
    projection: str = _PROJECTION,
    generation: int = _GENERATION,
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The sink: `<ctx>.projection.*` -> Postgres tables, checkpoints and NOTIFY."""
    import psycopg

    from processors.health import heartbeat_alive, serve_health
    from sinks.app import Sink
    from sinks.config import SinkConfig
    from sinks.db import ReadModelError, connect, resolve_schema
    from sinks.migrate import check_migrated
    from sinks.migrate import migrate as apply_migrations

    _generation(projection, generation)
    configure_logs(log_level, log_format, context=context, role="sink")
    settings = settings_or_fail()
    ctx = _context(context)
    try:
        schema = resolve_schema(settings.postgres_dsn, schema)
        if migrate:
            for label in apply_migrations(settings.postgres_dsn, schema, ctx):
                logging.getLogger("cqrs.sink").info("applied migration %s", label)
        else:
            with connect(settings.postgres_dsn, schema) as conn:
                check_migrated(conn, ctx)
    except (psycopg.Error, ReadModelError) as exc:
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)
    config = SinkConfig(
        context=ctx.name,
        kafka=settings.kafka,
        dsn=settings.postgres_dsn,
        schema=schema,
        topic_prefix=prefix or ctx.name,
        batch_max=batch_max,
        batch_wait_s=batch_wait,
        session_timeout_s=session_timeout,
        instance_id=_instance_id(instance_id),
        projection=projection,
        generation=generation,
    )
    try:
        worker = Sink(config, default_registry())
    except ValueError as exc:  # an unknown --projection
        fail(f"{ctx.name}: {exc}")
    _prepare(worker)
    worker.install_signal_handlers()
    if health_port:
        serve_health(health_port, heartbeat_alive(lambda: worker.last_loop_at), worker.ready)
    worker.run()


def _read_model(schema: str | None) -> tuple[Any, str]:
    import psycopg

    from sinks.db import connect, resolve_schema

    dsn = settings_or_fail().postgres_dsn
    try:
        resolved = resolve_schema(dsn, schema)
        return connect(dsn, resolved), resolved
    except psycopg.Error as exc:
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)


def _json_value(value: Any) -> Any:
    """A column value as JSON: times as ISO 8601 UTC, other non-JSON types as text."""
    if isinstance(value, dt.datetime | dt.date):
        return _cell(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return "" if value is None else str(value)


def complete_projection(incomplete: str) -> list[str]:
    """Shell completion: the projections of every installed context."""
    names = {p.name for ctx in default_registry().contexts.values() for p in ctx.projections}
    return sorted(n for n in names if n.startswith(incomplete))


def query(
    projection: str = typer.Argument(
        ..., help="Projection name, e.g. accounts.", autocompletion=complete_projection
    ),
    key: str = typer.Argument(None, help="Value of the projection's query column, e.g. an id."),
    context: str = typer.Option("bank"),
    schema: str = typer.Option(None, help="Postgres schema (default: the DSN's search_path)."),
    limit: int = typer.Option(100, min=1),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Print rows of a projection from Postgres (e.g. `query accounts acct-1`); exit 1
    when there is no such row."""
    import psycopg
    from rich.table import Table

    from sinks.queries import fetch_rows

    ctx = _context(context)
    found = {p.name: p for p in ctx.projections}
    if projection not in found:
        fail(f"{ctx.name} has no projection {projection!r} (known: {', '.join(found)})")
    conn, resolved = _read_model(schema)
    with conn:
        try:
            rows = fetch_rows(conn, found[projection], key, limit=limit)
        except psycopg.Error as exc:
            fail(f"postgres (schema {resolved}): {exc}".strip(), code=UNAVAILABLE)
    if not rows:
        fail(
            f"no {projection} row with {found[projection].query_column} = {key!r}"
            if key is not None
            else f"{projection} is empty",
            code=FAILED,
        )
    if output is OutputFormat.json:
        print_json([{k: _json_value(v) for k, v in row.items()} for row in rows])
        return
    table = Table(*rows[0].keys(), title=f"{projection} ({resolved})")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    out_console().print(table)


def history(
    aggregate_id: str = typer.Argument(..., help="Aggregate id, e.g. an account id."),
    as_of: str = typer.Option(None, help="State as of this time (ISO 8601; UTC if no zone)."),
    version: int = typer.Option(None, min=0, help="State at this aggregate version."),
    aggregate: str = typer.Option("bank.Account", help="Aggregate type."),
    schema: str = typer.Option(None, help="Postgres schema (default: the DSN's search_path)."),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """An aggregate's state at a time or version (a fold of event_log), and its events;
    exit 1 when it has none."""
    import psycopg
    from rich.table import Table

    from processors.registry import UnknownMessageType
    from sinks.queries import IncompleteHistory, load_history

    if as_of is not None and version is not None:
        fail("give --as-of or --version, not both")
    try:
        agg = default_registry().aggregate(aggregate)
    except UnknownMessageType as exc:
        fail(str(exc))
    moment = _parse_time(as_of) if as_of is not None else None
    conn, resolved = _read_model(schema)
    with conn:
        try:
            found = load_history(conn, agg, aggregate_id, as_of=moment, version=version)
        except psycopg.Error as exc:
            fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)
        except IncompleteHistory as exc:
            fail(f"{exc}".strip(), code=FAILED)
    if not found.events:
        fail(
            f"no events of {agg.name} {aggregate_id} in event_log ({resolved})"
            + (" at that point" if moment or version is not None else ""),
            code=FAILED,
        )
    if output is OutputFormat.json:
        print_json(
            {
                "aggregate": agg.name,
                "aggregate_id": aggregate_id,
                "version": found.version,
                "as_of": _cell(moment) if moment is not None else None,
                "state": {k: _json_value(v) for k, v in (found.state_record or {}).items()},
                "events": [
                    {
                        "version": e.version,
                        "type": e.type,
                        "time": _cell(e.time),
                        "event_id": e.event_id,
                        "principal": e.principal,
                        "data": _json_value(e.data),
                    }
                    for e in found.events
                ],
            }
        )
        return
    console = out_console()
    title = f"{agg.name} {aggregate_id} at version {found.version}"
    if moment is not None:
        title += f" (as of {_cell(moment)})"
    state = Table("field", "value")
    for name, value in (found.state_record or {}).items():
        state.add_row(name, _cell(value))
    state.add_row("version", str(found.version))
    console.print(title)
    console.print(state)
    events = Table("version", "type", "time", "principal", "event id", "data", title="events")
    for e in found.events:
        events.add_row(
            str(e.version), e.type, _cell(e.time), _cell(e.principal), e.event_id, _cell(e.data)
        )
    console.print(events)


def _prepare(worker: Any) -> None:
    from confluent_kafka import KafkaException

    from processors.topic_admin import TopicMismatch, TopicsNotReady

    try:
        worker.prepare_topics()
    except (TopicsNotReady, TopicMismatch, KafkaException) as exc:
        fail(str(exc), code=UNAVAILABLE)


def migrate(
    context: str = typer.Option("bank", help="Bounded context whose read models to migrate."),
    schema: str = typer.Option(
        None, help="Postgres schema (default: the DSN's search_path, else public)."
    ),
) -> None:
    """Apply the read-side SQL migrations and grants, then exit (run as the owner role)."""
    import psycopg

    from sinks.db import ReadModelError, resolve_schema
    from sinks.migrate import migrate as apply_migrations
    from sinks.migrate import roles

    ctx = _context(context)
    dsn = settings_or_fail().postgres_dsn
    try:
        resolved = resolve_schema(dsn, schema)
        applied = apply_migrations(dsn, resolved, ctx)
    except (psycopg.Error, ReadModelError) as exc:
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)
    for label in applied:
        typer.echo(f"applied  {label}")
    reader, writer = roles(resolved)
    typer.echo(f"schema {resolved} is up to date; roles {reader} (read) and {writer} (sink)")


def _parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--as-of: not an ISO 8601 time: {text!r} (e.g. 2024-05-01T12:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def register(app: typer.Typer) -> None:
    """`run projector` and `run sink` registered on import (on the `run` group)."""
    app.command("query")(query)
    app.command("history")(history)
    app.command("migrate")(migrate)
