"""The fetch ledger tells records Faust dropped on the way to the agent from records not yet
delivered (processors/fetch_ledger.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from processors.fetch_ledger import FetchLedger, runs_text

EVENTS = ("bank.events", 0)


def test_records_processed_in_order_leave_no_hole() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, [10, 11, 13, 14])  # 12: a transaction marker, never returned
    assert ledger.processed(EVENTS, [10, 11]) == []
    assert ledger.processed(EVENTS, [13, 14]) == []
    assert ledger.processed(EVENTS, [20]) == []  # nothing left behind


def test_a_returned_record_skipped_by_a_later_one_is_a_hole() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(40, 70))
    assert ledger.processed(EVENTS, range(40, 42)) == []
    # 42-64 never reached the agent; 65 did
    assert ledger.processed(EVENTS, [65, 66]) == list(range(42, 65))


def test_records_not_yet_delivered_above_the_processed_ones_are_no_hole() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(0, 100))
    assert ledger.processed(EVENTS, range(0, 30)) == []
    # still pending: they are holes once a later record is processed first
    assert ledger.processed(EVENTS, [99]) == list(range(30, 99))


def test_a_record_returned_again_after_a_seek_back_is_one_entry() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(5, 10))
    ledger.returned(EVENTS, range(0, 10))  # seek back to the committed offset 0
    assert ledger.processed(EVENTS, range(0, 10)) == []
    assert ledger.processed(EVENTS, [20]) == []  # no second entry of 5-9 left behind


def test_a_revoked_partition_is_forgotten() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(0, 10))
    ledger.forget([EVENTS])
    # the old generation's in-flight batch finishes after the revocation
    assert ledger.processed(EVENTS, [8, 9]) == []


def test_other_topics_are_not_watched() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(("bank.projector-accounts-changelog", 0), range(0, 10))
    assert ledger.processed(("bank.projector-accounts-changelog", 0), [20]) == []


def test_partitions_are_apart() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(("bank.events", 0), [1, 2])
    ledger.returned(("bank.events", 1), [1, 2])
    assert ledger.processed(("bank.events", 1), [2]) == [1]
    assert ledger.processed(("bank.events", 0), [1, 2]) == []


def test_runs_text() -> None:
    assert runs_text([42, 43, 44, 50, 52, 53]) == "42-44, 50, 52-53"
    assert runs_text([]) == ""


def test_the_read_committed_consumer_thread_reports_what_aiokafka_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hook in processors/faust_app.py: every record of aiokafka's fetch reaches the
    app's ledger, and the records go on to Faust unchanged."""
    from aiokafka import TopicPartition
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from processors import faust_app

    fetched = {
        TopicPartition("bank.events", 0): [SimpleNamespace(offset=o) for o in (3, 4, 6)],
        TopicPartition("bank.events", 1): [SimpleNamespace(offset=9)],
    }

    async def aiokafka_fetch(self: object, consumer: object, *args: object, **kw: object) -> dict:
        return fetched

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", aiokafka_fetch)
    thread = object.__new__(faust_app._ReadCommittedConsumerThread)
    ledger = FetchLedger({"bank.events"})
    thread.app = SimpleNamespace(fetch_ledger=ledger)  # type: ignore[assignment]

    got = asyncio.run(thread._fetch_records(object(), {"tps"}, timeout=1.0, max_records=10))

    assert got is fetched
    assert ledger.processed(("bank.events", 0), [6]) == [3, 4]
    assert ledger.processed(("bank.events", 1), [9]) == []


