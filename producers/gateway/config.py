"""What one gateway process serves, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GatewayConfig:
    kafka: dict[str, Any] = field(repr=False)
    # Postgres of the read models, as the read-only query role sees it.
    query_dsn: str = field(repr=False)
    context: str = "bank"
    topic_prefix: str | None = None
    # Schema of the read models (default: the DSN's search_path, else public).
    schema: str | None = None
    # SET ROLE on every query connection (e.g. "<schema>_reader"); None keeps the login role.
    db_role: str | None = None
    # Seconds `?wait=` waits when the request gives no `timeout`, and the most it may ask.
    default_timeout_s: float = 10.0
    max_timeout_s: float = 60.0
    # How long a command may wait for the broker's acknowledgement before 503.
    delivery_timeout_s: float = 30.0
    max_body_bytes: int = 1_000_000
    pool_size: int = 8
    # Requests that may wait for a result or a read model at once (each holds a thread).
    max_waiting: int = 500
    page_limit_max: int = 1000
    # Authentication: "jwt" (bearer tokens checked against a JWKS) or "none" (every
    # request is the principal `anonymous` with every permission; loopback only).
    auth: str = "none"
    jwks_url: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 30.0
    principal_claim: str = "sub"
    # JSON policy: {"roles": {scope-or-role: [permission, ...]}, "claims": [...]}.
    policy_file: str | None = None
    # Requests per second per principal (token bucket) and the bucket's size; 0 = no limit.
    rate_limit: float = 0.0
    rate_burst: int = 0

    @property
    def prefix(self) -> str:
        return self.topic_prefix or self.context
