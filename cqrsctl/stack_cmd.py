"""`cqrsctl up|down|status|smoke`: the local Kafka broker and Postgres cluster."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
