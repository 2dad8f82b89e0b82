"""The gateway's ASGI app (Starlette): what the routes share, and how a request reaches one.

Client input never causes a 5xx: every way a request can be wrong maps to a 4xx naming
what was wrong; 503 and 504 say that Kafka or Postgres did not do their part in time.

Requests to commands, aggregates and projections are authenticated (producers/gateway/
auth.py), rate-limited per principal and authorised per command type or read model; the
operations endpoints (health, metrics, OpenAPI) are open. 401, 403 and 429 answer with an
RFC 9457 problem body (producers/gateway/responses.py). Routes are in routes.py, request
parsing in params.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
from producers.gateway.commands import CommandGateway, Unavailable
from producers.gateway.config import GatewayConfig
from producers.gateway.metrics import GatewayMetrics
from producers.gateway.openapi import OPENAPI_PATH, build_openapi
from producers.gateway.params import path_segments
from producers.gateway.ratelimit import RateLimiter
from producers.gateway.responses import (
    UNAVAILABLE_MESSAGE,
    ClientError,
    error_response,
    http_exception,
    problem_response,
    server_error,
)
from producers.gateway.routes import (
    get_aggregate,
    get_metrics,
    get_openapi,
    get_projection,
    healthz,
    post_command,
    readyz,
)
from schemas.catalog import Catalog, default_catalog
from sinks.queries import IncompleteHistory
from sinks.read_model import ProjectionView, ReadModel, projection_views

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("cqrs.gateway")


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
    # A span per command request (processors/tracing.py); None: tracing is off.
    tracer: Tracer | None = None

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
    tracer: Tracer | None = None,
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
        tracer=tracer,
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
        return f"command:{path_segments(request, 'commands')[0]}"

    def projection_permission(request: Request) -> str:
        return f"read:{path_segments(request, 'projections')[0]}"

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
    app.add_middleware(AccessLogMiddleware, metrics=gw.metrics)
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
