"""`cqrsctl send <type> --json '{...}' [--wait]`: send one command."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from cqrsctl.console import fail, settings_or_fail


def send(
    command_type: str = typer.Argument(..., help="Avro full name, e.g. bank.Deposit."),
    json_body: str = typer.Option(..., "--json", help="The command's fields as JSON."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and print it."),
    timeout: float = typer.Option(30.0, help="Seconds to wait with --wait."),
    command_id: str = typer.Option(None, help="Command id (default: a new UUID)."),
    expected_version: int = typer.Option(None, help="Reject as a conflict unless at this version."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
) -> None:
    """Validate a command against its schema and produce it."""
    from producers.command_client import CommandClient, CommandTimeout, InvalidCommand

    try:
        data = json.loads(json_body)
    except json.JSONDecodeError as exc:
        fail(f"--json is not valid JSON: {exc}")
    if not isinstance(data, dict):
        fail("--json must be a JSON object")
    context = command_type.split(".", 1)[0]
    kafka = settings_or_fail(postgres=False).kafka.client_config()
    try:
        client = CommandClient(kafka, context, topic_prefix=prefix, await_results=wait)
    except Exception as exc:  # unknown context, unreachable broker, missing topic
        fail(str(exc))
    try:
        pending = client.send(
            command_type, data, command_id=command_id, expected_version=expected_version
        )
        client.flush(timeout)
        if not wait:
            typer.echo(f"sent {command_type} {pending.command_id} to {pending.aggregate_id}")
            return
        result = pending.result(timeout)
    except InvalidCommand as exc:
        fail(f"not sent: {exc}")
    except CommandTimeout as exc:
        fail(str(exc), code=3)
    finally:
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
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("send")(send)
