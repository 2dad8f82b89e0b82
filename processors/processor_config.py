"""The command processor's settings, and the Kafka names derived from them.

The group id and the transactional id are stable per context and instance: a restarted
instance takes its partitions back (static membership) and fences its previous incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors.topics import ContextTopics
from schemas.wire.limits import DEFAULT_MAX_RECORD_BYTES


@dataclass(frozen=True)
class ProcessorConfig:
    context: str
    kafka: dict[str, Any] = field(repr=False)  # holds sasl.password when SASL is on
    topic_prefix: str | None = None
    instance_id: str = "0"
    batch_size: int = 2000
    poll_timeout_s: float = 0.05
    dedup_window: int = 50_000
    transaction_timeout_ms: int = 30_000
    session_timeout_ms: int = 10_000
    # The longest a batch waits on one transactional step (deliveries, offsets, commit)
    # before it aborts and replays: well under the transaction timeout.
    operation_timeout_s: float = 10.0

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.topic_prefix or self.context)

    @property
    def max_record_bytes(self) -> int:
        """The largest record our producer sends; output over it is refused up front."""
        return int(self.kafka.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES))

    @property
    def group_id(self) -> str:
        return f"{self.topics.prefix}.command-processor"

    @property
    def transactional_id(self) -> str:
        # Stable per instance: a restarted instance fences its previous incarnation and
        # aborts its open transaction at once, instead of stalling read_committed readers
        # until the transaction times out.
        return f"{self.group_id}.{self.instance_id}"
