"""Codec throughput for a typical event (bank.Deposited), next to peers in the same run.

    .venv/bin/python -m bench.bench_codec [--records 50000] [--runs 5]

Prints records/s (median of the runs) and each rate as a ratio to plain fastavro without the
single-object framing. The machine is shared and noisy, so compare ratios, not absolute
numbers. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import statistics
import time
from collections.abc import Callable

from fastavro import schemaless_reader, schemaless_writer
from rich.console import Console
from rich.table import Table

from schemas.codec import LATEST, default_codec
from schemas.wire.headers import CloudEventHeaders

EVENT = {
    "account_id": "acc-000123",
    "amount": {"amount": 12_345, "currency": "EUR"},
    "balance": 1_000_000,
    "transfer_id": None,
    "memo": None,
}


def measure(
    cases: list[tuple[str, str, Callable[[], object]]], records: int, runs: int
) -> list[float]:
    """Median records/s of each case. The cases take turns within each run, so that a burst
    of load from a neighbour on this shared machine hits them all alike."""
    for _, _, work in cases:
        work()  # warm up caches and decode plans
    rates: list[list[float]] = [[] for _ in cases]
    for _ in range(runs):
        for index, (_, _, work) in enumerate(cases):
            start = time.perf_counter()
            work()
            rates[index].append(records / (time.perf_counter() - start))
    return [statistics.median(found) for found in rates]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n, runs = args.records, args.runs

    codec = default_codec()
    v1, v2 = codec.catalog.versions("bank.Deposited")
    parsed = v2.parsed
    message = codec.encode(v2, EVENT)
    v1_message = codec.encode(v1, {k: v for k, v in EVENT.items() if k != "memo"})
    body = message[10:]
    json_text = json.dumps(EVENT)
    batch = [EVENT] * n
    messages = [message] * n
    headers = CloudEventHeaders(
        id="e-1",
        type="bank.Deposited",
        source="/bank/command-processor",
        subject="acc-000123",
        time=dt.datetime.now(dt.UTC),
        correlation_id="c-1",
        causation_id="cmd-1",
        aggregate_version=42,
    )
    kafka_headers = headers.to_kafka()

    def fastavro_encode() -> None:
        for record in batch:
            out = io.BytesIO()
            schemaless_writer(out, parsed, record)
            out.getvalue()

    def fastavro_decode() -> None:
        for _ in range(n):
            schemaless_reader(io.BytesIO(body), parsed, None)

    cases: list[tuple[str, str, Callable[[], object]]] = [
        ("encode", "fastavro schemaless (no framing)", fastavro_encode),
        ("encode", "codec.encode", lambda: [codec.encode("bank.Deposited", r) for r in batch]),
        ("encode", "json.dumps", lambda: [json.dumps(r) for r in batch]),
        ("decode", "fastavro schemaless (no framing)", fastavro_decode),
        ("decode", "codec.decode", lambda: [codec.decode(m) for m in messages]),
        (
            "decode",
            "codec.decode v1 -> v2 (resolution)",
            lambda: [codec.decode(v1_message, LATEST) for _ in range(n)],
        ),
        ("decode", "json.loads", lambda: [json.loads(json_text) for _ in range(n)]),
        ("headers", "CloudEventHeaders.to_kafka", lambda: [headers.to_kafka() for _ in range(n)]),
        (
            "headers",
            "CloudEventHeaders.from_kafka",
            lambda: [CloudEventHeaders.from_kafka(kafka_headers) for _ in range(n)],
        ),
    ]

    table = Table(
        title=f"bank.Deposited ({len(message)} bytes on the wire), {n} records x {runs} runs, "
        "median"
    )
    for column in ("op", "implementation", "records/s", "vs fastavro"):
        table.add_column(column, justify="right" if column != "implementation" else "left")
    baseline: dict[str, float] = {}
    for (op, name, _), rate in zip(cases, measure(cases, n, runs), strict=True):
        baseline.setdefault(op, rate)
        table.add_row(op, name, f"{rate:,.0f}", f"{rate / baseline[op]:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
