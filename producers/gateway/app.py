"""The gateway's ASGI app (Starlette): routes, request parsing, status codes.

Client input never causes a 5xx: every way a request can be wrong maps to a 4xx naming
what was wrong; 503 and 504 say that Kafka or Postgres did not do their part in time.

Requests to commands, aggregates and projections are authenticated (producers/gateway/
auth.py), rate-limited per principal and authorised per command type or read model; the
operations endpoints (health, metrics, OpenAPI) are open. 401, 403 and 429 answer with an
RFC 9457 problem body (`application/problem+json`). Error bodies never carry a driver's
exception text: that goes to the log.

Path segments are read from the raw (still percent-encoded) path, so an aggregate id or
a key may contain `/` (as `%2F`) without being split.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from processors.domain import BoundedContext
from processors.registry import Registry, default_registry
from producers.gateway.access_log import AccessLogMiddleware
from producers.gateway.auth import (
    ANONYMOUS,
    JwksSource,
    JwtVerifier,
    Policy,
    PolicyError,
    Principal,
    Unauthenticated,
    VerifierUnavailable,
    bearer_token,
)
from producers.gateway.commands import (
    CommandGateway,
    CommandRejectedByGateway,
    Unavailable,
    WaitTimeout,
    result_json,
)
from producers.gateway.config import GatewayConfig
from producers.gateway.metrics import GatewayMetrics
from producers.gateway.openapi import MAX_OFFSET, MIN_TIMEOUT_S, OPENAPI_PATH, build_openapi
from producers.gateway.ratelimit import RateLimiter
from producers.gateway.read_model import (
    BadParameter,
    ProjectionView,
    ReadModel,
    json_value,
    parse_int,
    parse_time,
    parse_value,
    projection_views,
)
from schemas.catalog import Catalog, default_catalog
from schemas.validation import LONG_RANGE
from sinks.queries import IncompleteHistory

log = logging.getLogger("cqrs.gateway")

STATUS_FOR_RESULT = {"ACCEPTED": 200, "CONFLICT": 409, "REJECTED": 422}
PROBLEM_JSON = "application/problem+json"
PROBLEM_TITLES = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}
# What a 503 body says; the driver's own text (hosts, roles) goes to the log only.
UNAVAILABLE_MESSAGE = "Kafka or Postgres did not answer in time; retry later"


class ClientError(Exception):
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


def make_verifier(config: GatewayConfig) -> JwtVerifier | None:
    """The token verifier for `auth="jwt"`, None for `auth="none"`; PolicyError (one line)
    for a configuration that cannot work."""
    if config.auth == "none":
        return None
    if config.auth != "jwt":
        raise PolicyError(f"auth must be jwt or none, got {config.auth!r}")
    missing = [
        name
        for name, value in (
            ("--issuer", config.issuer),
            ("--audience", config.audience),
            ("--policy", config.policy_file),
        )
        if not value
    ]
    if missing:
        raise PolicyError(f"--auth jwt needs {', '.join(missing)}")
    assert config.policy_file is not None and config.issuer and config.audience
    return JwtVerifier(
        JwksSource(url=config.jwks_url, file=config.jwks_file),
        Policy.load(config.policy_file),
        issuer=config.issuer,
        audience=config.audience,
        leeway_s=config.leeway_s,
        principal_claim=config.principal_claim,
    )


@dataclass
class Gateway:
    """What the routes need, built by the app's lifespan."""

    config: GatewayConfig
    ctx: BoundedContext
    registry: Registry
    catalog: Catalog
    views: dict[str, ProjectionView]
    metrics: GatewayMetrics
    openapi: dict[str, Any]
    verifier: JwtVerifier | None = None
    limiter: RateLimiter | None = None
    read_model: ReadModel | None = None
    commands: CommandGateway | None = None

    async def authenticate(self, request: Request) -> Principal:
        if self.verifier is None:
            return ANONYMOUS
        token = bearer_token(request.headers.get("authorization"))
        return await anyio.to_thread.run_sync(self.verifier.verify, token)

    def start(self) -> None:
        read_model = ReadModel(
            self.config.query_dsn,
            self.config.schema,
            self.views,
            role=self.config.db_role,
            pool_size=self.config.pool_size,
        )
        read_model.open()
        self.read_model = read_model
        try:
            self.commands = CommandGateway(
                self.config, self.registry, self.catalog, read_model.schema
            )
        except Exception:
            read_model.close()
            raise

    def stop(self) -> None:
        if self.commands is not None:
            self.commands.close()
        if self.read_model is not None:
            self.read_model.close()


