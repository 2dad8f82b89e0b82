"""`cqrsctl projections rebuild` on a running read side: generation 2 of `accounts` is built
by its own projector and sink from offset 0 while a sender keeps sending and the live
generation keeps serving; its projector is killed with SIGKILL and resumes; the swap makes
it live. A reader polling `accounts` every few milliseconds throughout never sees a row
vanish or go back to an older version, and the swapped-in table equals the fold. And a
projection added to a running system is backfilled from offset 0 the same way."""

from __future__ import annotations

import json
import threading
import time

from producers.command_client import CommandClient, PendingCommand
from tests.support.cli_run import wait_for
from tests.support.generations import (
    checkpoints_of,
    generation_workers,
    projections,
    running_with_events,
)
from tests.support.polling_reader import PollingReader
from tests.support.read_side import (
    ReadSideRig,
    fold_accounts,
    fold_daily_totals,
    pg_accounts,
    pg_daily_totals,
)
from tests.support.write_side import open_account, random_workload, read_events

ACCOUNTS = [f"acct-{i:03d}" for i in range(60)]
SEND_EVERY_S = 0.01  # the sender runs from before the rebuild until after the swap


class Sender(threading.Thread):
    """Sends deposits and withdrawals steadily until stopped."""

    def __init__(self, client: CommandClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.sent: list[PendingCommand] = []
        self.stop = threading.Event()

    def run(self) -> None:
        for type_, data in random_workload(ACCOUNTS, 1_000_000, seed=5):
            if self.stop.is_set():
                break
            self.sent.append(self.client.send(type_, data))
            time.sleep(SEND_EVERY_S)
        self.client.flush()


def test_a_rebuild_under_load_with_a_kill_swaps_in_without_readers_seeing_a_step_back(
    read_side: ReadSideRig,
) -> None:
    read_side.bank.processor("p0", ready=False)
    for worker in (read_side.projector(False), read_side.sink(False), *read_side.bank.workers):
        worker.wait_ready(90)
    with read_side.bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        assert all(p.result(120).accepted for p in pending)
    read_side.wait_caught_up()

    reader = PollingReader(read_side.dsn, "accounts", "account_id", every_s=0.003)
    reader.start()
    client = read_side.bank.client()
    sender = Sender(client)
    sender.start()
    try:
        prepared = projections(read_side, "rebuild", "accounts", "--no-wait")
        assert prepared.returncode == 0, prepared.stderr
        assert "accounts generation 2: building into accounts_g2" in prepared.stdout

        projector, sink = generation_workers(read_side, "g2a")
        projector.wait_ready(90)
        sink.wait_ready(90)
        with read_side.pg() as conn:
            wait_for(lambda: checkpoints_of(conn, "accounts_g2") > 0, 120, "generation 2 began")
        projector.kill()  # SIGKILL mid-rebuild; a new instance resumes from the changelog
        sink.kill()
        projector, sink = generation_workers(read_side, "g2a")
        projector.wait_ready(90)
        sink.wait_ready(90)

        swapped = projections(read_side, "rebuild", "accounts", "--generation", "2")
        assert swapped.returncode == 0, swapped.stderr
        assert "accounts generation 2 is live (accounts_g2)" in swapped.stdout
        assert sender.is_alive(), "the sender must still be running at the swap"
        at_swap = len(sender.sent)
        time.sleep(1.0)  # and it goes on for a while with generation 2 live
    finally:
        sender.stop.set()
        sender.join(60)
        results = [p.result(300) for p in sender.sent]
        client.close()
        reader.stop.set()
        reader.join(10)
    assert len(results) > at_swap > 0 and any(r.accepted for r in results)

    read_side.wait_caught_up(timeout=300)  # readers wait on the live generation's checkpoints
    assert reader.error is None, reader.error
    assert reader.polls > 100
    assert reader.problems == []
    events = read_events(read_side.kafka, read_side.bank.topics.events)
    with read_side.pg() as conn:
        assert pg_accounts(conn) == fold_accounts(events)
        states = conn.execute(
            "SELECT generation, state, relation FROM cqrs_generations "
            "WHERE projection = 'accounts' ORDER BY generation"
        ).fetchall()
        assert states == [(1, "retired", "accounts_g1"), (2, "live", "accounts_g2")]
    assert any(
        "no clean shutdown recorded" in w.log_path.read_text()
        for w in read_side.workers
        if w.role == "projector" and "--generation" in w.args
    )

    listed = projections(read_side, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["projection"] == "accounts"]
    assert [(r["generation"], r["state"]) for r in rows] == [(1, "retired"), (2, "live")]
    assert rows[1]["lag_events"] == 0

    for worker in (projector, sink):
        worker.stop()
    dropped = projections(read_side, "drop", "accounts", "1")
    assert dropped.returncode == 0, dropped.stderr
    refused = projections(read_side, "drop", "accounts", "2")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: accounts generation 2 is live: swap another one in first"
    )


