"""`cqrsctl dlq list|show|replay`: inspect the dead letters of `<ctx>.dlq` and replay them to
`<ctx>.commands` with their original command ids (see cqrsctl/dead_letters.py).

Exit codes: 0 ok; 1 nothing found, or some dead letter not replayed; 2 usage; 3 timeout;
4 Kafka unreachable or the topic missing.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from confluent_kafka import KafkaException
from rich.table import Table
from rich.text import Text

from cqrsctl.console import (
    FAILED,
    TIMEOUT,
    UNAVAILABLE,
    OutputFormat,
    fail,
    out_console,
    settings_or_fail,
)
from cqrsctl.dead_letters import (
    DeadLetter,
    Filters,
    Replay,
    parse_position,
    parse_since,
    read_dead_letters,
    replay,
)
from cqrsctl.record_output import print_json_line, quiet, table
from cqrsctl.record_view import view
from processors.topic_reader import ReadError, partition_count
from processors.topics import ContextTopics
from schemas.codec import default_codec

dlq = typer.Typer(
    help="Dead letters of <ctx>.dlq: list, show, replay. Exit codes: 0 ok, 1 nothing found or "
    "some not replayed, 2 usage, 3 timeout, 4 Kafka unreachable or the topic missing.",
    no_args_is_help=True,
)

_CONTEXT = typer.Option("bank", "--context", help="Bounded context whose DLQ to read.")
_PREFIX = typer.Option(None, "--prefix", help="Topic name prefix (default: the context name).")
_REASON = typer.Option(
    None, "--reason", help="Only dead letters whose error type or reason contains this text."
)
_SINCE = typer.Option(
    None, "--since", help="Only those dead-lettered since: 2026-05-01T12:00:00Z, or 30m, 2h, 1d."
)
_OUTPUT = typer.Option(OutputFormat.table, "--output", help="table or json.")
_POSITIONS = typer.Argument(None, help="Dead letters by PARTITION:OFFSET, e.g. 0:17.")


def _filters(positions: list[str] | None, reason: str | None, since: str | None) -> Filters:
    try:
        return Filters(
            positions=frozenset(parse_position(p) for p in positions or ()),
            reason=reason,
            since=parse_since(since) if since is not None else None,
        )
    except ValueError as exc:
        fail(str(exc))


def _read(
    context: str, prefix: str | None, filters: Filters
) -> tuple[dict[str, Any], list[DeadLetter]]:
    kafka = quiet(settings_or_fail(postgres=False).kafka.client_config())
    topic = ContextTopics(prefix or context).dlq
    try:
        partition_count(kafka, topic)
    except ReadError as exc:
        fail(f"{exc} (does the topic exist? `cqrsctl topics create` makes it)", UNAVAILABLE)
    except KafkaException as exc:
        fail(f"cannot reach the broker at {kafka['bootstrap.servers']}: {exc.args[0]}", UNAVAILABLE)
    try:
        return kafka, read_dead_letters(kafka, topic, filters)
    except (ReadError, KafkaException) as exc:
        fail(f"reading {topic}: {exc}", UNAVAILABLE)


def _missing(filters: Filters, letters: list[DeadLetter]) -> list[str]:
    found = {(letter.partition, letter.offset) for letter in letters}
    return [f"{p}:{o}" for p, o in sorted(filters.positions - found)]


@dlq.command("list")
def list_(
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    reason: str = _REASON,
    since: str = _SINCE,
    output: OutputFormat = _OUTPUT,
) -> None:
    """One line per dead letter: position, time, error type, reason, key, command. Exit 1
    when none matches."""
    filters = _filters(None, reason, since)
    _, letters = _read(context, prefix, filters)
    if output is OutputFormat.json:
        print_json_line([letter.summary() for letter in letters])
    else:
        rows = []
        for letter in letters:
            s = letter.summary()
            rows.append(
                [
                    letter.position,
                    s["time"],
                    s["error_type"],
                    s["reason"],
                    s["key"],
                    s["command_type"],
                    s["command_id"],
                    s["replay_of"],
                ]
            )
        columns = ("dead letter", "time", "error", "reason", "key", "type", "id", "replay of")
        out_console().print(table(columns, rows, title=f"{len(letters)} dead letters"))
    if not letters:
        raise typer.Exit(FAILED)


@dlq.command("show")
def show(
    positions: list[str] = _POSITIONS,
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    reason: str = _REASON,
    since: str = _SINCE,
    output: OutputFormat = _OUTPUT,
) -> None:
    """Everything about dead letters: the dlq_* headers, the original headers, the key and
    the value decoded (or why it cannot be). Exit 1 when one named is not found."""
    filters = _filters(positions, reason, since)
    _, letters = _read(context, prefix, filters)
    codec = default_codec()
    details = []
    for letter in letters:
        record = view(letter.message, codec).to_json()
        details.append({**letter.summary(), "headers": record["headers"], "record": record})
    if output is OutputFormat.json:
        print_json_line(details)
    else:
        out = out_console()
        for letter, detail in zip(letters, details, strict=True):
            out.print(_detail_table(letter, detail))
    missing = _missing(filters, letters)
    if missing:
        typer.echo(f"error: no dead letter at {', '.join(missing)}", err=True)
    if missing or not letters:
        raise typer.Exit(FAILED)


def _detail_table(letter: DeadLetter, detail: dict[str, Any]) -> Table:
    record = detail["record"]
    out = Table("field", "value", title=f"dead letter {letter.topic} {letter.position}")
    source = detail["source"]
    rows: list[tuple[str, Any]] = [
        ("time", detail["time"]),
        ("error type", detail["error_type"]),
        ("reason", detail["reason"]),
        ("source", f"{source['topic']} partition {source['partition']} offset {source['offset']}"),
        ("key", detail["key"]),
    ]
    rows += [(f"header {name}", value) for name, value in detail["headers"].items()]
    if record["error"] is not None:
        rows.append(("value", f"decode error: {record['error']}"))
        rows.append(("value bytes (hex, start)", record["value_preview_hex"]))
    elif record["schema"] is None:
        rows.append(("value", "(none)"))
    else:
        rows.append(("schema", record["schema"]))
        rows.append(("value", json.dumps(record["value"], indent=2, ensure_ascii=False)))
    for name, value in rows:
        out.add_row(Text(name), Text("" if value is None else str(value)))
    return out


@dlq.command("replay")
def replay_(
    positions: list[str] = _POSITIONS,
    all_: bool = typer.Option(
        False, "--all", help="Every dead letter that passes --reason and --since."
    ),
    context: str = _CONTEXT,
    prefix: str = _PREFIX,
    reason: str = _REASON,
    since: str = _SINCE,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be replayed; produce nothing."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.1, help="Seconds to wait for the broker's acknowledgements."
    ),
    output: OutputFormat = _OUTPUT,
) -> None:
    """Send dead letters' original commands (same key, value, headers and command id) to
    <ctx>.commands. A command id already handled is answered with its first result and
    changes nothing; a record still invalid is dead-lettered again with its reason."""
    if not positions and not all_ and reason is None and since is None:
        fail("name dead letters (PARTITION:OFFSET) or select them with --all, --reason, --since")
    filters = _filters(positions, reason, since)
    kafka, letters = _read(context, prefix, filters)
    missing = _missing(filters, letters)
    if missing:
        typer.echo(f"error: no dead letter at {', '.join(missing)}", err=True)
    commands = ContextTopics(prefix or context).commands
    try:
        partitions = partition_count(kafka, commands)
    except (ReadError, KafkaException) as exc:
        fail(f"{commands}: {exc}", UNAVAILABLE)
    outcomes = replay(kafka, letters, commands, partitions, dry_run, timeout)
    _report(outcomes, commands, output, dry_run)
    if any(o.action == "timed_out" for o in outcomes):
        raise typer.Exit(TIMEOUT)
    ok = "would_replay" if dry_run else "replayed"
    if missing or not outcomes or any(o.action != ok for o in outcomes):
        raise typer.Exit(FAILED)


def _report(outcomes: list[Replay], commands: str, output: OutputFormat, dry_run: bool) -> None:
    if output is OutputFormat.json:
        print_json_line([o.to_json() for o in outcomes])
        return
    rows = []
    for o in outcomes:
        data = o.to_json()
        where = None
        if o.partition is not None:
            where = f"{commands} partition {o.partition}"
            if o.offset is not None:
                where += f" offset {o.offset}"
        rows.append(
            [
                data["dead_letter"],
                data["error_type"],
                data["key"],
                data["command_id"],
                o.action.replace("_", " "),
                where or o.detail,
            ]
        )
    title = f"{len(outcomes)} dead letters" + (" (dry run: nothing sent)" if dry_run else "")
    columns = ("dead letter", "error", "key", "command id", "action", "to")
    out_console().print(table(columns, rows, title=title))


def register(app: typer.Typer) -> None:
    app.add_typer(dlq, name="dlq")
