"""`cqrsctl topics create|list`: the topics each bounded context declares."""

from __future__ import annotations

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from cqrsctl.console import fail, settings_or_fail
from processors.registry import UnknownContext, default_registry
from processors.topic_admin import TopicMismatch, create_topics
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
    except (TopicMismatch, KafkaException) as exc:
        fail(str(exc))
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        typer.echo(f"{state:8} {spec.name} partitions={spec.partitions} {spec.config}")


@topics.command("list")
def list_(
    context: str = typer.Option("bank"),
    prefix: str = typer.Option(None),
) -> None:
    """Print the declared topics with their partitions and configs."""
    table = Table("topic", "partitions", "config")
    for spec in _specs(context, prefix):
        table.add_row(
            spec.name, str(spec.partitions), ", ".join(f"{k}={v}" for k, v in spec.config.items())
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(topics, name="topics")
