"""The local broker serves its metrics over JMX on loopback only, and the benchmark reads
them (JmxTool) and the broker's and Postgres' CPU from /proc."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from bench.broker_metrics import read_counters
from bench.economy import StackMeter
from deploy.local.state import StackState

LISTEN = "0A"


def _listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == LISTEN and int(hex_port, 16) == port:
                found.append(address)
    return found


# 127.0.0.1 in /proc/net/tcp (little-endian words), and as ::ffff:127.0.0.1 in tcp6.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def test_jmx_listens_on_loopback_only(stack: StackState):
    assert stack.kafka_jmx_port
    addresses = _listening_addresses(stack.kafka_jmx_port)
    assert addresses, f"nothing listens on the JMX port {stack.kafka_jmx_port}"
    assert set(addresses) <= LOOPBACK, f"JMX bound beyond loopback: {addresses}"
    with socket.create_connection(("127.0.0.1", stack.kafka_jmx_port), timeout=5):
        pass


def test_jmxtool_reads_counters_that_grow_with_produced_records(
    stack: StackState,
    kafka_config: dict[str, Any],
    create_topics: Callable[..., list[str]],
):
    assert stack.kafka_jmx_url is not None
    prefix = f"jmx{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}.events"
    create_topics({topic: 1})
    meter = StackMeter.for_target(stack.bootstrap_servers)
    assert meter is not None and meter.jmx_url == stack.kafka_jmx_url
    before = meter.reading()
    assert before.error is None, before.error

    producer = Producer({**kafka_config, "enable.idempotence": True, "linger.ms": 0})
    for i in range(30):
        producer.produce(topic, key=b"k", value=b"v%d" % i)
        producer.flush(10)  # one produce request per record
    with psycopg.connect(stack.postgres_dsn) as conn:  # work for a Postgres backend
        conn.execute("SELECT count(*) FROM generate_series(1, 300000)").fetchone()

    after = meter.reading()
    assert after.error is None, after.error
    usage = meter.usage(before, after, prefix, commands=30)
    assert usage["broker"]["records_in"]["events"] == 1.0  # 30 records / 30 commands
    assert usage["broker"]["produce_requests"] >= 1.0
    assert usage["cpu_s"]["broker"] > 0
    # The backend that ran the query has exited: its CPU is in the postmaster's reaped time.
    assert usage["cpu_s"]["postgres"] > 0
    again = read_counters(stack.kafka_jmx_url)
    assert again.records_in[topic] >= 30
