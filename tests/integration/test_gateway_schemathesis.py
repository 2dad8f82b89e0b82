"""Schemathesis against the gateway's generated OpenAPI document, with the whole pipeline
running: whatever it sends, valid or not, the gateway must never answer 5xx, and its
answers must match the document (status codes, content types, response schemas). The
gateway runs with `--auth jwt`; every request carries a token that grants every
permission (schemathesis's own auth check also sends requests without it, expecting 401).

Bounded: a few positive and negative examples per operation (about 20 operations), no
deadline per example. Each operation runs as its own Hypothesis test through
schemathesis's Python API (its pytest loader `from_fixture` does not run on pytest 9), and
all failures are reported together.
"""

from __future__ import annotations

import time
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.gateway_rig import GatewayRig

EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 5}


def test_no_request_makes_the_gateway_fail(secured_gateway: GatewayRig) -> None:
    gateway = secured_gateway
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", timeout=10)
    assert "bearer" in schema.raw_schema["components"]["securitySchemes"]
    token = gateway.token

    # Schemathesis's own auth hook, so a negative case that drops or mangles the
    # Authorization header keeps it that way (and expects 401).
    @schema.auth()
    class Bearer:
        def get(self, case: Case, context: object) -> str | None:
            return token

        def set(self, case: Case, data: str, context: object) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for found in schema.get_all_operations():
        operation = found.ok()
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Case) -> None:
                # A schema-valid command may still break a business rule: that is the
                # documented 422 with the processor's reason, not a schema mismatch.
                excluded = [positive_data_acceptance] if case.method.upper() == "POST" else []
                response = case.call_and_validate(excluded_checks=excluded, timeout=60)
                statuses[(case.method.upper(), response.status_code)] += 1

            try:
                run()
            except Unsatisfiable:
                # No invalid request exists for it (e.g. GET /healthz takes no input).
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # all reported together below
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {sum(statuses.values())} requests in {elapsed:.0f} s;")
    print("statuses:", dict(sorted(statuses.items())))
    assert not failures, "\n\n".join(failures)
    # The run reached the pipeline, not only the validators: the processor accepted some
    # commands, some were refused at the door, and reads found rows.
    assert statuses[("POST", 200)] + statuses[("POST", 202)] > 0
    assert statuses[("POST", 422)] > 0
    assert statuses[("GET", 200)] > 0
    assert not any(status >= 500 for _, status in statuses)
