"""The command processor's input partitions: taking them on when the group assigns them,
letting them go when it revokes them, and their lag metric.

Partition P of both commands topics is one aggregate partition: on assignment its state is
restored once (processors/state_restore.py) before the handler decides any of its commands.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, TopicPartition

from processors.command_handler import CommandHandler
from processors.consumer_lag import consumer_positions
from processors.group_watch import GroupWatch
from processors.metrics import ProcessorMetrics
from processors.processor_config import ProcessorConfig
from processors.state_restore import restore_partition

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


class InputPartitions:
    """The consumer's rebalance callbacks (`on_assign`, `on_revoke`) and `update_lag`, called
    once per poll loop."""

    def __init__(
        self,
        config: ProcessorConfig,
        handler: CommandHandler,
        metrics: ProcessorMetrics,
        ready: threading.Event,
        group_watch: GroupWatch,
    ) -> None:
        self.config = config
        self.topics = config.topics
        self.names = (self.topics.commands, self.topics.internal_commands)
        self.handler = handler
        self.metrics = metrics
        self.ready = ready
        self.group_watch = group_watch
        # Where an owned input partition starts while librdkafka has no position for it
        # yet (nothing fetched): its committed offset, else its first. For the lag metrics.
        self._start_at: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        # Partition P of both commands topics: one aggregate partition, restored once.
        numbers = sorted({tp.partition for tp in partitions})
        by_topic = {t: {tp.partition for tp in partitions if tp.topic == t} for t in self.names}
        if len({frozenset(ps) for ps in by_topic.values()}) > 1:
            log.error("commands topics not co-assigned: %s", by_topic)
        for number in numbers:
            state = restore_partition(
                self.config.kafka, self.topics, number, self.handler, self.config.dedup_window
            )
            self.handler.assign(number, state)
        log.info("assigned %s, restored in %.2fs", numbers, time.monotonic() - started)
        self.metrics.assigned.set(len(self.handler.owned))
        self.metrics.lag.rebalances.inc()
        self.ready.set()
        self.group_watch.progressed()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.handler.revoke(tp.partition)
            self._start_at.pop((tp.topic, tp.partition), None)
            self.metrics.lag.forget(tp.topic, tp.partition)
        self.metrics.assigned.set(len(self.handler.owned))
        self.group_watch.progressed()

    def update_lag(self, consumer: Consumer) -> None:
        """Lag of every owned input partition, once a second: a caught-up partition shows
        0 on both topics, also where transactions write (internal commands, a reactor's
        commands), because the consumer's position passes commit markers."""
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        owned = [TopicPartition(t, p) for t in self.names for p in sorted(self.handler.owned)]
        self.metrics.lag.update(consumer_positions(consumer, owned, self._start_at), now=now)
