"""`cqrsctl schemas list|check`: the Avro catalog and its compatibility rules."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
