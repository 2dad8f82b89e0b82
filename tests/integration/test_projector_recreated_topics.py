"""A projector that meets recreated topics (the local data folder of a cluster that was torn
down and rebuilt) discards its local tables instead of trusting them: its tables must follow
the new events only."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient

from processors.domain import BoundedContext
from processors.projector.app import projector_app_id
from processors.registry import default_registry
from processors.topic_admin import create_topics
from processors.topics import declared_topics
from schemas.codec import default_codec
from tests.support.read_side import ReadSideRig, last_values

ACCOUNTS = [f"r-{i}" for i in range(8)]


def send_life(rig: ReadSideRig, amount: int) -> None:
    """Open every account and deposit `amount` into each."""
    with rig.client() as client:
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": a, "currency": "EUR"})
            for a in ACCOUNTS
        ]
        assert all(p.result(60).accepted for p in opens)
        money = {"amount": amount, "currency": "EUR"}
        deposits = [
            client.send("bank.Deposit", {"account_id": a, "amount": money}) for a in ACCOUNTS
        ]
        assert all(p.result(60).accepted for p in deposits)


def published_accounts(rig: ReadSideRig) -> dict[str, tuple[int, int]]:
    """Per account, (balance, version) of its last row on the accounts projection topic."""
    codec = default_codec()
    values, _ = last_values(rig.kafka, rig.bank.topics.projection("accounts"))
    out = {}
    for (_, key), value in values.items():
        if key.startswith(b"__cqrs_checkpoint__:"):
            continue
        row = codec.decode(value, "bank.AccountRow")
        out[key.decode()] = (row["balance"], row["version"])
    return out


def wait_published(rig: ReadSideRig, expected: dict, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := published_accounts(rig)) != expected:
        assert time.monotonic() < deadline, f"published {got}, expected {expected}"
        time.sleep(0.5)


def recreate_topics(rig: ReadSideRig, ctx: BoundedContext) -> None:
    """Delete the context's topics (the projection topics are the tables' changelogs) and
    the projector's own, wait until they are gone, and create the context's again (the
    projector creates its own on start)."""
    admin = AdminClient(rig.kafka)
    app_id = projector_app_id(rig.prefix)
    names = [t.name for t in declared_topics(ctx, rig.prefix)]
    names.append(f"{app_id}-__assignor-__leader")
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while set(names) & set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "topics not deleted"
        time.sleep(0.2)
    create_topics(rig.kafka, declared_topics(ctx, rig.prefix))


def test_a_projector_restarted_against_recreated_topics_restores_instead_of_trusting_its_tables(
    read_side: ReadSideRig,
):
    ctx = default_registry().context("bank")
    processor = read_side.bank.processor("p0")
    projector = read_side.projector()
    send_life(read_side, 100)
    wait_published(read_side, {a: (100, 2) for a in ACCOUNTS})
    read_side.wait_group_at_end(*read_side.projector_group())
    assert projector.stop() == 0  # a clean stop: the tables would be trusted
    processor.stop()

    recreate_topics(read_side, ctx)

    read_side.bank.processor("p1")
    read_side.projector()  # the same data folder
    send_life(read_side, 7)
    # With the old tables kept, each account would stay at balance 100: the new events'
    # versions 1 and 2 look already applied.
    wait_published(read_side, {a: (7, 2) for a in ACCOUNTS})
