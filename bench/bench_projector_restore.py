"""How soon a projector that has lost its local state (a pod without its volume) serves again.

Fills the changelog of the `accounts` table, which is its projection topic
`<prefix>.projection.accounts` (processors/projector/tables.py), with N account rows written
as the projector publishes them: key = the row key, value = the row in Avro single-object
encoding, the row's CloudEvents headers, partition = the account's events partition; then a
checkpoint record per partition (which the restore must skip). Then writes one
`bank.Deposited` event for a restored account and starts `cqrsctl run projector` with an
empty data folder, and times:

- *serving*: from the start of the process to the event's row on `<prefix>.projection.accounts`
  (the row must carry the restored owner: the projector read it from its restored table);
- *restore*: between the log lines that start and end a restore (the projector's bulk restore
  and Faust's recovery, `RESTORES`); rows/s and the projector's CPU over it.

Runs on the stack that `cqrsctl up` runs (or CQRS_KAFKA_BOOTSTRAP_SERVERS), under a private
topic prefix that is deleted afterwards. Each of `--runs` starts a fresh projector on the same
filled projection topic (a new event each time).

    .venv/bin/python -m bench.bench_projector_restore --rows 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bench.process_cpu import cpu_seconds
from processors.faust_app import internal_topics
from processors.partitioning import partition_for
from processors.projector.app import projector_app_id
from processors.projector.records import KafkaRecord
from processors.registry import default_registry
from processors.settings import load_settings
from processors.topic_admin import create_topics
from processors.topics import ContextTopics, declared_topics
from schemas.codec import default_codec
from schemas.wire import headers as ce
from schemas.wire import progress

PROJECTION = "accounts"
ROW_VERSION = 3  # the aggregate version the filled rows claim
# Log lines that start and end a restore: ours (processors/projector/table_restore.py, in
# bulk before Faust starts), then Faust's recovery (what is left, one record at a time).
RESTORES = (
    (f"restoring table {PROJECTION} from", f"restored table {PROJECTION}:"),
    ("Restoring state from changelog topics", "Done reading from changelog topics"),
)
MARKS = (*(m for pair in RESTORES for m in pair), "Worker ready")


@dataclass
class Run:
    rows: int
    serving_s: float | None = None  # process start -> the event's row on the projection topic
    restore_s: float | None = None
    restore_cpu_s: float | None = None
    cpu_to_serving_s: float | None = None
    milestones: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.restore_s if self.restore_s else None

    @property
    def cpu_us_per_row(self) -> float | None:
        if self.restore_cpu_s is None or not self.rows:
            return None
        return 1e6 * self.restore_cpu_s / self.rows


def account_id(i: int) -> str:
    return f"acct-{i:07d}"


def fill(kafka: dict[str, Any], topic: str, rows: int, partitions: int) -> float:
    """Write `rows` account rows to `topic` as the projector publishes them, then a
    checkpoint record per partition; seconds."""
    codec = default_codec()
    projections = default_registry().context("bank").projections
    row_schema = next(p for p in projections if p.name == PROJECTION).row_schema
    producer = Producer(
        {**kafka, "linger.ms": 50, "batch.num.messages": 10_000, "enable.idempotence": True}
    )
    now = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    for i in range(rows):
        key = account_id(i)
        row = {
            "account_id": key,
            "owner": f"owner-{i}",
            "currency": "EUR",
            "balance": i,
            "status": "OPEN",
            "version": ROW_VERSION,
            "updated_at": now,
        }
        partition = partition_for(key, partitions)
        headers = progress.row_headers(
            topic=topic,
            key=key,
            row_type=row_schema,
            source="/bank/projector",
            source_partition=partition,
            source_offset=i,
            checkpoint=i,
            cause_id=f"bench-{i}",
            time=now,
            correlation_id=None,
            traceparent=None,
        )
        record = KafkaRecord(topic, partition, key.encode(), codec.encode(row_schema, row), headers)
        _produce(producer, record)
        if i % 10_000 == 0:
            producer.poll(0)
    for p in range(partitions):
        checkpoint = {
            "projection": PROJECTION,
            "source_topic": f"{topic.split('.projection.')[0]}.events",
            "source_partition": p,
            "checkpoint": rows,
        }
        headers = progress.checkpoint_headers(
            topic=topic, source="/bank/projector", source_partition=p, checkpoint=rows
        )
        value = codec.encode(progress.CHECKPOINT_TYPE, checkpoint)
        _produce(producer, KafkaRecord(topic, p, progress.checkpoint_key(p), value, headers))
    if producer.flush(120) != 0:
        raise RuntimeError(f"{topic}: rows undelivered")
    return time.monotonic() - started


def _produce(producer: Producer, record: KafkaRecord) -> None:
    while True:
        try:
            producer.produce(
                record.topic,
                record.value,
                record.key,
                partition=record.partition,
                headers=record.headers,
            )
            return
        except BufferError:
            producer.poll(0.1)


def write_event(
    kafka: dict[str, Any], topics: ContextTopics, account: str, version: int, n: int
) -> None:
    """One `bank.Deposited` for `account`, as the command processor writes events."""
    codec = default_codec()
    value = codec.encode(
        "bank.Deposited",
        {
            "account_id": account,
            "amount": {"amount": 100, "currency": "EUR"},
            "balance": 100 * version,
            "transfer_id": None,
            "memo": None,
        },
    )
    headers = ce.CloudEventHeaders(
        id=f"bench-{secrets.token_hex(8)}",
        type="bank.Deposited",
        source="/bank/command-processor",
        subject=account,
        time=ce.now(),
        correlation_id="bench-restore",
        causation_id="bench-restore",
        aggregate_version=version,
    ).to_kafka()
    producer = Producer({**kafka, "enable.idempotence": True})
    producer.produce(
        topics.events, value, account.encode(), partition_for(account, n), headers=headers
    )
    if producer.flush(30) != 0:
        raise RuntimeError("the event was not delivered")


class LogWatch:
    """Reads the projector's log lines; notes when the restore starts and ends, with the
    process's CPU seconds at each."""

    def __init__(self, proc: subprocess.Popen[str], started: float, out: Path) -> None:
        self.proc, self.started, self.out = proc, started, out
        self.at: dict[str, tuple[float, float]] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stderr is not None
        with self.out.open("a") as log:
            for line in self.proc.stderr:
                log.write(line)
                for mark in MARKS:
                    if mark in line and mark not in self.at:
                        try:
                            cpu = cpu_seconds(self.proc.pid)
                        except Exception:
                            cpu = float("nan")
                        self.at[mark] = (time.monotonic() - self.started, cpu)


