"""The write side's rig (private bank topics, processor processes) and the invariants read
back from `<ctx>.events` with read_committed."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.pipeline import WorkerProcess
from processors.topic_reader import read_topic
from processors.topics import ContextTopics
from producers.command_client import CommandClient, CommandResult, PendingCommand
from schemas.codec import default_codec
from schemas.wire import headers as ce


@dataclass
class BankRig:
    kafka: dict[str, Any]
    prefix: str
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.prefix)

    def processor(self, instance_id: str = "p0", ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(
            "processor",
            ["--context", "bank", "--prefix", self.prefix, "--instance-id", instance_id],
            self.log_dir / f"processor-{instance_id}-{len(self.workers)}.log",
        ).start()
        self.workers.append(worker)
        return worker.wait_ready() if ready else worker

    def client(self) -> CommandClient:
        return CommandClient(self.kafka, "bank", topic_prefix=self.prefix)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


def open_account(account_id: str, currency: str = "EUR") -> dict[str, Any]:
    return {"account_id": account_id, "owner": f"owner of {account_id}", "currency": currency}


def movement(account_id: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
    return {"account_id": account_id, "amount": {"amount": amount, "currency": currency}}


@dataclass(frozen=True)
class StoredEvent:
    partition: int
    offset: int
    aggregate_id: str
    type: str
    version: int
    causation_id: str
    data: dict[str, Any]
    principal: str | None  # ce_principal
    time: dt.datetime  # ce_time


def read_events(kafka: dict[str, Any], topic: str) -> list[StoredEvent]:
    """Every committed event, in partition then offset order."""
    codec = default_codec()
    events = []
    for msg in read_topic(kafka, topic):
        h = {k: v.decode() for k, v in msg.headers() or () if v is not None}
        decoded = codec.decode_message(msg.value())
        type_name, data = decoded.writer.name, decoded.record
        events.append(
            StoredEvent(
                msg.partition(),
                msg.offset(),
                msg.key().decode(),
                type_name,
                int(h[ce.AGGREGATE_VERSION]),
                h[ce.CAUSATION_ID],
                data,
                h.get(ce.PRINCIPAL),
                ce.parse_time(h[ce.TIME]),
            )
        )
    return events


def forged_headers(
    command_id: str, command_type: str, subject: str, source: str
) -> list[tuple[str, bytes]]:
    """Every header a client could copy from the internal commands the worker at `source`
    (`ce_source`, e.g. `/bank/command-processor`) issues."""
    headers = ce.CloudEventHeaders(
        id=command_id,
        type=command_type,
        source=source,
        subject=subject,
        time=ce.now(),
        correlation_id="c-forge",
        causation_id="c-forge",
        principal=f"system:{source}",
        extensions={"commandtopic": "internal"},
    ).to_kafka()
    return [*headers, ("cqrs_internal", b"true")]


def causation_of(msg: Any) -> str | None:
    """A record's `ce_causationid` header."""
    return next((v.decode() for k, v in msg.headers() or () if k == ce.CAUSATION_ID), None)


def check_event_log(events: list[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """Per aggregate, versions run 1..n with no gap and no duplicate."""
    by_aggregate: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in events:
        by_aggregate[e.aggregate_id].append(e)
    for aggregate_id, stream in by_aggregate.items():
        versions = [e.version for e in stream]
        assert versions == list(range(1, len(stream) + 1)), (aggregate_id, versions[:50])
    return by_aggregate


def check_accepted_exactly_once(
    events: list[StoredEvent], results: dict[str, CommandResult]
) -> None:
    """Every command the client saw accepted has its events exactly once; rejected ones none."""
    per_command = Counter(e.causation_id for e in events)
    for command_id, result in results.items():
        expected = len(result.events) if result.accepted else 0
        assert per_command.get(command_id, 0) == expected, (command_id, result)
        if result.accepted:
            assert expected >= 1


def fold_balances(events: list[StoredEvent]) -> dict[str, int]:
    balances: dict[str, int] = defaultdict(int)
    for e in events:
        if e.type == "bank.Deposited":
            balances[e.aggregate_id] += e.data["amount"]["amount"]
        elif e.type == "bank.Withdrawn":
            balances[e.aggregate_id] -= e.data["amount"]["amount"]
    return dict(balances)


def random_workload(accounts: list[str], n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    commands = []
    for _ in range(n):
        account = rng.choice(accounts)
        if rng.random() < 0.6:
            commands.append(("bank.Deposit", movement(account, rng.randint(1, 10_000))))
        else:
            commands.append(("bank.Withdraw", movement(account, rng.randint(1, 12_000))))
    return commands


def send_steadily(
    client: CommandClient,
    commands: list[tuple[str, dict[str, Any]]],
    per_second: int,
    sent: list[PendingCommand],
    done: threading.Event,
) -> threading.Thread:
    """Send `commands` at about `per_second` on a background thread, appending each pending
    command to `sent`; `done` is set once all are sent and flushed."""

    def run() -> None:
        started = time.monotonic()
        for i, (type_, data) in enumerate(commands):
            sent.append(client.send(type_, data))
            if i % 500 == 0:
                ahead = i / per_second - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        client.flush()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
