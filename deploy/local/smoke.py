"""An end-to-end check of a running stack: one Kafka transaction and one Postgres row.

It is the placeholder main job until the pipeline exists: it proves the broker runs
transactions (the command processor's foundation) and that read_committed consumers see
committed records, and that Postgres takes writes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from deploy.local.errors import StackError

TIMEOUT = 30.0

_quiet = logging.getLogger("deploy.local.smoke.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def run(kafka_config: dict[str, Any], postgres_dsn: str, say: Callable[[str], None]) -> None:
    """Run the checks against the given stack, reporting each step through `say`."""
    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    _kafka_round_trip(kafka_config, topic, say)
    _postgres_round_trip(postgres_dsn, say)


def _kafka_round_trip(config: dict[str, Any], topic: str, say: Callable[[str], None]) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    # A quiet logger: while the broker is down librdkafka logs every reconnect attempt.
    admin = AdminClient({**config, "logger": _quiet})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        servers = config.get("bootstrap.servers")
        reason = exc.args[0].str() if exc.args else str(exc)
        raise StackError(
            f"Kafka at {servers} does not answer ({reason}); is the stack up? (`cqrsctl status`)"
        ) from None
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[
            topic
        ].result(TIMEOUT)
        say(f"created topic {topic} (1 partition)")
        started = time.monotonic()
        value = f"hello from cqrsctl smoke {uuid.uuid4()}".encode()
        # log_level 3: the first transaction on a fresh broker logs a retry warning while
        # the coordinator loads its partition; only errors are worth showing here.
        producer = Producer(
            {**config, "transactional.id": f"cqrsctl-smoke-{uuid.uuid4()}", "log_level": 3}
        )
        producer.init_transactions(TIMEOUT)
        producer.begin_transaction()
        producer.produce(topic, key=b"smoke", value=value)
        producer.commit_transaction(TIMEOUT)
        say(f"produced 1 message in a committed transaction ({time.monotonic() - started:.2f} s)")

        consumer = Consumer(
            {
                **config,
                "group.id": f"cqrsctl-smoke-{uuid.uuid4()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    raise KafkaException(msg.error())
                if msg.value() != value:
                    raise StackError(f"smoke: read back {msg.value()!r}, expected {value!r}")
                say(f"read it back with isolation.level=read_committed at offset {msg.offset()}")
                break
            else:
                raise StackError(f"smoke: the committed message did not arrive within {TIMEOUT} s")
        finally:
            consumer.close()
    finally:
        admin.delete_topics([topic], operation_timeout=10)
        say(f"deleted topic {topic}")


def _postgres_round_trip(dsn: str, say: Callable[[str], None]) -> None:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        conn.execute("CREATE TEMPORARY TABLE cqrs_smoke (id uuid PRIMARY KEY, note text)")
        row_id = uuid.uuid4()
        conn.execute("INSERT INTO cqrs_smoke VALUES (%s, %s)", (row_id, "hello"))
        conn.commit()
        row = conn.execute("SELECT note FROM cqrs_smoke WHERE id = %s", (row_id,)).fetchone()
        if row is None or row[0] != "hello":
            raise StackError(f"smoke: Postgres returned {row!r} for the row just written")
        say(f"wrote and read a row in Postgres {version[0] if version else '?'}")
