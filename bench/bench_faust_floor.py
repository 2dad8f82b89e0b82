"""The floor of Faust on this machine: a minimal agent over N pre-produced records (raw bytes,
no decoding, no publishing, `take_events(1000)`), with and without a RocksDB table write per
record, on the app settings our workers use (`processors/faust_app.make_app`: read committed,
raw serializers, rocksdb store). Each variant runs in its own process over its own topic; the
figures count from the first batch to the last record: records/s and CPU µs per record.

    .venv/bin/python -m bench.bench_faust_floor main --records 50000
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import typer
from confluent_kafka import Producer

from processors.faust_app import internal_topics, make_app, prepare_topics, run_worker
from processors.settings import load_settings
from processors.topic_admin import create_topics
from processors.topics import TopicSpec

PARTITIONS = 6
KEYS = 1000

cli = typer.Typer(add_completion=False)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@cli.command()
def main(
    records: int = typer.Option(50_000, min=1000, help="records to produce and consume"),
) -> None:
    """Produce the records, then run the agent without and with a table; print both."""
    settings = load_settings(postgres=False)
    kafka = settings.kafka.client_config()
    results = {}
    for table in (False, True):
        topic = f"floor-{secrets.token_hex(3)}"
        create_topics(kafka, [TopicSpec(topic, PARTITIONS, {})])
        producer = Producer({**kafka, "linger.ms": 5, "enable.idempotence": True})
        value = os.urandom(100)
        for i in range(records):
            producer.produce(topic, value, f"k{i % KEYS}".encode())
            if i % 10_000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0
        with tempfile.TemporaryDirectory(prefix="faust-floor-") as folder:
            out = Path(folder) / "result.json"
            args = [sys.executable, "-m", "bench.bench_faust_floor", "agent", topic]
            args += [str(records), folder, str(out), "--table" if table else "--no-table"]
            subprocess.run(args, check=True, timeout=600, stdout=subprocess.DEVNULL)
            results["with a table" if table else "no table"] = json.loads(out.read_text())
    for name, figures in results.items():
        seconds, cpu, n = figures["seconds"], figures["cpu_s"], figures["records"]
        print(
            f"minimal Faust agent, {name}: {n / seconds:,.0f} records/s, "
            f"{1e6 * cpu / n:,.1f} CPU µs per record ({n:,} records, load {os.getloadavg()[0]:.1f})"
        )


@cli.command()
def agent(
    topic: str, records: int, folder: Path, out: Path, table: bool = typer.Option(False)
) -> None:
    """The agent process (internal)."""
    from faust.streams import _current_event

    settings = load_settings(postgres=False)
    app_id = f"{topic}-agent"
    app = make_app(app_id, settings.kafka, folder, partitions=PARTITIONS)
    names = ["t"] if table else []
    prepare_topics(settings.kafka, [], internal_topics(app_id, names, PARTITIONS), 1)
    source = app.topic(topic, partitions=PARTITIONS, internal=False)
    store = app.Table("t", partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    state: dict[str, Any] = {"seen": 0}

    async def consume(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.1):
            if table:
                for event in batch:
                    _current_event.set(weakref.ref(event))
                    store[event.key] = event.value
            state["seen"] += len(batch)
            if "started" not in state:  # the clocks start after the first batch
                state["started"], state["cpu"] = time.monotonic(), _cpu_s()
                state["first"] = state["seen"]
            elif state["seen"] >= records:
                done = {
                    "records": state["seen"] - state["first"],
                    "seconds": time.monotonic() - state["started"],
                    "cpu_s": _cpu_s() - state["cpu"],
                }
                out.write_text(json.dumps(done))
                os._exit(0)

    app.agent(source, name=f"{app_id}.consume")(consume)
    run_worker(app, "WARNING")


if __name__ == "__main__":
    cli()
