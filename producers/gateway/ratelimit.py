"""A token bucket per principal: `rate` requests a second on average, bursts of `burst`.

Called on the event loop only, so it needs no lock. Buckets that have refilled completely
are forgotten, so the table holds only principals that were active in the last
`burst / rate` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._next_sweep = clock()

    def take(self, principal: str) -> float:
        """0 when the request may go ahead (a token is taken), else the seconds until the
        principal's next token."""
        now = self._clock()
        self._sweep(now)
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def retry_after(self, wait_s: float) -> str:
        """An HTTP `Retry-After` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait_s)))

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        full = self.burst / self.rate
        self._buckets = {p: b for p, b in self._buckets.items() if now - b.updated < full}
        self._next_sweep = now + max(1.0, full)
