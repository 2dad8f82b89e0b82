"""One W3C trace context followed from an HTTP request to Postgres: the gateway puts the
request's `traceparent` on the command, the processor onto its events, its result and the
saga's internal commands (and their events), the projector onto the projection records,
and the sink into `event_log.traceparent`. A request without one, or with an invalid one,
gets a fresh trace; neither is refused."""

from __future__ import annotations

import uuid

from psycopg import sql

from processors.topic_reader import read_topic
from schemas.wire import headers as ce
from tests.support.gateway_rig import GatewayRig, movement_body, open_account_body

TRACE = f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-01"


def _traces(kafka: dict, topic: str, correlation: str) -> set[str | None]:
    """The traceparent headers of `topic`'s records whose correlation id is `correlation`."""
    found = set()
    for msg in read_topic(kafka, topic):
        headers = ce.CloudEventHeaders.from_kafka(msg.headers(), ())
        if headers.correlation_id == correlation:
            found.add(headers.traceparent)
    return found


def test_a_requests_traceparent_reaches_every_record_and_the_event_log_row(
    gateway: GatewayRig,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, target, transfer = f"tr-a-{suffix}", f"tr-b-{suffix}", f"tr-t-{suffix}"
    pipeline, topics = gateway.pipeline, gateway.pipeline.bank.topics
    with gateway.http() as http:
        for account in (source, target):
            http.post(
                "/commands/bank.OpenAccount",
                params={"wait": "result"},
                json=open_account_body(account),
            ).raise_for_status()
        http.post(
            "/commands/bank.Deposit", params={"wait": "result"}, json=movement_body(source, 50)
        ).raise_for_status()
        requested = http.post(
            "/commands/bank.RequestTransfer",
            params={"wait": "result"},
            headers={"traceparent": TRACE, "Idempotency-Key": f"cmd-{transfer}"},
            json={
                "transfer_id": transfer,
                "from_account_id": source,
                "to_account_id": target,
                "amount": {"amount": 20, "currency": "EUR"},
            },
        )
        assert requested.status_code == 200, requested.text
        untraced = http.post(
            "/commands/bank.Deposit", params={"wait": "event_log"}, json=movement_body(target, 1)
        )
        invalid = http.post(
            "/commands/bank.Deposit",
            params={"wait": "event_log"},
            headers={"traceparent": "00-not-a-trace"},
            json=movement_body(target, 2),
        )
        assert (untraced.status_code, invalid.status_code) == (200, 200)
    pipeline.wait_caught_up()

    # The saga's every step is correlated with the request's command id.
    correlation = f"cmd-{transfer}"
    with pipeline.pg() as conn:
        rows = conn.execute(
            sql.SQL("SELECT type, traceparent FROM event_log WHERE correlation_id = %s"),
            (correlation,),
        ).fetchall()
        others = conn.execute(
            "SELECT causation_id, traceparent FROM event_log WHERE causation_id = ANY(%s)",
            ([untraced.json()["command_id"], invalid.json()["command_id"]],),
        ).fetchall()
    types = {t for t, _ in rows}
    # Requested, then debited (source's partition), then completed: three aggregates' events.
    assert {"bank.TransferRequested", "bank.TransferDebited", "bank.TransferCompleted"} <= types
    assert {"bank.Withdrawn", "bank.Deposited"} <= types
    assert {trace for _, trace in rows} == {TRACE}

    # Every record on the way carries it.
    assert _traces(pipeline.kafka, topics.events, correlation) == {TRACE}
    assert _traces(pipeline.kafka, topics.results, correlation) == {TRACE}
    assert _traces(pipeline.kafka, topics.internal_commands, correlation) == {TRACE}
    assert _traces(pipeline.kafka, topics.projection("event_log"), correlation) == {TRACE}
    assert _traces(pipeline.kafka, topics.projection("accounts"), correlation) <= {TRACE}

    # No traceparent, or an invalid one: a fresh valid trace each, never the invalid value.
    assert len(others) == 2
    fresh = {trace for _, trace in others}
    assert len(fresh) == 2 and all(ce.valid_traceparent(t) == t for t in fresh)
    assert TRACE not in fresh
