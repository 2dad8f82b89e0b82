"""The access log and the request metrics: one JSON object per request on the
`cqrs.gateway.access` logger, and (given the gateway's metrics) each request counted and
timed by method, route template and status.

Fields: `time`, `principal` (null when the request was not authenticated), `method`,
`path` (without the query string), `command_type` (for `POST /commands/...`), `status`,
`latency_ms`, `client`. Headers, query strings and bodies are never logged, so neither a
bearer token nor a password can reach the log through it. Routes put `principal` and
`command_type` into the request's state (`scope["state"]`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.gateway.metrics import GatewayMetrics

access_log = logging.getLogger("cqrs.gateway.access")


class AccessLogMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        logger: logging.Logger = access_log,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.app = app
        self.log = logger
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
        state = scope.setdefault("state", {})
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                self._measure(scope, status, elapsed)
            if self.log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                entry = {
                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                    "principal": state.get("principal"),
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "command_type": state.get("command_type"),
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    "client": client[0] if client else None,
                }
                self.log.info(json.dumps(entry, ensure_ascii=True))

    def _measure(self, scope: Scope, status: int, elapsed: float) -> None:
        assert self.metrics is not None
        self.metrics.in_flight.dec()
        template = getattr(scope.get("route"), "path", "unmatched")
        method = scope.get("method", "")
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.latency.labels(method, template).observe(elapsed)
