"""The local stack's state file: where the broker and the database listen and which PIDs we own.

`cqrsctl up` writes it, `cqrsctl down` reads it to stop exactly what `up` started, and
`processors.settings.load_settings()` reads it when no connection variables are set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from processors.settings import ENV_STATE_DIR, STATE_FILE, state_dir

__all__ = ["ENV_STATE_DIR", "StackState", "read_state", "remove_state", "state_dir", "write_state"]


@dataclass
class StackState:
    """What one local stack is made of. Paths are absolute; a PID of None means not running."""

    state_dir: str
    started_by: str
    kafka_version: str
    kafka_port: int
    kafka_controller_port: int
    kafka_cluster_id: str
    kafka_dir: str
    kafka_log: str
    postgres_port: int
    postgres_dir: str
    postgres_data_dir: str
    postgres_socket_dir: str
    postgres_log: str
    kafka_pid: int | None = None
    postgres_pid: int | None = None
    # Optional authenticated listeners (SASL SCRAM-SHA-512), off unless a port is set; the
    # PLAINTEXT listener stays, for speed and for the broker's own traffic.
    kafka_sasl_port: int | None = None
    kafka_sasl_ssl_port: int | None = None
    kafka_ssl_keystore: str | None = None  # PEM file: the broker's private key and cert chain
    # Authorize with ACLs (KRaft's StandardAuthorizer) when set: these SASL users, and the
    # PLAINTEXT listener's anonymous principal, are super users; everyone else may do only
    # what ACLs allow. Off (None) by default: no authorizer.
    kafka_acl_super_users: list[str] | None = None
    # The broker's JMX (RMI) port, on 127.0.0.1 only and without authentication: the
    # benchmark reads the broker's own metrics there. None: JMX off.
    kafka_jmx_port: int | None = None

    @property
    def kafka_jmx_url(self) -> str | None:
        if not self.kafka_jmx_port:
            return None
        return f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{self.kafka_jmx_port}/jmxrmi"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        return f"127.0.0.1:{self.kafka_sasl_port}" if self.kafka_sasl_port else None

    @property
    def sasl_ssl_bootstrap_servers(self) -> str | None:
        return f"127.0.0.1:{self.kafka_sasl_ssl_port}" if self.kafka_sasl_ssl_port else None

    @property
    def postgres_dsn(self) -> str:
        # Trust authentication on loopback: the cluster is throwaway and local-only.
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def kafka_config_file(self) -> str:
        return str(Path(self.kafka_dir) / "server.properties")

    def to_json(self) -> str:
        data = asdict(self)
        # Derived values are stored too, for humans and non-Python tools reading the file.
        data["bootstrap_servers"] = self.bootstrap_servers
        data["postgres_dsn"] = self.postgres_dsn
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StackState:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def state_file(directory: str | os.PathLike[str] | None = None) -> Path:
    return state_dir(directory) / STATE_FILE


def read_state(state_dir_path: str | os.PathLike[str] | None = None) -> StackState | None:
    """The recorded stack, or None when nothing was started in that state folder."""
    path = state_file(state_dir_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return StackState.from_json(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable local stack state file {path}: {exc}") from exc


def write_state(state: StackState) -> None:
    """Replace the state file atomically so a crash never leaves half a file."""
    path = state_file(state.state_dir)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def remove_state(state_dir_path: str | os.PathLike[str] | None = None) -> None:
    state_file(state_dir_path).unlink(missing_ok=True)
