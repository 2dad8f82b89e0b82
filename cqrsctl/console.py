"""Shared console helpers: one-line errors and settings loading for every subcommand."""

from __future__ import annotations

from typing import NoReturn

import typer

from deploy.settings import Settings, SettingsError, load_settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line saying what is wrong, and exit non-zero without a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_fail(*, postgres: bool = True) -> Settings:
    try:
        return load_settings(postgres=postgres)
    except SettingsError as exc:
        fail(str(exc))
