"""Commands over HTTP through the gateway, beside the same commands through the Kafka
command client, on the stack that `cqrsctl up` runs (or CQRS_KAFKA_BOOTSTRAP_SERVERS /
CQRS_POSTGRES_DSN).

    .venv/bin/python -m bench.bench_gateway --commands 2000 --concurrency 50

Fresh topics (prefix `gwbench<id>`) and a fresh Postgres schema, deleted afterwards; the
processor, projector and sink run as child processes, the gateway as `cqrsctl run gateway`.
The seeded bank workload (cqrsctl/workload.py) opens the accounts first through the command
client, then sends its movements five ways, each with at most `concurrency` commands in
flight (a closed loop, like that many clients):

- `kafka client`: CommandClient.send + the result (the pipeline without HTTP);
- `kafka client, wait_for=accounts`: the same, until the read model shows it;
- `http, wait=result`: POST /commands/{type}?wait=result (HTTP + JSON + validation);
- `http, 202`: POST without wait: answered once Kafka has the command;
- `http, wait=accounts`: until the read model shows the command (read your writes).

Each run's requests/s and latency percentiles are printed; no figure is asserted. The
machine is shared, so compare the rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from cqrsctl.driver import percentiles
from cqrsctl.workload import WorkloadSpec, iter_commands
from deploy.local.pipeline import (
    Pipeline,
    PipelineSpec,
    WorkerProcess,
    create_context_topics,
)
from deploy.local.processes import free_port
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN, load_settings
from processors.topics import declared_topics
from producers.command_client import CommandClient, CommandResult
from sinks.checkpoints import CheckpointWaiter

Command = tuple[str, dict[str, Any]]


@dataclass
class Figures:
    name: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[str]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


# -- the Kafka client ----------------------------------------------------------------------


def run_kafka_client(client: CommandClient, commands: list[Command], concurrency: int) -> Figures:
    """At most `concurrency` commands awaiting their result, like that many callers."""
    slots = threading.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    done = threading.Event()
    remaining = [len(commands)]

    def finish(sent_at: float, result: CommandResult) -> None:
        with lock:
            latencies.append((time.monotonic() - sent_at) * 1000)
            statuses[result.status] += 1
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()
        slots.release()

    started = time.monotonic()
    for kind, data in commands:
        slots.acquire()
        sent_at = time.monotonic()
        pending = client.send(kind, data)
        future = pending._future  # the result's future, as cqrsctl/driver.py reaches it
        assert future is not None
        future.add_done_callback(lambda f, at=sent_at: finish(at, f.result()))
    client.flush(60)
    if not done.wait(120):
        raise RuntimeError(f"{remaining[0]} results missing after 120 s")
    return Figures("kafka client", len(commands), time.monotonic() - started, latencies, statuses)


def run_kafka_client_read_your_writes(
    client: CommandClient, commands: list[Command], concurrency: int, projection: str
) -> Figures:
    """`send(..., wait_for=projection).result()` from `concurrency` threads: what a Python
    caller gets from the command client alone for what `?wait=<projection>` does."""
    from concurrent.futures import ThreadPoolExecutor

    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    def one(command: Command) -> None:
        sent = time.monotonic()
        result = client.send(command[0], command[1], wait_for=projection).result(60)
        latencies.append((time.monotonic() - sent) * 1000)
        statuses[result.status] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, commands))
    name = f"kafka client, wait_for={projection}"
    return Figures(name, len(commands), time.monotonic() - started, latencies, statuses)


# -- HTTP ----------------------------------------------------------------------------------


class KeepAliveConnection:
    """A minimal HTTP/1.1 client connection (keep-alive, Content-Length bodies). httpx's
    async client costs more CPU per request than the gateway does to answer it, which on a
    2-core machine would measure the client; this costs little."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAliveConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, target: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        length = {k.strip().lower(): v.strip() for k, v in headers.items()}["content-length"]
        return status, await self.reader.readexactly(int(length))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _http_run(
    name: str, port: int, commands: list[Command], concurrency: int, wait: str | None
) -> Figures:
    queue: asyncio.Queue[Command] = asyncio.Queue()
    for command in commands:
        queue.put_nowait(command)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    query = f"?wait={wait}&timeout=60" if wait else ""

    async def worker(conn: KeepAliveConnection) -> None:
        while True:
            try:
                kind, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            sent = time.monotonic()
            status, _ = await conn.post(f"/commands/{kind}{query}", json.dumps(data).encode())
            latencies.append((time.monotonic() - sent) * 1000)
            statuses[str(status)] += 1

    # Connected before the clock starts.
    conns = [await KeepAliveConnection.open("127.0.0.1", port) for _ in range(concurrency)]
    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - started
    for conn in conns:
        await conn.close()
    return Figures(name, len(commands), elapsed, latencies, statuses)


