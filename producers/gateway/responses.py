"""The gateway's answers: JSON bodies that always encode, the `error`/`message`/`field`
error body, and RFC 9457 problem bodies (`application/problem+json`) for 401, 403 and 429.
Error bodies never carry a driver's exception text: that goes to the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("cqrs.gateway")

STATUS_FOR_RESULT = {"ACCEPTED": 200, "CONFLICT": 409, "REJECTED": 422}
PROBLEM_JSON = "application/problem+json"
PROBLEM_TITLES = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}
# What a 503 body says; the driver's own text (hosts, roles) goes to the log only.
UNAVAILABLE_MESSAGE = "Kafka or Postgres did not answer in time; retry later"


class ClientError(Exception):
    """A request the gateway cannot serve: `status` (4xx) and `error` go to the body, with
    `field`, the parameter or dotted body path at fault when there is one."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.field = field


class SafeJSONResponse(JSONResponse):
    """JSON that never fails to encode: text with lone surrogates (which a client can put
    in a JSON string) falls back to ASCII escapes instead of a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(
    status: int, error: str, message: str, field: str | None = None, **extra: Any
) -> Response:
    body = {"error": error, "message": message, "field": field, **extra}
    headers = {"Retry-After": "1"} if status == 503 else None
    return SafeJSONResponse(body, status_code=status, headers=headers)


class ProblemResponse(SafeJSONResponse):
    media_type = PROBLEM_JSON


def problem_response(
    status: int,
    error: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An RFC 9457 problem body that also has the gateway's `error`/`message`/`field`."""
    body = {
        "type": "about:blank",
        "title": PROBLEM_TITLES.get(status, "Error"),
        "status": status,
        "detail": message,
        "error": error,
        "message": message,
        "field": None,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {"error": _error_code(exc.status_code), "message": exc.detail, "field": None}
    return SafeJSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    body = {"error": "internal", "message": "internal error (logged)", "field": None}
    return SafeJSONResponse(body, status_code=500)


def _error_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
