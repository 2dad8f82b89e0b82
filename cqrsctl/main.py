"""`cqrsctl`: the operators' console script. Each subcommand group lives in its own module."""

from __future__ import annotations

import sys

import typer

from cqrsctl import (
    aggregates_cmd,
    demo_cmd,
    gateway_cmd,
    read_side_cmd,
    run_cmd,
    schemas_cmd,
    send_cmd,
    stack_cmd,
    topics_cmd,
)

app = typer.Typer(
    name="cqrsctl",
    help="Operate the event-sourced CQRS pipeline on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

stack_cmd.register(app)
schemas_cmd.register(app)
topics_cmd.register(app)
send_cmd.register(app)
run_cmd.register(app)
aggregates_cmd.register(app)
demo_cmd.register(app)
read_side_cmd.register(app)
gateway_cmd.register(app)


def main() -> None:
    """The console script: `app`, with a context that does not match its schemas (found when
    the registry loads it) reported as one line and exit code 2, not a traceback."""
    try:
        app()
    except Exception as exc:
        from processors.registry import ContextError  # only on this path: a quick start-up

        if not isinstance(exc, ContextError):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
