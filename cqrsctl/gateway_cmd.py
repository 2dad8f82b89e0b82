"""`cqrsctl run gateway`: the HTTP gateway (commands in, read models out) in the foreground.

Starlette, uvicorn and psycopg are imported inside the command, so `cqrsctl --help` stays
fast.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import typer

from cqrsctl.console import UNAVAILABLE, fail, settings_or_fail
from cqrsctl.run_cmd import run
from processors.registry import UnknownContext, default_registry

if TYPE_CHECKING:
    from producers.gateway.config import GatewayConfig


@run.command("gateway")
def gateway(
    context: str = typer.Option("bank", help="Bounded context to serve."),
    prefix: str = typer.Option(None, help="Topic name prefix (default: the context name)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a pod)."),
    port: int = typer.Option(8080, min=0, max=65535, help="HTTP port."),
    schema: str = typer.Option(
        None, help="Postgres schema of the read models (default: the DSN's search_path)."
    ),
    query_dsn: str = typer.Option(
        None,
        help="Postgres DSN of the read-only query role. Default: the pipeline's DSN, with "
        "SET ROLE <schema>_reader on every connection.",
    ),
    db_role: str = typer.Option(
        None,
        help="SET ROLE on every query connection; '' = none. Default: <schema>_reader when "
        "--query-dsn is not given, none otherwise.",
    ),
    timeout: float = typer.Option(10.0, min=1.0, help="Default seconds a ?wait= request waits."),
    max_timeout: float = typer.Option(60.0, min=1.0, help="Largest ?timeout= a client may ask."),
    pool_size: int = typer.Option(8, min=1, help="Postgres connections for queries."),
    max_waiting: int = typer.Option(
        500, min=1, help="Requests that may wait for a result or read model at once."
    ),
    health_port: int = typer.Option(
        0, help="Also serve /healthz, /readyz and /metrics on this port; 0 = off."
    ),
    print_openapi: bool = typer.Option(
        False, "--print-openapi", help="Print the OpenAPI document and exit."
    ),
    log_level: str = typer.Option("INFO"),
) -> None:
    """The HTTP gateway: POST /commands/{type}, GET /aggregates/..., GET /projections/...,
    OpenAPI at /openapi.json (docs/gateway.md)."""
    from producers.gateway.config import GatewayConfig

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        default_registry().context(context)
    except UnknownContext as exc:
        fail(str(exc))
    if timeout > max_timeout:
        fail(f"--timeout {timeout:g} is above --max-timeout {max_timeout:g}")
    if print_openapi:
        from producers.gateway.app import create_app

        config = GatewayConfig(kafka={}, query_dsn="", context=context, topic_prefix=prefix)
        app = create_app(config)
        typer.echo(json.dumps(app.state.gateway.openapi, indent=2))
        return
    settings = settings_or_fail()
    dsn = query_dsn or settings.postgres_dsn
    schema = _resolve_schema(dsn, schema)
    if db_role is None:
        db_role = "" if query_dsn else f"{schema}_reader"
    _check_role(dsn, db_role)
    config = GatewayConfig(
        kafka=settings.kafka.client_config(),
        query_dsn=dsn,
        context=context,
        topic_prefix=prefix,
        schema=schema,
        db_role=db_role or None,
        default_timeout_s=timeout,
        max_timeout_s=max_timeout,
        pool_size=pool_size,
        max_waiting=max_waiting,
    )
    _serve(config, host, port, health_port, log_level)


def _resolve_schema(dsn: str, schema: str | None) -> str:
    import psycopg

    from sinks.db import resolve_schema

    try:
        return resolve_schema(dsn, schema)
    except psycopg.Error as exc:
        fail(f"postgres: {exc}".strip(), code=UNAVAILABLE)


def _check_role(dsn: str, role: str) -> None:
    """Fail with one line now rather than with a pool timeout later."""
    if not role:
        return
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    except psycopg.Error as exc:
        fail(
            f"postgres: cannot SET ROLE {role}: {str(exc).strip()} (the sink's migrations "
            "create <schema>_reader; or pass --query-dsn / --db-role)",
            code=UNAVAILABLE,
        )


def _serve(config: GatewayConfig, host: str, port: int, health_port: int, log_level: str) -> None:
    import uvicorn
    from prometheus_client import REGISTRY

    from processors.health import serve_health
    from producers.gateway.app import create_app
    from producers.gateway.metrics import GatewayMetrics

    # One app per process here, so its metrics join the default registry (and with it the
    # process collector) that the health port's /metrics also serves.
    app = create_app(config, metrics=GatewayMetrics(REGISTRY))
    gw = app.state.gateway
    if health_port:
        serve_health(
            health_port,
            alive=lambda: True,
            ready=lambda: gw.commands is not None and gw.read_model is not None,
            host=host,
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer) -> None:
    """`run gateway` is registered on import (on the `run` group)."""
