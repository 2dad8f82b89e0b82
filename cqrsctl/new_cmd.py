"""`cqrsctl new context <name>`: write the skeleton of a bounded context, ready to install."""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path

import typer

from cqrsctl.console import fail, out_console

new = typer.Typer(help="Write the skeleton of something new.", no_args_is_help=True)

NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


def check_name(name: str) -> str | None:
    """Why `name` cannot name a new context (its package, Avro namespace, topic prefix)."""
    if not NAME.fullmatch(name):
        return f"context name {name!r}: use lower-case letters, digits and _ (at most 31)"
    if keyword.iskeyword(name) or name == "cqrs":
        return f"context name {name!r} is reserved"
    if importlib.util.find_spec(name) is not None:
        return f"context name {name!r} is already an importable package here; choose another"
    return None


@new.command("context")
def context(
    name: str = typer.Argument(..., help="The context's name: its package, namespace, topics."),
    directory: Path = typer.Option(
        None, "--dir", help="Where to create the <name>/ folder (default: the current one)."
    ),
) -> None:
    """A context package: one aggregate, one projection, its schemas, a migration, a test."""
    from cqrsctl.context_template import files

    problem = check_name(name)
    if problem:
        fail(problem)
    root = (directory or Path.cwd()) / name
    if root.exists():
        fail(f"{root} already exists")
    for relative, text in files(name).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out_console().print(
        f"wrote the context {name!r} to {root}\n"
        f"next: pip install -e {root}   then: pytest {root / 'tests'}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(new, name="new")
