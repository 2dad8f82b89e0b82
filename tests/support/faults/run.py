"""The fault run itself: the whole pipeline under a steady load on the fault stack while its
workers are SIGKILLed, the broker and Postgres restarted and a processor frozen into a
zombie; then, once everything drained, what Kafka and Postgres hold (`FaultRun`).

    run = run_faults(fault_stack, tmp_path, FaultPlan.from_env())
    run.invariants      # tests/support/faults/invariants.py: what the test asserts
    print_report(console, run)   # tests/support/faults/report.py

Size (env): CQRS_FAULT_KILLS (SIGKILLs across roles, default 20), CQRS_FAULT_RATE
(commands/s, default 200), CQRS_FAULT_ACCOUNTS (default 200), CQRS_FAULT_SEED.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import KafkaException

from deploy.local import stack as local_stack
from deploy.local.pipeline import WorkerProcess
from deploy.local.state import StackState
from processors.registry import default_registry
from processors.topic_admin import create_topics
from processors.topics import ContextTopics, declared_topics
from producers.command_client import CommandClient, CommandTimeout
from sinks.checkpoints import ReadModelTimeout
from sinks.db import connect
from tests.support.faults.aiokafka_check import aiokafka_disagreement
from tests.support.faults.invariants import (
    Fault,
    Invariants,
    Recovery,
    check,
    read_results,
    recoveries,
)
from tests.support.faults.kafka_probe import locate, stuck_lso
from tests.support.faults.load import CheckpointProbe, SteadyLoad
from tests.support.faults.supervisor import SupervisedPipeline
from tests.support.read_side import ReadSideRig, metric
from tests.support.write_side import BankRig, movement, open_account, read_events

# Which supervised worker a kill of each role hits.
ROLES = {"processor": "p0", "projector": "projector", "sink": "sink"}


@dataclass(frozen=True)
class FaultPlan:
    kills: int = 20
    rate: float = 200.0  # commands/s
    accounts: tuple[str, ...] = tuple(f"acct-{i:03d}" for i in range(200))
    seed: int = 8
    outage_s: float = 3.0  # how long the broker and Postgres stay down

    @classmethod
    def from_env(cls) -> FaultPlan:
        accounts = int(os.environ.get("CQRS_FAULT_ACCOUNTS", "200"))
        return cls(
            kills=int(os.environ.get("CQRS_FAULT_KILLS", "20")),
            rate=float(os.environ.get("CQRS_FAULT_RATE", "200")),
            accounts=tuple(f"acct-{i:03d}" for i in range(accounts)),
            seed=int(os.environ.get("CQRS_FAULT_SEED", "8")),
        )


@dataclass
class FaultRun:
    """What a run did (faults, kills, measures for the report) and what it found."""

    plan: FaultPlan
    kafka: dict[str, Any]
    topics: ContextTopics
    dsn: str
    schema: str
    invariants: Invariants
    recoveries: list[Recovery]
    faults: list[Fault]
    kills: list[str]
    # (partition, offset) of events that librdkafka reads and aiokafka does not, and back
    only_librdkafka: list[tuple[int, int]]
    only_aiokafka: list[tuple[int, int]]
    unplanned_exits: list[tuple[str, int | None]]
    measures: dict[str, object] = field(default_factory=dict)  # shown in the report

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.faults)


def run_faults(stack: StackState, log_dir: Path, plan: FaultPlan) -> FaultRun:
    rng = random.Random(plan.seed)
    kafka: dict[str, Any] = {"bootstrap.servers": stack.bootstrap_servers}
    prefix = f"faults_{uuid.uuid4().hex[:6]}"
    schema = prefix
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    ctx = default_registry().context("bank")
    create_topics(kafka, declared_topics(ctx, prefix))
    topics = ContextTopics(prefix)

    pipe = SupervisedPipeline(stack, log_dir, prefix, schema)
    probe = CheckpointProbe(pipe.dsn, "accounts")
    client = new_client(kafka, prefix)
    load = SteadyLoad(client, list(plan.accounts), plan.rate, plan.seed)
    faults: list[Fault] = []
    kills: list[str] = []
    measures: dict[str, object] = {}

    def round_trip() -> str:
        return f"{probe_round_trip(kafka, client, plan.accounts[0]):.1f}"

    try:
        for name in ROLES.values():
            pipe.spawn(name)
        pipe.wait_ready()
        pipe.start_supervising()
        opened = [client.send("bank.OpenAccount", open_account(a)) for a in plan.accounts]
        assert all(p.result(120).accepted for p in opened)
        probe.start()
        load.start()
        started = time.monotonic()

        kill_phase(pipe, rng, plan.kills // 2, kills, faults)
        pipe.wait_ready()
        measures["round trip before broker restart, s"] = round_trip()

        at = time.time()
        local_stack.stop_kafka(stack.state_dir)
        time.sleep(plan.outage_s)
        local_stack.start_kafka(stack.state_dir)
        faults.append(Fault("broker", at, time.time()))
        measures["round trip after broker restart, s"] = round_trip()
        pipe.wait_ready()

        kill_phase(pipe, rng, plan.kills - plan.kills // 2, kills, faults)
        pipe.wait_ready()

        at = time.time()
        local_stack.stop_postgres(stack.state_dir)
        time.sleep(plan.outage_s)
        local_stack.start_postgres(stack.state_dir)
        faults.append(Fault("postgres", at, time.time()))
        pipe.wait_ready()

        measures["zombie"] = zombie_phase(pipe, ctx.partitions, faults)
        measures["round trip after the zombie, s"] = round_trip()
        time.sleep(3)
        load.stop()
        measures["load, s"] = f"{time.monotonic() - started:.0f}"

        acked = load.results(timeout=180)
        measures["open transactions resolved after the load, s"] = (
            f"{wait_transactions_resolved(kafka, topics):.1f}"
        )
        rig = ReadSideRig(BankRig(kafka, prefix, log_dir), pipe.dsn, schema)
        wait_drained(rig, probe)
        probe.stop()
        events = read_events(kafka, topics.events)
        with connect(pipe.dsn, schema) as conn:
            sent = [s.pending.command_id for s in load.sent]
            invariants = check(sent, len(load.errors), acked, events, conn)
        only_librdkafka, only_aiokafka = aiokafka_disagreement(
            stack.bootstrap_servers,
            topics.events,
            ctx.partitions,
            ((e.partition, e.offset) for e in events),
        )
        measures["events aiokafka (Faust's client) reads differently"] = len(only_librdkafka) + len(
            only_aiokafka
        )
        found_recoveries = recoveries(faults, read_results(kafka, topics.results), probe)
        measures["kills (processor/projector/sink)"] = "/".join(
            str(kills.count(r)) for r in ("processor", "projector", "sink")
        )
        measures["broker restarts"] = sum(f.kind == "broker" for f in faults)
        measures["Postgres restarts"] = sum(f.kind == "postgres" for f in faults)
        measures["workers that exited on their own (restarted)"] = len(pipe.unplanned_exits)
        measures["liveness restarts"] = len(pipe.liveness_restarts)
        measures["projection records the sink jumped over (its logs)"] = skipped_by_sink(log_dir)
        events, batches = reread_by_projector(log_dir)
        measures["events Faust dropped, re-read by the projector (its logs)"] = (
            f"{events} in {batches} batches"
        )
    finally:
        load.stop()
        probe.stop()
        client.close()
        pipe.stop()
    return FaultRun(
        plan=plan,
        kafka=kafka,
        topics=topics,
        dsn=pipe.dsn,
        schema=schema,
        invariants=invariants,
        recoveries=found_recoveries,
        faults=faults,
        kills=kills,
        only_librdkafka=list(only_librdkafka),
        only_aiokafka=list(only_aiokafka),
        unplanned_exits=list(pipe.unplanned_exits),
        measures=measures,
    )


def kill_phase(
    pipe: SupervisedPipeline, rng: random.Random, n: int, kills: list[str], faults: list[Fault]
) -> None:
    """SIGKILL `n` ready workers (they hold partitions) at random moments, each restarted
    at once."""
    for _ in range(n):
        time.sleep(rng.uniform(0.5, 1.5))
        ready = pipe.ready_names()
        deadline = time.monotonic() + 120
        while not (running := [r for r, name in ROLES.items() if name in ready]):
            assert time.monotonic() < deadline, "no worker became ready again"
            time.sleep(0.5)
            ready = pipe.ready_names()
        role = rng.choice(running)
        at = time.time()
        restarted = pipe.kill_and_restart(ROLES[role])
        kills.append(role)
        faults.append(Fault(f"kill {role}", at, restarted))


def zombie_phase(pipe: SupervisedPipeline, partitions: int, faults: list[Fault]) -> str:
    """Two processors; freeze p0 while it holds partitions, let p1 take them, thaw p0."""
    pipe.spawn("p1")
    pipe.wait_ready(["p0", "p1"])
    wait_for(
        "both processors to own partitions",
        lambda: assigned(pipe.workers["p0"]) > 0 and assigned(pipe.workers["p1"]) > 0,
        60,
    )
    zombie = pipe.release("p0")
    held = assigned(zombie)
    at = time.time()
    os.kill(zombie.proc.pid, signal.SIGSTOP)
    wait_for("p1 to own every partition", lambda: assigned(pipe.workers["p1"]) == partitions, 60)
    took_over = time.time()
    faults.append(Fault("zombie", at, took_over))
    os.kill(zombie.proc.pid, signal.SIGCONT)
    try:
        zombie.proc.wait(10)
        fate = f"exited {zombie.proc.returncode} by itself"
    except subprocess.TimeoutExpired:
        fate = "rejoined as a plain member; SIGKILLed"
    zombie.kill()
    # What the thawed zombie's open transaction ran into, as its log says.
    codes = re.findall(r"(?:aborted|stopped|fenced).*?code=(\w+)", zombie.log_tail(30), re.I)
    failed = f"its transaction failed: {', '.join(sorted(set(codes)))}" if codes else "no txn open"
    return f"held {held}/{partitions} partitions; {failed}; {fate}"


def skipped_by_sink(log_dir: Path) -> int:
    """Offsets of projection topics a sink process jumped over, as its warnings count them."""
    found = re.findall(
        r"\((\d+) records never seen by this sink\)",
        "".join(path.read_text(errors="replace") for path in sorted(log_dir.glob("sink-*.log"))),
    )
    return sum(int(n) for n in found)


def reread_by_projector(log_dir: Path) -> tuple[int, int]:
    """Events Faust fetched and never delivered that the projector read again, and in how
    many batches, as its warnings list them (processors/projector/app.py)."""
    text = "".join(
        path.read_text(errors="replace") for path in sorted(log_dir.glob("projector-*.log"))
    )
    lines = re.findall(r"before the agent saw them; reading again: (.*)", text)
    return sum(reread_count(line) for line in lines), len(lines)


def reread_count(where: str) -> int:
    """How many offsets a re-read warning names, e.g. `t[0] offsets 3-5, 9; t[2] offsets 7`
    names 5."""
    count = 0
    for part in where.split("; "):
        for run in part.split(" offsets ", 1)[1].split(", "):
            first, _, last = run.partition("-")
            count += int(last or first) - int(first) + 1
    return count


def probe_round_trip(
    kafka: dict[str, Any], client: CommandClient, account: str, timeout: float = 120.0
) -> float:
    """A command sent now gets its result: the pipeline processes again."""
    started = time.monotonic()
    pending = client.send("bank.Deposit", movement(account, 1))
    try:
        pending.result(timeout)
    except CommandTimeout:
        where = locate(kafka, client.topics, pending.command_id)
        listener = client._listener.describe() if client._listener else "no results listener"
        raise AssertionError(
            f"probe {pending.command_id}: no result in {timeout}s; {where}; {listener}"
        ) from None
    return time.monotonic() - started


def new_client(kafka: dict[str, Any], prefix: str) -> CommandClient:
    # A broker a few seconds old may answer NOT_LEADER for a moment after the topics have
    # leaders in its metadata.
    deadline = time.monotonic() + 60
    while True:
        try:
            return CommandClient(kafka, "bank", topic_prefix=prefix)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def assigned(worker: WorkerProcess) -> int:
    try:
        return int(metric(worker, "cqrs_assigned_partitions"))
    except OSError:
        return -1


def wait_for(what: str, ok: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def wait_transactions_resolved(
    kafka: dict[str, Any], topics: ContextTopics, timeout: float = 120.0
) -> float:
    """Until no partition's last stable offset is behind its end; returns the seconds it took.

    The zombie is SIGKILLed with a transaction open and never started again under its id,
    so only the broker's transaction timeout (30 s, then its abort sweep, every 10 s) ends
    that transaction. Until then read_committed readers stop at its first record, and events
    committed after it by the survivor are invisible: checked before, acknowledged commands
    whose events are there would count as missing."""
    started = time.monotonic()
    while any(stuck_lso(kafka, topics).values()):
        assert time.monotonic() - started < timeout, (
            f"open transactions: {stuck_lso(kafka, topics)}"
        )
        time.sleep(1)
    return time.monotonic() - started


def wait_drained(rig: ReadSideRig, probe: CheckpointProbe, stall_s: float = 120.0) -> None:
    """Until Postgres has every event. A busy machine drains the faults' backlog slowly, so
    give up only when the checkpoints stop moving, not after a fixed time."""
    last, moved_at = -1, time.monotonic()
    while True:
        try:
            rig.wait_caught_up(timeout=20)
            return
        except ReadModelTimeout:
            done = sum(probe.samples[-1][1].values()) if probe.samples else -1
            if done > last:
                last, moved_at = done, time.monotonic()
            elif time.monotonic() - moved_at > stall_s:
                raise
