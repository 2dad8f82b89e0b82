"""The command processor's settings, and the Kafka names derived from them.

The group id and the transactional id are stable per context and instance: a restarted
instance takes its partitions back (static membership) and fences its previous incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors.topics import ContextTopics
from schemas.wire.limits import DEFAULT_MAX_RECORD_BYTES

# A fetch returns when this much is ready or after fetch.wait.max.ms: full batches at load,
# one request per wait when light.
FETCH_MIN_BYTES = 256 * 1024


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

    def consumer_settings(self) -> dict[str, Any]:
        """The input consumer's settings (the client's own callbacks are added by the
        processor)."""
        return {
            **self.kafka,
            "group.id": self.group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            # Static membership: a restarted instance takes its partitions back at once,
            # without waiting for the dead incarnation's session to time out.
            "group.instance.id": self.transactional_id,
            "session.timeout.ms": self.session_timeout_ms,
            # At light load, one fetch per 50 ms carrying what arrived, not one per
            # client request: the batch waits poll_timeout_s (50 ms) for it anyway.
            "fetch.wait.max.ms": 50,
            "fetch.min.bytes": FETCH_MIN_BYTES,
        }
