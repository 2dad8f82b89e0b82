"""The read side's workers on the command line: `run projector`, `run sink`, `migrate`
(`query` and `history`, which read the read model, are in read_model_cmd).

Heavy modules (Faust, psycopg, the projector) are imported inside the commands, so
`cqrsctl --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from cqrsctl.console import UNAVAILABLE, fail, settings_or_fail
from cqrsctl.run_cmd import LOG_FORMAT_OPTION, configure_logs, run
from processors.registry import UnknownContext, default_registry


def _instance_id(given: str | None) -> str | None:
    # Static group membership only when asked for: two instances of one group on one host
    # must not share an id (the broker would fence one), so there is no host-name default.
    return given or os.environ.get("CQRS_INSTANCE_ID") or None


# The options `run projector` and `run sink` share.
_PREFIX = typer.Option(None, help="Topic name prefix (default: the context name).")
_INSTANCE_ID = typer.Option(
    None,
    help="Stable id of this instance: static group membership, so a restart takes its "
    "partitions back at once (default: $CQRS_INSTANCE_ID, else dynamic membership).",
)
_SESSION_TIMEOUT = typer.Option(10.0, min=6.0, help="Consumer group session, s.")
_PROJECTION = typer.Option(
    None,
    "--projection",
    help="Run only this projection's generation --generation (a rebuild beside the live one).",
)
_GENERATION = typer.Option(1, "--generation", min=1, help="With --projection: 2 or more.")


def _generation(projection: str | None, generation: int) -> None:
    if (projection is None) != (generation == 1):
        fail("--projection and --generation (2 or more) go together")


def context_or_fail(name: str) -> Any:
    try:
        return default_registry().context(name)
    except UnknownContext as exc:
        fail(str(exc))


@run.command("projector")
def projector(
    context: str = typer.Option("bank", help="Bounded context whose projections to run."),
    prefix: str = _PREFIX,
    data_dir: Path = typer.Option(
        None, help="Where the RocksDB tables live (default: a folder under the temp dir)."
    ),
    instance_id: str = _INSTANCE_ID,
    health_port: int = typer.Option(8082, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    batch_max: int = typer.Option(2000, min=1, help="Most events per batch."),
    batch_wait: float = typer.Option(
        0.02, min=0.001, help="Seconds a batch waits for more events."
    ),
    session_timeout: float = _SESSION_TIMEOUT,
    replication_factor: int = typer.Option(
        -1, help="Replication of the topic Faust creates (leader election); -1 = broker default."
    ),
    projection: str = _PROJECTION,
    generation: int = _GENERATION,
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The projector: `<ctx>.events` -> Faust tables -> `<ctx>.projection.<name>`."""
    from confluent_kafka import KafkaException

    from processors.faust_app import broker_default_replication, quiet_library_logs, run_worker
    from processors.health import heartbeat_alive, serve_health
    from processors.projector.app import Projector, ProjectorConfig, projector_app_id
    from processors.projector.local_state import LocalState, kafka_identity
    from processors.projector.table_restore import restore_tables

    _generation(projection, generation)
    configure_logs(log_level, log_format, context=context, role="projector")
    quiet_library_logs(logging.getLevelName(log_level.upper()))
    settings = settings_or_fail(postgres=False)  # Kafka only
    ctx = context_or_fail(context)
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
    changelogs = [table.changelog_topic_name for table in worker.tables.values()]
    local.prepare(kafka_identity(settings.kafka.client_config(), changelogs))
    try:
        restore_tables(settings.kafka.client_config(), worker.tables)  # no local state yet
    except (KafkaException, TimeoutError) as exc:
        fail(f"cannot restore the tables from the projection topics: {exc}", code=UNAVAILABLE)
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
    prefix: str = _PREFIX,
    schema: str = typer.Option(
        None, help="Postgres schema (default: the DSN's search_path, else public)."
    ),
    migrate: bool = typer.Option(
        True, help="Apply the SQL migrations on start (needs a role that may create tables)."
    ),
    instance_id: str = _INSTANCE_ID,
    health_port: int = typer.Option(8083, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    batch_max: int = typer.Option(5000, min=1, help="Most records per database transaction."),
    batch_wait: float = typer.Option(
        0.02, min=0.001, help="Seconds a batch waits for more records."
    ),
    session_timeout: float = _SESSION_TIMEOUT,
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
    ctx = context_or_fail(context)
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

    ctx = context_or_fail(context)
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


def register(app: typer.Typer) -> None:
    """`migrate`; `run projector` and `run sink` are registered on import (on the `run` group)."""
    app.command("migrate")(migrate)
