"""No secret in what the project prints: DSNs shown by cqrsctl are masked, and the settings
objects (which workers may log or show in tracebacks) keep passwords out of their repr."""

from __future__ import annotations

import pytest

from cqrsctl.stack_cmd import mask_dsn
from processors.processor_config import ProcessorConfig
from processors.settings import (
    ENV_BOOTSTRAP,
    ENV_PG_DSN,
    ENV_SASL_MECHANISM,
    ENV_SASL_PASSWORD,
    ENV_SASL_USERNAME,
    ENV_SECURITY_PROTOCOL,
    SettingsError,
    load_settings,
)

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "dsn,masked",
    [
        ("postgresql://u:s3cr3t-Pa55@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:s3cr3t-Pa55@[::1]:5432/db", "postgres://u:***@[::1]:5432/db"),
        ("postgresql://u:s3cr3t-Pa55@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("postgresql://u:s3cr3t@Pa55@h/db", "postgresql://u:***@h/db"),  # a raw @ in it
        ("postgresql://u@h/db?password=s3cr3t-Pa55", "postgresql://u@h/db?password=***"),
        (
            "postgresql://h/db?sslmode=require&password=s3cr3t-Pa55&application_name=x",
            "postgresql://h/db?sslmode=require&password=***&application_name=x",
        ),
        ("host=h user=u password=s3cr3t-Pa55", "host=h user=u password=***"),
        ("host=h password = s3cr3t-Pa55 user=u", "host=h password = *** user=u"),
        ("host=h password='s3cr3t Pa55' user=u", "host=h password=*** user=u"),
        (r"password='s3cr3t\' Pa55' host=h", "password=*** host=h"),
        ("host=h PASSWORD=s3cr3t-Pa55", "host=h PASSWORD=***"),
        ("host=h sslpassword=s3cr3t-Pa55", "host=h sslpassword=***"),
        # Nothing to hide: unchanged.
        ("postgresql://postgres@127.0.0.1:5432/postgres", None),
        ("host=/var/run/postgresql dbname=app", None),
    ],
)
def test_mask_dsn_hides_every_password_form_libpq_accepts(dsn: str, masked: str | None) -> None:
    shown = mask_dsn(dsn)
    assert shown == (masked or dsn)
    assert "s3cr3t" not in shown and "Pa55" not in shown


def _env(**extra: str) -> dict[str, str]:
    return {
        ENV_BOOTSTRAP: "127.0.0.1:9093",
        ENV_SECURITY_PROTOCOL: "SASL_SSL",
        ENV_SASL_MECHANISM: "SCRAM-SHA-512",
        ENV_SASL_USERNAME: "cqrs-processor",
        ENV_SASL_PASSWORD: SECRET,
        ENV_PG_DSN: f"postgresql://cqrs:{SECRET}-pg@db:5432/cqrs",
        **extra,
    }


def test_settings_from_env_carry_the_secrets_but_never_show_them() -> None:
    settings = load_settings(_env())
    assert settings.kafka.client_config()["sasl.password"] == SECRET  # it is there...
    assert settings.postgres_dsn.endswith(f"{SECRET}-pg@db:5432/cqrs")
    for shown in (repr(settings), str(settings), repr(settings.kafka), f"{settings!r}"):
        assert SECRET not in shown, shown  # ...but not in what a log line would print
    assert "cqrs-processor" in repr(settings.kafka)  # the rest is still useful to read


def test_the_processor_config_repr_shows_no_password() -> None:
    kafka = load_settings(_env()).kafka.client_config()
    config = ProcessorConfig("bank", kafka, "bank", "bank-processor-0")
    assert SECRET not in repr(config)
    assert "bank-processor-0" in repr(config)


def test_kafka_only_workers_need_no_postgres_dsn(monkeypatch):
    monkeypatch.setenv("CQRS_STATE_DIR", "/nonexistent-state-dir")
    env = {"CQRS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    assert load_settings(env, postgres=False).kafka.bootstrap_servers == "127.0.0.1:9"
    with pytest.raises(SettingsError, match="no Postgres DSN"):
        load_settings(env)


def test_the_gateway_config_repr_shows_no_password() -> None:
    from producers.gateway.config import GatewayConfig

    settings = load_settings(_env())
    config = GatewayConfig(kafka=settings.kafka.client_config(), query_dsn=settings.postgres_dsn)
    assert SECRET not in repr(config)


def test_the_access_log_has_no_token_query_string_or_body(caplog) -> None:
    import json
    import logging

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from producers.gateway.access_log import AccessLogMiddleware

    async def ok(request):
        request.state.principal = "alice"
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/projections/accounts", ok, methods=["GET", "POST"])])
    app.add_middleware(AccessLogMiddleware)
    with caplog.at_level(logging.INFO, logger="cqrs.gateway.access"), TestClient(app) as http:
        response = http.post(
            f"/projections/accounts?access_token={SECRET}&password={SECRET}",
            headers={"Authorization": f"Bearer {SECRET}", "Cookie": f"session={SECRET}"},
            content=f'{{"password": "{SECRET}"}}',
        )
    assert response.status_code == 200
    (record,) = [r for r in caplog.records if r.name == "cqrs.gateway.access"]
    entry = json.loads(record.getMessage())
    assert entry["principal"] == "alice" and entry["path"] == "/projections/accounts"
    assert entry["status"] == 200 and entry["method"] == "POST"
    # What the gateway logs (httpx's lines are the test client's own request log).
    gateway_lines = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")
    assert SECRET not in gateway_lines
