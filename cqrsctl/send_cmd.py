"""`cqrsctl send <type> --json '{...}' [--wait | --wait-for <projection>...]`: send one command.

`send` exits 0 only once the broker has acknowledged the command (its delivery report);
`cqrsctl send <type> --help` prints the type's fields and an example body.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperCommand

from cqrsctl.console import FAILED, TIMEOUT, UNAVAILABLE, USAGE, cli_name, fail, settings_or_fail
from cqrsctl.kafka_checks import Unavailable, delivery_hint, require_topics


def complete_command_type(incomplete: str) -> list[str]:
    """Shell completion: the command types of every installed context."""
    from processors.registry import default_registry

    return [t for t in default_registry().command_types() if t.startswith(incomplete)]


class SendCommand(TyperCommand):
    """`send`'s help: with a command type before `--help`, also that type's fields and an
    example body; without one, the known command types."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--help" in args:
            from processors.registry import default_registry

            types = default_registry().command_types()
            ctx.meta["send.types"] = types
            ctx.meta["send.type"] = next((a for a in args if a in types), None)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        from cqrsctl.command_help import describe

        chosen = ctx.meta.get("send.type")
        if chosen:
            click.echo(describe(chosen, cli_name()))
        elif ctx.meta.get("send.types"):
            click.echo("command types: " + ", ".join(ctx.meta["send.types"]))
            click.echo(f"their fields: {cli_name()} send <type> --help")


def _projection_names() -> list[str]:
    from processors.registry import default_registry

    return sorted({p.name for ctx in default_registry().contexts.values() for p in ctx.projections})


def _read_body(json_body: str | None, body_file: str | None) -> dict[str, Any]:
    if (json_body is None) == (body_file is None):
        fail("give the command's fields with --json '{...}' or --file PATH (- for stdin)")
    if body_file is not None:
        try:
            text = sys.stdin.read() if body_file == "-" else Path(body_file).read_text()
        except OSError as exc:
            fail(f"--file: {exc.strerror}: {body_file}")
        source = "stdin" if body_file == "-" else body_file
    else:
        text, source = json_body or "", "--json"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON: {exc}")
    if not isinstance(data, dict):
        fail(f"{source} must hold a JSON object")
    return data


def send(
    command_type: str = typer.Argument(
        ...,
        help="Avro full name, e.g. bank.Deposit; `send <type> --help` shows its fields.",
        autocompletion=complete_command_type,
    ),
    json_body: str = typer.Option(None, "--json", help="The command's fields as JSON."),
    body_file: str = typer.Option(
        None, "--file", "-f", help="Read the command's JSON from this file (- for stdin)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and print it."),
    wait_for: list[str] = typer.Option(
        None,
        "--wait-for",
        help="Also wait until this projection's Postgres rows show the command (e.g. "
        "accounts; repeat it for several, `all` for every projection); implies --wait.",
        autocompletion=lambda incomplete: [
            p for p in [*_projection_names(), "all"] if p.startswith(incomplete)
        ],
    ),
    timeout: float = typer.Option(30.0, help="Seconds to wait for delivery, and for --wait."),
    command_id: str = typer.Option(None, help="Command id (default: a new UUID)."),
    expected_version: int = typer.Option(None, help="Reject as a conflict unless at this version."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
) -> None:
    """Validate a command against its schema, produce it, and exit 0 only once the broker
    has acknowledged it. With --wait, print the processor's result (exit 1 if rejected)."""
    import psycopg
    from confluent_kafka import KafkaException

    from processors.registry import UnknownContext, default_registry
    from processors.topics import ContextTopics
    from producers.command_client import (
        CommandClient,
        CommandNotDelivered,
        CommandTimeout,
        InvalidCommand,
    )
    from sinks.checkpoints import ReadModelTimeout

    data = _read_body(json_body, body_file)
    context = command_type.split(".", 1)[0]
    try:
        ctx = default_registry().context(context)
    except UnknownContext as exc:
        fail(f"{command_type}: {exc}")
    projections = _chosen_projections(ctx, wait_for or [])
    wait = wait or bool(projections)
    settings = settings_or_fail(postgres=bool(projections))
    kafka = settings.kafka.client_config()
    topics = ContextTopics(prefix or context)
    needed = [topics.commands, *([topics.results] if wait else [])]
    try:
        require_topics(kafka, needed, context, timeout=min(timeout, 10.0))
    except Unavailable as exc:
        fail(f"not sent: {exc}", code=UNAVAILABLE)
    try:
        client = CommandClient(
            kafka,
            context,
            topic_prefix=prefix,
            await_results=wait,
        )
    except (KafkaException, InvalidCommand) as exc:  # e.g. the broker went away since the check
        fail(f"not sent: {exc}", code=UNAVAILABLE)
    delivered = False
    try:
        pending = client.send(
            command_type,
            data,
            command_id=command_id,
            expected_version=expected_version,
        )
        client.flush(timeout)
        pending.delivery(0)
        delivered = True
        if not wait:
            typer.echo(f"sent {command_type} {pending.command_id} to {pending.aggregate_id}")
            return
        deadline = time.monotonic() + timeout
        result = pending.result(timeout)
        if result.accepted and projections:
            dsn = settings.postgres_dsn
            _wait_for_read_model(dsn, topics.events, projections, result, deadline)
    except InvalidCommand as exc:
        fail(f"not sent: {exc}", code=USAGE)
    except CommandNotDelivered as exc:
        hint = delivery_hint(exc.code, topics.commands, context)
        fail(f"not sent: {exc}; {hint}", code=UNAVAILABLE)
    except CommandTimeout as exc:
        cause = "is the command processor running?" if delivered else "is the broker up?"
        fail(f"{exc}; {cause} (`{cli_name()} status`)", code=TIMEOUT)
    except ReadModelTimeout as exc:
        fail(f"{exc}; is the sink running? (`{cli_name()} status`)", code=TIMEOUT)
    except psycopg.Error as exc:  # read your writes: Postgres unreachable
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)
    finally:
        with contextlib.suppress(CommandTimeout):
            client.close()
    typer.echo(
        json.dumps(
            {
                "command_id": result.command_id,
                "status": result.status,
                "reason": result.reason,
                "detail": result.detail,
                "version": result.version,
                "events": [asdict(e) for e in result.events],
            }
        )
    )
    if not result.accepted:
        raise typer.Exit(FAILED)


def _chosen_projections(ctx: Any, wanted: list[str]) -> list[str]:
    known = [p.name for p in ctx.projections]
    if "all" in wanted:
        return known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        fail(f"--wait-for: {ctx.name} has no projection {unknown[0]!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(wanted))


def _wait_for_read_model(
    dsn: str, events_topic: str, projections: list[str], result: Any, deadline: float
) -> None:
    """Until every projection's checkpoint in Postgres has passed the command's events."""
    from sinks.checkpoints import CheckpointWaiter
    from sinks.db import resolve_schema

    schema = resolve_schema(dsn, None)
    with CheckpointWaiter(dsn, schema, events_topic=events_topic) as waiter:
        for name in projections:
            waiter.wait(name, result.events, max(0.0, deadline - time.monotonic()))


def register(app: typer.Typer) -> None:
    app.command("send", cls=SendCommand)(send)
