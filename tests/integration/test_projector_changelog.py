"""The projector's tables have their projection topics as changelogs
(processors/projector/tables.py), against the real broker: no `*-changelog` topic exists
after a run; a projector that lost its local state restores its tables from the projection
topics; Faust's own recovery over a projection topic with checkpoint records keeps only
rows; and kill -9 mid-batch loses no row and writes no record without headers. The tables
are read back from the projector's RocksDB files after a clean stop."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

import rocksdict
from confluent_kafka.admin import AdminClient

from processors.topic_reader import read_topic
from producers.command_client import PendingCommand
from schemas.codec import default_codec
from schemas.wire.progress import CHECKPOINT_KEY_PREFIX
from tests.support.read_side import (
    ReadSideRig,
    fold_accounts,
    pg_accounts,
    read_events,
    sum_daily_totals,
)
from tests.support.write_side import open_account, random_workload, send_steadily

ACCOUNTS = [f"c-{i:03d}" for i in range(60)]
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps its persisted offset
STATEFUL = ("accounts", "daily_totals")


def data_dir(rig: ReadSideRig) -> Path:
    return rig.bank.log_dir / "projector-data"  # ReadSideRig.projector's --data-dir


def table_files(rig: ReadSideRig, name: str) -> list[Path]:
    return sorted(p for p in data_dir(rig).glob(f"**/*{name}-[0-9]*.db") if p.is_dir())


def local_table(rig: ReadSideRig, name: str) -> dict[bytes, bytes]:
    """Every key and value of a table's RocksDB databases, the persisted offsets left out
    (read while the projector is stopped)."""
    files = table_files(rig, name)
    assert files, f"no database of table {name} under {data_dir(rig)}"
    out: dict[bytes, bytes] = {}
    for path in files:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            out.update((k, v) for k, v in db.items() if k != OFFSET_KEY)
        finally:
            db.close()
    return out


def empty_tables_keeping_the_databases(rig: ReadSideRig) -> None:
    """Delete every row and persisted offset: the databases exist, so the bulk restore
    leaves them to Faust, whose recovery then reads each projection topic from offset 0."""
    for name in STATEFUL:
        for path in table_files(rig, name):
            db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
            try:
                for key in list(db.keys()):
                    db.delete(key)
            finally:
                db.close()


def check_tables_equal_the_fold(rig: ReadSideRig) -> None:
    codec = default_codec()
    events = read_events(rig.kafka, rig.bank.topics.events)
    tables = {name: local_table(rig, name) for name in STATEFUL}
    for name, rows in tables.items():
        bad = [k for k in rows if not k or k.startswith(CHECKPOINT_KEY_PREFIX.encode())]
        assert bad == [], f"{name} holds records that are not rows: {bad[:3]}"
    accounts = {k.decode(): codec.decode(v) for k, v in tables["accounts"].items()}
    folded = fold_accounts(events)
    assert {a: (r["balance"], r["version"]) for a, r in accounts.items()} == {
        a: (r["balance"], r["version"]) for a, r in folded.items()
    }
    totals: dict[tuple[str, dt.date], list[int]] = defaultdict(lambda: [0, 0, 0])
    for value in tables["daily_totals"].values():
        row = codec.decode(value)
        entry = totals[(row["currency"], row["day"])]
        entry[0] += row["deposits"]
        entry[1] += row["withdrawals"]
        entry[2] += row["count"]
    assert {k: tuple(v) for k, v in totals.items()} == sum_daily_totals(events)


def send(rig: ReadSideRig, n: int, seed: int) -> None:
    with rig.client() as client:
        opens = [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        for p in opens:
            p.result(60)  # a second round finds them open: rejected, fine
        pending = [client.send(t, d) for t, d in random_workload(ACCOUNTS, n, seed)]
        assert all(p.result(120) is not None for p in pending)


def transfer_one_by_one(rig: ReadSideRig, n: int, tag: str) -> None:
    """Transfers, each awaited and given time to be projected alone: a batch of transfer
    events changes no row of either table, so each projection topic gets checkpoint records
    (docs/wire-format.md, "Projection topics")."""
    with rig.client() as client:
        for i in range(n):
            transfer = {
                "transfer_id": f"{tag}-{i}",
                "from_account_id": ACCOUNTS[i],
                "to_account_id": ACCOUNTS[-1 - i],
                "amount": {"amount": 1, "currency": "EUR"},
            }
            client.send("bank.RequestTransfer", transfer).result(60)
            time.sleep(0.3)
    time.sleep(2)  # the transfers' later steps (the processor's saga) are written by now


def checkpoint_records(rig: ReadSideRig, name: str) -> int:
    prefix = CHECKPOINT_KEY_PREFIX.encode()
    topic = rig.bank.topics.projection(name)
    return sum(1 for m in read_topic(rig.kafka, topic) if (m.key() or b"").startswith(prefix))


def test_no_changelog_topic_and_a_projector_without_local_state_restores_from_its_topics(
    read_side: ReadSideRig,
):
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(), read_side.sink()
    send(read_side, 400, seed=1)
    read_side.wait_caught_up()

    topics = AdminClient(read_side.kafka).list_topics(timeout=10).topics
    mine = sorted(t for t in topics if t.startswith(read_side.prefix))
    assert [t for t in mine if t.endswith("-changelog")] == [], mine
    assert {read_side.bank.topics.projection(n) for n in STATEFUL} <= set(mine)

    assert projector.stop() == 0
    check_tables_equal_the_fold(read_side)
    shutil.rmtree(data_dir(read_side))  # a pod without its volume
    projector = read_side.projector()
    log = projector.log_path.read_text()
    for name in STATEFUL:
        assert f"restoring table {name} from {read_side.bank.topics.projection(name)}" in log
    send(read_side, 200, seed=2)  # applied on top of the restored rows
    read_side.wait_caught_up()
    assert projector.stop() == 0
    check_tables_equal_the_fold(read_side)


def test_faust_recovery_over_checkpoint_records_puts_only_rows_in_the_tables(
    read_side: ReadSideRig,
):
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(), read_side.sink()
    send(read_side, 400, seed=3)
    transfer_one_by_one(read_side, 6, "t3")
    read_side.wait_caught_up()
    assert projector.stop() == 0
    # Checkpoint records sit among the rows (at least one per batch and partition without
    # a row of that projection), so Faust's recovery below must meet them.
    assert all(checkpoint_records(read_side, name) > 0 for name in STATEFUL)

    empty_tables_keeping_the_databases(read_side)
    assert all(local_table(read_side, name) == {} for name in STATEFUL)
    projector = read_side.projector()  # a clean stop before: the databases are kept
    log = projector.log_path.read_text()
    assert "restoring table" not in log  # not the bulk restore: Faust's own recovery
    assert "Restoring state from changelog topics" in log
    assert projector.stop() == 0
    check_tables_equal_the_fold(read_side)


def test_kill_9_mid_batch_then_restart_loses_no_row_and_duplicates_none(read_side: ReadSideRig):
    rng = random.Random(7)
    read_side.bank.processor("p0")
    projector, _ = read_side.projector(ready=True, batch_wait=0.05), read_side.sink()
    with read_side.client() as client:
        assert all(
            p.result(60).accepted
            for p in [client.send("bank.OpenAccount", open_account(a)) for a in ACCOUNTS]
        )
    sent: list[PendingCommand] = []
    done = threading.Event()
    client = read_side.client()
    send_steadily(client, random_workload(ACCOUNTS, 4000, seed=11), 2000, sent, done)
    kills = 0
    while kills < 3 or not done.is_set():
        time.sleep(rng.uniform(0.3, 1.2))
        projector.kill()
        kills += 1
        projector = read_side.projector(ready=True, batch_wait=0.05)
    assert all(p.result(300) is not None for p in sent)
    client.close()
    read_side.wait_caught_up(timeout=300)

    # Every record on the tables' topics is the publisher's: keyed, with CloudEvents headers
    # (a record Faust wrote as a changelog would have none).
    codec = default_codec()
    for name in STATEFUL:
        seen: dict[tuple[int, bytes], dict[int, bytes]] = defaultdict(dict)
        for m in read_topic(read_side.kafka, read_side.bank.topics.projection(name)):
            headers = dict(m.headers() or [])
            assert m.key() and m.value() is not None and "ce_type" in headers, (name, m.offset())
            if m.key().startswith(CHECKPOINT_KEY_PREFIX.encode()):
                continue
            row = codec.decode(m.value())
            guard = row["version"] if name == "accounts" else row["source_offset"]
            # a replay may publish a row again, but never another row under the same guard
            assert seen[(m.partition(), m.key())].setdefault(guard, m.value()) == m.value()
    assert projector.stop() == 0
    check_tables_equal_the_fold(read_side)
    events = read_events(read_side.kafka, read_side.bank.topics.events)
    with read_side.pg() as conn:
        assert pg_accounts(conn) == fold_accounts(events)
