"""The panels of the Grafana dashboard, row by row: what deploy/k8s/render_dashboard.py
lays out and writes. Every query names metrics from deploy/metric_names.py (checked by
tests/unit/test_dashboard.py). Series carry `namespace` and `job` (the role) labels, set by
the PodMonitors (jobLabel: app.kubernetes.io/component).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 'namespace="$namespace"'
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def job(role: str) -> str:
    return f'{{{NS}, job="{role}"}}'


def quantiles(metric: str, role: str, by: str = "") -> tuple[tuple[str, str], ...]:
    """p50 / p95 / p99 of a histogram over every pod of a role."""
    extra = f", {by}" if by else ""
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(
        (
            f"histogram_quantile({q}, sum by (le{extra}) "
            f"(rate({metric}_bucket{job(role)}[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in QUANTILES
    )


DLQ_RATE = f"sum by (error_type) (rate(cqrs_dead_letters_total{job('processor')}[{RATE}]))"

OVERVIEW = Row(
    "Pipeline overview",
    (
        Panel(
            "Commands decided /s",
            "Commands the processors decided, by outcome (ACCEPTED, REJECTED, CONFLICT).",
            (
                (
                    f"sum by (status) (rate(cqrs_commands_total{job('processor')}[{RATE}]))",
                    "{{status}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Event -> visible in Postgres",
            "From the oldest source event's time to the commit of its row, per sink batch: "
            "how stale the read models are.",
            quantiles("cqrs_sink_latency_seconds", "sink"),
            unit="s",
        ),
        Panel(
            "Consumer lag by stage",
            "Records not yet processed, summed over the partitions each stage owns (commit "
            "markers not counted: caught up is 0).",
            ((f"sum by (job) (cqrs_consumer_lag_records{{{NS}}})", "{{job}}"),),
        ),
        Panel(
            "Oldest waiting record by stage",
            "Lag in seconds: how long the oldest record a stage has still to process has "
            "been waiting, the worst partition per stage.",
            ((f"max by (job) (cqrs_consumer_lag_seconds{{{NS}}})", "{{job}}"),),
            unit="s",
        ),
        Panel(
            "Rebalances",
            "Partition assignments the workers received, per role, in the interval. Steady "
            "rebalancing means members keep leaving and joining (crashes, timeouts).",
            (
                (
                    f"sum by (job) (increase(cqrs_consumer_rebalances_total{{{NS}}}[{RATE}]))",
                    "{{job}}",
                ),
            ),
        ),
        Panel(
            "Dead letters /s",
            "Messages the processor sent to <ctx>.dlq, by error type. Anything above 0 needs "
            "a look (docs/operations.md, CqrsDeadLettersArriving).",
            (
                (
                    DLQ_RATE,
                    "{{error_type}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Workers up",
            "Scrape targets per role that answered their last scrape.",
            (
                (
                    f'sum by (job) (up{{{NS}, job=~"processor|projector|sink|gateway"}})',
                    "{{job}}",
                ),
            ),
            kind="stat",
        ),
        Panel(
            "HTTP requests /s",
            "Gateway requests by status code.",
            (
                (
                    f"sum by (status) (rate(gateway_http_requests_total{job('gateway')}[{RATE}]))",
                    "{{status}}",
                ),
            ),
            unit="reqps",
        ),
    ),
)

PROCESSOR = Row(
    "Command processor",
    (
        Panel(
            "Commands /s by status and reason",
            "Decided commands; REJECTED carries the business rule's reason.",
            (
                (
                    "sum by (status, reason) "
                    f"(rate(cqrs_commands_total{job('processor')}[{RATE}]))",
                    "{{status}} {{reason}}",
                ),
                (
                    f"sum(rate(cqrs_command_duplicates_total{job('processor')}[{RATE}]))",
                    "duplicate ids",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Batch: decide + commit transaction",
            "Time to decide one batch and commit its Kafka transaction.",
            quantiles("cqrs_batch_seconds", "processor"),
            unit="s",
        ),
        Panel(
            "Commands per batch",
            "Batch size quantiles: large batches mean a backlog is being worked off.",
            quantiles("cqrs_batch_size", "processor"),
        ),
        Panel(
            "Lag of the commands topics",
            "Commands not yet decided per topic (clients' and process managers'), and how "
            "long the oldest of them has waited.",
            (
                (
                    f"sum by (topic) (cqrs_consumer_lag_records{job('processor')})",
                    "{{topic}} records",
                ),
            ),
        ),
        Panel(
            "Oldest waiting command",
            "Lag in seconds of the commands topics, the worst partition per topic.",
            (
                (
                    f"max by (topic) (cqrs_consumer_lag_seconds{job('processor')})",
                    "{{topic}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Owned command partitions",
            "Partitions of <ctx>.commands each processor pod owns; their sum is the "
            "partition count when every partition has an owner.",
            ((f"sum by (pod) (cqrs_assigned_partitions{job('processor')})", "{{pod}}"),),
        ),
        Panel(
            "Dead letters and aborted transactions /s",
            "Messages sent to <ctx>.dlq by error type, and Kafka transactions aborted.",
            (
                (
                    DLQ_RATE,
                    "dlq {{error_type}}",
                ),
                (
                    f"sum(rate(cqrs_transaction_aborts_total{job('processor')}[{RATE}]))",
                    "aborts",
                ),
            ),
            unit="ops",
        ),
    ),
)

PROJECTOR = Row(
    "Projector",
    (
        Panel(
            "Events /s",
            "Events consumed, applications that changed a row, redeliveries skipped, and "
            "records published per projection.",
            (
                (f"sum(rate(cqrs_projector_events_total{job('projector')}[{RATE}]))", "consumed"),
                (f"sum(rate(cqrs_projector_applied_total{job('projector')}[{RATE}]))", "applied"),
                (
                    f"sum(rate(cqrs_projector_redelivered_total{job('projector')}[{RATE}]))",
                    "redelivered",
                ),
                (
                    "sum by (projection) "
                    f"(rate(cqrs_projector_records_total{job('projector')}[{RATE}]))",
                    "published {{projection}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Batch: project, store, publish",
            "Time to project one batch, store it in the tables and publish the records.",
            quantiles("cqrs_projector_batch_seconds", "projector"),
            unit="s",
        ),
        Panel(
            "Lag by pod",
            "Events of <ctx>.events not yet consumed, per projector pod.",
            ((f"sum by (pod) (cqrs_consumer_lag_records{job('projector')})", "{{pod}}"),),
        ),
        Panel(
            "Failures and re-reads /s",
            "Events skipped (undecodable, not applicable, rows refused) by reason, and "
            "events Faust dropped that were read again from Kafka.",
            (
                (
                    "sum by (reason) "
                    f"(rate(cqrs_projector_failures_total{job('projector')}[{RATE}]))",
                    "failed {{reason}}",
                ),
                (
                    f"sum(rate(cqrs_projector_reread_events_total{job('projector')}[{RATE}]))",
                    "re-read",
                ),
            ),
            unit="ops",
        ),
    ),
)

SINK = Row(
    "Postgres sink",
    (
        Panel(
            "Records and rows /s",
            "Projection records consumed and rows upserted (after de-duplication), per projection.",
            (
                (
                    f"sum by (projection) (rate(cqrs_sink_records_total{job('sink')}[{RATE}]))",
                    "records {{projection}}",
                ),
                (
                    f"sum by (projection) (rate(cqrs_sink_rows_total{job('sink')}[{RATE}]))",
                    "rows {{projection}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Postgres transaction time",
            "One database transaction: the rows and their checkpoints.",
            quantiles("cqrs_sink_commit_seconds", "sink"),
            unit="s",
        ),
        Panel(
            "Lag by projection topic",
            "Records of the projection topics not yet in Postgres.",
            ((f"sum by (topic) (cqrs_consumer_lag_records{job('sink')})", "{{topic}}"),),
        ),
        Panel(
            "Errors /s",
            "Undecodable records skipped, transactions retried, and offsets jumped over "
            "(compaction explains some; otherwise records were lost upstream).",
            (
                (f"sum(rate(cqrs_sink_undecodable_total{job('sink')}[{RATE}]))", "undecodable"),
                (f"sum(rate(cqrs_sink_retries_total{job('sink')}[{RATE}]))", "retries"),
                (
                    "sum by (projection) "
                    f"(rate(cqrs_sink_skipped_offsets_total{job('sink')}[{RATE}]))",
                    "skipped {{projection}}",
                ),
            ),
            unit="ops",
        ),
    ),
)

GATEWAY = Row(
    "HTTP gateway",
    (
        Panel(
            "Commands /s by outcome",
            "queued, accepted, rejected, conflict, invalid, timeout (a ?wait that ran out), "
            "unavailable (Kafka refused).",
            (
                (
                    f"sum by (outcome) (rate(gateway_commands_total{job('gateway')}[{RATE}]))",
                    "{{outcome}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Send -> result",
            "From producing a command to its result arriving, as the gateway sees it "
            "(requests with ?wait).",
            quantiles("gateway_command_result_seconds", "gateway"),
            unit="s",
        ),
        Panel(
            "Request latency",
            "Time to answer, over every route (?wait requests include the wait).",
            quantiles("gateway_http_request_seconds", "gateway"),
            unit="s",
        ),
        Panel(
            "In flight",
            "Requests being answered, and commands being submitted or awaited.",
            (
                (f"sum(gateway_http_requests_in_flight{job('gateway')})", "requests"),
                (f"sum(gateway_commands_in_flight{job('gateway')})", "commands"),
            ),
        ),
        Panel(
            "Server errors and timeouts /s",
            "5xx answers by route (504 = a ?wait timed out, 503 = Kafka or Postgres unavailable).",
            (
                (
                    "sum by (route, status) "
                    f'(rate(gateway_http_requests_total{{{NS}, job="gateway", status=~"5.."}}'
                    f"[{RATE}]))",
                    "{{status}} {{route}}",
                ),
            ),
            unit="reqps",
        ),
    ),
)

ROWS = (OVERVIEW, PROCESSOR, PROJECTOR, SINK, GATEWAY)
