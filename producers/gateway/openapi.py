"""The gateway's OpenAPI 3.1 document, generated from the context's Avro schemas.

Each command type gets its own path (`/commands/bank.Deposit`) whose request body is the
command's Avro schema as JSON Schema (producers/gateway/avro_json.py); each aggregate type
and projection gets paths whose responses are its state or row schema. So the document
changes exactly when a schema does, and a client generated from it sends what the
pipeline's validator accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from processors.domain import BoundedContext
from producers.gateway.avro_json import to_json_schema
from producers.gateway.read_model import Column, ProjectionView
from schemas.catalog import Catalog
from schemas.validation import INT_RANGE, LONG_RANGE

OPENAPI_PATH = "/openapi.json"
BEARER_SCHEME = "bearer"
NO_NUL_PATTERN = "^[^\\u0000]*$"
IDEMPOTENCY_KEY_PATTERN = "^[!-~](?:[ -~]*[!-~])?$"
MIN_TIMEOUT_S = 1.0
MAX_OFFSET = 1_000_000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if headers:
        out["headers"] = headers
    return out


def _guarded(
    operation: dict[str, Any], permission: str, *, bearer_auth: bool, rate_limited: bool
) -> dict[str, Any]:
    """An operation that needs `permission`: with bearer auth, its security requirement and
    its 401 and 403 answers; with a rate limit, its 429."""
    responses = dict(operation["responses"])
    if bearer_auth:
        operation["security"] = [{BEARER_SCHEME: []}]
        operation["description"] = f"Needs the permission `{permission}`."
        responses["401"] = _problem(
            "No bearer token, or one that is expired, not for this audience, from another "
            "issuer or badly signed.",
            {"WWW-Authenticate": {"schema": {"type": "string"}}},
        )
        responses["403"] = _problem(f"The token does not grant `{permission}`.")
    if rate_limited:
        responses["429"] = _problem(
            "The principal is over its request rate.",
            {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}},
        )
    operation["responses"] = responses
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL_PATTERN},
        "description": description,
    }


def _int(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def _column_schema(column: Column) -> dict[str, Any]:
    if column.kind == "long":
        return {**_int(*LONG_RANGE), "format": "int64"}
    if column.kind == "int":
        return {**_int(*INT_RANGE), "format": "int32"}
    if column.kind == "boolean":
        return {"type": "boolean"}
    if column.kind == "date":
        return {"type": "string", "format": "date"}
    if column.kind == "timestamp":
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


def _filter_schema(column: Column) -> dict[str, Any]:
    schema = _column_schema(column)
    if column.kind == "string":
        schema["pattern"] = NO_NUL_PATTERN  # the gateway answers 400 to a NUL in a value
    return schema


def _key_param(key: Column) -> dict[str, Any]:
    schema = _column_schema(key)
    if key.kind == "string":
        schema["minLength"] = 1
        schema["pattern"] = NO_NUL_PATTERN
    return {"name": key.name, "in": "path", "required": True, "schema": schema}


def _operation(op_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "tags": ["operations"],
            "summary": summary,
            "responses": responses,
        }
    }


def _package_version() -> str:
    try:
        return version("kafka-cqrs")
    except PackageNotFoundError:
        return "0"


def build_openapi(
    ctx: BoundedContext,
    catalog: Catalog,
    views: Mapping[str, ProjectionView],
    *,
    max_timeout_s: float,
    default_timeout_s: float,
    page_limit_max: int,
    bearer_auth: bool = False,
    rate_limited: bool = False,
) -> dict[str, Any]:
    """The document. With `bearer_auth`, it declares the bearer (JWT) scheme and each
    command, aggregate and projection operation's security requirement and permission."""

    def guarded(operation: dict[str, Any], permission: str) -> dict[str, Any]:
        return _guarded(operation, permission, bearer_auth=bearer_auth, rate_limited=rate_limited)

    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A stable code, e.g. invalid_command."},
                "message": {"type": "string", "description": "What was wrong, for humans."},
                "field": {
                    "type": ["string", "null"],
                    "description": "Dotted path of the failing field ('' = the whole body).",
                },
            },
        },
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "error", "message"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "error": {"type": "string", "description": "A stable code, e.g. forbidden."},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
                "missing": {
                    "type": "string",
                    "description": "What the request lacks: a valid bearer token, or the "
                    "permission it needs.",
                },
            },
        },
        "CommandQueued": {
            "type": "object",
            "required": ["command_id", "command_type", "aggregate_id"],
            "properties": {
                "command_id": {"type": "string"},
                "command_type": {"type": "string"},
                "aggregate_id": {"type": "string"},
            },
        },
        "CommandResult": to_json_schema(
            catalog.latest("cqrs.CommandResult").schema, text_logical=True
        ),
        "ReadModelTimeout": {
            "type": "object",
            "required": ["error", "message", "result"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
                "result": _ref("CommandResult"),
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
        },
    }
    paths: dict[str, Any] = {}
    wait_values = ["result", *(p.name for p in ctx.projections)]
    command_params = [
        _query(
            "wait",
            {"type": "string", "enum": wait_values},
            "Absent: answer 202 once Kafka has the command. `result`: answer with the "
            "processor's verdict. A projection name: also wait until that read model shows "
            "the command's effect (read your writes).",
        ),
        _query(
            "timeout",
            {"type": "number", "minimum": MIN_TIMEOUT_S, "maximum": max_timeout_s},
            f"Seconds to wait (default {default_timeout_s:g}); then 504.",
        ),
        _query(
            "expected_version",
            {**_int(0, LONG_RANGE[1]), "format": "int64"},
            "Optimistic concurrency: the aggregate's version the command expects; a "
            "mismatch is a conflict (409).",
        ),
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "maxLength": 1024},
            "description": "Becomes the command id: a retried request gets the first result "
            "and the command takes effect once.",
        },
    ]
    for agg in ctx.aggregates:
        for command_type in sorted(agg.public_command_types):
            entry = catalog.latest(command_type)
            schemas[command_type] = to_json_schema(entry.schema)
            paths[f"/commands/{command_type}"] = {
                "post": guarded(
                    {
                        "operationId": f"send_{command_type}",
                        "summary": entry.schema.get("doc", command_type),
                        "tags": ["commands"],
                        "parameters": command_params,
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": _ref(command_type)}},
                        },
                        "responses": {
                            "200": _json(_ref("CommandResult"), "Accepted (with ?wait)."),
                            "202": _json(_ref("CommandQueued"), "Kafka has the command."),
                            "400": _error("Malformed JSON or a bad parameter or header."),
                            "409": _json(_ref("CommandResult"), "Conflict: expected_version."),
                            "413": _error("The body is too large."),
                            "415": _error("The body is not JSON."),
                            "422": _json(
                                {"anyOf": [_ref("Error"), _ref("CommandResult")]},
                                "The body breaks the command's schema (Error, naming the field), "
                                "or, with ?wait, a business rule rejected it (CommandResult).",
                            ),
                            "503": _error("Kafka or Postgres is unavailable."),
                            "504": _json(
                                {"anyOf": [_ref("Error"), _ref("ReadModelTimeout")]},
                                "No result (or no read-model catch-up) within the timeout.",
                            ),
                        },
                    },
                    f"command:{command_type}",
                )
            }
        state_name = f"{agg.name}.State"
        schemas[state_name] = to_json_schema(
            catalog.latest(agg.state_schema).schema, text_logical=True
        )
        schemas[f"{agg.name}.Aggregate"] = {
            "type": "object",
            "required": ["aggregate_type", "aggregate_id", "version", "state"],
            "properties": {
                "aggregate_type": {"type": "string", "const": agg.name},
                "aggregate_id": {"type": "string"},
                "version": {"type": "integer", "minimum": 1},
                "state": _ref(state_name),
                "updated_at": {"type": "string", "format": "date-time"},
            },
        }
        base = f"/aggregates/{agg.name}/{{id}}"
        id_param = _path_param("id", f"The aggregate id (field {agg.id_field} of commands).")
        read_errors = {
            "400": _error("A bad parameter."),
            "404": _error("No such aggregate (at that point)."),
            "503": _error("Postgres is unavailable or the read model is incomplete."),
        }
        paths[base] = {
            "get": guarded(
                {
                    "operationId": f"get_{agg.name}",
                    "summary": f"A {agg.name}'s state, folded from its events in event_log; "
                    "with as_of and/or version, its state at that point (the events at or "
                    "before both).",
                    "tags": ["aggregates"],
                    "parameters": [
                        id_param,
                        _query(
                            "as_of",
                            {"type": "string", "format": "date-time"},
                            "The state as of this time (RFC 3339; UTC if no offset).",
                        ),
                        _query(
                            "version",
                            {**_int(1, LONG_RANGE[1]), "format": "int64"},
                            "The state at this version.",
                        ),
                    ],
                    "responses": {
                        "200": _json(_ref(f"{agg.name}.Aggregate"), "The state and its version."),
                        **read_errors,
                    },
                },
                "read:event_log",
            )
        }
        paths[f"{base}/events"] = {
            "get": guarded(
                {
                    "operationId": f"events_{agg.name}",
                    "summary": f"A {agg.name}'s events, oldest first, a page at a time.",
                    "tags": ["aggregates"],
                    "parameters": [
                        id_param,
                        _query(
                            "after_version",
                            {**_int(0, LONG_RANGE[1]), "format": "int64"},
                            "Events with a version above this (default 0).",
                        ),
                        _query("limit", _int(1, page_limit_max), "Page size (default 100)."),
                    ],
                    "responses": {
                        "200": _json(_ref("EventPage"), "A page of events."),
                        **read_errors,
                    },
                },
                "read:event_log",
            )
        }
    schemas["EventPage"] = {
        "type": "object",
        "required": ["events", "next_after_version"],
        "properties": {
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "type", "time", "event_id", "data"],
                    "properties": {
                        "version": {"type": "integer"},
                        "type": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "event_id": {"type": "string"},
                        "correlation_id": {"type": ["string", "null"]},
                        "causation_id": {"type": ["string", "null"]},
                        "data": {"type": "object"},
                    },
                },
            },
            "next_after_version": {
                "type": ["integer", "null"],
                "description": "Pass as after_version for the next page; null on the last.",
            },
        },
    }
    for view in views.values():
        row_name = f"{ctx.name}.projection.{view.name}"
        schemas[row_name] = to_json_schema(view.row_schema, text_logical=True)
        filters = [
            _query(c.name, _filter_schema(c), f"Only rows whose {c.name} equals this.")
            for c in view.filters.values()
        ]
        list_errors = {
            "400": _error("A bad filter or parameter."),
            "503": _error("Postgres is unavailable."),
        }
        paths[f"/projections/{view.name}"] = {
            "get": guarded(
                {
                    "operationId": f"list_{view.name}",
                    "summary": view.projection.description or f"Rows of {view.name}",
                    "tags": ["projections"],
                    "parameters": [
                        *filters,
                        _query("limit", _int(1, page_limit_max), "Page size (default 100)."),
                        _query("offset", _int(0, MAX_OFFSET), "Rows to skip (default 0)."),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["rows", "limit", "offset"],
                                "properties": {
                                    "rows": {"type": "array", "items": _ref(row_name)},
                                    "limit": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                },
                            },
                            f"Rows in key order ({', '.join(view.key)}).",
                        ),
                        **list_errors,
                    },
                },
                f"read:{view.name}",
            )
        }
        key = view.single_key
        if key is not None:
            paths[f"/projections/{view.name}/{{{key.name}}}"] = {
                "get": guarded(
                    {
                        "operationId": f"get_{view.name}",
                        "summary": f"One row of {view.name} by its key {key.name}.",
                        "tags": ["projections"],
                        "parameters": [_key_param(key)],
                        "responses": {
                            "200": _json(_ref(row_name), "The row."),
                            "404": _error("No such row."),
                            **list_errors,
                        },
                    },
                    f"read:{view.name}",
                )
            }
    health = {
        "200": _json(_ref("Health"), "OK."),
        "503": _json(_ref("Health"), "Not ready; `checks` says what failed."),
    }
    paths["/healthz"] = _operation("healthz", "The process answers.", health)
    paths["/readyz"] = _operation("readyz", "Kafka and Postgres are usable.", health)
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics (text format).",
            "responses": {
                "200": {"description": "Metrics.", "content": {"text/plain": {"schema": {}}}}
            },
        }
    }
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "openapi",
            "tags": ["operations"],
            "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    }
    components: dict[str, Any] = {"schemas": schemas}
    if bearer_auth:
        components["securitySchemes"] = {
            BEARER_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A JWT from the configured issuer, for the configured "
                "audience; its scopes or roles map to permissions (docs/security.md).",
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{ctx.name}: command and query gateway",
            "version": _package_version(),
            "description": "Commands in, read models out, over the Kafka event-sourcing "
            "pipeline. Schemas are generated from the context's Avro schemas. See "
            "docs/gateway.md.",
        },
        "paths": paths,
        "components": components,
    }