def wait_for_row(
    kafka: dict[str, Any], topic: str, partition: int, key: bytes, version: int, deadline: float
) -> dict[str, Any] | None:
    """The row `key` at `version` once it is on `topic` (earlier runs left older ones)."""
    codec = default_codec()
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"bench-restore-{secrets.token_hex(4)}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            if msg.key() == key and (row := codec.decode(msg.value()))["version"] == version:
                return row
        return None
    finally:
        consumer.close()


def one_run(
    kafka: dict[str, Any],
    prefix: str,
    rows: int,
    version: int,
    timeout: float,
    log_file: Path,
    profile: Path | None,
) -> Run:
    ctx = default_registry().context("bank")
    topics = ContextTopics(prefix)
    account = account_id(rows // 2 if rows else 0)
    partition = partition_for(account, ctx.partitions)
    write_event(kafka, topics, account, version, ctx.partitions)
    cqrsctl = str(Path(sys.executable).parent / "cqrsctl")
    run = Run(rows)
    with tempfile.TemporaryDirectory(prefix="restore-bench-") as data_dir:
        args = [cqrsctl, "run", "projector", "--prefix", prefix, "--data-dir", data_dir]
        args += ["--health-port", "0", "--log-format", "text"]
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    *(
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--rate",
                        "100",
                    ),
                    *("--format", "raw", "--nonblocking", "--output", str(profile)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        watch = LogWatch(proc, started, log_file)
        try:
            topic = topics.projection(PROJECTION)
            deadline = started + timeout
            row = wait_for_row(kafka, topic, partition, account.encode(), version, deadline)
            if row is not None:
                run.serving_s = time.monotonic() - started
                run.cpu_to_serving_s = cpu_seconds(proc.pid)
                if rows and row["owner"] != f"owner-{rows // 2}":
                    raise RuntimeError(f"the served row is not the restored one: {row}")
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            watch.thread.join(5)
    run.milestones = {mark: round(at, 3) for mark, (at, _) in watch.at.items()}
    for start, end in RESTORES:
        if start in watch.at and end in watch.at:
            (t0, c0), (t1, c1) = watch.at[start], watch.at[end]
            run.restore_s = (run.restore_s or 0.0) + t1 - t0
            run.restore_cpu_s = (run.restore_cpu_s or 0.0) + c1 - c0
    return run


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    parser.add_argument("--runs", type=int, default=1, help="projector starts on one fill")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per start")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the first start")
    parser.add_argument("--keep", action="store_true", help="keep the topics afterwards")
    opts = parser.parse_args(argv)

    kafka = load_settings(postgres=False).kafka.client_config()
    ctx = default_registry().context("bank")
    prefix = f"restore-{secrets.token_hex(3)}"
    changelog = ContextTopics(prefix).projection(PROJECTION)  # the table's changelog too
    specs = declared_topics(ctx, prefix)
    specs += internal_topics(projector_app_id(prefix))
    created = create_topics(kafka, specs)
    if changelog not in {s.name for s in specs}:
        raise RuntimeError(f"{changelog} is not among the topics the projector uses")
    log_file = Path(tempfile.gettempdir()) / f"{prefix}-projector.log"
    try:
        fill_s = fill(kafka, changelog, opts.rows, ctx.partitions)
        runs = []
        for i in range(opts.runs):
            profile = opts.profile if i == 0 else None
            runs.append(
                one_run(
                    kafka, prefix, opts.rows, ROW_VERSION + 1 + i, opts.timeout, log_file, profile
                )
            )
    finally:
        if not opts.keep:
            AdminClient(kafka).delete_topics(created, operation_timeout=30)
    figures = {
        "rows": opts.rows,
        "changelog": changelog,
        "fill_s": round(fill_s, 2),
        "runs": [
            asdict(r) | {"rows_per_s": r.rows_per_s, "cpu_us_per_row": r.cpu_us_per_row}
            for r in runs
        ],
        "median_serving_s": _median([r.serving_s for r in runs]),
        "median_restore_s": _median([r.restore_s for r in runs]),
        "median_rows_per_s": _median([r.rows_per_s for r in runs]),
        "median_cpu_us_per_row": _median([r.cpu_us_per_row for r in runs]),
        "load": os.getloadavg(),
        "log": str(log_file),
    }
    if opts.json:
        print(json.dumps(figures, indent=2))
    else:
        table = Table(title=f"projector restore, {opts.rows:,} rows in {changelog}")
        for column in (
            "run",
            "serving s",
            "restore s",
            "rows/s",
            "restore CPU s",
            "CPU µs/row",
            "CPU to serving s",
        ):
            table.add_column(column, justify="right")
        for i, r in enumerate(runs, 1):
            table.add_row(
                str(i),
                _fmt(r.serving_s, ".1f"),
                _fmt(r.restore_s, ".1f"),
                _fmt(r.rows_per_s, ",.0f"),
                _fmt(r.restore_cpu_s, ".1f"),
                _fmt(r.cpu_us_per_row, ".1f"),
                _fmt(r.cpu_to_serving_s, ".1f"),
            )
        console = Console()
        console.print(table)
        load = ", ".join(f"{x:.1f}" for x in figures["load"])
        console.print(f"fill {fill_s:.1f} s; load average {load}; projector log {log_file}")
    return 0 if all(r.serving_s is not None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
