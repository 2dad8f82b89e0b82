"""The gateway's edge without a network: token checks against a JWKS file, the policy's
mapping of scopes and roles to permissions (deny by default), the token bucket, and the
OpenAPI document's security declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.gateway.app import create_app, make_verifier
from producers.gateway.auth import (
    JwksSource,
    JwtVerifier,
    Policy,
    PolicyError,
    Unauthenticated,
    bearer_token,
)
from producers.gateway.config import GatewayConfig
from producers.gateway.ratelimit import RateLimiter
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks, write_json

POLICY = {
    "roles": {
        "teller": ["command:bank.Deposit", "command:bank.OpenAccount", "read:accounts"],
        "auditor": ["read:*"],
        "bank-admin": ["command:bank.*"],
    }
}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.new("k1")


@pytest.fixture
def verifier(key: SigningKey, tmp_path: Path) -> JwtVerifier:
    source = JwksSource(file=write_json(tmp_path / "jwks.json", jwks(key)))
    return JwtVerifier(source, Policy.from_json(POLICY), issuer=ISSUER, audience=AUDIENCE)


def test_a_good_token_names_its_principal_and_grants_what_its_roles_map_to(
    key: SigningKey, verifier: JwtVerifier
) -> None:
    principal = verifier.verify(key.token("alice", roles=["teller"]))
    assert principal.name == "alice"
    assert principal.may("command:bank.Deposit")
    assert principal.may("read:accounts")
    assert not principal.may("command:bank.Withdraw")  # deny by default
    assert not principal.may("read:event_log")
    scoped = verifier.verify(key.token("svc", scope="auditor bank-admin"))
    assert scoped.may("read:event_log") and scoped.may("command:bank.FailTransfer")
    unknown = verifier.verify(key.token("bob", roles=["no-such-role"], scope="openid"))
    assert unknown.grants == frozenset()


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda k: k.token(expires_in=-120), "expired"),
        (lambda k: k.token(aud="another-service"), "audience"),
        (lambda k: k.token(iss="https://evil.test/"), "issuer"),
        (lambda k: SigningKey.new("k1").token(), "signature"),  # same kid, another key
        (lambda k: k.token(kid="k9"), "signing key is not in the JWKS"),
        (lambda k: "not.a.jwt", "well-formed"),
    ],
)
def test_bad_tokens_are_refused_saying_why(
    key: SigningKey, verifier: JwtVerifier, make, reason: str
) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verifier.verify(make(key))


def test_clock_skew_within_the_leeway_is_accepted(key: SigningKey, verifier: JwtVerifier) -> None:
    assert verifier.verify(key.token(expires_in=-10)).name == "alice"  # leeway 30 s


def test_a_token_signed_with_none_or_a_shared_secret_is_refused(
    key: SigningKey, verifier: JwtVerifier, tmp_path: Path
) -> None:
    import jwt

    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": 2**40}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        verifier.verify(unsigned)
    secret = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"}]}
    with pytest.raises(PolicyError, match="only asymmetric"):
        JwksSource(file=write_json(tmp_path / "hs.json", secret))


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    with pytest.raises(Unauthenticated, match="no bearer token") as none:
        bearer_token(None)
    assert none.value.error is None
    with pytest.raises(Unauthenticated, match="not 'Bearer"):
        bearer_token("Basic dXNlcjpwYXNz")


def test_policy_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a permission"):
        Policy.from_json({"roles": {"x": ["bank.Deposit"]}})
    with pytest.raises(PolicyError, match='expected a JSON object with "roles"'):
        Policy.load(write_json(tmp_path / "p.json", "x"))
    with pytest.raises(PolicyError, match="No such file"):
        Policy.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.load(tmp_path / "bad.json")
    with pytest.raises(PolicyError, match="needs --issuer, --audience, --policy"):
        make_verifier(GatewayConfig(kafka={}, query_dsn="", auth="jwt", jwks_url="http://x/"))


def test_token_bucket_allows_a_burst_then_one_per_interval() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.retry_after(wait) == "1"
    assert limiter.take("b") == 0.0  # per principal
    now[0] = 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_openapi_declares_the_bearer_scheme_and_each_operations_permission(
    key: SigningKey, tmp_path: Path
) -> None:
    config = GatewayConfig(
        kafka={},
        query_dsn="",
        auth="jwt",
        jwks_file=str(write_json(tmp_path / "jwks.json", jwks(key))),
        issuer=ISSUER,
        audience=AUDIENCE,
        policy_file=str(write_json(tmp_path / "policy.json", POLICY)),
        rate_limit=5,
    )
    doc = create_app(config).state.gateway.openapi
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    deposit = doc["paths"]["/commands/bank.Deposit"]["post"]
    assert deposit["security"] == [{"bearer": []}]
    assert "command:bank.Deposit" in deposit["description"]
    assert {"401", "403", "429"} <= set(deposit["responses"])
    assert "read:accounts" in doc["paths"]["/projections/accounts"]["get"]["description"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    local = create_app(GatewayConfig(kafka={}, query_dsn="")).state.gateway.openapi
    assert "securitySchemes" not in local["components"]


def test_print_openapi_needs_no_token_settings_and_shows_the_scheme() -> None:
    import json

    from typer.testing import CliRunner

    from cqrsctl.main import app

    runner = CliRunner()
    done = runner.invoke(
        app, ["run", "gateway", "--print-openapi"], env={"CQRS_GATEWAY_AUTH": "jwt"}
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["components"]["securitySchemes"]["bearer"]["bearerFormat"] == "JWT"
    assert "429" in doc["paths"]["/projections/accounts"]["get"]["responses"]
    local = runner.invoke(app, ["run", "gateway", "--print-openapi", "--auth", "none"])
    assert local.exit_code == 0, local.output
    assert "securitySchemes" not in json.loads(local.stdout)["components"]
