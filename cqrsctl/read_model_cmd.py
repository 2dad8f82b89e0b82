"""The read model on the command line: `query` (a projection's rows) and `history` (an
aggregate's state at a time or version, from event_log).

psycopg, rich and the queries are imported inside the commands, so `cqrsctl --help` stays
fast.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from cqrsctl.console import (
    FAILED,
    OUTPUT_OPTION,
    UNAVAILABLE,
    OutputFormat,
    fail,
    out_console,
    print_json,
    settings_or_fail,
)
from cqrsctl.read_side_cmd import context_or_fail
from processors.registry import default_registry


def _read_model(schema: str | None) -> tuple[Any, str]:
    import psycopg

    from sinks.db import connect, resolve_schema

    dsn = settings_or_fail().postgres_dsn
    try:
        resolved = resolve_schema(dsn, schema)
        return connect(dsn, resolved), resolved
    except psycopg.Error as exc:
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)


def _json_value(value: Any) -> Any:
    """A column value as JSON: times as ISO 8601 UTC, other non-JSON types as text."""
    if isinstance(value, dt.datetime | dt.date):
        return _cell(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return "" if value is None else str(value)


def complete_projection(incomplete: str) -> list[str]:
    """Shell completion: the projections of every installed context."""
    names = {p.name for ctx in default_registry().contexts.values() for p in ctx.projections}
    return sorted(n for n in names if n.startswith(incomplete))


def query(
    projection: str = typer.Argument(
        ..., help="Projection name, e.g. accounts.", autocompletion=complete_projection
    ),
    key: str = typer.Argument(None, help="Value of the projection's query column, e.g. an id."),
    context: str = typer.Option("bank"),
    schema: str = typer.Option(None, help="Postgres schema (default: the DSN's search_path)."),
    limit: int = typer.Option(100, min=1),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Print rows of a projection from Postgres (e.g. `query accounts acct-1`); exit 1
    when there is no such row."""
    import psycopg
    from rich.table import Table

    from sinks.queries import fetch_rows

    ctx = context_or_fail(context)
    found = {p.name: p for p in ctx.projections}
    if projection not in found:
        fail(f"{ctx.name} has no projection {projection!r} (known: {', '.join(found)})")
    conn, resolved = _read_model(schema)
    with conn:
        try:
            rows = fetch_rows(conn, found[projection], key, limit=limit)
        except psycopg.Error as exc:
            fail(f"postgres (schema {resolved}): {exc}".strip(), code=UNAVAILABLE)
    if not rows:
        fail(
            f"no {projection} row with {found[projection].query_column} = {key!r}"
            if key is not None
            else f"{projection} is empty",
            code=FAILED,
        )
    if output is OutputFormat.json:
        print_json([{k: _json_value(v) for k, v in row.items()} for row in rows])
        return
    table = Table(*rows[0].keys(), title=f"{projection} ({resolved})")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    out_console().print(table)


def history(
    aggregate_id: str = typer.Argument(..., help="Aggregate id, e.g. an account id."),
    as_of: str = typer.Option(None, help="State as of this time (ISO 8601; UTC if no zone)."),
    version: int = typer.Option(None, min=0, help="State at this aggregate version."),
    aggregate: str = typer.Option("bank.Account", help="Aggregate type."),
    schema: str = typer.Option(None, help="Postgres schema (default: the DSN's search_path)."),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """An aggregate's state at a time or version (a fold of event_log), and its events;
    exit 1 when it has none."""
    import psycopg
    from rich.table import Table

    from processors.registry import UnknownMessageType
    from sinks.queries import IncompleteHistory, load_history

    if as_of is not None and version is not None:
        fail("give --as-of or --version, not both")
    try:
        agg = default_registry().aggregate(aggregate)
    except UnknownMessageType as exc:
        fail(str(exc))
    moment = _parse_time(as_of) if as_of is not None else None
    conn, resolved = _read_model(schema)
    with conn:
        try:
            found = load_history(conn, agg, aggregate_id, as_of=moment, version=version)
        except psycopg.Error as exc:
            fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)
        except IncompleteHistory as exc:
            fail(f"{exc}".strip(), code=FAILED)
    if not found.events:
        fail(
            f"no events of {agg.name} {aggregate_id} in event_log ({resolved})"
            + (" at that point" if moment or version is not None else ""),
            code=FAILED,
        )
    if output is OutputFormat.json:
        print_json(
            {
                "aggregate": agg.name,
                "aggregate_id": aggregate_id,
                "version": found.version,
                "as_of": _cell(moment) if moment is not None else None,
                "state": {k: _json_value(v) for k, v in (found.state_record or {}).items()},
                "events": [
                    {
                        "version": e.version,
                        "type": e.type,
                        "time": _cell(e.time),
                        "event_id": e.event_id,
                        "principal": e.principal,
                        "data": _json_value(e.data),
                    }
                    for e in found.events
                ],
            }
        )
        return
    console = out_console()
    title = f"{agg.name} {aggregate_id} at version {found.version}"
    if moment is not None:
        title += f" (as of {_cell(moment)})"
    state = Table("field", "value")
    for name, value in (found.state_record or {}).items():
        state.add_row(name, _cell(value))
    state.add_row("version", str(found.version))
    console.print(title)
    console.print(state)
    events = Table("version", "type", "time", "principal", "event id", "data", title="events")
    for e in found.events:
        events.add_row(
            str(e.version), e.type, _cell(e.time), _cell(e.principal), e.event_id, _cell(e.data)
        )
    console.print(events)


def _parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--as-of: not an ISO 8601 time: {text!r} (e.g. 2024-05-01T12:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def register(app: typer.Typer) -> None:
    app.command("query")(query)
    app.command("history")(history)
