"""The gateway's routes: commands, aggregates, projections and the operations endpoints.
Each takes the app's `Gateway` and the request, and answers or raises a ClientError."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from processors import tracing
from producers.gateway.auth import ANONYMOUS
from producers.gateway.commands import Unavailable, WaitTimeout, result_json
from producers.gateway.openapi import MAX_OFFSET
from producers.gateway.params import (
    id_segment,
    json_body,
    parse_int,
    parse_seconds,
    parse_time,
    parse_value,
    path_segments,
    query_params,
)
from producers.gateway.responses import (
    STATUS_FOR_RESULT,
    ClientError,
    SafeJSONResponse,
    error_response,
)
from schemas.validation import LONG_RANGE
from schemas.wire import headers as ce
from sinks.read_model import ProjectionView, json_value

if TYPE_CHECKING:
    from producers.gateway.app import Gateway

log = logging.getLogger("cqrs.gateway")


async def post_command(gw: Gateway, request: Request) -> Response:
    commands = gw.commands
    assert commands is not None
    command_type = path_segments(request, "commands")[0]
    request.state.command_type = command_type
    # Before anything is counted: an unknown type must not become a metric label.
    commands.check_type(command_type)
    outcome = "invalid"  # the metric's label unless the command gets further
    # The caller's trace, or a new one: the command's records all carry it.
    traceparent = ce.valid_traceparent(request.headers.get("traceparent"))
    span = None
    if gw.tracer is not None:
        span, traceparent = tracing.start_request(gw.tracer, command_type, traceparent)
    submitted = None
    try:
        params = query_params(request, {"wait", "timeout", "expected_version"})
        timeout = gw.config.default_timeout_s
        if "timeout" in params:
            timeout = parse_seconds("timeout", params["timeout"], gw.config.max_timeout_s)
        expected = None
        if "expected_version" in params:
            expected = parse_int("expected_version", params["expected_version"], 0, LONG_RANGE[1])
        body = await json_body(request, gw.config.max_body_bytes)
        with gw.metrics.waiting.track_inprogress():
            submitted = await commands.submit(
                command_type,
                body,
                idempotency_key=request.headers.get("idempotency-key"),
                expected_version=expected,
                wait=params.get("wait"),
                timeout=timeout,
                principal=getattr(request.state, "principal", ANONYMOUS.name),
                traceparent=traceparent or ce.new_traceparent(),
            )
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
        if span is not None:
            ids = (submitted.command_id, submitted.aggregate_id) if submitted else (None, None)
            tracing.end_request(span, outcome, *ids)
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
    segments = path_segments(request, "aggregates")
    if len(segments) == 3 and segments[2] == "events":
        return await _aggregate_events(gw, request, segments[0], segments[1])
    if len(segments) != 2 or not segments[1]:
        raise ClientError(404, "not_found", f"no resource at {request.url.path}")
    aggregate = _aggregate(gw, segments[0])
    aggregate_id = id_segment(segments[1])
    params = query_params(request, {"as_of", "version"})
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
    aggregate_id = id_segment(raw_id)
    params = query_params(request, {"after_version", "limit"})
    after = parse_int("after_version", params.get("after_version", "0"), 0, LONG_RANGE[1])
    limit = parse_int("limit", params.get("limit", "100"), 1, gw.config.page_limit_max)
    page = await _read(gw.read_model.events, aggregate, aggregate_id, after, limit)
    if page is None:
        raise ClientError(404, "not_found", f"no {aggregate.name} {aggregate_id!r}")
    return SafeJSONResponse({"events": page.events, "next_after_version": page.next_after_version})


async def get_projection(gw: Gateway, request: Request) -> Response:
    assert gw.read_model is not None
    segments = path_segments(request, "projections")
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
    query_params(request, set())
    value = parse_value(key, id_segment(segments[1]))
    row = await _read(gw.read_model.get_row, view, value)
    if row is None:
        raise ClientError(404, "not_found", f"no {view.name} row with {key.name} = {value!r}")
    return SafeJSONResponse(row)


async def _list_rows(gw: Gateway, request: Request, view: ProjectionView) -> Response:
    assert gw.read_model is not None
    filters = view.filters
    params = query_params(request, {"limit", "offset", *filters})
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


def _aggregate(gw: Gateway, name: str) -> Any:
    for agg in gw.ctx.aggregates:
        if agg.name == name:
            return agg
    known = ", ".join(a.name for a in gw.ctx.aggregates)
    raise ClientError(404, "not_found", f"no aggregate type {name!r} (known: {known})")


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