def create_app(
    config: GatewayConfig,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    metrics: GatewayMetrics | None = None,
) -> Starlette:
    registry = registry or default_registry()
    catalog = catalog or default_catalog()
    ctx = registry.context(config.context)
    views = projection_views(ctx, catalog)
    limiter = None
    if config.rate_limit > 0:
        burst = config.rate_burst or max(1, int(config.rate_limit * 2))
        limiter = RateLimiter(config.rate_limit, burst)
    gw = Gateway(
        config=config,
        ctx=ctx,
        registry=registry,
        catalog=catalog,
        views=views,
        metrics=metrics or GatewayMetrics(),
        verifier=make_verifier(config),
        limiter=limiter,
        openapi=build_openapi(
            ctx,
            catalog,
            views,
            max_timeout_s=config.max_timeout_s,
            default_timeout_s=config.default_timeout_s,
            page_limit_max=config.page_limit_max,
            bearer_auth=config.auth == "jwt",
            rate_limited=limiter is not None,
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(gw.start)
        log.info("gateway for %s (topics %s.*) ready", ctx.name, config.prefix)
        if gw.verifier is None:
            log.warning("--auth none: every request is 'anonymous' with every permission")
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(gw.stop)

    def handler(
        fn: Callable[[Gateway, Request], Awaitable[Response]],
        permission: Callable[[Request], str] | None = None,
    ) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                if permission is not None:
                    refused = await _admit(gw, request, permission)
                    if refused is not None:
                        return refused
                return await fn(gw, request)
            except ClientError as exc:
                return error_response(exc.status, exc.error, str(exc), exc.field)
            except BadParameter as exc:
                return error_response(400, "invalid_parameter", str(exc), exc.name)
            except (Unavailable, PoolTimeout, psycopg.OperationalError) as exc:
                log.warning("%s %s: unavailable: %s", request.method, request.url.path, exc)
                return error_response(503, "unavailable", UNAVAILABLE_MESSAGE)
            except VerifierUnavailable as exc:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                return error_response(503, "unavailable", "tokens cannot be checked right now")
            except IncompleteHistory as exc:
                return error_response(503, "read_model_incomplete", str(exc))

        return endpoint

    def command_permission(request: Request) -> str:
        return f"command:{_segments(request, 'commands')[0]}"

    def projection_permission(request: Request) -> str:
        return f"read:{_segments(request, 'projections')[0]}"

    def aggregate_permission(request: Request) -> str:
        return "read:event_log"  # aggregates are folded from the event_log table

    routes = [
        Route("/commands/{type}", handler(post_command, command_permission), methods=["POST"]),
        Route(
            "/aggregates/{rest:path}",
            handler(get_aggregate, aggregate_permission),
            methods=["GET"],
        ),
        Route(
            "/projections/{rest:path}",
            handler(get_projection, projection_permission),
            methods=["GET"],
        ),
        Route("/healthz", handler(healthz), methods=["GET"]),
        Route("/readyz", handler(readyz), methods=["GET"]),
        Route("/metrics", handler(get_metrics), methods=["GET"]),
        Route(OPENAPI_PATH, handler(get_openapi), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, Exception: server_error},
    )
    app.state.gateway = gw
    app.add_middleware(MetricsMiddleware, metrics=gw.metrics)
    app.add_middleware(AccessLogMiddleware)
    return app


async def _admit(
    gw: Gateway, request: Request, permission: Callable[[Request], str]
) -> Response | None:
    """Authenticate, rate-limit and authorise a request: None to let it through, else the
    401, 429 or 403 answer."""
    try:
        principal = await gw.authenticate(request)
    except Unauthenticated as exc:
        challenge = f'Bearer realm="{gw.ctx.name}"'
        if exc.error is not None:
            description = str(exc).replace('"', "'")
            challenge += f', error="{exc.error}", error_description="{description}"'
        return problem_response(
            401,
            "unauthenticated",
            str(exc),
            headers={"WWW-Authenticate": challenge},
            missing="a valid bearer token",
        )
    request.state.principal = principal.name
    if gw.limiter is not None:
        wait = gw.limiter.take(principal.name)
        if wait > 0:
            return problem_response(
                429,
                "rate_limited",
                f"principal {principal.name!r} is over {gw.limiter.rate:g} requests/s "
                f"(bursts of {gw.limiter.burst})",
                headers={"Retry-After": gw.limiter.retry_after(wait)},
            )
    needed = permission(request)
    if not principal.may(needed):
        return problem_response(
            403,
            "forbidden",
            f"principal {principal.name!r} lacks the permission {needed}",
            missing=needed,
        )
    return None


# -- routes --------------------------------------------------------------------------------


async def post_command(gw: Gateway, request: Request) -> Response:
    commands = gw.commands
    assert commands is not None
    command_type = _segments(request, "commands")[0]
    request.state.command_type = command_type
    if command_type not in commands.command_types:
        known = ", ".join(sorted(commands.command_types))
        raise ClientError(
            404,
            "unknown_command_type",
            f"{gw.ctx.name} has no command type {command_type!r} (known: {known})",
        )
    outcome = "invalid"  # the metric's label unless the command gets further
    try:
        params = _params(request, {"wait", "timeout", "expected_version"})
        timeout = gw.config.default_timeout_s
        if "timeout" in params:
            timeout = _parse_seconds("timeout", params["timeout"], gw.config.max_timeout_s)
        expected = None
        if "expected_version" in params:
            expected = parse_int("expected_version", params["expected_version"], 0, LONG_RANGE[1])
        body = await _json_body(request, gw.config.max_body_bytes)
        with gw.metrics.waiting.track_inprogress():
            submitted = await commands.submit(
                command_type,
                body,
                idempotency_key=request.headers.get("idempotency-key"),
                expected_version=expected,
                wait=params.get("wait"),
                timeout=timeout,
                principal=getattr(request.state, "principal", ANONYMOUS.name),
            )
    except CommandRejectedByGateway as exc:
        return error_response(exc.status, exc.error, str(exc), exc.field)
    except WaitTimeout as exc:
        outcome = "timeout"
        extra = {"result": result_json(exc.result)} if exc.result is not None else {}
        error = "read_model_timeout" if exc.result is not None else "result_timeout"
        return error_response(504, error, str(exc), **extra)
    except Unavailable:
        outcome = "unavailable"
        raise
    else:
        result = submitted.result
        outcome = "queued" if result is None else result.status.lower()
        if submitted.result_seconds is not None:
            gw.metrics.result_seconds.labels(command_type).observe(submitted.result_seconds)
    finally:
        commands_metric = gw.metrics.commands
        commands_metric.labels(command_type, outcome).inc()
    if result is None:
        queued = {
            "command_id": submitted.command_id,
            "command_type": submitted.command_type,
            "aggregate_id": submitted.aggregate_id,
        }
        return SafeJSONResponse(queued, status_code=202)
    return SafeJSONResponse(result_json(result), status_code=STATUS_FOR_RESULT[result.status])


async def get_aggregate(gw: Gateway, request: Request) -> Response:
    assert gw.read_model is not None
    segments = _segments(request, "aggregates")
    if len(segments) == 3 and segments[2] == "events":
        return await _aggregate_events(gw, request, segments[0], segments[1])
    if len(segments) != 2 or not segments[1]:
        raise ClientError(404, "not_found", f"no resource at {request.url.path}")
    aggregate = _aggregate(gw, segments[0])
    aggregate_id = _id_segment(segments[1])
    params = _params(request, {"as_of", "version"})
    as_of = parse_time("as_of", params["as_of"]) if "as_of" in params else None
    version = None
    if "version" in params:
        version = parse_int("version", params["version"], 1, LONG_RANGE[1])
    history = await _read(gw.read_model.history, aggregate, aggregate_id, as_of, version)
    if history.version == 0:
        where = " at that point" if as_of is not None or version is not None else ""
        raise ClientError(404, "not_found", f"no {aggregate.name} {aggregate_id!r}{where}")
    if version is not None and as_of is None and history.version < version:
        raise ClientError(
            404,
            "not_found",
            f"{aggregate.name} {aggregate_id!r} has {history.version} versions, not {version}",
        )
    state = {**(history.state_record or {}), "version": history.version}
    body = {
        "aggregate_type": aggregate.name,
        "aggregate_id": aggregate_id,
        "version": history.version,
        "state": {k: json_value(v) for k, v in state.items()},
        "updated_at": json_value(history.events[-1].time),
    }
    return SafeJSONResponse(body, headers={"ETag": f'"{history.version}"'})


async def _aggregate_events(gw: Gateway, request: Request, type_name: str, raw_id: str) -> Response:
    assert gw.read_model is not None
    aggregate = _aggregate(gw, type_name)
    aggregate_id = _id_segment(raw_id)
    params = _params(request, {"after_version", "limit"})
    after = parse_int("after_version", params.get("after_version", "0"), 0, LONG_RANGE[1])
    limit = parse_int("limit", params.get("limit", "100"), 1, gw.config.page_limit_max)
    page = await _read(gw.read_model.events, aggregate, aggregate_id, after, limit)
    if page is None:
        raise ClientError(404, "not_found", f"no {aggregate.name} {aggregate_id!r}")
    return SafeJSONResponse({"events": page.events, "next_after_version": page.next_after_version})


async def get_projection(gw: Gateway, request: Request) -> Response:
    assert gw.read_model is not None
    segments = _segments(request, "projections")
    view = gw.views.get(segments[0])
    if view is None:
        known = ", ".join(gw.views)
        raise ClientError(404, "not_found", f"no projection {segments[0]!r} (known: {known})")
    if len(segments) == 1:
        return await _list_rows(gw, request, view)
    key = view.single_key
    if len(segments) != 2 or key is None:
        raise ClientError(
            404,
            "not_found",
            f"{view.name} rows have no single-column key; list them with filters instead",
        )
    _params(request, set())
    value = parse_value(key, _id_segment(segments[1]))
    row = await _read(gw.read_model.get_row, view, value)
    if row is None:
        raise ClientError(404, "not_found", f"no {view.name} row with {key.name} = {value!r}")
    return SafeJSONResponse(row)


async def _list_rows(gw: Gateway, request: Request, view: ProjectionView) -> Response:
    assert gw.read_model is not None
    filters = view.filters
    params = _params(request, {"limit", "offset", *filters})
    limit = parse_int("limit", params.pop("limit", "100"), 1, gw.config.page_limit_max)
    offset = parse_int("offset", params.pop("offset", "0"), 0, MAX_OFFSET)
    typed = [(name, parse_value(filters[name], text)) for name, text in params.items()]
    rows = await _read(gw.read_model.list_rows, view, typed, limit, offset)
    return SafeJSONResponse({"rows": rows, "limit": limit, "offset": offset})


async def healthz(gw: Gateway, request: Request) -> Response:
    return SafeJSONResponse({"status": "ok"})


async def readyz(gw: Gateway, request: Request) -> Response:
    checks: dict[str, str] = {}
    commands = gw.commands
    checks["kafka"] = (
        "ok" if commands is not None and commands.results_listener_alive else "not started"
    )
    if gw.read_model is None:
        checks["postgres"] = "not started"
    else:
        try:
            with anyio.fail_after(3):
                await anyio.to_thread.run_sync(gw.read_model.ping)
            checks["postgres"] = "ok"
        except (TimeoutError, psycopg.Error, PoolTimeout) as exc:
            log.warning("readyz: postgres: %s: %s", type(exc).__name__, str(exc).strip())
            checks["postgres"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return SafeJSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def get_metrics(gw: Gateway, request: Request) -> Response:
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def get_openapi(gw: Gateway, request: Request) -> Response:
    return SafeJSONResponse(gw.openapi)


# -- request parsing -----------------------------------------------------------------------


def _segments(request: Request, root: str) -> list[str]:
    """The path's segments after `/<root>/`, percent-decoded one by one (UTF-8)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.split(b"?", 1)[0].split(b"/")
    try:
        start = parts.index(root.encode()) + 1
        return [unquote_to_bytes(p).decode("utf-8") for p in parts[start:]]
    except (ValueError, UnicodeDecodeError):
        raise ClientError(400, "invalid_path", "the path is not valid UTF-8") from None


def _id_segment(text: str) -> str:
    if "\x00" in text:
        raise ClientError(400, "invalid_path", "ids cannot contain NUL characters")
    return text


def _params(request: Request, allowed: set[str]) -> dict[str, str]:
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


def _parse_seconds(name: str, text: str, maximum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(name, f"expected seconds, got {text!r}") from None
    if not MIN_TIMEOUT_S <= value <= maximum:  # also rejects nan
        raise BadParameter(name, f"must be in [{MIN_TIMEOUT_S:g}, {maximum:g}], got {text!r}")
    return value


def _aggregate(gw: Gateway, name: str) -> Any:
    for agg in gw.ctx.aggregates:
        if agg.name == name:
            return agg
    known = ", ".join(a.name for a in gw.ctx.aggregates)
    raise ClientError(404, "not_found", f"no aggregate type {name!r} (known: {known})")


async def _json_body(request: Request, max_bytes: int) -> Any:
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


async def _read(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except psycopg.DataError as exc:
        # A value Postgres cannot take (e.g. out of a column's range): the client's input.
        raise ClientError(400, "invalid_parameter", str(exc).strip()) from None
    except psycopg.errors.UndefinedTable as exc:  # messages go to the log only (503)
        raise Unavailable(f"the read model is not migrated yet: {exc}".strip()) from None
    except psycopg.errors.QueryCanceled as exc:
        raise Unavailable(f"the query took too long: {exc}".strip()) from None


# -- errors and metrics --------------------------------------------------------------------


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


class MetricsMiddleware:
    """Counts and times every request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
