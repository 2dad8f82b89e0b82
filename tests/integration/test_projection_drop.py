"""`cqrsctl projections drop` and `gc` against the real broker and Postgres: a generation is
dropped with its table, checkpoints, consumer groups and topics, never while its workers
are connected, and `gc` drops what has been retired longer than the grace period."""

from __future__ import annotations

import time

from cqrsctl.generation_kafka import GenerationKafka
from tests.support.cli_run import wait_for
from tests.support.generations import (
    checkpoints_of,
    generation_workers,
    groups_present,
    members,
    projections,
    running_with_events,
    topics_present,
)
from tests.support.read_side import ReadSideRig, fold_accounts, pg_accounts
from tests.support.write_side import read_events

ACCOUNTS = [f"acct-{i:03d}" for i in range(30)]


def build(rig: ReadSideRig, generation: int) -> tuple:
    """Prepare `generation` of accounts and start its workers (dynamic membership: a clean
    stop leaves the group at once); they have written a checkpoint when this returns."""
    prepared = projections(rig, "rebuild", "accounts", "--no-wait")
    assert prepared.returncode == 0, prepared.stderr
    assert f"accounts generation {generation}: building" in prepared.stdout
    workers = generation_workers(rig, None, generation=generation)
    for worker in workers:
        worker.wait_ready(90)
    with rig.pg() as conn:
        wait_for(lambda: checkpoints_of(conn, f"accounts_g{generation}") > 0, 120, "it built")
    return workers


def stop(rig: ReadSideRig, workers: tuple, found: GenerationKafka) -> None:
    for worker in workers:
        worker.stop()
    wait_for(lambda: not any(members(rig, found).values()), 60, "the groups emptied")


def catalog(rig: ReadSideRig) -> list[tuple]:
    with rig.pg() as conn:
        return conn.execute(
            "SELECT generation, state FROM cqrs_generations WHERE projection = 'accounts' "
            "ORDER BY generation"
        ).fetchall()


def relation_exists(rig: ReadSideRig, name: str) -> bool:
    with rig.pg() as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def test_drop_removes_the_generations_groups_and_topics_and_never_under_running_workers(
    read_side: ReadSideRig,
) -> None:
    running_with_events(read_side, ACCOUNTS, 100, seed=2)
    workers = build(read_side, 2)
    found = GenerationKafka.of(read_side.prefix, "accounts", 2)
    assert found is not None
    assert members(read_side, found) == {g: 1 for g in found.groups}
    assert groups_present(read_side, found) == set(found.groups)
    made = topics_present(read_side, found)
    assert f"{read_side.prefix}.projection.accounts_g2" in made
    assert f"{read_side.prefix}.projector.accounts_g2-__assignor-__leader" in made
    assert not any(t.endswith("-changelog") for t in made)  # its changelog is its topic

    refused = projections(read_side, "drop", "accounts", "2")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ")
    assert refused.stderr.strip().endswith("stop the generation's workers first")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert catalog(read_side) == [(1, "live"), (2, "building")]  # nothing changed
    assert relation_exists(read_side, "accounts_g2")
    assert topics_present(read_side, found) == made

    stop(read_side, workers, found)
    dropped = projections(read_side, "drop", "accounts", "2")
    assert dropped.returncode == 0, dropped.stderr
    for name in [*found.groups, *made]:
        assert name in dropped.stdout
    assert groups_present(read_side, found) == set()
    wait_for(lambda: topics_present(read_side, found) == [], 60, "the topics deleted")
    assert catalog(read_side) == [(1, "live")]
    assert not relation_exists(read_side, "accounts_g2")
    with read_side.pg() as conn:
        assert checkpoints_of(conn, "accounts_g2") == 0
        events = read_events(read_side.kafka, read_side.bank.topics.events)
        assert pg_accounts(conn) == fold_accounts(events)  # generation 1 serves on

    again = projections(read_side, "drop", "accounts", "2")
    assert (again.returncode, again.stderr.strip()) == (1, "error: accounts has no generation 2")


def test_gc_drops_generations_retired_longer_than_the_grace_once_their_workers_stop(
    read_side: ReadSideRig,
) -> None:
    running_with_events(read_side, ACCOUNTS, 100, seed=2)
    second = build(read_side, 2)
    swapped = projections(read_side, "rebuild", "accounts", "--generation", "2")
    assert swapped.returncode == 0, swapped.stderr

    kept = projections(read_side, "gc", "--retired-grace", "3600")
    assert (kept.returncode, kept.stdout.strip()) == (0, "nothing retired longer than 3600s")
    assert relation_exists(read_side, "accounts_g1")

    third = build(read_side, 3)
    swapped = projections(read_side, "rebuild", "accounts", "--generation", "3")
    assert swapped.returncode == 0, swapped.stderr
    assert catalog(read_side) == [(1, "retired"), (2, "retired"), (3, "live")]
    time.sleep(1.0)

    # Generation 2's workers still run: it is kept, and said so; generation 1 goes.
    partly = projections(read_side, "gc", "--retired-grace", "0.5")
    assert partly.returncode == 1
    assert partly.stdout.strip() == "dropped accounts generation 1: accounts_g1, nothing in Kafka"
    assert partly.stderr.startswith("error: accounts generation 2: ")
    assert partly.stderr.strip().endswith("stop the generation's workers first")
    assert catalog(read_side) == [(2, "retired"), (3, "live")]

    found = GenerationKafka.of(read_side.prefix, "accounts", 2)
    assert found is not None
    stop(read_side, second, found)
    done = projections(read_side, "gc", "--retired-grace", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dropped accounts generation 2: accounts_g2, ")
    assert groups_present(read_side, found) == set()
    wait_for(lambda: topics_present(read_side, found) == [], 60, "the topics deleted")
    assert catalog(read_side) == [(3, "live")]
    assert not relation_exists(read_side, "accounts_g2")

    third_kafka = GenerationKafka.of(read_side.prefix, "accounts", 3)
    assert third_kafka is not None and members(read_side, third_kafka) == {
        g: 1 for g in third_kafka.groups
    }
    with read_side.pg() as conn:
        events = read_events(read_side.kafka, read_side.bank.topics.events)
        assert pg_accounts(conn) == fold_accounts(events)
    for worker in third:
        worker.stop()
