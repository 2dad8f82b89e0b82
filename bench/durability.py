"""The durability settings a benchmark run measured with, read from the code's own producer
settings and from the Postgres server, so the printed figures say what they were paid for.

    settings = durable_settings(dsn)     # {"client": {...}, "processor": {...}, "postgres": {...}}
    line = describe(settings)            # one line for under the tables
    durable(settings)                    # True when every setting is the durable one
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from processors.processor_config import ProcessorConfig
from processors.transactional_producer import producer_config
from producers.command_client import PRODUCER_DEFAULTS

KAFKA_KEYS = ("acks", "enable.idempotence", "linger.ms", "compression.type")
POSTGRES_KEYS = ("fsync", "synchronous_commit")
# What "durable" means for each setting.
DURABLE: dict[str, dict[str, Any]] = {
    "client": {"acks": "all", "enable.idempotence": True},
    "processor": {"acks": "all", "enable.idempotence": True, "transactions": True},
    "postgres": {"fsync": "on", "synchronous_commit": "on"},
}


def kafka_settings() -> dict[str, dict[str, Any]]:
    """The client's and the processor's producer settings, as their code builds them."""
    processor = producer_config(ProcessorConfig(context="bench", kafka={}))
    return {
        "client": {k: PRODUCER_DEFAULTS[k] for k in KAFKA_KEYS if k in PRODUCER_DEFAULTS},
        "processor": {
            **{k: processor[k] for k in KAFKA_KEYS if k in processor},
            "transactions": bool(processor.get("transactional.id")),
        },
    }


def postgres_settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {
            key: str(conn.execute(f"SHOW {key}").fetchone()[0])  # type: ignore[index]
            for key in POSTGRES_KEYS
        }


def durable_settings(dsn: str) -> dict[str, dict[str, Any]]:
    return {**kafka_settings(), "postgres": postgres_settings(dsn)}


def durable(settings: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(
        settings.get(side, {}).get(key) == value
        for side, wanted in DURABLE.items()
        for key, value in wanted.items()
    )


def describe(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """`client: acks=all enable.idempotence=True ...; processor: ...; postgres: ...`"""
    return "; ".join(
        f"{side}: " + " ".join(f"{k}={_text(v)}" for k, v in values.items())
        for side, values in settings.items()
    )


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
