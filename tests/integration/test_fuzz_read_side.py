"""Hostile text through the whole read side: accounts whose ids and owners are SQL, shell,
format-string and Unicode payloads (and random text drawn from a hostile alphabet) go
through the processor, the projector and the sink, and reach Postgres verbatim, as data:
no statement they spell runs, every row equals the fold of the events, and the pipeline
keeps flowing. Seeded (CQRS_FUZZ_SEED), so a failure can be replayed."""

from __future__ import annotations

import json
import os
import random

from tests.integration.test_fuzz_bad_input import NASTY
from tests.support.read_side import ReadSideRig, fold_accounts, pg_accounts
from tests.support.write_side import read_events

SEED = int(os.environ.get("CQRS_FUZZ_SEED", "11"))

# The write side's payloads (NUL aside: refused up front as invalid_text), and a few that
# aim at Postgres in particular.
PAYLOADS = [t for t in NASTY if "\x00" not in t] + [
    '"; DROP SCHEMA public CASCADE; --',
    "$$; TRUNCATE event_log; $$",
    "\\'; SELECT pg_sleep(10); --",
    "%(x)s {0}",
    "\\u0000 written out, not a NUL",
    "\x01\x02\x1f\x7f control",
    "a" * 2000,
]
# Everything but NUL (refused up front as invalid_text) and lone surrogates (not UTF-8).
ALPHABET = [chr(c) for c in range(1, 0x250)] + list("'\"\\;$`%{}()[]\u202e\u200b🏦漢")


def hostile_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(PAYLOADS)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60)))


def tables(rig: ReadSideRig) -> list[str]:
    with rig.pg() as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (rig.schema,),
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_hostile_text_reaches_postgres_verbatim_and_runs_nothing(read_side: ReadSideRig):
    rng = random.Random(SEED)
    read_side.bank.processor("p0", ready=False)
    workers = [read_side.projector(ready=False), read_side.sink(ready=False)]
    for worker in (*read_side.bank.workers, *workers):
        worker.wait_ready(90)
    before = tables(read_side)

    drawn = [*PAYLOADS, *(hostile_text(rng) for _ in range(60))]
    # Ids over 1024 bytes are refused by the client (tested with the write side).
    ids = list(dict.fromkeys(t for t in drawn if len(t.encode()) <= 1024))
    # A blank owner is refused (invalid_owner): not what this test is about.
    owners = {
        account: f"x{t}" if not t.strip() else t for account in ids for t in [hostile_text(rng)]
    }
    with read_side.client() as client:
        opened = [
            client.send(
                "bank.OpenAccount",
                {"account_id": a, "owner": owners[a], "currency": "EUR"},
            )
            for a in ids
        ]
        assert all(p.result(60).accepted for p in opened)
        moves = [
            client.send(
                "bank.Deposit",
                {"account_id": a, "amount": {"amount": rng.randint(1, 999), "currency": "EUR"}},
            )
            for a in ids
        ]
        assert all(p.result(60).accepted for p in moves)
    read_side.wait_caught_up(120)

    events = read_events(read_side.kafka, read_side.bank.topics.events)
    with read_side.pg() as conn:
        rows = pg_accounts(conn)
        assert rows == fold_accounts(events)
        assert {a: r["owner"] for a, r in rows.items()} == owners  # verbatim
        logged = conn.execute(
            "SELECT aggregate_id, version, payload_json::text FROM event_log"
        ).fetchall()
    # event_log's JSON holds each event's data exactly.
    by_key = {(e.aggregate_id, e.version): e.data for e in events}
    assert len(logged) == len(by_key)
    for aggregate_id, version, payload in logged:
        data = json.loads(payload)
        assert data.get("owner", owners[aggregate_id]) == owners[aggregate_id]
        assert data["account_id"] == aggregate_id == by_key[(aggregate_id, version)]["account_id"]
    assert tables(read_side) == before  # nothing dropped, nothing created
    for worker in (*read_side.bank.workers, *workers):
        assert worker.alive, worker.log_tail()


def test_a_row_larger_than_its_event_does_not_stall_the_read_side(read_side: ReadSideRig):
    """JSON escapes a control character as six bytes: an owner of 200,000 of them is a
    200 kB event but a 1.2 MB event_log row, over Kafka's 1 MB record limit."""
    read_side.bank.processor("p0", ready=False)
    workers = [read_side.projector(ready=False), read_side.sink(ready=False)]
    for worker in (*read_side.bank.workers, *workers):
        worker.wait_ready(90)
    with read_side.client() as client:
        big = {"account_id": "big", "owner": "\x01" * 200_000, "currency": "EUR"}
        assert client.send("bank.OpenAccount", big).result(60).accepted
        after = {"account_id": "after", "owner": "o", "currency": "EUR"}
        assert client.send("bank.OpenAccount", after).result(60).accepted
    read_side.wait_caught_up(120)
    with read_side.pg() as conn:
        rows = pg_accounts(conn)
    assert rows["after"]["owner"] == "o"
    assert rows["big"]["owner"] == big["owner"]
    for worker in (*read_side.bank.workers, *workers):
        assert worker.alive, worker.log_tail()
