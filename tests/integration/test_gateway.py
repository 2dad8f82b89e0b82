"""The HTTP gateway against the real pipeline: broker, processor, projector, sink and
Postgres as real processes, the gateway as `cqrsctl run gateway`, httpx as the client."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from deploy.local.state import StackState
from processors.topic_admin import create_topics
from processors.topics import ContextTopics, TopicSpec
from producers.gateway.app import create_app
from producers.gateway.config import GatewayConfig
from tests.support.gateway_rig import GatewayRig, movement_body, open_account_body, start_gateway
from tests.support.read_side import ReadSideRig
from tests.support.write_side import read_events


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_command_then_read_your_writes_round_trip(gateway: GatewayRig) -> None:
    account = _id("acct")
    with gateway.http() as http:
        opened = http.post(
            "/commands/bank.OpenAccount", params={"wait": "result"}, json=open_account_body(account)
        )
        assert opened.status_code == 200, opened.text
        body = opened.json()
        assert body["status"] == "ACCEPTED" and body["version"] == 1
        assert body["aggregate_id"] == account
        (position,) = body["events"]
        assert position["topic"] == f"{gateway.pipeline.prefix}.events"

        deposited = http.post(
            "/commands/bank.Deposit",
            params={"wait": "accounts"},
            json=movement_body(account, 1250),
        )
        assert deposited.status_code == 200, deposited.text
        assert deposited.json()["version"] == 2
        # No sleep, no retry: the wait returned only once the read model had the deposit.
        row = http.get(f"/projections/accounts/{account}")
        assert row.status_code == 200, row.text
        assert row.json()["balance"] == 1250
        assert row.json()["version"] == 2
        assert row.json()["owner"] == "Ada"

        queued = http.post("/commands/bank.Deposit", json=movement_body(account, 5))
        assert queued.status_code == 202, queued.text
        assert queued.json()["aggregate_id"] == account
        assert queued.json()["command_id"]


def test_conflict_is_409_and_a_business_rejection_is_422_with_its_reason(
    gateway: GatewayRig,
) -> None:
    account = _id("acct")
    with gateway.http() as http:
        ok = http.post(
            "/commands/bank.OpenAccount", params={"wait": "result"}, json=open_account_body(account)
        )
        assert ok.status_code == 200
        stale = http.post(
            "/commands/bank.Deposit",
            params={"wait": "result", "expected_version": "0"},
            json=movement_body(account, 10),
        )
        assert stale.status_code == 409, stale.text
        assert stale.json()["status"] == "CONFLICT"
        assert stale.json()["version"] == 1  # unchanged
        current = http.post(
            "/commands/bank.Deposit",
            params={"wait": "result", "expected_version": "1"},
            json=movement_body(account, 10),
        )
        assert current.status_code == 200, current.text
        overdraw = http.post(
            "/commands/bank.Withdraw", params={"wait": "result"}, json=movement_body(account, 11)
        )
        assert overdraw.status_code == 422, overdraw.text
        assert overdraw.json()["status"] == "REJECTED"
        assert overdraw.json()["reason"] == "insufficient_funds"
        assert overdraw.json()["version"] == 2


def test_bad_requests_are_4xx_naming_what_was_wrong(gateway: GatewayRig) -> None:
    account = _id("acct")
    with gateway.http() as http:
        wrong_type = http.post(
            "/commands/bank.Deposit",
            json={"account_id": account, "amount": {"amount": "12", "currency": "EUR"}},
        )
        assert wrong_type.status_code == 422
        assert wrong_type.json()["error"] == "invalid_command"
        assert wrong_type.json()["field"] == "amount.amount"
        extra = http.post("/commands/bank.CloseAccount", json={"account_id": account, "x": 1})
        assert (extra.status_code, extra.json()["field"]) == (422, "x")
        missing = http.post("/commands/bank.OpenAccount", json={"account_id": account})
        assert (missing.status_code, missing.json()["field"]) == (422, "owner")
        too_big = http.post(
            "/commands/bank.Deposit", json=movement_body(account, 2**63)
        )  # one above int64
        assert (too_big.status_code, too_big.json()["field"]) == (422, "amount.amount")
        unknown = http.post("/commands/bank.Rob", json={"account_id": account})
        assert unknown.status_code == 404
        assert "bank.Deposit" in unknown.json()["message"]
        malformed = http.post(
            "/commands/bank.CloseAccount",
            content=b'{"account_id": ',
            headers={"content-type": "application/json"},
        )
        assert (malformed.status_code, malformed.json()["error"]) == (400, "malformed_json")
        nan = http.post(
            "/commands/bank.Deposit",
            content=b'{"account_id": "a", "amount": {"amount": NaN, "currency": "EUR"}}',
        )
        assert nan.status_code == 400
        not_json = http.post(
            "/commands/bank.CloseAccount", content=b"x", headers={"content-type": "text/plain"}
        )
        assert not_json.status_code == 415
        bad_wait = http.post(
            "/commands/bank.CloseAccount", params={"wait": "nope"}, json={"account_id": account}
        )
        assert (bad_wait.status_code, bad_wait.json()["field"]) == (400, "wait")
        bad_key = http.post(
            "/commands/bank.CloseAccount",
            json={"account_id": account},
            headers={"Idempotency-Key": "k" * 1025},  # over the id limit
        )
        assert bad_key.status_code == 400
        unknown_param = http.get("/projections/accounts", params={"balanse": "1"})
        assert (unknown_param.status_code, unknown_param.json()["field"]) == (400, "balanse")
        bad_int = http.get("/projections/accounts", params={"balance": "1e3"})
        assert (bad_int.status_code, bad_int.json()["field"]) == (400, "balance")
        assert http.get("/projections/nope").status_code == 404
        assert http.get("/aggregates/bank.Nope/x").status_code == 404
        assert http.get("/commands/bank.Deposit").status_code == 405
        # An internal command type is not offered, whatever the Idempotency-Key says.
        forged = http.post(
            "/commands/bank.FailTransfer",
            json={"transfer_id": "t-x", "reason": "forged", "compensated": True},
            headers={"Idempotency-Key": "pm:transfer:t-x:fail"},
        )
        assert (forged.status_code, forged.json()["error"]) == (404, "unknown_command_type")
        assert "bank.FailTransfer" not in forged.json()["message"].partition("known:")[2]
        # No command above reached Kafka: the only events are none at all.
    assert read_events(gateway.pipeline.kafka, f"{gateway.pipeline.prefix}.events") == []


def test_an_idempotency_key_makes_a_retry_return_the_first_result(gateway: GatewayRig) -> None:
    account = _id("acct")
    key = _id("key")
    with gateway.http() as http:
        http.post(
            "/commands/bank.OpenAccount", params={"wait": "result"}, json=open_account_body(account)
        ).raise_for_status()
        first = http.post(
            "/commands/bank.Deposit",
            params={"wait": "accounts"},
            json=movement_body(account, 700),
            headers={"Idempotency-Key": key},
        )
        assert first.status_code == 200, first.text
        again = http.post(
            "/commands/bank.Deposit",
            params={"wait": "accounts"},
            json=movement_body(account, 700),
            headers={"Idempotency-Key": key},
        )
        assert again.status_code == 200, again.text
        assert again.json()["command_id"] == key
        assert again.json()["version"] == first.json()["version"] == 2
        assert again.json()["events"] == first.json()["events"]
        queued = http.post(
            "/commands/bank.Deposit",
            json=movement_body(account, 700),
            headers={"Idempotency-Key": key},
        )
        assert (queued.status_code, queued.json()["command_id"]) == (202, key)
        # The third copy is processed (a duplicate) before the next command of the account.
        http.post(
            "/commands/bank.Withdraw", params={"wait": "accounts"}, json=movement_body(account, 1)
        ).raise_for_status()
        assert http.get(f"/projections/accounts/{account}").json()["balance"] == 699
    events = read_events(gateway.pipeline.kafka, f"{gateway.pipeline.prefix}.events")
    per_command = Counter(e.causation_id for e in events if e.aggregate_id == account)
    assert per_command[key] == 1
    assert [e.type for e in events if e.aggregate_id == account] == [
        "bank.AccountOpened",
        "bank.Deposited",
        "bank.Withdrawn",
    ]


def test_aggregate_state_history_and_event_pages(gateway: GatewayRig) -> None:
    account = _id("acct/with/slashes")  # ids travel percent-encoded in the path
    path = f"/aggregates/bank.Account/{account.replace('/', '%2F')}"
    times = []
    with gateway.http() as http:
        http.post(
            "/commands/bank.OpenAccount",
            params={"wait": "event_log"},
            json=open_account_body(account),
        ).raise_for_status()
        for amount in (100, 20, 3):
            done = http.post(
                "/commands/bank.Deposit",
                params={"wait": "event_log"},
                json=movement_body(account, amount),
            )
            done.raise_for_status()
            times.append(dt.datetime.fromisoformat(done.json()["processed_at"]))
        now = http.get(path)
        assert now.status_code == 200, now.text
        assert now.json()["version"] == 4
        assert now.json()["state"] == {
            "account_id": account,
            "owner": "Ada",
            "currency": "EUR",
            "balance": 123,
            "status": "OPEN",
            "version": 4,
        }
        assert now.headers["etag"] == '"4"'
        at_two = http.get(path, params={"version": "2"}).json()
        assert (at_two["version"], at_two["state"]["balance"]) == (2, 100)
        # Between the second and third deposit (event time <= as_of).
        between = times[1] + (times[2] - times[1]) / 2
        as_of = http.get(path, params={"as_of": between.isoformat().replace("+00:00", "Z")})
        assert as_of.status_code == 200, as_of.text
        assert as_of.json()["state"]["balance"] == 120
        assert http.get(path, params={"version": "5"}).status_code == 404
        assert http.get(path, params={"as_of": "2000-01-01T00:00:00Z"}).status_code == 404
        both = http.get(path, params={"version": "3", "as_of": between.isoformat()})
        assert (both.json()["version"], both.json()["state"]["balance"]) == (3, 120)
        earlier = http.get(path, params={"version": "2", "as_of": between.isoformat()})
        assert (earlier.json()["version"], earlier.json()["state"]["balance"]) == (2, 100)
        assert http.get("/aggregates/bank.Account/no-such-account").status_code == 404

        page1 = http.get(f"{path}/events", params={"limit": "3"}).json()
        assert [e["version"] for e in page1["events"]] == [1, 2, 3]
        assert page1["next_after_version"] == 3
        assert page1["events"][1]["type"] == "bank.Deposited"
        assert page1["events"][1]["data"]["amount"] == {"amount": 100, "currency": "EUR"}
        page2 = http.get(f"{path}/events", params={"after_version": "3", "limit": "3"}).json()
        assert [e["version"] for e in page2["events"]] == [4]
        assert page2["next_after_version"] is None
        assert http.get("/aggregates/bank.Account/nobody/events").status_code == 404


def test_projection_lists_filter_on_whitelisted_columns_only(gateway: GatewayRig) -> None:
    owner = _id("owner")
    mine = sorted(_id("acct") for _ in range(3))
    with gateway.http() as http:
        for account in mine:
            http.post(
                "/commands/bank.OpenAccount",
                params={"wait": "accounts"},
                json=open_account_body(account, owner=owner),
            ).raise_for_status()
        http.post(
            "/commands/bank.OpenAccount",
            params={"wait": "accounts"},
            json=open_account_body(_id("acct"), owner="someone else"),
        ).raise_for_status()
        listed = http.get("/projections/accounts", params={"owner": owner}).json()
        assert [r["account_id"] for r in listed["rows"]] == mine
        page = http.get("/projections/accounts", params={"owner": owner, "limit": 2, "offset": 2})
        assert [r["account_id"] for r in page.json()["rows"]] == mine[2:]
        both = http.get("/projections/accounts", params={"owner": owner, "account_id": mine[1]})
        assert [r["account_id"] for r in both.json()["rows"]] == [mine[1]]
        # A quote in a value is data, never SQL.
        injected = http.get("/projections/accounts", params={"owner": "x' OR '1'='1"})
        assert injected.json()["rows"] == []
        http.post(
            "/commands/bank.Deposit",
            params={"wait": "daily_totals"},
            json=movement_body(mine[0], 9),
        ).raise_for_status()
        totals = http.get("/projections/daily_totals", params={"currency": "EUR"}).json()["rows"]
        assert [(r["currency"], r["deposits"], r["count"]) for r in totals] == [("EUR", 9, 1)]
        dated = http.get("/projections/daily_totals", params={"day": totals[0]["day"]})
        assert dated.json()["rows"] == totals
        assert http.get("/projections/daily_totals", params={"day": "May 1"}).status_code == 400
        assert http.get("/projections/daily_totals/EUR").status_code == 404  # composite key


def test_queries_run_as_the_read_only_role(gateway: GatewayRig, stack: StackState) -> None:
    with gateway.http() as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/projections/accounts").status_code == 200
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        users = {
            r[0]
            for r in admin.execute(
                "SELECT usename FROM pg_stat_activity WHERE application_name = 'cqrs-gateway'"
            )
        }
        assert users == {gateway.query_role}
        may_write = admin.execute(
            "SELECT has_table_privilege(%s, %s, 'INSERT')",
            (gateway.query_role, f"{gateway.pipeline.schema}.accounts"),
        ).fetchone()
        assert may_write == (False,)


def test_metrics_count_requests_by_route_and_status(gateway: GatewayRig) -> None:
    with gateway.http() as http:
        http.get("/projections/accounts").raise_for_status()
        http.get("/projections/nope")
        text = http.get("/metrics").text
    assert (
        'gateway_http_requests_total{method="GET",route="/projections/{rest:path}",status="200"}'
        in text
    )
    assert 'status="404"' in text


# Gauges of work in progress: zero whenever the gateway is idle, as it is between requests.
IDLE_ZERO = {"gateway_http_requests_in_flight", "gateway_commands_in_flight"}


def test_every_gateway_metric_the_dashboard_reads_moves_with_a_small_workload(
    gateway: GatewayRig,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from deploy.k8s.render_dashboard import queries
    from tests.unit.promql import metric_names

    account = _id("dash")
    with gateway.http() as http:
        opened = http.post(
            "/commands/bank.OpenAccount", params={"wait": "result"}, json=open_account_body(account)
        )
        assert opened.status_code == 200, opened.text
        waited = http.post(
            "/commands/bank.Deposit", params={"wait": "accounts"}, json=movement_body(account, 7)
        )
        assert waited.status_code == 200, waited.text
        text = http.get("/metrics").text
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    wanted = {n for e in queries() for n in metric_names(e) if n.startswith("gateway_")}
    assert {"gateway_command_result_seconds_bucket", "gateway_commands_total"} <= wanted
    assert wanted <= set(totals), wanted - set(totals)
    assert not {n for n in wanted - IDLE_ZERO if totals[n] <= 0}
    # Both ?wait requests measured send -> result, per command type.
    result_counts = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_command_result_seconds_count"
    ]
    assert {s.labels["type"]: s.value for s in result_counts} == {
        "bank.OpenAccount": 1,
        "bank.Deposit": 1,
    }


@pytest.fixture
def gateway_without_processor(
    read_side: ReadSideRig, pg_dsn_for_schema: str
) -> tuple[ReadSideRig, str]:
    _, url = start_gateway(read_side, pg_dsn_for_schema, db_role="")
    return read_side, url


def test_no_result_in_time_is_504_and_nothing_else(
    gateway_without_processor: tuple[ReadSideRig, str],
) -> None:
    _, url = gateway_without_processor
    with httpx.Client(base_url=url, timeout=30) as http:
        late = http.post(
            "/commands/bank.OpenAccount",
            params={"wait": "result", "timeout": "1"},
            json=open_account_body(_id("acct")),
        )
        assert late.status_code == 504, late.text
        assert late.json()["error"] == "result_timeout"
        # Without ?wait the broker's acknowledgement is enough.
        queued = http.post("/commands/bank.OpenAccount", json=open_account_body(_id("acct")))
        assert queued.status_code == 202


def test_a_command_kafka_does_not_take_is_503_once_its_delivery_report_says_so(
    kafka_config: dict[str, Any], ctx_name: str, stack: StackState, pg_schema: str
) -> None:
    # Results can be read, but the commands topic does not exist (and the local broker
    # creates none): the command expires in the producer's queue after 2 s, and the
    # client's delivery report (by command id) answers the request, not the 7 s backstop.
    create_topics(kafka_config, [TopicSpec(ContextTopics(ctx_name).results, 6)])
    config = GatewayConfig(
        kafka=kafka_config,
        query_dsn=stack.postgres_dsn,
        topic_prefix=ctx_name,
        schema=pg_schema,
        delivery_timeout_s=2.0,
    )
    with TestClient(create_app(config)) as http:
        started = time.monotonic()
        refused = http.post("/commands/bank.Deposit", json=movement_body("a1", 5))
        took = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "unavailable"
    assert took < 2.0 + 5, took
