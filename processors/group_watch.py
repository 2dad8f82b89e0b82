"""Notices a librdkafka consumer that has stopped being a member of its group.

After a broker restart librdkafka can keep a dead connection to the group coordinator and
never rejoin: its JoinGroup request waits in the out-queue and times out again and again
("GroupCoordinator: Timed out 0 in-flight, 0 retry-queued, 1 out-queue"; the same cached
coordinator as confluentinc/librdkafka#5456 and #5511): a consumer that lost its assignment
in the restart can still not be a member minutes later (docs/reliability.md). The consumer
loop keeps running, so a liveness check on the loop does not see it.

librdkafka's statistics say how the group is doing (`cgrp.state`, `cgrp.join_state`). A
consumer that has not been a steady member for `limit_s` is stuck: the worker exits and its
supervisor starts a fresh one, which finds the coordinator again. An idle member (more
instances than partitions) is steady with an empty assignment, so it is not affected.
"""

from __future__ import annotations

import json
import time

STATS_INTERVAL_MS = 5000
LIMIT_S = 45.0


class GroupWatch:
    def __init__(self, limit_s: float = LIMIT_S) -> None:
        self.limit_s = limit_s
        self.state = "init"
        self._steady_at = time.monotonic()  # a fresh consumer gets the limit to join

    def consumer_config(self) -> dict[str, object]:
        return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.on_stats}

    def on_stats(self, stats_json: str) -> None:
        group = json.loads(stats_json).get("cgrp")
        if not group:
            return
        self.state = f"{group.get('state')}/{group.get('join_state')}"
        if self.state == "up/steady":
            self._steady_at = time.monotonic()

    def progressed(self) -> None:
        """Call at the end of the rebalance callbacks: a long state restore inside one is
        progress, though the statistics show the group waiting for it."""
        self._steady_at = time.monotonic()

    def stuck_for(self) -> float:
        """Seconds since the consumer was last seen a steady group member."""
        return time.monotonic() - self._steady_at

    def stuck(self) -> bool:
        return self.stuck_for() > self.limit_s

    def why(self) -> str:
        return (
            f"not a steady member of its consumer group for {self.stuck_for():.0f}s "
            f"(librdkafka group state {self.state}); exiting for a fresh start"
        )
