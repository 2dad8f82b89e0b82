"""The HTTP gateway as a real process (`cqrsctl run gateway`) in front of the real pipeline:
processor, projector and sink processes from the read-side rig, a Postgres login role that
has only the schema's reader role, and an httpx client.

Its fixtures (`pipeline`, `query_role`, `gateway`, `secured_gateway`) are in
tests/integration/conftest.py."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.local.pipeline import WorkerProcess
from deploy.local.processes import free_port
from tests.support.read_side import ReadSideRig
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks, write_json


@dataclass
class GatewayRig:
    pipeline: ReadSideRig
    worker: WorkerProcess
    url: str
    query_role: str
    token: str | None = None  # sent as the bearer token by `http()`

    def http(self, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers)


def start_gateway(
    pipeline: ReadSideRig,
    query_dsn: str,
    *extra: str,
    db_role: str | None = None,
    tls_ca: Path | None = None,
) -> tuple[WorkerProcess, str]:
    """The gateway on a free port; with `tls_ca`, it serves HTTPS (pass --tls-cert and
    --tls-key in `extra`) and the check trusts that certificate."""
    port = free_port()
    args = [
        "--prefix", pipeline.prefix,
        "--schema", pipeline.schema,
        "--query-dsn", query_dsn,
        "--host", "127.0.0.1",
        "--port", str(port),
        # Local mode unless `extra` says otherwise (a later option wins).
        "--auth", "none",
        "--rate-limit", "0",
        *extra,
    ]  # fmt: skip
    if db_role is not None:
        args += ["--db-role", db_role]
    worker = WorkerProcess("gateway", args, pipeline.bank.log_dir / f"gateway-{port}.log")
    worker.start()
    pipeline.workers.append(worker)  # stopped with the pipeline, also when a test fails
    worker.wait_ready(60)
    url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    # The health port says the app started; the HTTP port must answer too.
    with httpx.Client(base_url=url, timeout=10, verify=_trust(tls_ca)) as client:
        assert client.get("/healthz").status_code == 200
    return worker, url


def _trust(ca: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca)) if ca else True


def open_account_body(account_id: str, owner: str = "Ada", currency: str = "EUR") -> dict[str, Any]:
    return {"account_id": account_id, "owner": owner, "currency": currency}


def movement_body(account_id: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
    return {"account_id": account_id, "amount": {"amount": amount, "currency": currency}}


# Roles of the secured gateway's policy: what each test principal may do.
POLICY = {
    "roles": {
        "teller": ["command:bank.OpenAccount", "command:bank.Deposit", "read:accounts"],
        "auditor": ["read:*"],
        "admin": ["*"],
    }
}


def start_secured_gateway(
    pipeline: ReadSideRig, query_dsn: str, folder: Path, *extra: str
) -> tuple[WorkerProcess, str, SigningKey]:
    """The gateway with `--auth jwt`, its JWKS and policy in files under `folder` (unless
    `extra` names another JWKS source); returns the key that signs good tokens."""
    key = SigningKey.new("gw-key-1")
    jwks_file = write_json(folder / "jwks.json", jwks(key))
    policy = write_json(folder / "policy.json", POLICY)
    source = [] if any(a.startswith("--jwks-") for a in extra) else ["--jwks-file", str(jwks_file)]
    args = [
        "--auth", "jwt", *source,
        "--issuer", ISSUER, "--audience", AUDIENCE, "--policy", str(policy),
        *extra,
    ]  # fmt: skip
    tls_ca = Path(extra[extra.index("--tls-cert") + 1]) if "--tls-cert" in extra else None
    worker, url = start_gateway(pipeline, query_dsn, *args, tls_ca=tls_ca)
    return worker, url, key
