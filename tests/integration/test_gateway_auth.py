"""The gateway's trust boundary against the real pipeline (broker, processor, projector,
sink, Postgres as processes; the gateway as `cqrsctl run gateway --auth jwt`): 401 for
every kind of bad token, 403 for a missing permission on a command and on a read model,
429 under a burst, the principal on the produced command, a JWKS from a file and from a
URL, TLS served by the gateway, and an access log without tokens."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from deploy.local.state import StackState
from processors.topic_reader import read_topic
from schemas.wire import headers as ce
from tests.support.gateway_rig import (
    GatewayRig,
    movement_body,
    open_account_body,
    start_secured_gateway,
)
from tests.support.read_side import ReadSideRig
from tests.support.tokens import SigningKey, jwks, self_signed_cert
from tests.support.write_side import read_events

PROBLEM = "application/problem+json"


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _commands_on_topic(rig: ReadSideRig) -> dict[str, dict[str, str]]:
    """Every command on `<prefix>.commands`: its headers by command id."""
    out = {}
    for msg in read_topic(rig.kafka, f"{rig.prefix}.commands"):
        headers = {k: v.decode() for k, v in msg.headers() or () if v is not None}
        out[headers[ce.ID]] = headers
    return out


def _assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["detail"] == body["message"]
    for word in words:
        assert word in body["detail"], body
    # Nothing internal: no stack, no driver or host text.
    assert "Traceback" not in response.text and "127.0.0.1" not in response.text
    return body


def test_tokens_permissions_principal_rate_limit_and_access_log(
    pipeline: ReadSideRig, query_role: tuple[str, str], tmp_path: Path
) -> None:
    _, dsn = query_role
    worker, url, key = start_secured_gateway(
        pipeline, dsn, tmp_path, "--rate-limit", "1", "--rate-burst", "10"
    )
    teller = key.token("teller-tom", roles=["teller"])
    used_tokens = [teller]
    account = _id("acct")
    with httpx.Client(base_url=url, timeout=60) as http:
        # -- 401: no token, expired, another audience, another key's signature ---------------
        body = open_account_body(account)
        none = http.post("/commands/bank.OpenAccount", json=body)
        problem = _assert_problem(none, 401, "no bearer token")
        assert problem["missing"] == "a valid bearer token"
        assert none.headers["www-authenticate"] == 'Bearer realm="bank"'
        _assert_problem(http.get("/projections/accounts"), 401)
        forger = SigningKey.new("gw-key-1")  # the right key id, the wrong private key
        bad_tokens = {
            "expired": key.token("teller-tom", roles=["teller"], expires_in=-300),
            "audience": key.token("teller-tom", roles=["teller"], aud="another-api"),
            "signature": forger.token("teller-tom", roles=["admin"]),
            "issuer": key.token("teller-tom", roles=["teller"], iss="https://evil.test/"),
        }
        used_tokens += bad_tokens.values()
        for word, token in bad_tokens.items():
            refused = http.post(
                "/commands/bank.OpenAccount",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            _assert_problem(refused, 401, word)
            challenge = refused.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="bank", error="invalid_token"'), challenge
        # -- 403: a command and read models the teller's role does not grant ----------------
        auth = {"Authorization": f"Bearer {teller}"}
        withdraw = http.post(
            "/commands/bank.Withdraw", json=movement_body(account, 1), headers=auth
        )
        problem = _assert_problem(withdraw, 403, "teller-tom", "command:bank.Withdraw")
        assert problem["missing"] == "command:bank.Withdraw"
        daily = http.get("/projections/daily_totals", headers=auth)
        assert _assert_problem(daily, 403)["missing"] == "read:daily_totals"
        history = http.get(f"/aggregates/bank.Account/{account}", headers=auth)
        assert _assert_problem(history, 403)["missing"] == "read:event_log"
        # -- what the role grants goes through, and the command names its principal ---------
        opened = http.post(
            "/commands/bank.OpenAccount", params={"wait": "result"}, json=body, headers=auth
        )
        assert opened.status_code == 200, opened.text
        assert opened.json()["status"] == "ACCEPTED"
        row = http.get(f"/projections/accounts/{account}", headers=auth)
        assert row.status_code in (200, 404), row.text  # allowed; the sink may lag
        assert http.get("/healthz").status_code == 200  # operations need no token
        assert http.get("/openapi.json").json()["components"]["securitySchemes"]["bearer"]
        # -- 429: one principal's burst is cut; another principal is not ------------------
        auditor = key.token("burst-bob", roles=["auditor"])
        used_tokens.append(auditor)
        started = time.monotonic()
        burst = [
            http.get(
                "/projections/accounts",
                params={"limit": "1"},
                headers={"Authorization": f"Bearer {auditor}"},
            )
            for _ in range(30)
        ]
        elapsed = time.monotonic() - started
        statuses = [r.status_code for r in burst]
        assert statuses[:5] == [200] * 5, statuses
        limited = [r for r in burst if r.status_code == 429]
        assert limited, statuses
        # Never more than the bucket plus its refill at 1/s.
        assert statuses.count(200) <= 10 + int(elapsed) + 1, (statuses, elapsed)
        _assert_problem(limited[0], 429, "burst-bob")
        assert int(limited[0].headers["retry-after"]) >= 1
        assert http.get(f"/projections/accounts/{account}", headers=auth).status_code != 429

    commands = _commands_on_topic(pipeline)
    command_id = opened.json()["command_id"]
    assert commands[command_id][ce.PRINCIPAL] == "teller-tom"
    # ... and so do the events it caused (the processor carries it over).
    events = read_events(pipeline.kafka, f"{pipeline.prefix}.events")
    assert [(e.type, e.causation_id, e.principal) for e in events if e.aggregate_id == account] == [
        ("bank.AccountOpened", command_id, "teller-tom")
    ]
    # None of the refused requests became a command.
    assert [h[ce.SUBJECT] for h in commands.values()] == [account]

    worker.stop()
    log = worker.log_path.read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(
        e["principal"] == "teller-tom"
        and e["command_type"] == "bank.OpenAccount"
        and e["status"] == 200
        and e["latency_ms"] > 0
        for e in entries
    ), entries
    assert any(e["status"] == 401 and e["principal"] is None for e in entries)
    assert any(e["status"] == 429 and e["principal"] == "burst-bob" for e in entries)
    for token in used_tokens:
        assert token not in log
        assert token.split(".")[2] not in log  # not even the signature alone
    assert "Bearer" not in log


class _JwksServer:
    """A JWKS endpoint on 127.0.0.1 that counts its fetches."""

    def __init__(self, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


@contextmanager
def serving(document: dict[str, Any]) -> Iterator[_JwksServer]:
    server = _JwksServer(document)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_jwks_from_a_url_and_tls_served_by_the_gateway(
    pipeline: ReadSideRig, query_role: tuple[str, str], tmp_path: Path
) -> None:
    _, dsn = query_role
    cert, tls_key = self_signed_cert(tmp_path)
    key = SigningKey.new("url-key")
    with serving(jwks(key)) as jwks_server:
        worker, url, _ = start_secured_gateway(
            pipeline,
            dsn,
            tmp_path,
            "--jwks-url", jwks_server.url,
            "--tls-cert", str(cert),
            "--tls-key", str(tls_key),
            "--rate-limit", "0",
        )  # fmt: skip
        assert url.startswith("https://")
        account = _id("acct")
        with httpx.Client(
            base_url=url, timeout=60, verify=ssl.create_default_context(cafile=str(cert))
        ) as https:
            good = {"Authorization": f"Bearer {key.token('ops', roles=['admin'])}"}
            opened = https.post(
                "/commands/bank.OpenAccount",
                params={"wait": "result"},
                json=open_account_body(account),
                headers=good,
            )
            assert opened.status_code == 200, opened.text
            listed = https.get("/projections/accounts", params={"limit": "1"}, headers=good)
            assert listed.status_code == 200, listed.text
            assert jwks_server.fetches >= 1
            # A key the issuer's JWKS does not have: refused, though well formed.
            stranger = SigningKey.new("not-published").token("ops", roles=["admin"])
            refused = https.get(
                "/projections/accounts", headers={"Authorization": f"Bearer {stranger}"}
            )
            _assert_problem(refused, 401, "not in the JWKS")
        # The TLS port does not answer plain HTTP.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=10)
        worker.stop()


def _run_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrsctl.main", "run", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


@pytest.mark.parametrize(
    "args,says",
    [
        (["--auth", "none", "--host", "0.0.0.0"], "--auth none serves every request"),
        (["--auth", "none", "--host", "10.1.2.3"], "loopback only"),
        (["--auth", "jwt", "--jwks-url", "http://127.0.0.1:9/j"], "needs --issuer"),
        (
            ["--auth", "jwt", "--issuer", "i", "--audience", "a", "--policy", "/nonexistent"],
            "give exactly one of --jwks-url and --jwks-file",
        ),
        (["--auth", "basic"], "--auth must be jwt or none"),
    ],
)
def test_unsafe_or_incomplete_edge_settings_are_refused_with_one_line(
    args: list[str], says: str
) -> None:
    done = _run_gateway(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_unavailable_answers_keep_the_driver_detail_in_the_log(
    gateway: GatewayRig, stack: StackState
) -> None:
    with gateway.http() as http:
        assert http.get("/projections/accounts").status_code == 200
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            role = sql.Identifier(gateway.query_role)
            admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (gateway.query_role,),
            )
        listed = http.get("/projections/accounts")
        ready = http.get("/readyz")
    assert listed.status_code == 503, listed.text
    assert listed.json()["error"] == "unavailable"
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["postgres"] == "unavailable"
    for body in (listed.text, ready.text):
        # Neither the role, the host, nor the driver's words reach the client...
        assert gateway.query_role not in body
        assert "127.0.0.1" not in body and str(stack.postgres_port) not in body
        assert "FATAL" not in body and "terminat" not in body
    # ...they are in the gateway's log, for the operator.
    gateway.worker.stop()
    assert gateway.query_role in gateway.worker.log_path.read_text()
