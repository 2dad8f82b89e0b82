"""Building blocks of the gateway's OpenAPI document (producers/gateway/openapi.py): the
schemas that do not depend on a context, and the small constructors of parameters,
responses and guarded operations."""

from __future__ import annotations

from typing import Any

from schemas.validation import INT_RANGE, LONG_RANGE
from sinks.read_model import Column

BEARER_SCHEME = "bearer"
NO_NUL_PATTERN = "^[^\\u0000]*$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_content(ref("Error"), description)


def problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
    if headers:
        out["headers"] = headers
    return out


def guard(
    operation: dict[str, Any], permission: str, *, bearer_auth: bool, rate_limited: bool
) -> dict[str, Any]:
    """An operation that needs `permission`: with bearer auth, its security requirement and
    its 401 and 403 answers; with a rate limit, its 429."""
    responses = dict(operation["responses"])
    if bearer_auth:
        operation["security"] = [{BEARER_SCHEME: []}]
        operation["description"] = f"Needs the permission `{permission}`."
        responses["401"] = problem(
            "No bearer token, or one that is expired, not for this audience, from another "
            "issuer or badly signed.",
            {"WWW-Authenticate": {"schema": {"type": "string"}}},
        )
        responses["403"] = problem(f"The token does not grant `{permission}`.")
    if rate_limited:
        responses["429"] = problem(
            "The principal is over its request rate.",
            {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}},
        )
    operation["responses"] = responses
    return operation


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL_PATTERN},
        "description": description,
    }


def integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def column_schema(column: Column) -> dict[str, Any]:
    if column.kind == "long":
        return {**integer(*LONG_RANGE), "format": "int64"}
    if column.kind == "int":
        return {**integer(*INT_RANGE), "format": "int32"}
    if column.kind == "boolean":
        return {"type": "boolean"}
    if column.kind == "date":
        return {"type": "string", "format": "date"}
    if column.kind == "timestamp":
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


def filter_schema(column: Column) -> dict[str, Any]:
    schema = column_schema(column)
    if column.kind == "string":
        schema["pattern"] = NO_NUL_PATTERN  # the gateway answers 400 to a NUL in a value
    return schema


def key_param(key: Column) -> dict[str, Any]:
    schema = column_schema(key)
    if key.kind == "string":
        schema["minLength"] = 1
        schema["pattern"] = NO_NUL_PATTERN
    return {"name": key.name, "in": "path", "required": True, "schema": schema}


def operation(op_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "tags": ["operations"],
            "summary": summary,
            "responses": responses,
        }
    }


BASE_SCHEMAS: dict[str, Any] = {
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
    "ReadModelTimeout": {
        "type": "object",
        "required": ["error", "message", "result"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": ["string", "null"]},
            "result": ref("CommandResult"),
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
    },
}

EVENT_PAGE: dict[str, Any] = {
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
