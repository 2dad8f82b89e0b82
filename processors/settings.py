"""Where Kafka and Postgres are, and with which credentials, read from the environment.

Every worker, client and tool reads its connection settings here, so the same code runs
against the local stack and inside a Kubernetes cluster (where Secrets set the variables).
When a variable is unset, the local stack's state file (`<state dir>/state.json`, written by
`cqrsctl up`) fills in the bootstrap servers and the DSN from its `bootstrap_servers` and
`postgres_dsn` fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_STATE_DIR = "CQRS_STATE_DIR"
# Not under /root: the `postgres` user must be able to reach the Postgres data folder.
DEFAULT_STATE_DIR = Path("/var/tmp/kafka-cqrs")
STATE_FILE = "state.json"


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The local stack's folder: its state file, the broker's and the database's data."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        cfg: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
            cfg["sasl.username"] = self.sasl_username or ""
            cfg["sasl.password"] = self.sasl_password or ""
        if self.ssl_ca_location:
            cfg["ssl.ca.location"] = self.ssl_ca_location
        return cfg


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    postgres_dsn: str = field(repr=False)


ENV_BOOTSTRAP = "CQRS_KAFKA_BOOTSTRAP_SERVERS"
ENV_SECURITY_PROTOCOL = "CQRS_KAFKA_SECURITY_PROTOCOL"
ENV_SASL_MECHANISM = "CQRS_KAFKA_SASL_MECHANISM"
ENV_SASL_USERNAME = "CQRS_KAFKA_SASL_USERNAME"
ENV_SASL_PASSWORD = "CQRS_KAFKA_SASL_PASSWORD"
ENV_SSL_CA = "CQRS_KAFKA_SSL_CA_LOCATION"
ENV_PG_DSN = "CQRS_POSTGRES_DSN"

# The HTTP gateway's edge settings (`cqrsctl run gateway`; each is also an option).
ENV_GATEWAY_AUTH = "CQRS_GATEWAY_AUTH"
ENV_GATEWAY_JWKS_URL = "CQRS_GATEWAY_JWKS_URL"
ENV_GATEWAY_JWKS_FILE = "CQRS_GATEWAY_JWKS_FILE"
ENV_GATEWAY_ISSUER = "CQRS_GATEWAY_ISSUER"
ENV_GATEWAY_AUDIENCE = "CQRS_GATEWAY_AUDIENCE"
ENV_GATEWAY_POLICY = "CQRS_GATEWAY_POLICY"
ENV_GATEWAY_RATE_LIMIT = "CQRS_GATEWAY_RATE_LIMIT"
ENV_GATEWAY_TLS_CERT = "CQRS_GATEWAY_TLS_CERT"
ENV_GATEWAY_TLS_KEY = "CQRS_GATEWAY_TLS_KEY"


class SettingsError(RuntimeError):
    pass


def load_settings(env: dict[str, str] | None = None, *, postgres: bool = True) -> Settings:
    """Settings from the environment. Kafka-only workers (the command processor, the
    projector) pass `postgres=False`, so their pods need no database credentials."""
    env = dict(os.environ if env is None else env)
    bootstrap = env.get(ENV_BOOTSTRAP)
    dsn = env.get(ENV_PG_DSN)
    if not bootstrap or not dsn:
        local = _local_stack()
        bootstrap = bootstrap or local.get("bootstrap_servers")
        dsn = dsn or local.get("postgres_dsn")
    if not bootstrap:
        raise SettingsError(f"no Kafka bootstrap servers: set {ENV_BOOTSTRAP} or run `cqrsctl up`")
    if not dsn and postgres:
        raise SettingsError(f"no Postgres DSN: set {ENV_PG_DSN} or run `cqrsctl up`")
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol=env.get(ENV_SECURITY_PROTOCOL, "PLAINTEXT"),
        sasl_mechanism=env.get(ENV_SASL_MECHANISM) or None,
        sasl_username=env.get(ENV_SASL_USERNAME) or None,
        sasl_password=env.get(ENV_SASL_PASSWORD) or None,
        ssl_ca_location=env.get(ENV_SSL_CA) or None,
    )
    return Settings(kafka=kafka, postgres_dsn=dsn or "")


def _local_stack() -> dict[str, Any]:
    """The local stack's state file, {} when there is none (a cluster, or no `cqrsctl up`)."""
    path = state_dir() / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise SettingsError(f"unreadable local stack state file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}
