"""Printing records for `cqrsctl tail` and `cqrsctl dlq`: JSON lines or rich tables, wide and
unwrapped when stdout is not a terminal (a file or a pipe gets whole lines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from cqrsctl.record_view import RecordView, compact_json


def quiet(kafka: dict[str, Any]) -> dict[str, Any]:
    """librdkafka settings that keep its own log lines (a refused connection, retried every
    few ms) off the console: failures reach the user as one error line from the command."""
    return {**kafka, "log_level": 2}


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[str | None]], title: str | None = None):
    """A rich table whose cells are plain text (never rich markup: values may hold `[`)."""
    out = Table(*columns, title=title)
    for row in rows:
        out.add_row(*(Text("" if cell is None else cell) for cell in row))
    return out


RECORD_COLUMNS = ("partition", "offset", "time", "key", "schema", "value", "headers")


def record_row(record: RecordView) -> list[str | None]:
    """One record as a table row; a value that could not be decoded shows `decode error` and
    the reason."""
    if record.error is not None:
        schema, value = "decode error", f"{record.error} (value {record.value_size} bytes)"
    elif record.schema is None:
        schema, value = "tombstone", ""
    else:
        schema, value = record.schema, compact_json(record.value)
    headers = " ".join(f"{name}={raw}" for name, raw in record.headers)
    if record.header_error:
        headers = f"{headers} (bad headers: {record.header_error})"
    stamp = record.timestamp.isoformat(timespec="milliseconds") if record.timestamp else None
    return [str(record.partition), str(record.offset), stamp, record.key, schema, value, headers]
