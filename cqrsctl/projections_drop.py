"""`cqrsctl projections drop|gc`: remove a generation that readers no longer see, by hand
(`drop`) or once it has been retired longer than a grace period (`gc`, which a Kubernetes
CronJob runs: deploy/k8s/base/workers/projections-gc.yaml).

Dropping generation N removes its table and checkpoints in Postgres and, for N >= 2, its
consumer groups and topics in Kafka (cqrsctl/generation_kafka.py). The checks come first,
so a refusal changes nothing: the live generation is never dropped, nor one whose workers
are still connected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer

from cqrsctl.console import FAILED, UNAVAILABLE, fail, settings_or_fail
from cqrsctl.projections_cmd import _CONTEXT, _PREFIX, _SCHEMA, _projection

DEFAULT_GRACE_S = 24 * 3600.0


class Dropper:
    """Drops generations of one context's projections; one Postgres connection and one
    Kafka admin client for all of them."""

    def __init__(self, conn: Any, kafka: dict[str, Any], prefix: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.conn = conn
        self.admin = AdminClient(kafka)
        self.prefix = prefix

    def drop(self, projection: str, generation: int) -> str:
        """Drop it; one line saying what went. GenerationError (nothing changed) if it is
        live or unknown, WorkersRunning if its workers are connected."""
        from cqrsctl.generation_kafka import GenerationKafka, check_stopped, delete
        from sinks.generations import drop, droppable

        droppable(self.conn, projection, generation)
        kafka = GenerationKafka.of(self.prefix, projection, generation)
        if kafka is not None:
            check_stopped(self.admin, kafka)
        dropped = drop(self.conn, projection, generation)
        gone = delete(self.admin, kafka) if kafka is not None else []
        kept = "" if gone else ", nothing in Kafka"
        return (
            f"dropped {projection} generation {generation}: {dropped.relation}"
            + "".join(f", {name}" for name in gone)
            + kept
        )


def drop_generation(
    projection: str = typer.Argument(..., help="The projection, e.g. accounts."),
    generation: int = typer.Argument(..., min=1, help="The retired generation to drop."),
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    schema: str = _SCHEMA,
) -> None:
    """Drop a retired (or abandoned building) generation: its table and checkpoints, and for
    a rebuilt one (>= 2) its consumer groups and topics too. Refused, changing
    nothing, for the live generation or while the generation's workers are running."""
    ctx, found = _projection(context, projection)
    settings = settings_or_fail()
    with _dropper(settings, schema, prefix or ctx.name) as dropper:
        typer.echo(dropper.drop(found.name, generation))


def gc(
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    schema: str = _SCHEMA,
    retired_grace: float = typer.Option(
        DEFAULT_GRACE_S,
        min=0,
        help="Drop generations retired longer ago than this many seconds.",
    ),
) -> None:
    """Drop every generation of the context's projections retired more than
    --retired-grace seconds ago (default a day), as `drop` does; meant to run periodically
    (a Kubernetes CronJob). Exit 1 if one could not be dropped (its workers still run:
    stop them), after dropping the others."""
    from processors.registry import UnknownContext, default_registry
    from sinks.generations import retired_longer_than

    try:
        ctx = default_registry().context(context)
    except UnknownContext as exc:
        fail(str(exc))
    settings = settings_or_fail()
    refused = 0
    with _dropper(settings, schema, prefix or ctx.name) as dropper:
        names = [p.name for p in ctx.projections]
        due = retired_longer_than(dropper.conn, names, retired_grace)
        for found in due:
            try:
                typer.echo(dropper.drop(found.projection, found.generation))
            except RuntimeError as exc:  # GenerationError, WorkersRunning: the next one
                typer.echo(
                    f"error: {found.projection} generation {found.generation}: {exc}", err=True
                )
                refused += 1
        if not due:
            typer.echo(f"nothing retired longer than {retired_grace:g}s")
    if refused:
        raise typer.Exit(FAILED)


@contextlib.contextmanager
def _dropper(settings: Any, schema: str | None, prefix: str) -> Iterator[Dropper]:
    """A Dropper on the settings' Postgres and Kafka; its errors become one line and the
    exit code of cqrsctl/console.py."""
    import psycopg
    from confluent_kafka import KafkaException

    from cqrsctl.generation_kafka import WorkersRunning
    from sinks.db import connect, resolve_schema
    from sinks.generations import GenerationError

    try:
        resolved = resolve_schema(settings.postgres_dsn, schema)
        with connect(settings.postgres_dsn, resolved) as conn:
            yield Dropper(conn, settings.kafka.client_config(), prefix)
    except (GenerationError, WorkersRunning) as exc:
        fail(str(exc), code=FAILED)
    except psycopg.Error as exc:
        fail("postgres: " + " ".join(str(exc).split()), code=UNAVAILABLE)
    except KafkaException as exc:
        fail(f"kafka: {exc}", code=UNAVAILABLE)


def register(app: typer.Typer) -> None:
    app.command("drop")(drop_generation)
    app.command("gc")(gc)
