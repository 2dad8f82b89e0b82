"""The consumer-lag gauge every consuming worker (processor aside) exports."""

from __future__ import annotations

from prometheus_client import Gauge


class ConsumerLag:
    """Records not yet processed per assigned partition (high watermark - next offset).
    With read_committed sources the high watermark counts the last transaction marker, so
    a caught-up partition of a transactional topic shows 1."""

    def __init__(self) -> None:
        self.gauge = Gauge(
            "cqrs_consumer_lag", "Records behind the partition's end", ["topic", "partition"]
        )

    def set(self, topic: str, partition: int, lag: int) -> None:
        self.gauge.labels(topic, str(partition)).set(max(0, lag))
