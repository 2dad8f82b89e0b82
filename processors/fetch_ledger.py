"""Which records the Kafka client returned, so a worker can tell when its framework dropped
one on the way to the agent and would commit past it.

faust-streaming (0.15.3) can lose records between aiokafka and the agent:
`Consumer.getmany` stops iterating a fetched batch when the flow stops or the generation
changes, and skips records of a partition paused meanwhile, although aiokafka's position
has moved past them; streams skip events of an older generation. Faust seeks back to the
committed offset after a rebalance, but not where that offset is unknown
(`seek_to_committed` seeks only `if offset and offset > 0`), and its commit check lets a
hole of one offset at the committed position through (`_new_offset`: `min(acked) -
committed_offset > 1`). docs/reliability.md has what the fault runs showed.

The ledger notes every offset the client returned for the watched topics; the agent reports
what it processed. An offset returned, not processed, and below one processed is a record
the framework dropped: before acknowledging anything past it, the worker must process it
(reading it from Kafka itself) or stop, so that Faust never commits past it unprocessed.

Offsets are per (topic, partition); a record returned twice (after a seek back) is one
entry, and one returned again after it was processed is no entry: Faust's read-offset check
drops such a repeat on purpose, so it is no hole. The client's fetch runs on Faust's
consumer thread, so the ledger takes a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

Partition = tuple[str, int]  # (topic, partition)


class FetchLedger:
    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._pending: dict[Partition, set[int]] = {}
        self._highest: dict[Partition, int] = {}  # highest offset processed
        self._lock = threading.Lock()

    def returned(self, partition: Partition, offsets: Iterable[int]) -> None:
        """The client returned these records (data records only: no markers)."""
        if partition[0] not in self.topics:
            return
        with self._lock:
            # A record at or below the highest processed one came back through a seek back
            # and was processed already (in order, or a hole would have been found then);
            # Faust drops such repeats on purpose.
            highest = self._highest.get(partition, -1)
            self._pending.setdefault(partition, set()).update(o for o in offsets if o > highest)

    def processed(self, partition: Partition, offsets: Iterable[int]) -> list[int]:
        """The agent processed these records; returns the offsets the client returned below
        the highest of them that were not processed (dropped on the way), sorted. They are
        no longer pending: the caller processes them now, or stops."""
        done = set(offsets)
        if not done:
            return []
        highest = max(done)
        with self._lock:
            if highest > self._highest.get(partition, -1):
                self._highest[partition] = highest
            pending = self._pending.get(partition)
            if not pending:
                return []
            pending -= done
            holes = sorted(o for o in pending if o < highest)
            pending.difference_update(holes)
            return holes

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions this process no longer owns (revoked): their records are another
        member's now, and come back through a new fetch if they return. What was processed
        stays processed: after a rebalance aiokafka starts again at the committed offset,
        and a repeat Faust drops is no hole."""
        with self._lock:
            for partition in partitions:
                self._pending.pop(partition, None)


def runs_text(offsets: list[int]) -> str:
    """Sorted offsets as runs, e.g. "42-64, 70"."""
    runs: list[list[int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)
