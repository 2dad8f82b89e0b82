"""The sink worker's configuration and consumer group: one shared group per context that
writes every projection, or one group per projection generation (>= 2) being rebuilt."""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.generations import generation_name
from processors.settings import KafkaSettings
from processors.topics import ContextTopics
from sinks.progress_metrics import PROGRESS_EVERY_S


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    context: str
    kafka: KafkaSettings
    dsn: str = field(repr=False)  # may hold a password
    schema: str
    topic_prefix: str | None = None
    batch_max: int = 5000
    batch_wait_s: float = 0.02
    session_timeout_s: float = 10.0
    instance_id: str | None = None  # static group membership when set
    progress_every_s: float = PROGRESS_EVERY_S  # projection progress metrics; 0 = off
    # Write only generation `generation` (>= 2) of this projection, in its own group.
    projection: str | None = None
    generation: int = 1

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.topic_prefix or self.context)

    @property
    def group_id(self) -> str:
        return sink_group_id(self.topics.prefix, self.projection, self.generation)


def sink_group_id(prefix: str, projection: str | None = None, generation: int = 1) -> str:
    """The sink's consumer group: the shared one, or that of one projection generation."""
    if projection is None:
        return f"{prefix}.sink"
    return f"{prefix}.sink.{generation_name(projection, generation)}"
