"""`cqrsctl run gateway`: the HTTP gateway (commands in, read models out) in the foreground.

Starlette, uvicorn and psycopg are imported inside the command, so `cqrsctl --help` stays
fast.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cqrsctl.console import UNAVAILABLE, fail, settings_or_fail
from cqrsctl.run_cmd import LOG_FORMAT_OPTION, configure_logs, run, tracer_or_fail
from processors.registry import UnknownContext, default_registry
from processors.settings import (
    ENV_GATEWAY_AUDIENCE,
    ENV_GATEWAY_AUTH,
    ENV_GATEWAY_ISSUER,
    ENV_GATEWAY_JWKS_FILE,
    ENV_GATEWAY_JWKS_URL,
    ENV_GATEWAY_POLICY,
    ENV_GATEWAY_RATE_LIMIT,
    ENV_GATEWAY_TLS_CERT,
    ENV_GATEWAY_TLS_KEY,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

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
    auth: str = typer.Option(
        "jwt",
        envvar=ENV_GATEWAY_AUTH,
        help="jwt: bearer tokens checked against the JWKS; none: every request is "
        "'anonymous' with every permission (only on a loopback --host).",
    ),
    jwks_url: str = typer.Option(
        None, envvar=ENV_GATEWAY_JWKS_URL, help="URL of the issuer's JWKS (fetched, cached)."
    ),
    jwks_file: Path = typer.Option(
        None, envvar=ENV_GATEWAY_JWKS_FILE, help="A JWKS file (instead of --jwks-url)."
    ),
    issuer: str = typer.Option(None, envvar=ENV_GATEWAY_ISSUER, help="Required `iss`."),
    audience: str = typer.Option(None, envvar=ENV_GATEWAY_AUDIENCE, help="Required `aud`."),
    leeway: float = typer.Option(30.0, min=0.0, help="Clock skew allowed on exp/nbf/iat (s)."),
    principal_claim: str = typer.Option("sub", help="The token claim that names the principal."),
    policy: Path = typer.Option(
        None,
        envvar=ENV_GATEWAY_POLICY,
        help="JSON policy: scopes/roles -> permissions (docs/security.md).",
    ),
    rate_limit: float = typer.Option(
        50.0,
        min=0.0,
        envvar=ENV_GATEWAY_RATE_LIMIT,
        help="Requests per second per principal (token bucket); 0 = no limit.",
    ),
    rate_burst: int = typer.Option(0, min=0, help="Bucket size; 0 = twice --rate-limit."),
    tls_cert: Path = typer.Option(
        None, envvar=ENV_GATEWAY_TLS_CERT, help="Serve HTTPS with this PEM certificate."
    ),
    tls_key: Path = typer.Option(
        None, envvar=ENV_GATEWAY_TLS_KEY, help="The certificate's PEM private key."
    ),
    print_openapi: bool = typer.Option(
        False, "--print-openapi", help="Print the OpenAPI document and exit."
    ),
    log_level: str = typer.Option("INFO"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """The HTTP gateway: POST /commands/{type}, GET /aggregates/..., GET /projections/...,
    OpenAPI at /openapi.json (docs/gateway.md)."""
    from producers.gateway.config import GatewayConfig

    configure_logs(log_level, log_format, context=context, role="gateway")
    spans = tracer_or_fail("gateway")
    _access_log_as_json_lines()
    try:
        default_registry().context(context)
    except UnknownContext as exc:
        fail(str(exc))
    if timeout > max_timeout:
        fail(f"--timeout {timeout:g} is above --max-timeout {max_timeout:g}")
    if auth not in ("jwt", "none"):
        fail(f"--auth must be jwt or none, got {auth!r}")
    if auth == "none" and not print_openapi and not _loopback(host):
        fail(
            f"--auth none serves every request with every permission, so it listens on "
            f"loopback only, not on {host!r}; use --auth jwt (docs/security.md)"
        )
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            fail(f"no such file: {path}")
    edge = {
        "auth": auth,
        "jwks_url": jwks_url,
        "jwks_file": str(jwks_file) if jwks_file else None,
        "issuer": issuer,
        "audience": audience,
        "leeway_s": leeway,
        "principal_claim": principal_claim,
        "policy_file": str(policy) if policy else None,
        "rate_limit": rate_limit,
        "rate_burst": rate_burst,
    }
    if print_openapi:
        _print_openapi(context, timeout, max_timeout, bearer_auth=auth == "jwt", rate=rate_limit)
        return
    _check_edge(GatewayConfig(kafka={}, query_dsn="", context=context, **edge))
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
        **edge,
    )
    tls = (str(tls_cert), str(tls_key)) if tls_cert and tls_key else None
    _serve(config, host, port, health_port, log_level, tls, spans)


def _access_log_as_json_lines() -> None:
    """The access log's lines are its JSON objects alone (stderr), for log shippers."""
    import sys

    from producers.gateway.access_log import access_log

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.propagate = False


def _print_openapi(
    context: str, timeout: float, max_timeout: float, *, bearer_auth: bool, rate: float
) -> None:
    """The document as a gateway with these options serves it; needs no token settings."""
    from producers.gateway.config import GatewayConfig
    from producers.gateway.openapi import build_openapi
    from schemas.catalog import default_catalog
    from sinks.read_model import projection_views

    ctx = default_registry().context(context)
    catalog = default_catalog()
    doc = build_openapi(
        ctx,
        catalog,
        projection_views(ctx, catalog),
        max_timeout_s=max_timeout,
        default_timeout_s=timeout,
        page_limit_max=GatewayConfig.page_limit_max,
        bearer_auth=bearer_auth,
        rate_limited=rate > 0,
    )
    typer.echo(json.dumps(doc, indent=2))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_edge(config: GatewayConfig) -> None:
    """Fail with one line now on a JWKS or policy that cannot work (unreadable, malformed,
    a symmetric key, missing --issuer/--audience/--policy)."""
    from producers.gateway.app import make_verifier
    from producers.gateway.auth import PolicyError

    try:
        make_verifier(config)
    except PolicyError as exc:
        fail(str(exc))


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


def _serve(
    config: GatewayConfig,
    host: str,
    port: int,
    health_port: int,
    log_level: str,
    tls: tuple[str, str] | None,
    spans: Tracer | None,
) -> None:
    import uvicorn
    from prometheus_client import REGISTRY

    from processors.health import serve_health
    from producers.gateway.app import create_app
    from producers.gateway.metrics import GatewayMetrics

    # One app per process here, so its metrics join the default registry (and with it the
    # process collector) that the health port's /metrics also serves.
    app = create_app(config, metrics=GatewayMetrics(REGISTRY), tracer=spans)
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
        # None: uvicorn's own loggers propagate to ours, so they follow --log-format.
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


def register(app: typer.Typer) -> None:
    """`run gateway` is registered on import (on the `run` group)."""
