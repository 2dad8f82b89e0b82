"""`cqrsctl aggregates rebuild`: rebuild aggregate snapshots from the event history."""

from __future__ import annotations

import typer

from cqrsctl.console import FAILED, fail, settings_or_fail

aggregates = typer.Typer(help="Aggregate state snapshots.", no_args_is_help=True)


@aggregates.command("rebuild")
def rebuild(
    context: str = typer.Option("bank", help="Bounded context."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
) -> None:
    """Fold every event into fresh snapshots on <ctx>.aggregates (processors must be stopped)."""
    from processors.rebuild import RebuildRefused, rebuild_snapshots
    from processors.registry import UnknownContext, default_registry

    kafka = settings_or_fail(postgres=False).kafka.client_config()
    try:
        report = rebuild_snapshots(kafka, default_registry(), context, prefix)
    except RebuildRefused as exc:
        fail(str(exc), code=FAILED)
    except UnknownContext as exc:
        fail(str(exc))
    typer.echo(f"folded {report.events} events into {report.aggregates} aggregate snapshots")
    for line in report.version_mismatches[:20]:
        typer.echo(f"warning: {line}", err=True)
    if report.version_mismatches:
        raise typer.Exit(FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(aggregates, name="aggregates")
