"""kill -9 of the projector and the sink during a long run: after restarts, Postgres
equals the fold of the events, as if nothing had happened.

The run's size is CQRS_READ_SIDE_KILL_COMMANDS: 10,000 commands over 1,000 accounts by
default, so the suite stays quick on two cores; the issue's 50,000 passes too, in about
130 s on the two-core reference machine (`CQRS_READ_SIDE_KILL_COMMANDS=50000 pytest
tests/integration/test_read_side_crashes.py`).
"""

from __future__ import annotations

import os
import random
import threading
import time

from producers.command_client import PendingCommand
from tests.support.read_side import (
    ReadSideRig,
    fold_accounts,
    fold_daily_totals,
    pg_accounts,
    pg_daily_totals,
    read_events,
)
from tests.support.write_side import open_account, random_workload, send_steadily

COMMANDS = int(os.environ.get("CQRS_READ_SIDE_KILL_COMMANDS", "10000"))
ACCOUNTS = [f"acct-{i:04d}" for i in range(1000)]
SEND_RATE = 5000  # commands per second


def test_sigkill_of_projector_and_sink_during_a_run_leaves_postgres_equal_to_the_fold(
    read_side: ReadSideRig,
):
    rng = random.Random(31)
    read_side.bank.processor("p0", ready=False)
    workers = {"projector": read_side.projector(False, 0.05), "sink": read_side.sink(False, 0.05)}
    for worker in (*read_side.bank.workers, *workers.values()):
        worker.wait_ready(90)
    with read_side.bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        assert all(p.result(120).accepted for p in pending)

    sent: list[PendingCommand] = []
    done = threading.Event()
    client = read_side.bank.client()
    send_steadily(client, random_workload(ACCOUNTS, COMMANDS, seed=23), SEND_RATE, sent, done)
    kills: list[str] = []
    while len(kills) < 4 or not done.is_set():
        time.sleep(rng.uniform(1.0, 3.0))
        victims = rng.choice([["projector"], ["sink"], ["projector", "sink"]])
        for role in victims:
            workers[role].kill()
            kills.append(role)
        for role in victims:
            start = read_side.projector if role == "projector" else read_side.sink
            workers[role] = start(False, 0.05)
        for role in victims:
            workers[role].wait_ready(90)
    results = [p.result(300) for p in sent]
    client.close()
    assert {"projector", "sink"} <= set(kills) and len(kills) >= 4
    # after a kill -9 the projector does not trust its RocksDB files: restored from changelogs
    restarted = [w for w in read_side.workers if w.role == "projector"][1:]
    assert any("no clean shutdown recorded" in w.log_path.read_text() for w in restarted)
    assert len(results) == COMMANDS and 0 < sum(r.accepted for r in results) < COMMANDS

    read_side.wait_caught_up(timeout=600)
    events = read_events(read_side.kafka, read_side.bank.topics.events)
    with read_side.pg() as conn:
        assert pg_accounts(conn) == fold_accounts(events)
        assert pg_daily_totals(conn) == fold_daily_totals(
            read_side.kafka, read_side.bank.topics.events
        )
        logged = conn.execute(
            "SELECT aggregate_id, version, source_partition, source_offset FROM event_log"
        ).fetchall()
        assert sorted(logged) == sorted(
            (e.aggregate_id, e.version, e.partition, e.offset) for e in events
        )
