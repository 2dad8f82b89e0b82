"""`cqrsctl run <worker>`: run one worker role in the foreground."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import typer

from cqrsctl.console import fail, settings_or_fail
from processors.health import heartbeat_alive, serve_health
from processors.logs import InvalidLogFormat, setup_logging
from processors.registry import UnknownContext, default_registry
from processors.tracing import TracingError, tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

run = typer.Typer(help="Run a worker role in the foreground.", no_args_is_help=True)

LOG_FORMAT_OPTION = typer.Option(
    "text",
    "--log-format",
    envvar="CQRS_LOG_FORMAT",
    help="text: `time level logger message` lines; json: one JSON object per line "
    "(docs/operations.md).",
)


def configure_logs(level: str, log_format: str, *, context: str, role: str) -> None:
    """Log lines of this worker in `log_format` at `level`; one-line error (exit 2) on a
    format or level that does not exist."""
    try:
        setup_logging(level, log_format, context=context, role=role)
    except (InvalidLogFormat, ValueError) as exc:
        fail(str(exc))


def tracer_or_fail(role: str) -> Tracer | None:
    """The worker's OpenTelemetry tracer when the OTEL_* variables ask for one
    (processors/tracing.py), else None; one-line error (exit 2) when they are wrong."""
    try:
        return tracer(role)
    except TracingError as exc:
        fail(str(exc))


def _instance_id() -> str:
    # In Kubernetes the pod name is stable per replica of a StatefulSet and unique per pod
    # of a Deployment; locally the host name is a reasonable default.
    return os.environ.get("CQRS_INSTANCE_ID") or socket.gethostname()


@run.command("processor")
def processor(
    context: str = typer.Option("bank", help="Bounded context to process."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    instance_id: str = typer.Option(
        None, help="Stable id of this instance; its transactional id derives from it."
    ),
    health_port: int = typer.Option(8081, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    batch_size: int = typer.Option(2000, min=1, help="Most commands per transaction."),
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The transactional command processor."""
    from processors.command_processor import CommandProcessor
    from processors.processor_config import ProcessorConfig

    configure_logs(log_level, log_format, context=context, role="processor")
    spans = tracer_or_fail("processor")
    settings = settings_or_fail(postgres=False)
    registry = default_registry()
    try:
        registry.context(context)
    except UnknownContext as exc:
        fail(str(exc))
    config = ProcessorConfig(
        context=context,
        kafka=settings.kafka.client_config(),
        topic_prefix=prefix,
        instance_id=instance_id or _instance_id(),
        batch_size=batch_size,
    )
    worker = CommandProcessor(config, registry, tracer=spans)
    worker.install_signal_handlers()
    if health_port:
        serve_health(health_port, heartbeat_alive(lambda: worker.last_loop_at), worker.ready.is_set)
    worker.run()


@run.command("reactor")
def reactor(
    context: str = typer.Option(..., help="Context whose process managers react."),
    prefix: str = typer.Option(None, help="Its topic name prefix (default: the context name)."),
    source: list[str] = typer.Option(
        [],
        help="CONTEXT=PREFIX: the topic prefix of a context whose events it reads "
        "(default: that context's name). Repeatable.",
    ),
    instance_id: str = typer.Option(
        None, help="Stable id of this instance; its transactional id derives from it."
    ),
    health_port: int = typer.Option(8084, help="Port of /healthz, /readyz and /metrics; 0 = off."),
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The reactor: another context's events -> this context's process managers -> commands."""
    from processors.reactor import NothingToReact, Reactor, ReactorConfig

    configure_logs(log_level, log_format, context=context, role="reactor")
    sources = {}
    for item in source:
        name, sep, topic_prefix = item.partition("=")
        if not (sep and name and topic_prefix):
            fail(f"--source {item!r}: expected CONTEXT=PREFIX, e.g. bank=bank")
        sources[name] = topic_prefix
    registry = default_registry()
    try:
        if not registry.context(context).foreign_event_types():
            fail(f"context {context!r} reacts to no event of another context")
    except UnknownContext as exc:
        fail(str(exc))
    settings = settings_or_fail(postgres=False)
    config = ReactorConfig(
        context=context,
        kafka=settings.kafka.client_config(),
        topic_prefix=prefix,
        sources=sources,
        instance_id=instance_id or _instance_id(),
    )
    try:
        worker = Reactor(config, registry)
    except (UnknownContext, NothingToReact) as exc:
        fail(str(exc))
    worker.install_signal_handlers()
    if health_port:
        serve_health(health_port, heartbeat_alive(lambda: worker.last_loop_at), worker.ready.is_set)
    worker.run()


def register(app: typer.Typer) -> None:
    app.add_typer(run, name="run")
