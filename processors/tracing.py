"""Optional OpenTelemetry spans, off by default, switched on by the standard OTEL_* variables.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`, or both, comma-separated)
or, with it unset, when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
is set; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off. When off,
`tracer` returns None and the OpenTelemetry packages (the `otel` extra) are never imported.
When on, spans go through a BatchSpanProcessor to the OTLP/HTTP exporter (which reads its
own `OTEL_EXPORTER_OTLP_*` settings) or to stdout; the service name is `OTEL_SERVICE_NAME`,
else the worker's role; the sampler is the SDK's (`OTEL_TRACES_SAMPLER`, parent-based).

Spans (docs/operations.md): the gateway's `POST /commands/{command_type}` and the command
processor's `decide <command type>`, each a child of the `traceparent` it received; what
they cause carries their own `traceparent`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from processors.command_handler import CommandMessage, Decided, Duplicate

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanKind, Tracer

EXPORTERS = ("otlp", "console")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
INSTRUMENTATION = "kafka-cqrs"


class TracingError(ValueError):
    """The OTEL_* variables ask for something this module cannot do (one line)."""


def exporters(env: Mapping[str, str] | None = None) -> list[str]:
    """The exporters the variables ask for; empty when tracing is off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        return ["otlp"] if any(env.get(name, "").strip() for name in _ENDPOINTS) else []
    names = [n.strip() for n in named.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} "
            f"(supported: {', '.join(EXPORTERS)}, none)"
        )
    return names


def tracer(role: str, env: Mapping[str, str] | None = None) -> Tracer | None:
    """This worker's tracer, or None when tracing is off. TracingError when it is asked for
    but the variables are wrong or the `otel` extra is not installed."""
    env = os.environ if env is None else env
    names = exporters(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise TracingError(
            f"OTEL_* variables ask for traces, but OpenTelemetry is not installed ({exc.name}): "
            "install the `otel` extra"
        ) from None
    service = env.get("OTEL_SERVICE_NAME", "").strip() or role
    # The provider shuts down (and flushes its batches) at interpreter exit.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider.get_tracer(INSTRUMENTATION)


def start_span(
    tracer: Tracer,
    name: str,
    parent: str | None,
    kind: SpanKind,
    attributes: dict[str, Any],
) -> tuple[Span, str]:
    """A span that is a child of the W3C `parent` traceparent (a new trace's root without
    one), and its own traceparent, for what it causes to carry."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = (
        TraceContextTextMapPropagator().extract({"traceparent": parent})
        if parent is not None
        else None
    )
    span = tracer.start_span(name, context=context, kind=kind, attributes=attributes)
    own = span.get_span_context()
    return span, f"00-{own.trace_id:032x}-{own.span_id:016x}-{own.trace_flags:02x}"


# -- the gateway -----------------------------------------------------------------------------


def start_request(tracer: Tracer, command_type: str, parent: str | None) -> tuple[Span, str]:
    """The gateway's span of one `POST /commands/{command_type}`."""
    from opentelemetry.trace import SpanKind

    route = "/commands/{command_type}"
    attributes = {
        "http.request.method": "POST",
        "http.route": route,
        "cqrs.command_type": command_type,
    }
    return start_span(tracer, f"POST {route}", parent, SpanKind.SERVER, attributes)


def end_request(span: Span, outcome: str, command_id: str | None, aggregate_id: str | None) -> None:
    """`outcome`: the gateway's commands metric label (`accepted`, `queued`, `timeout`...)."""
    span.set_attribute("cqrs.outcome", outcome)
    if command_id is not None:
        span.set_attribute("cqrs.command_id", command_id)
    if aggregate_id is not None:
        span.set_attribute("cqrs.aggregate_id", aggregate_id)
    span.end()


# -- the command processor -------------------------------------------------------------------


class CommandSpans:
    """The processor's `decide <command type>` span of each command: from the decision to
    its records being produced. The command's events, result and process-manager commands
    carry this span's traceparent (`start` returns the command with it)."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracer
        self._kind = SpanKind.CONSUMER

    def start(self, msg: CommandMessage) -> tuple[CommandMessage, Span]:
        attributes = {
            "cqrs.command_id": msg.command_id,
            "cqrs.command_type": msg.command_type,
            "cqrs.aggregate_id": msg.key,
            "cqrs.partition": msg.partition,
            "cqrs.internal": msg.internal,
        }
        name = f"decide {msg.command_type}"
        span, own = start_span(self._tracer, name, msg.traceparent, self._kind, attributes)
        return dataclasses.replace(msg, traceparent=own), span

    @staticmethod
    def end(span: Span, outcome: Decided | Duplicate) -> None:
        if isinstance(outcome, Duplicate):
            span.set_attribute("cqrs.status", "DUPLICATE")
        else:
            span.set_attribute("cqrs.status", outcome.status)
            span.set_attribute("cqrs.version", outcome.version)
            if outcome.reason:
                span.set_attribute("cqrs.reason", outcome.reason)
        span.end()
