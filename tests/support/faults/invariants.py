"""What the fault run must show, computed from Kafka and Postgres after the pipeline drained:
the invariants the test asserts, and how long each kind of fault took to recover from."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from processors.topic_reader import read_topic
from producers.command_client import CommandResult
from schemas.codec import default_codec
from tests.support.faults.load import CheckpointProbe
from tests.support.read_side import (
    fold_accounts,
    pg_accounts,
    pg_daily_totals,
    sum_daily_totals,
)
from tests.support.write_side import StoredEvent


@dataclass
class Fault:
    kind: str  # "kill processor", "kill projector", "kill sink", "broker", "postgres", "zombie"
    at: float  # wall clock: the fault began
    restarted: float  # wall clock: the failed part was started again (or taken over)
    notes: str = ""


@dataclass(frozen=True)
class CommittedResult:
    at: float  # wall clock of the processor's produce (the record's timestamp)
    command_id: str
    events: tuple[tuple[int, int], ...]  # (partition, offset) in <ctx>.events


def read_results(kafka: dict[str, Any], topic: str) -> list[CommittedResult]:
    codec = default_codec()
    out = []
    for msg in read_topic(kafka, topic):
        r = codec.decode_message(msg.value()).record
        positions = tuple((e["partition"], e["offset"]) for e in r["events"])
        out.append(CommittedResult(msg.timestamp()[1] / 1000, r["command_id"], positions))
    return sorted(out, key=lambda r: r.at)


@dataclass
class Invariants:
    sent: int
    send_errors: int
    acknowledged: int
    accepted: int
    rejected: int
    events: int
    duplicates: int
    version_gaps: int
    acked_but_missing: int
    rejected_with_events: int
    pg_rows_differing: int
    event_log_differing: int
    daily_totals_differing: int
    max_events_per_command: int
    # (aggregate, version, partition, offset) in Postgres's event_log but not an event, and
    # the reverse: what to look at when event_log_differing is not 0.
    event_log_extra: list[tuple[Any, ...]] = field(default_factory=list)
    event_log_missing: list[tuple[Any, ...]] = field(default_factory=list)
    # (command id, (partition, offset) of its events) of acknowledged-accepted commands
    # whose events are not all in <ctx>.events.
    missing_examples: list[tuple[str, tuple[tuple[int, int], ...]]] = field(default_factory=list)
    # Events of a duplicated (aggregate, version) or command: what to look at when
    # duplicates is not 0.
    duplicate_examples: list[str] = field(default_factory=list)
    # (currency, day): (folded from the events, in Postgres) where they differ
    daily_totals_examples: list[tuple[Any, ...]] = field(default_factory=list)


def check(
    sent_ids: list[str],
    send_errors: int,
    acked: dict[str, CommandResult],
    events: list[StoredEvent],
    pg_conn: Any,
) -> Invariants:
    per_command = Counter(e.causation_id for e in events)
    by_version = Counter((e.aggregate_id, e.version) for e in events)
    versions: dict[str, set[int]] = defaultdict(set)
    for e in events:
        versions[e.aggregate_id].add(e.version)
    # Every command of this workload decides at most one event, so a second event caused by
    # the same command is a duplicate even if it got a fresh version.
    duplicates = sum(n - 1 for n in by_version.values()) + sum(n - 1 for n in per_command.values())
    gaps = sum(max(vs) - len(vs) for vs in versions.values())
    missing = sum(
        1 for cid, r in acked.items() if r.accepted and per_command.get(cid, 0) < len(r.events)
    )
    phantom = sum(1 for cid, r in acked.items() if not r.accepted and per_command.get(cid, 0))
    folded = fold_accounts(events)
    rows = pg_accounts(pg_conn)
    differing = sum(1 for k in folded.keys() | rows.keys() if folded.get(k) != rows.get(k))
    logged = {
        tuple(r)
        for r in pg_conn.execute(
            "SELECT aggregate_id, version, source_partition, source_offset FROM event_log"
        ).fetchall()
    }
    expected_log = {(e.aggregate_id, e.version, e.partition, e.offset) for e in events}
    # Balances are carried by the events, so `accounts` stays right even if the projector
    # skipped some; totals are sums, so they show a skipped movement.
    daily_totals = sum_daily_totals(events)
    totals = pg_daily_totals(pg_conn)
    differing_totals = [
        (k, daily_totals.get(k), totals.get(k))
        for k in sorted(daily_totals.keys() | totals.keys())
        if daily_totals.get(k) != totals.get(k)
    ]
    return Invariants(
        sent=len(sent_ids),
        send_errors=send_errors,
        acknowledged=sum(1 for cid in sent_ids if cid in acked),
        accepted=sum(1 for cid in sent_ids if cid in acked and acked[cid].accepted),
        rejected=sum(1 for cid in sent_ids if cid in acked and not acked[cid].accepted),
        events=len(events),
        duplicates=duplicates,
        version_gaps=gaps,
        acked_but_missing=missing,
        rejected_with_events=phantom,
        pg_rows_differing=differing,
        event_log_differing=len(logged ^ expected_log),
        daily_totals_differing=len(differing_totals),
        daily_totals_examples=differing_totals[:5],
        max_events_per_command=max(per_command.values(), default=0),
        event_log_extra=sorted(logged - expected_log),
        event_log_missing=sorted(expected_log - logged),
        duplicate_examples=[
            f"{e.aggregate_id} v{e.version} at {e.partition}@{e.offset} caused by "
            f"{e.causation_id} ({e.time})"
            for e in events
            if by_version[(e.aggregate_id, e.version)] > 1 or per_command[e.causation_id] > 1
        ][:12],
        missing_examples=[
            (cid, tuple((e.partition, e.offset) for e in r.events))
            for cid, r in acked.items()
            if r.accepted and per_command.get(cid, 0) < len(r.events)
        ][:5],
    )


@dataclass
class Recovery:
    kind: str
    first_result_s: list[float] = field(default_factory=list)
    pg_caught_up_s: list[float] = field(default_factory=list)
    unrecovered: int = 0


def recoveries(
    faults: list[Fault], results: list[CommittedResult], probe: CheckpointProbe
) -> list[Recovery]:
    """Per kind of fault: from the restart until (a) the first result committed after it
    (write-side faults only: a projector or sink kill does not stop results), and (b)
    Postgres's checkpoints cover every event whose result was committed before the fault."""
    out: dict[str, Recovery] = {}
    for f in faults:
        rec = out.setdefault(f.kind, Recovery(f.kind))
        if f.kind in ("kill processor", "broker", "zombie"):
            after = next((r.at for r in results if r.at >= f.restarted), None)
            if after is not None:
                rec.first_result_s.append(after - f.restarted)
        target: dict[int, int] = {}
        for r in results:
            if r.at >= f.at:
                break
            for p, o in r.events:
                target[p] = max(target.get(p, -1), o)
        caught = probe.caught_up_at(f.restarted, target)
        if caught is None:
            rec.unrecovered += 1
        else:
            rec.pg_caught_up_s.append(caught - f.restarted)
    return list(out.values())