def _projector(monkeypatch: pytest.MonkeyPatch, stored: dict[int, list[int]]) -> Any:
    """A projector with just what `_dropped_records` uses; `stored` is what Kafka holds
    per partition of bank.events (read again with librdkafka in the real one)."""
    from processors.projector import app as projector_app
    from processors.topics import ContextTopics

    class Exited(Exception):
        pass

    def exit_now(message: str, code: int = 3) -> None:
        raise Exited(message)

    def read_offsets(kafka: object, topic: str, wanted: dict[int, list[int]]) -> list:
        return [
            SimpleNamespace(
                topic=lambda: topic,
                partition=lambda p=p: p,
                offset=lambda o=o: o,
                value=lambda: b"event",
                headers=lambda: None,
            )
            for p, offsets in sorted(wanted.items())
            for o in sorted(offsets)
            if o in stored.get(p, ())
        ]

    monkeypatch.setattr(projector_app, "exit_now", exit_now)
    monkeypatch.setattr(projector_app, "read_offsets", read_offsets)
    projector = object.__new__(projector_app.Projector)
    projector.topics = ContextTopics("bank")
    projector.config = SimpleNamespace(kafka=SimpleNamespace(client_config=dict))
    projector.metrics = SimpleNamespace(reread=SimpleNamespace(inc=lambda n: None))
    projector.ledger = FetchLedger({"bank.events"})
    projector.exited = Exited
    return projector


def _batch(*positions: tuple[int, int]) -> dict[int, list[int]]:
    """A batch's offsets per partition, as the projector hands them over."""
    offsets: dict[int, list[int]] = {}
    for p, o in positions:
        offsets.setdefault(p, []).append(o)
    return offsets


def test_the_projector_reads_records_faust_dropped_again_before_acknowledging_past_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    projector = _projector(monkeypatch, {0: list(range(40, 70))})
    projector.ledger.returned(("bank.events", 0), range(40, 70))
    projector.ledger.returned(("bank.events", 1), range(0, 5))

    in_order = _batch((0, 40), (0, 41), (1, 0))
    assert asyncio.run(projector._dropped_records(in_order)) == []
    past_a_drop = _batch((1, 1), (0, 65))  # 42-64 never reached the agent
    reread = asyncio.run(projector._dropped_records(past_a_drop))

    assert [(m.partition, m.offset) for m in reread] == [(0, o) for o in range(42, 65)]
    assert reread[0].value == b"event" and reread[0].headers == []
    # once read again they are no longer owed
    assert asyncio.run(projector._dropped_records(_batch((0, 66)))) == []


def test_the_projector_stops_when_dropped_records_cannot_be_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    projector = _projector(monkeypatch, {0: [42, 43]})
    projector.ledger.returned(("bank.events", 0), range(40, 50))
    asyncio.run(projector._dropped_records(_batch((0, 40), (0, 41))))
    with pytest.raises(projector.exited, match=r"bank\.events\[0\] offsets 44-48"):
        asyncio.run(projector._dropped_records(_batch((0, 49))))


def test_a_processed_record_returned_again_and_dropped_as_a_repeat_is_no_hole() -> None:
    """Fault run 46: Faust sought back, aiokafka returned records the agent had processed,
    and Faust's read-offset check dropped them as repeats; only new records went on."""
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(1674, 2731))
    assert ledger.processed(EVENTS, range(1674, 2731)) == []
    ledger.returned(EVENTS, range(1674, 2740))  # the seek back: repeats, then new records
    assert ledger.processed(EVENTS, range(2731, 2740)) == []


def test_a_hole_is_reported_once() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(0, 10))
    assert ledger.processed(EVENTS, [0, 5]) == [1, 2, 3, 4]
    assert ledger.processed(EVENTS, [6]) == []


def test_records_processed_before_a_rebalance_are_no_hole_after_it() -> None:
    ledger = FetchLedger({"bank.events"})
    ledger.returned(EVENTS, range(390, 410))
    assert ledger.processed(EVENTS, range(390, 410)) == []
    ledger.forget([EVENTS])
    # reassigned: aiokafka starts again below what this process processed, and Faust drops
    # some of the repeats (398-409 here) before the agent
    ledger.returned(EVENTS, range(398, 420))
    assert ledger.processed(EVENTS, range(410, 420)) == []
