"""The fault run's report: rich tables of the invariants and of the recovery after each kind
of fault, and, for an invariant that does not hold, where the records in question sit on
their topics and in Postgres. The assertions are the test's (tests/faults/test_faults.py)."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from sinks.db import connect
from tests.support.faults.invariants import Invariants, Recovery
from tests.support.faults.kafka_probe import (
    describe_offsets,
    find_log_records,
    stuck_lso,
    trace_command,
)
from tests.support.faults.run import FaultRun


def print_report(console: Console, run: FaultRun) -> None:
    inv, kafka, topics = run.invariants, run.kafka, run.topics
    print_tables(console, inv, run.recoveries, run.measures)
    if inv.event_log_extra or inv.event_log_missing:
        console.print(
            f"event_log: {len(inv.event_log_extra)} rows that are no event, e.g. "
            f"{inv.event_log_extra[:5]}; {len(inv.event_log_missing)} events without a "
            f"row, e.g. {inv.event_log_missing[:5]}"
        )
        console.print(describe_offsets(kafka, topics.events, inv.event_log_extra[:5]))
        with connect(run.dsn, run.schema) as conn:
            positions = conn.execute(
                "SELECT topic, topic_partition, next_offset FROM cqrs_sink_offsets"
                " WHERE topic = %s ORDER BY 2",
                (topics.projection("event_log"),),
            ).fetchall()
        console.print(f"sink positions in event_log: {positions}")
        console.print(*find_log_records(kafka, topics, inv.event_log_missing[:3]), sep="\n")
    if inv.daily_totals_examples:
        console.print(f"daily_totals (key, events, Postgres): {inv.daily_totals_examples}")
    if run.only_librdkafka or run.only_aiokafka:
        console.print(
            f"aiokafka read_committed misses {run.only_librdkafka[:10]} and adds "
            f"{run.only_aiokafka[:10]} (partition, offset)"
        )
    if inv.duplicate_examples:
        console.print("duplicated events, e.g.:", *inv.duplicate_examples, sep="\n  ")
    if inv.missing_examples:
        console.print(f"accepted but missing, e.g.: {inv.missing_examples}")
        at = [("?", "?", p, o) for _, positions in inv.missing_examples for p, o in positions]
        console.print(describe_offsets(kafka, topics.events, at))
        for cid, positions in inv.missing_examples[:2]:
            console.print(*trace_command(kafka, topics, cid, positions[0][0]), sep="\n")
    console.print(f"partitions whose last stable offset is behind: {stuck_lso(kafka, topics)}")
    if run.unplanned_exits:
        console.print(f"exits: {run.unplanned_exits}")


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def print_tables(
    console: Console, inv: Invariants, recs: list[Recovery], measures: dict[str, object]
) -> None:
    table = Table(title="fault run: invariants", show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("must be")
    rows = [
        ("commands sent", inv.sent, ""),
        ("send calls that raised", inv.send_errors, ""),
        ("acknowledged (ACCEPTED/REJECTED result)", inv.acknowledged, ""),
        ("  accepted", inv.accepted, ""),
        ("  rejected", inv.rejected, ""),
        ("sent, never acknowledged", inv.sent - inv.acknowledged, ""),
        ("events in <ctx>.events", inv.events, ""),
        ("duplicates", inv.duplicates, "0"),
        ("version gaps", inv.version_gaps, "0"),
        ("acknowledged-accepted but missing events", inv.acked_but_missing, "0"),
        ("rejected but with events", inv.rejected_with_events, "0"),
        ("accounts rows != fold of events", inv.pg_rows_differing, "0"),
        ("event_log rows != events", inv.event_log_differing, "0"),
        ("daily_totals rows != sums of the events", inv.daily_totals_differing, "0"),
    ]
    rows += [(k, v, "") for k, v in measures.items()]
    for name, value, must in rows:
        table.add_row(name, str(value), must)
    console.print(table)
    rt = Table(title="recovery after each kind of fault (seconds from restart: median / max)")
    for col in ("fault", "count", "first result after", "Postgres caught up", "unrecovered"):
        rt.add_column(col)
    for r in recs:
        count = max(len(r.pg_caught_up_s) + r.unrecovered, len(r.first_result_s))
        rt.add_row(
            r.kind,
            str(count),
            _spread(r.first_result_s),
            _spread(r.pg_caught_up_s),
            str(r.unrecovered),
        )
    console.print(rt)
