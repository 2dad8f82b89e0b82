"""How `--help` shows options: an on/off flag shows as a flag (`--wait`), not as an option
that takes a `<bool>` value."""

from __future__ import annotations

import click
from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_has_no_type(self: TyperOption, ctx: click.Context) -> str | None:
    if self.is_flag:
        return None
    return _display_type_rich(self, ctx)


def show_flags_as_flags() -> None:
    """Typer's rich help gives every option a type column, `<bool>` for flags too; a flag
    takes no value, so its column stays empty."""
    TyperOption.display_type_rich = _flag_has_no_type  # type: ignore[method-assign]
