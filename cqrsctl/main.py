"""`cqrsctl`: the operators' console script. Each subcommand group lives in its own module."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import typer

from cqrsctl import (
    aggregates_cmd,
    demo_cmd,
    dlq_cmd,
    gateway_cmd,
    new_cmd,
    projections_cmd,
    read_model_cmd,
    read_side_cmd,
    run_cmd,
    schemas_cmd,
    send_cmd,
    stack_cmd,
    tail_cmd,
    topics_cmd,
)
from cqrsctl.console import EXIT_CODES_HELP
from cqrsctl.help_format import show_flags_as_flags

show_flags_as_flags()

app = typer.Typer(
    name="cqrsctl",
    help=f"Operate the event-sourced CQRS pipeline on Kafka.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    try:
        return package_version("kafka-cqrs")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cqrsctl {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Operate the event-sourced CQRS pipeline on Kafka."""


stack_cmd.register(app)
schemas_cmd.register(app)
topics_cmd.register(app)
send_cmd.register(app)
run_cmd.register(app)
aggregates_cmd.register(app)
demo_cmd.register(app)
read_model_cmd.register(app)
read_side_cmd.register(app)
gateway_cmd.register(app)
tail_cmd.register(app)
dlq_cmd.register(app)
new_cmd.register(app)
projections_cmd.register(app)


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
