"""Log setup shared by every worker: `--log-format text|json` and secret redaction.

    setup_logging("INFO", "json", context="bank", role="processor")

`json` writes one JSON object per line: `time` (ISO 8601 UTC), `level`, `logger`,
`message`, the worker's `context` and `role`, and, where the code knows them, `partition`,
`command_id` and `trace_id` (from a call's `extra=` or from `log_fields(...)`), plus
`exc` with the traceback of an exception. `text` is the classic
`time level logger message` line.

Both formats pass every line through a redaction filter: the values of the environment's
password-like variables (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`) and the password inside
`CQRS_POSTGRES_DSN` are replaced by `***` wherever they would appear.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Fields a log call may pass with `extra=` (or `log_fields`); others are not written.
RECORD_FIELDS = ("partition", "command_id", "trace_id")

_fields: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "cqrs_log_fields", default=()
)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
_DSN_PASSWORDS = (
    re.compile(r"://[^:/?#@]*:([^@/?#]+)@"),
    re.compile(r"(?i)\bpassword\s*=\s*'((?:[^'\\]|\\.)*)'"),
    re.compile(r"(?i)\bpassword\s*=\s*([^'\s&]\S*?)(?=[\s&]|$)"),
)


class InvalidLogFormat(ValueError):
    pass


@contextlib.contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """Within the block, every log line of this thread or task carries these fields."""
    token = _fields.set(tuple({**dict(_fields.get()), **fields}.items()))
    try:
        yield
    finally:
        _fields.reset(token)


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values that must never reach a log line, longest first."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 4}
    for name, value in env.items():
        if name.endswith("_DSN"):
            for pattern in _DSN_PASSWORDS:
                found.update(m for m in pattern.findall(value) if len(m) >= 4)
    return sorted(found, key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Replaces every known secret in a record's message and arguments by `***`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        for name, value in _fields.get():
            if value is not None:
                entry[name] = value
        for name in RECORD_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=True, default=str)


def check_format(log_format: str) -> str:
    """The format in lower case, or InvalidLogFormat naming the accepted ones."""
    fmt = log_format.lower()
    if fmt not in LOG_FORMATS:
        raise InvalidLogFormat(
            f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
        )
    return fmt


def make_handler(log_format: str, *, context: str, role: str) -> logging.Handler:
    """A stderr handler in the given format, with secret redaction."""
    handler = logging.StreamHandler(sys.stderr)
    if check_format(log_format) == "json":
        handler.setFormatter(JsonFormatter({"context": context, "role": role}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets(secrets_from_env()))
    return handler


def setup_logging(level: str, log_format: str, *, context: str, role: str) -> None:
    """The root logger writes `log_format` lines at `level` to stderr (replacing any
    handler set before)."""
    handler = make_handler(log_format, context=context, role=role)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
