"""`cqrsctl schemas list|show|check`: the Avro catalog and its compatibility rules."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cqrsctl.console import OUTPUT_OPTION, OutputFormat, out_console, print_json
from schemas.catalog import Catalog, CatalogError
from schemas.compatibility import DEFAULT_LEVEL, Level, check_catalog, configured_level
from schemas.fingerprint import as_signed

_DIR_HELP = "Schema folder to load instead of the installed one (e.g. a copy under test)."


def _load(folder: Path | None) -> Catalog:
    try:
        return Catalog.load(folder)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    schemas_app = typer.Typer(
        help="The Avro schemas: list them, show one, check compatibility between versions.",
        no_args_is_help=True,
    )
    app.add_typer(schemas_app, name="schemas")

    @schemas_app.command("list")
    def list_schemas(
        folder: Path | None = typer.Option(None, "--dir", help=_DIR_HELP),
        context: str | None = typer.Option(None, "--context", help="Only this context."),
        output: OutputFormat = OUTPUT_OPTION,
    ) -> None:
        """Every schema version: full name, version, fingerprint (wire order hex), file."""
        catalog = _load(folder)
        rows = [
            {
                "name": entry.name,
                "version": entry.version,
                "kind": entry.kind or "-",
                "fingerprint": entry.fingerprint_hex,
                "compatibility": str(configured_level(entry)) if entry.version > 1 else "-",
                "file": entry.relative,
            }
            for entry in catalog
            if context is None or entry.context == context
        ]
        if output is OutputFormat.json:
            print_json(rows)
            return
        table = Table(title=f"Avro schemas ({folder or 'the runtime and installed contexts'})")
        for column in ("name", "version", "kind", "fingerprint", "compatibility", "file"):
            table.add_column(column, no_wrap=column in ("name", "fingerprint"))
        for row in rows:
            row = {**row, "version": f"v{row['version']}"}
            table.add_row(*(str(v) for v in row.values()))
        out_console().print(table)

    @schemas_app.command("show")
    def show_schema(
        name: str = typer.Argument(..., help="Full name, e.g. bank.Deposited."),
        version: int | None = typer.Option(None, "--version", "-v", help="Default: latest."),
        folder: Path | None = typer.Option(None, "--dir", help=_DIR_HELP),
    ) -> None:
        """A schema as other languages should use it: self-contained, with its fingerprint."""
        catalog = _load(folder)
        try:
            entry = catalog.get(name, version)
        except CatalogError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"# {entry.label}  ({entry.relative})")
        typer.echo(
            f"# fingerprint: {entry.fingerprint_hex} (wire order), "
            f"{as_signed(entry.fingerprint)} (Java long)"
        )
        typer.echo(f"# canonical form: {entry.canonical_form}")
        typer.echo(json.dumps(entry.schema, indent=2))

    @schemas_app.command("check")
    def check_schemas(
        folder: Path | None = typer.Option(None, "--dir", help=_DIR_HELP),
        level: Level | None = typer.Option(
            None,
            "--level",
            case_sensitive=False,
            help=f"Check every version at this level instead of the configured ones "
            f'(default {DEFAULT_LEVEL}, or the newer file\'s "compatibility"); a '
            "_TRANSITIVE level checks each version against every earlier one.",
        ),
    ) -> None:
        """Check every pair of versions the levels require; exit 1 naming the field if one
        breaks."""
        catalog = _load(folder)
        reports = check_catalog(catalog, level)
        broken = [report for report in reports if not report.ok]
        for report in broken:
            step = f"{report.old.name} v{report.old.version} -> v{report.new.version}"
            for problem in report.problems:
                typer.echo(f"{step} breaks {report.level}: {problem}", err=True)
        if broken:
            raise typer.Exit(1)
        skipped = sum(1 for report in reports if report.level is Level.NONE)
        note = f", {skipped} declared NONE" if skipped else ""
        how = f"level {level}" if level else f"configured levels, default {DEFAULT_LEVEL}"
        typer.echo(
            f"OK: {len(catalog)} schemas, {len(reports)} version pair(s) compatible{note} ({how})"
        )