def run_http(
    name: str, port: int, commands: list[Command], concurrency: int, wait: str | None
) -> Figures:
    return asyncio.run(_http_run(name, port, commands, concurrency, wait))


# -- set-up --------------------------------------------------------------------------------


@contextmanager
def fresh_schema(dsn: str, schema: str) -> Iterator[None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def delete_topics(kafka: dict[str, Any], prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    from processors.registry import default_registry

    admin = AdminClient(kafka)
    names = [t.name for t in declared_topics(default_registry().context("bank"), prefix)]
    existing = set(admin.list_topics(timeout=10).topics)
    # Faust's own topics (the projector's leader-election topic) share the prefix.
    names += [t for t in existing if t.startswith(prefix) and t not in names]
    for future in admin.delete_topics([n for n in names if n in existing]).values():
        try:
            future.result(30)
        except Exception as exc:  # best effort: a leftover topic is harmless
            print(f"could not delete a topic: {exc}")


def start_gateway(
    log_dir: Path, env: dict[str, str], prefix: str, schema: str, port: int
) -> WorkerProcess:
    args = ["--prefix", prefix, "--schema", schema, "--port", str(port), "--log-level", "WARNING"]
    args += ["--auth", "none", "--rate-limit", "0"]  # local mode, unthrottled
    return WorkerProcess("gateway", args, log_dir / "gateway.log", env).start().wait_ready(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--commands", type=int, default=2000, help="movements per run")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()

    settings = load_settings()
    kafka = settings.kafka.client_config()
    run_id = secrets.token_hex(3)
    prefix, schema = f"gwbench{run_id}", f"gwbench{run_id}"
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {ENV_BOOTSTRAP: settings.kafka.bootstrap_servers, ENV_PG_DSN: settings.postgres_dsn}
    spec = WorkloadSpec(accounts=args.accounts, commands=args.commands, seed=args.seed)
    workload = list(iter_commands(spec))
    openings, movements = workload[: args.accounts], workload[args.accounts :]
    console = Console(width=120)
    figures: list[Figures] = []
    try:
        create_context_topics(kafka, "bank", prefix)
        with fresh_schema(settings.postgres_dsn, schema):
            pipeline_spec = PipelineSpec(
                log_dir=work, data_dir=work, prefix=prefix, schema=schema, env=env
            )
            with Pipeline(pipeline_spec) as pipeline:
                pipeline.start()
                pipeline.wait_ready(180)
                port = free_port()
                gateway = start_gateway(work, {**os.environ, **env}, prefix, schema, port)
                try:
                    with CommandClient(
                        kafka,
                        "bank",
                        topic_prefix=prefix,
                        read_your_writes=CheckpointWaiter(
                            settings.postgres_dsn, schema, events_topic=f"{prefix}.events"
                        ),
                    ) as client:
                        for kind, data in openings:
                            client.send(kind, data).result(60)
                        console.print(
                            f"{len(openings)} accounts open; {len(movements)} movements per "
                            f"run, {args.concurrency} in flight"
                        )
                        figures.append(run_kafka_client(client, movements, args.concurrency))
                        figures.append(
                            run_kafka_client_read_your_writes(
                                client, movements, args.concurrency, "accounts"
                            )
                        )
                    for name, wait in (
                        ("http, wait=result", "result"),
                        ("http, 202 (no wait)", None),
                        ("http, wait=accounts", "accounts"),
                    ):
                        figures.append(run_http(name, port, movements, args.concurrency, wait))
                        pipeline.check()
                finally:
                    gateway.terminate()
                    gateway.wait_stopped(30)
    finally:
        delete_topics(kafka, prefix)
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"logs: {work}")
    title = f"commands through the gateway vs the Kafka client ({args.concurrency} in flight)"
    table = Table(title=title)
    for column in ("how", "requests/s", "p50 ms", "p95 ms", "p99 ms", "statuses"):
        table.add_column(column, justify="left" if column in ("how", "statuses") else "right")
    base = figures[0].per_second
    for f in figures:
        p = percentiles(f.latencies_ms)
        table.add_row(
            f.name,
            f"{f.per_second:,.0f} ({f.per_second / base:.2f}x)",
            f"{p['p50']:.1f}",
            f"{p['p95']:.1f}",
            f"{p['p99']:.1f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(f.statuses.items())),
        )
    console.print(table)


if __name__ == "__main__":
    main()
