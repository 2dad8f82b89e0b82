"""Faust's acknowledged-offset bookkeeping over a read_committed topic, where every
transaction leaves an offset nobody sees (its commit marker): each commit must reach the
highest acknowledged offset, not one transaction further than the last one."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from processors.faust_app import _ReadCommittedConsumer

TRANSACTION = 5  # records per transaction, then one commit marker


def bookkeeping(cls: type) -> faust_aiokafka.Consumer:
    """A consumer with only the state `_add_gap` and `_new_offset` use."""
    consumer = object.__new__(cls)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None)
    return consumer


def commits(cls: type, delivered: list[int], unacked: frozenset[int] = frozenset()) -> list[int]:
    """Deliver `delivered` as Faust's drain loop does and acknowledge all but `unacked`,
    then the offsets that successive commit ticks would commit."""
    consumer, tp = bookkeeping(cls), TP("bank.events", 0)

    async def deliver() -> None:
        read = None
        for offset in delivered:
            if read is not None and offset - read > 1:
                await consumer._add_gap(tp, read + 1, offset)
            read = offset
            if offset not in unacked:
                consumer._acked[tp].append(offset)
                consumer._acked_index[tp].add(offset)

    asyncio.run(deliver())
    out: list[int] = []
    while (offset := consumer._new_offset(tp)) is not None and len(out) < 100:
        out.append(offset)
        consumer._committed_offset[tp] = offset
    return out


def test_one_commit_reaches_past_every_acknowledged_record_across_transaction_markers():
    delivered = [o for o in range(60) if o % (TRANSACTION + 1) != TRANSACTION]
    assert commits(_ReadCommittedConsumer, delivered) == [59]
    # Faust as shipped: one transaction per commit tick
    assert commits(faust_aiokafka.Consumer, delivered) == [7, 13, 19, 25, 31, 37, 43, 49, 55, 59]


def test_an_aborted_transaction_is_committed_past_with_its_markers():
    # 0-4 committed, 5 marker, 6-10 aborted (never delivered), 11 marker, 12-16, 17 marker
    delivered = [0, 1, 2, 3, 4, 12, 13, 14, 15, 16]
    assert commits(_ReadCommittedConsumer, delivered) == [17]


def test_an_unacknowledged_record_still_holds_the_commit_back():
    delivered = [o for o in range(18) if o % (TRANSACTION + 1) != TRANSACTION]
    # 7 is being processed: the first commit stops below it. (A second tick would commit
    # past it, in Faust as shipped too: `_new_offset` tolerates one missing offset after
    # the committed one, a transaction marker at a restart. The agent acknowledges in
    # order, whole batches at a time, so no record waits behind a later acknowledged one.)
    assert commits(_ReadCommittedConsumer, delivered, unacked=frozenset({7}))[0] == 7
