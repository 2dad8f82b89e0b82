"""The command processor's transactional producer: its settings, and the transactional steps
that need more than one librdkafka call (starting with refusals named, flushing and
committing within a bound).

Plain functions over the `Producer`: the processor keeps the producer itself, so producing a
record stays a direct `Producer.produce` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from processors.processor_config import ProcessorConfig

# Errors no retry heals within a start-up: the broker refused who we are.
_REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


def producer_config(config: ProcessorConfig) -> dict[str, Any]:
    """The transactional producer's settings (the benchmark prints the durable ones)."""
    return {
        **config.kafka,
        "transactional.id": config.transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        # Every batch ends in flush() and commit_transaction(), which send at once whatever
        # lingers: a long linger makes each batch's records one Produce request per flush
        # instead of one every few milliseconds while the batch is decided.
        "linger.ms": 500,
        "batch.num.messages": 10_000,
        "transaction.timeout.ms": config.transaction_timeout_ms,
        "partitioner": "murmur2_random",
    }


def new_producer(config: ProcessorConfig, error_cb: Callable[[KafkaError], None]) -> Producer:
    return Producer({**producer_config(config), "error_cb": error_cb})


def start_transactions(
    producer: Producer, last_error: Callable[[], KafkaError | None], within_s: float = 30.0
) -> None:
    """init_transactions, in short steps so that a refused login (wrong credentials or
    TLS trust, which librdkafka retries for ever) stops the start at once, naming the
    cause, instead of ending in a bare timeout. `last_error` returns the latest error the
    clients' error_cb has seen."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            producer.init_transactions(2)
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            producer.poll(0)  # serve error_cb: what librdkafka has seen so far
            seen = last_error()
            refused = seen is not None and seen.code() in _REFUSALS
            if error.retriable() and not refused and time.monotonic() < deadline:
                continue
            cause = f" ({seen.str()})" if seen else ""
            raise SystemExit(
                f"command processor stopped: cannot start Kafka transactions: {error.str()}"
                f"{cause}; check the Kafka settings (servers, security protocol, credentials)"
            ) from None


def flush(producer: Producer, timeout_s: float) -> None:
    """Every queued record delivered within `timeout_s`, else an abortable error."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise KafkaException(
            KafkaError(
                KafkaError._TIMED_OUT,
                f"{remaining} records undelivered after {timeout_s}s",
                txn_requires_abort=True,
            )
        )


def commit(producer: Producer, timeout_s: float) -> None:
    """commit_transaction, retried a few times while its error is retriable."""
    for attempt in range(5):
        try:
            producer.commit_transaction(timeout_s)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.retriable()) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
