"""Prometheus metrics of the sink."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from processors.consumer_lag import ConsumerLag
from processors.projector.metrics import BATCH_SIZES, SECONDS


class SinkMetrics:
    def __init__(self) -> None:
        self.records = Counter(
            "cqrs_sink_records_total", "Projection records consumed", ["projection"]
        )
        self.rows = Counter(
            "cqrs_sink_rows_total", "Rows upserted (after de-duplication)", ["projection"]
        )
        self.undecodable = Counter(
            "cqrs_sink_undecodable_total", "Records skipped because they could not be decoded"
        )
        self.batch_size = Histogram(
            "cqrs_sink_batch_size", "Records per database transaction", buckets=BATCH_SIZES
        )
        self.commit_seconds = Histogram(
            "cqrs_sink_commit_seconds", "Time of one database transaction", buckets=SECONDS
        )
        self.latency = Histogram(
            "cqrs_sink_latency_seconds",
            "Per batch: from the oldest source event's time (ce_time) to the commit of its row",
            buckets=SECONDS,
        )
        self.retries = Counter("cqrs_sink_retries_total", "Database transactions retried")
        self.skipped_offsets = Counter(
            "cqrs_sink_skipped_offsets_total",
            "Offsets of a projection topic this process jumped over without seeing them "
            "(compaction explains some; otherwise records were lost before the sink)",
            ["projection"],
        )
        self.lag = ConsumerLag()
