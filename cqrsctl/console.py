"""Shared console helpers: exit codes, one-line errors, settings loading, output consoles."""

from __future__ import annotations

import json
import os
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from processors.settings import Settings, SettingsError, load_settings

# Exit codes of every subcommand (also in `cqrsctl --help` and docs/operations.md).
OK = 0
FAILED = 1  # the answer is no: rejected, not found, unhealthy, a check that failed
USAGE = 2  # bad input: unknown option or name, invalid JSON, a command that breaks its schema
TIMEOUT = 3  # no answer in time (e.g. `send --wait` without a result)
UNAVAILABLE = 4  # Kafka or Postgres unreachable, topics missing, a command not delivered

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 rejected, not found or unhealthy; 2 usage (bad option, name or "
    "input); 3 timeout; 4 unavailable (Kafka or Postgres unreachable, topics missing, "
    "command not delivered)."
)

# Wide enough that nothing a command prints is wrapped when stdout is a pipe or a file.
PIPE_WIDTH = 10_000


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


OUTPUT_OPTION = typer.Option(
    OutputFormat.table, "--output", "-o", help="table for people, json for programs."
)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print one line saying what is wrong, and exit non-zero without a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_fail(*, postgres: bool = True) -> Settings:
    try:
        return load_settings(postgres=postgres)
    except SettingsError as exc:
        fail(str(exc), code=UNAVAILABLE)


def out_console() -> Console:
    """The console for a command's output: the terminal's width on a terminal, and wide,
    unwrapped lines when stdout is a pipe or a file (so ids, paths and times stay whole)."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=PIPE_WIDTH, soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout (times and other objects as strings)."""
    typer.echo(json.dumps(data, default=str))


def cli_name() -> str:
    """How the user can call this console script: `cqrsctl` when that is on PATH and is
    this installation, else the script's path (e.g. `.venv/bin/cqrsctl`)."""
    script = Path(sys.executable).with_name("cqrsctl")
    found = shutil.which("cqrsctl")
    if found and Path(found).resolve() == script.resolve():
        return "cqrsctl"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)
