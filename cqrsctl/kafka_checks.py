"""Checks a console command makes before it writes to Kafka, each failing with a message
that names the likely cause and the command that fixes it."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from cqrsctl.console import cli_name


class Unavailable(RuntimeError):
    """Kafka cannot be reached, or a topic the command needs does not exist."""


def unreachable(kafka: dict[str, Any], error: object) -> Unavailable:
    servers = kafka.get("bootstrap.servers", "?")
    cli = cli_name()
    return Unavailable(
        f"cannot reach Kafka at {servers} ({error}); is the stack up? (`{cli} status`, `{cli} up`)"
    )


def missing_topics_hint(topics: list[str], context: str) -> str:
    cli = cli_name()
    if len(topics) == 1:
        what = f"topic {topics[0]} does not"
    else:
        what = f"topics {', '.join(topics)} do not"
    return f"{what} exist: run `{cli} topics create --context {context}` (or `{cli} up --pipeline`)"


def require_topics(
    kafka: dict[str, Any], topics: list[str], context: str, timeout: float = 10.0
) -> None:
    """Every topic in `topics` exists on the broker; Unavailable naming the cause if not."""
    try:
        # librdkafka's own connection errors stay quiet: the exception says it in one line.
        existing = AdminClient({**kafka, "log_level": 0}).list_topics(timeout=timeout).topics
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        raise unreachable(kafka, err.str() if isinstance(err, KafkaError) else err) from None
    missing = [t for t in topics if t not in existing or existing[t].error is not None]
    if missing:
        raise Unavailable(missing_topics_hint(missing, context))


def delivery_hint(code: int | None, topic: str, context: str) -> str:
    """What most likely stopped a delivery, from the delivery report's error code."""
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return missing_topics_hint([topic], context)
    return f"is the broker up? (`{cli_name()} status`)"
