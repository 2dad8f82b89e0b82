"""`cqrsctl topics create|list`: the topics each bounded context declares, created on the
broker, and compared with what exists there."""

from __future__ import annotations

import typer
from confluent_kafka import KafkaException
from rich.table import Table

from cqrsctl.console import (
    FAILED,
    OUTPUT_OPTION,
    UNAVAILABLE,
    OutputFormat,
    cli_name,
    fail,
    out_console,
    print_json,
    settings_or_fail,
)
from cqrsctl.kafka_checks import unreachable
from processors.registry import UnknownContext, default_registry
from processors.topic_admin import TopicMismatch, create_topics
from processors.topic_audit import TopicAudit
from processors.topics import declared_topics

topics = typer.Typer(
    help="Create and list the topics a bounded context declares.", no_args_is_help=True
)


def _specs(context: str, prefix: str | None):
    try:
        return declared_topics(default_registry().context(context), prefix)
    except UnknownContext as exc:
        fail(str(exc))


@topics.command("create")
def create(
    context: str = typer.Option("bank", help="Bounded context whose topics to create."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    replication_factor: int = typer.Option(-1, help="-1 takes the broker's default."),
) -> None:
    """Create every declared topic that is missing (idempotent)."""
    specs = _specs(context, prefix)
    kafka = settings_or_fail(postgres=False).kafka.client_config()
    try:
        created = create_topics(kafka, specs, replication_factor)
    except TopicMismatch as exc:
        fail(str(exc), code=FAILED)
    except KafkaException as exc:
        fail(str(unreachable(kafka, exc.args[0].str())), code=UNAVAILABLE)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        typer.echo(f"{state:8} {spec.name} partitions={spec.partitions} {spec.config}")


@topics.command("list")
def list_(
    context: str = typer.Option("bank", help="Bounded context whose topics to list."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """The declared topics against the broker's: partitions, config drift, missing topics
    (exit 1 if a topic is missing or differs from its declaration)."""
    from processors.topic_audit import audit_topics

    specs = _specs(context, prefix)
    kafka = settings_or_fail(postgres=False).kafka.client_config()
    try:
        audits = audit_topics(kafka, specs)
    except KafkaException as exc:
        fail(str(unreachable(kafka, exc.args[0].str())), code=UNAVAILABLE)
    if output is OutputFormat.json:
        print_json([a.as_dict() for a in audits])
    else:
        table = Table("topic", "status", "partitions", "config")
        for audit in audits:
            table.add_row(audit.name, _status_cell(audit), *_detail_cells(audit))
        out_console().print(table)
        missing = [a.name for a in audits if not a.exists]
        if missing:
            create = f"{cli_name()} topics create --context {context}"
            create += f" --prefix {prefix}" if prefix else ""
            typer.echo(f"{len(missing)} missing: run `{create}`", err=True)
    if not all(a.ok for a in audits):
        raise typer.Exit(FAILED)


def _status_cell(audit: TopicAudit) -> str:
    color = "green" if audit.ok else "red"
    return f"[{color}]{audit.status}[/]"


def _detail_cells(audit: TopicAudit) -> tuple[str, str]:
    if not audit.exists:
        partitions = f"- (declared {audit.declared_partitions})"
    elif audit.partitions != audit.declared_partitions:
        partitions = f"{audit.partitions} (declared {audit.declared_partitions})"
    else:
        partitions = str(audit.partitions)
    config = ", ".join(
        f"{k}={v}" if k not in audit.drift else f"{k}={audit.drift[k][1]} (declared {v})"
        for k, v in audit.declared_config.items()
    )
    return partitions, config


def register(app: typer.Typer) -> None:
    app.add_typer(topics, name="topics")
