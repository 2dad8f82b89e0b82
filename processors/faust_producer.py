"""A Faust producer whose flush() really drains: the table changelogs are written before
Faust commits the offsets of the events that changed the tables.

At least once in Faust rests on `Consumer._commit_offsets` awaiting `producer.flush()`
before it commits. A table write is put in the producer's buffer (`send_soon`), and a task
hands one message at a time to aiokafka. faust-streaming 0.15.3's `ProducerBuffer.flush`
(`flush_atmost(None)`) returns as soon as no message left the buffer for 0.1 s, which a
busy loop or a full aiokafka accumulator easily takes, and aiokafka's own flush covers
only what reached it. So offsets were committed while table writes were still buffered;
after a kill -9 the table was restored from a changelog without them and the events were
not replayed: a `daily_totals` row counted 7,706 of 8,327 movements in
tests/integration/test_read_side_crashes.py.

Here flush waits until the buffer is empty and no hand-over is in progress, then flushes
aiokafka. A changelog write the broker refused calls `on_failed_send`, which the app
answers by stopping the worker, so no offset is committed past a lost table write: the next
incarnation replays the events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage

POLL_S = 0.05


class DrainableBuffer(ProducerBuffer):
    """Faust's buffer, plus a count of messages taken from the queue but not yet handed to
    aiokafka, and the first send that failed."""

    on_failed_send: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.handing_over = 0

    async def _send_pending(self, fut: FutureMessage) -> None:
        self.handing_over += 1
        try:
            sent = await fut.message.channel.publish_message(fut, wait=False)
        finally:
            self.handing_over -= 1
        if isinstance(sent, asyncio.Future):
            sent.add_done_callback(self._check_sent)

    def _check_sent(self, sent: asyncio.Future) -> None:
        if sent.cancelled():
            return
        error = sent.exception()
        if error is not None and self.on_failed_send is not None:
            self.on_failed_send(error)

    async def drain(self) -> None:
        """Return once every message put so far has been handed to aiokafka."""
        while self.size or self.handing_over:
            if self.should_stop:
                raise RuntimeError("cannot drain: the producer buffer has stopped")
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), POLL_S)


class DrainingProducer(faust_aiokafka.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.app.conf.producer_threaded:  # its queue lives on another loop: not covered
            raise RuntimeError("DrainingProducer does not support producer_threaded")
        buffer = DrainableBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        buffer.on_failed_send = self.on_failed_send
        self.buffer = buffer

    def on_failed_send(self, error: BaseException) -> None:
        """A buffered message (a table changelog write) the broker did not take."""
        raise NotImplementedError

    async def flush(self) -> None:
        assert isinstance(self.buffer, DrainableBuffer)
        await self.buffer.drain()
        await super().flush()
