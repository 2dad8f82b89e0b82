"""Reading a request: path segments (percent-decoded one by one from the raw path, so an
id may contain `/` as `%2F`), query parameters, typed values and the JSON body. Every way
a request can be wrong raises a ClientError naming what was wrong.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request

from producers.gateway.openapi import MIN_TIMEOUT_S
from producers.gateway.responses import ClientError
from schemas.validation import INT_RANGE, LONG_RANGE
from sinks.read_model import Column


class BadParameter(ClientError):
    """A query or path parameter that cannot be used (400); `field` names it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(400, "invalid_parameter", f"parameter '{name}': {reason}", name)
        self.reason = reason


def path_segments(request: Request, root: str) -> list[str]:
    """The path's segments after `/<root>/`, percent-decoded one by one (UTF-8)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.split(b"?", 1)[0].split(b"/")
    try:
        start = parts.index(root.encode()) + 1
        return [unquote_to_bytes(p).decode("utf-8") for p in parts[start:]]
    except (ValueError, UnicodeDecodeError):
        raise ClientError(400, "invalid_path", "the path is not valid UTF-8") from None


def id_segment(text: str) -> str:
    if "\x00" in text:
        raise ClientError(400, "invalid_path", "ids cannot contain NUL characters")
    return text


def query_params(request: Request, allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ClientError(
                400, "invalid_parameter", f"unknown parameter {name!r} (known: {known})", name
            )
        if name in out:
            raise ClientError(400, "invalid_parameter", f"parameter {name!r} given twice", name)
        out[name] = value
    return out


def parse_seconds(name: str, text: str, maximum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(name, f"expected seconds, got {text!r}") from None
    if not MIN_TIMEOUT_S <= value <= maximum:  # also rejects nan
        raise BadParameter(name, f"must be in [{MIN_TIMEOUT_S:g}, {maximum:g}], got {text!r}")
    return value


async def json_body(request: Request, max_bytes: int) -> Any:
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ClientError(415, "unsupported_media_type", f"expected JSON, got {ctype!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ClientError(413, "body_too_large", f"the body is over {max_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ClientError(413, "body_too_large", f"the body is over {max_bytes:,} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ClientError(400, "malformed_json", "the body is empty; send a JSON object")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, NaN
        raise ClientError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_value(column: Column, text: str) -> Any:
    """A filter or key value from the URL, typed for the column."""
    if "\x00" in text:
        raise BadParameter(column.name, "contains a NUL character")
    if column.kind in ("long", "int"):
        low, high = LONG_RANGE if column.kind == "long" else INT_RANGE
        return parse_int(column.name, text, low, high)
    if column.kind == "boolean":
        if text not in ("true", "false"):
            raise BadParameter(column.name, f"expected true or false, got {text!r}")
        return text == "true"
    if column.kind == "date":
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise BadParameter(column.name, f"expected a date YYYY-MM-DD, got {text!r}") from None
    if column.kind == "timestamp":
        return parse_time(column.name, text)
    return text


def parse_int(name: str, text: str, low: int, high: int) -> int:
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in "+-" else stripped
    if not digits.isascii() or not digits.isdigit() or len(digits) > 25:
        raise BadParameter(name, f"expected an integer, got {text!r}")
    value = int(stripped)
    if not low <= value <= high:
        raise BadParameter(name, f"must be in [{low}, {high}], got {value}")
    return value


def parse_time(name: str, text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            name, f"expected an ISO 8601 time, e.g. 2024-05-01T12:00:00Z, got {text!r}"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        raise BadParameter(name, f"out of range in UTC: {text!r}") from None
    return moment
