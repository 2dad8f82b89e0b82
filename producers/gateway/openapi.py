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
from producers.gateway import openapi_parts as oa
from producers.gateway.avro_json import to_json_schema
from schemas.catalog import Catalog
from schemas.validation import LONG_RANGE
from sinks.read_model import ProjectionView

OPENAPI_PATH = "/openapi.json"
IDEMPOTENCY_KEY_PATTERN = "^[!-~](?:[ -~]*[!-~])?$"
MIN_TIMEOUT_S = 1.0
MAX_OFFSET = 1_000_000


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
        return oa.guard(operation, permission, bearer_auth=bearer_auth, rate_limited=rate_limited)

    schemas: dict[str, Any] = {
        **oa.BASE_SCHEMAS,
        "CommandResult": to_json_schema(
            catalog.latest("cqrs.CommandResult").schema, text_logical=True
        ),
    }
    paths: dict[str, Any] = {}
    wait_values = ["result", *(p.name for p in ctx.projections)]
    command_params = [
        oa.query(
            "wait",
            {"type": "string", "enum": wait_values},
            "Absent: answer 202 once Kafka has the command. `result`: answer with the "
            "processor's verdict. A projection name: also wait until that read model shows "
            "the command's effect (read your writes).",
        ),
        oa.query(
            "timeout",
            {"type": "number", "minimum": MIN_TIMEOUT_S, "maximum": max_timeout_s},
            f"Seconds to wait (default {default_timeout_s:g}); then 504.",
        ),
        oa.query(
            "expected_version",
            {**oa.integer(0, LONG_RANGE[1]), "format": "int64"},
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
                            "content": {"application/json": {"schema": oa.ref(command_type)}},
                        },
                        "responses": {
                            "200": oa.json_content(
                                oa.ref("CommandResult"), "Accepted (with ?wait)."
                            ),
                            "202": oa.json_content(
                                oa.ref("CommandQueued"), "Kafka has the command."
                            ),
                            "400": oa.error("Malformed JSON or a bad parameter or header."),
                            "409": oa.json_content(
                                oa.ref("CommandResult"), "Conflict: expected_version."
                            ),
                            "413": oa.error("The body is too large."),
                            "415": oa.error("The body is not JSON."),
                            "422": oa.json_content(
                                {"anyOf": [oa.ref("Error"), oa.ref("CommandResult")]},
                                "The body breaks the command's schema (Error, naming the field), "
                                "or, with ?wait, a business rule rejected it (CommandResult).",
                            ),
                            "503": oa.error("Kafka or Postgres is unavailable."),
                            "504": oa.json_content(
                                {"anyOf": [oa.ref("Error"), oa.ref("ReadModelTimeout")]},
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
                "state": oa.ref(state_name),
                "updated_at": {"type": "string", "format": "date-time"},
            },
        }
        base = f"/aggregates/{agg.name}/{{id}}"
        id_param = oa.path_param("id", f"The aggregate id (field {agg.id_field} of commands).")
        read_errors = {
            "400": oa.error("A bad parameter."),
            "404": oa.error("No such aggregate (at that point)."),
            "503": oa.error("Postgres is unavailable or the read model is incomplete."),
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
                        oa.query(
                            "as_of",
                            {"type": "string", "format": "date-time"},
                            "The state as of this time (RFC 3339; UTC if no offset).",
                        ),
                        oa.query(
                            "version",
                            {**oa.integer(1, LONG_RANGE[1]), "format": "int64"},
                            "The state at this version.",
                        ),
                    ],
                    "responses": {
                        "200": oa.json_content(
                            oa.ref(f"{agg.name}.Aggregate"), "The state and its version."
                        ),
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
                        oa.query(
                            "after_version",
                            {**oa.integer(0, LONG_RANGE[1]), "format": "int64"},
                            "Events with a version above this (default 0).",
                        ),
                        oa.query(
                            "limit", oa.integer(1, page_limit_max), "Page size (default 100)."
                        ),
                    ],
                    "responses": {
                        "200": oa.json_content(oa.ref("EventPage"), "A page of events."),
                        **read_errors,
                    },
                },
                "read:event_log",
            )
        }
    schemas["EventPage"] = oa.EVENT_PAGE
    for view in views.values():
        row_name = f"{ctx.name}.projection.{view.name}"
        schemas[row_name] = to_json_schema(view.row_schema, text_logical=True)
        filters = [
            oa.query(c.name, oa.filter_schema(c), f"Only rows whose {c.name} equals this.")
            for c in view.filters.values()
        ]
        list_errors = {
            "400": oa.error("A bad filter or parameter."),
            "503": oa.error("Postgres is unavailable."),
        }
        paths[f"/projections/{view.name}"] = {
            "get": guarded(
                {
                    "operationId": f"list_{view.name}",
                    "summary": view.projection.description or f"Rows of {view.name}",
                    "tags": ["projections"],
                    "parameters": [
                        *filters,
                        oa.query(
                            "limit", oa.integer(1, page_limit_max), "Page size (default 100)."
                        ),
                        oa.query("offset", oa.integer(0, MAX_OFFSET), "Rows to skip (default 0)."),
                    ],
                    "responses": {
                        "200": oa.json_content(
                            {
                                "type": "object",
                                "required": ["rows", "limit", "offset"],
                                "properties": {
                                    "rows": {"type": "array", "items": oa.ref(row_name)},
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
                        "parameters": [oa.key_param(key)],
                        "responses": {
                            "200": oa.json_content(oa.ref(row_name), "The row."),
                            "404": oa.error("No such row."),
                            **list_errors,
                        },
                    },
                    f"read:{view.name}",
                )
            }
    health = {
        "200": oa.json_content(oa.ref("Health"), "OK."),
        "503": oa.json_content(oa.ref("Health"), "Not ready; `checks` says what failed."),
    }
    paths["/healthz"] = oa.operation("healthz", "The process answers.", health)
    paths["/readyz"] = oa.operation("readyz", "Kafka and Postgres are usable.", health)
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
            "responses": {"200": oa.json_content({"type": "object"}, "The OpenAPI document.")},
        }
    }
    components: dict[str, Any] = {"schemas": schemas}
    if bearer_auth:
        components["securitySchemes"] = {
            oa.BEARER_SCHEME: {
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
