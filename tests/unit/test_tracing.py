"""The optional OpenTelemetry spans (processors/tracing.py): which OTEL_* variables switch
them on, their parents and attributes (recorded by the SDK's in-memory exporter), what the
command they start carries, and that with tracing off nothing of OpenTelemetry is imported."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from processors import tracing, wire
from processors.command_handler import ACCEPTED, REJECTED, CommandHandler
from schemas.wire import headers as ce
from tests.unit.test_command_handler import deposit, open_
from tests.unit.test_command_handler import handler as handler  # the fixture

REPO = Path(__file__).resolve().parents[2]
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
INCOMING = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider.get_tracer("test")
    provider.shutdown()


def traceparent_of(span) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ],
)
def test_the_standard_variables_switch_tracing_on(env: dict[str, str], expected: list[str]):
    assert tracing.exporters(env) == expected


def test_an_unsupported_exporter_is_a_clear_error():
    with pytest.raises(tracing.TracingError, match="unsupported exporter 'jaeger'"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_off_returns_no_tracer():
    assert tracing.tracer("processor", {}) is None
    assert tracing.tracer("processor", {"OTEL_SDK_DISABLED": "true"}) is None


def test_the_service_name_is_the_role_unless_otel_service_name_says_otherwise():
    on = {"OTEL_TRACES_EXPORTER": "console"}
    assert tracing.tracer("processor", on).resource.attributes["service.name"] == "processor"
    named = tracing.tracer("gateway", {**on, "OTEL_SERVICE_NAME": "bank-gw"})
    assert named.resource.attributes["service.name"] == "bank-gw"


def test_the_decide_span_is_a_child_of_the_commands_trace_and_its_records_carry_it(
    tracer, exported: InMemorySpanExporter, handler: CommandHandler
):
    handler.handle(open_("a"))
    spans = tracing.CommandSpans(tracer)
    traced, span = spans.start(deposit("a", 5, "c1"))
    assert traced.command_id == "c1"
    outcome = handler.handle(traced)
    spans.end(span, outcome)

    (recorded,) = exported.get_finished_spans()
    assert recorded.name == "decide bank.Deposit"
    assert recorded.kind == SpanKind.CONSUMER
    assert recorded.parent is None  # the message carried no traceparent: a new trace
    assert dict(recorded.attributes) == {
        "cqrs.command_id": "c1",
        "cqrs.command_type": "bank.Deposit",
        "cqrs.aggregate_id": "a",
        "cqrs.partition": traced.partition,
        "cqrs.internal": False,
        "cqrs.status": ACCEPTED,
        "cqrs.version": 2,
    }
    # What the command causes carries the span's own traceparent.
    assert traced.traceparent == traceparent_of(recorded)
    assert outcome.message.traceparent == traced.traceparent
    stamp = ce.Stamp("/bank/command-processor")
    for headers in (
        wire.event_headers(stamp, "bank.Deposited", outcome.message, 2, "bank"),
        wire.result_headers(stamp, outcome.message),
    ):
        assert dict(headers)[ce.TRACEPARENT] == traced.traceparent.encode()


def test_the_decide_span_is_parented_on_the_incoming_traceparent(
    tracer, exported: InMemorySpanExporter, handler: CommandHandler
):
    spans = tracing.CommandSpans(tracer)
    incoming = dataclasses.replace(deposit("nobody", 5, "c2"), traceparent=INCOMING)
    traced, span = spans.start(incoming)
    spans.end(span, handler.handle(traced))
    first = handler.handle(traced)  # the same command again: a duplicate
    spans.end(spans.start(traced)[1], first)

    rejected, duplicate = exported.get_finished_spans()
    for recorded in (rejected, duplicate):
        assert recorded.context.trace_id == int(TRACE, 16)
    assert rejected.parent.span_id == int(PARENT, 16)
    assert rejected.parent.is_remote
    assert rejected.attributes["cqrs.status"] == REJECTED
    assert rejected.attributes["cqrs.reason"] == "account_not_found"
    assert duplicate.attributes["cqrs.status"] == "DUPLICATE"
    assert traced.traceparent == traceparent_of(rejected)
    assert traced.traceparent[3:35] == TRACE


def test_the_gateway_request_span_is_parented_on_the_callers_traceparent(
    tracer, exported: InMemorySpanExporter
):
    span, own = tracing.start_request(tracer, "bank.Deposit", INCOMING)
    tracing.end_request(span, "accepted", "c1", "a")
    root, root_own = tracing.start_request(tracer, "bank.Deposit", None)
    tracing.end_request(root, "invalid", None, None)

    child, new_trace = exported.get_finished_spans()
    assert child.name == "POST /commands/{command_type}"
    assert child.kind == SpanKind.SERVER
    assert child.parent.span_id == int(PARENT, 16)
    assert child.context.trace_id == int(TRACE, 16)
    assert own == traceparent_of(child)
    assert dict(child.attributes) == {
        "http.request.method": "POST",
        "http.route": "/commands/{command_type}",
        "cqrs.command_type": "bank.Deposit",
        "cqrs.outcome": "accepted",
        "cqrs.command_id": "c1",
        "cqrs.aggregate_id": "a",
    }
    # Without a caller's trace the request starts one; its traceparent is a valid one.
    assert new_trace.parent is None
    assert ce.valid_traceparent(root_own) == root_own == traceparent_of(new_trace)
    assert "cqrs.command_id" not in new_trace.attributes


def test_with_no_otel_variables_nothing_of_opentelemetry_is_imported():
    """The workers' modules, and asking for a tracer, import no OpenTelemetry module."""
    code = (
        "import sys\n"
        "import cqrsctl.run_cmd, cqrsctl.gateway_cmd, processors.command_processor\n"
        "import producers.gateway.app, producers.gateway.routes\n"
        "from processors import tracing\n"
        "assert tracing.tracer('processor') is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_cli_refuses_an_unsupported_exporter_in_one_line():
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"}
    cqrsctl = Path(sys.executable).with_name("cqrsctl")
    done = subprocess.run(
        [str(cqrsctl), "run", "processor"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: OTEL_TRACES_EXPORTER: unsupported exporter 'zipkin' "
        "(supported: otlp, console, none)"
    ]
