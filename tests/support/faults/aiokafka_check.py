"""Does aiokafka, the client under Faust's consumer (so under the projector), read the same
committed records as librdkafka? Both read `<ctx>.events` with read_committed from the
beginning; any offset one returns and the other does not is a client bug that would make
the projector skip (or invent) events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


async def _read_committed_offsets(
    bootstrap: str, topic: str, partitions: int, timeout: float
) -> set[tuple[int, int]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # The last stable offset: read_committed readers stop there.
        ends = await consumer.end_offsets(tps)
        seen: set[tuple[int, int]] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"aiokafka did not reach the end of {topic} in {timeout}s")
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                seen.update((tp.partition, r.offset) for r in records)
        return seen
    finally:
        await consumer.stop()


def aiokafka_disagreement(
    bootstrap: str,
    topic: str,
    partitions: int,
    librdkafka_offsets: Iterable[tuple[int, int]],
    timeout: float = 120,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(offsets only librdkafka returned, offsets only aiokafka returned), sorted."""
    theirs = asyncio.run(_read_committed_offsets(bootstrap, topic, partitions, timeout))
    ours = set(librdkafka_offsets)
    return sorted(ours - theirs), sorted(theirs - ours)