def test_a_projection_added_to_a_running_system_is_backfilled_from_offset_0(
    read_side: ReadSideRig,
) -> None:
    """`event_log` emptied while the shared workers run is the state of a projection deployed
    just now: it holds only what happens from then on. A rebuild fills it from offset 0
    while the shared processor, projector and sink keep running, untouched."""
    shared = running_with_events(read_side, ACCOUNTS, 300, seed=9)
    with read_side.pg() as conn:
        conn.execute("TRUNCATE event_log")
        conn.execute("DELETE FROM cqrs_checkpoints WHERE projection = 'event_log'")

    client = read_side.bank.client()
    sender = Sender(client)
    sender.start()
    try:
        prepared = projections(read_side, "rebuild", "event_log", "--no-wait")
        assert prepared.returncode == 0, prepared.stderr
        own = ["--prefix", read_side.prefix, "--projection", "event_log", "--generation", "2"]
        data = ["--data-dir", str(read_side.bank.log_dir / "projector-event-log-g2")]
        workers = [
            read_side._start("projector", [*own, *data], ready=False),
            read_side._start("sink", [*own, "--schema", read_side.schema], ready=False),
        ]
        swapped = projections(read_side, "rebuild", "event_log", "--generation", "2")
        assert swapped.returncode == 0, swapped.stderr
        assert sender.is_alive()
    finally:
        sender.stop.set()
        sender.join(60)
        assert all(p.result(300) for p in sender.sent)
        client.close()
    read_side.wait_caught_up(timeout=300)
    assert all(worker.alive for worker in shared)  # never restarted
    events = read_events(read_side.kafka, read_side.bank.topics.events)
    with read_side.pg() as conn:
        logged = conn.execute(
            "SELECT aggregate_id, version, source_partition, source_offset FROM event_log"
        ).fetchall()
        assert sorted(logged) == sorted(
            (e.aggregate_id, e.version, e.partition, e.offset) for e in events
        )
        assert pg_accounts(conn) == fold_accounts(events)  # the others kept up throughout
    for worker in workers:
        worker.stop()


def test_the_shared_sink_follows_an_adopted_watermark_projection_across_a_restart(
    read_side: ReadSideRig,
) -> None:
    """`rebuild daily_totals` renames its per-partition table `_g1` under the running
    workers; the shared sink writes there from its next batch, and also after a SIGKILL
    and restart (its staging tables are made for the tables it writes, not the old names)."""
    read_side.bank.processor("p0", ready=False)
    sink = read_side.sink(False)
    for worker in (read_side.projector(False), sink, *read_side.bank.workers):
        worker.wait_ready(90)
    with read_side.bank.client() as client:
        pending = [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        pending += [client.send(t, d) for t, d in random_workload(ACCOUNTS, 200, seed=3)]
        assert all(p.result(120) for p in pending)
        prepared = projections(read_side, "rebuild", "daily_totals", "--no-wait")
        assert prepared.returncode == 0, prepared.stderr
        sink.kill()
        read_side.sink()
        more = [client.send(t, d) for t, d in random_workload(ACCOUNTS, 200, seed=4)]
        assert all(p.result(120) for p in more)
    read_side.wait_caught_up()
    with read_side.pg() as conn:
        assert pg_daily_totals(conn) == fold_daily_totals(
            read_side.kafka, read_side.bank.topics.events
        )
        assert conn.execute("SELECT to_regclass('daily_totals_by_partition')").fetchone() == (None,)
