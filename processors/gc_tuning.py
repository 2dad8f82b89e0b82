"""Garbage-collector settings for the command processor, the sink and the benchmark's client
(the projector measured no gain: docs/benchmarks.md).

Every command or projection record allocates a few dozen short-lived objects (decoded
records, headers, outputs, statement parameters) that die within the batch. With CPython's
default gen-0 threshold (700) the collector runs every few records and, through the older
generations, walks the whole heap (aggregates, the dedup window) again and again: a third
of the processor's CPU. So: freeze what start-up allocated (modules, schemas: never
garbage), and collect gen 0 every 50,000 allocations instead. Cycles are still collected,
just less often.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 20, 100)
