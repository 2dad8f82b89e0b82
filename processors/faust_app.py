"""The Faust app the projector is built on (the sink is a plain consumer: sinks/app.py).

Read committed. faust-streaming's aiokafka consumer reads with
`isolation_level="read_uncommitted"` unless the app runs with
`processing_guarantee="exactly_once"` (faust/transport/drivers/aiokafka.py,
`AIOKafkaConsumerThread._create_worker_consumer`), and there is no setting for it. We do not
use Faust's exactly_once (it has open bugs; our updates are idempotent instead), so
`ReadCommittedApp` swaps in a transport whose consumer thread builds the same
`AIOKafkaConsumer` and then sets its isolation level to read_committed before the consumer
starts (aiokafka reads `_isolation_level` when `start()` creates its fetcher). A records of
an aborted transaction never reaches an agent; tests/integration/test_read_side.py shows it.

Records Faust drops between aiokafka and the agent are noticed before Faust can commit past
them: the consumer thread reports what aiokafka returned to the app's `fetch_ledger`
(processors/fetch_ledger.py), which the agent checks.

Table writes of plain Faust tables reach their changelog before offsets are committed: Faust's
own producer flush returns with writes still buffered, so the transport's producer is
processors/faust_producer.py's, which drains. (The projector's own tables send nothing
through it: their changelogs are the projection topics, written by its publisher;
processors/projector/tables.py.)

Everything Faust names after the app id (consumer group, `<id>-__assignor-__leader`, and
`<id>-<table>-changelog` for a plain Faust table) derives from the topic prefix, e.g.
`bank.projector`, so private test prefixes never collide. The workers create those
internal topics before Faust starts (`prepare_topics`).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from processors.consumer_lag import ConsumerLag
from processors.faust_producer import DrainingProducer
from processors.fetch_ledger import FetchLedger
from processors.settings import KafkaSettings
from processors.topic_admin import TopicsNotReady, check_declared_topics, create_topics
from processors.topics import DERIVED, ContextTopics, TopicSpec
from schemas.wire.limits import DERIVED_MAX_RECORD_BYTES

READ_COMMITTED = "read_committed"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a Faust worker role (the projector) is configured with."""

    context: str
    kafka: KafkaSettings
    data_dir: Path
    topic_prefix: str | None = None
    batch_wait_s: float = 0.02
    session_timeout_s: float = 10.0
    instance_id: str | None = None  # static group membership when set
    replication_factor: int = 1

    @property
    def topics(self) -> ContextTopics:
        return ContextTopics(self.topic_prefix or self.context)


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_isolation_level"):  # aiokafka changed: fail loudly
            raise RuntimeError("cannot set read_committed on this aiokafka version")
        consumer._isolation_level = READ_COMMITTED
        return consumer

    async def _fetch_records(self, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        # Every record aiokafka hands to Faust, before Faust may drop some on the way.
        records = await super()._fetch_records(consumer, *args, **kwargs)
        ledger = self.app.fetch_ledger
        if ledger is not None:
            for tp, batch in records.items():
                ledger.returned((tp.topic, tp.partition), (r.offset for r in batch))
        return records


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Faust calls this when a delivered offset jumps past the last one read, with
        `offset_to` = the delivered message's own offset, and records the gap inclusive of
        it. That message is then acknowledged as well, so the offset is twice in the
        acknowledged list; Faust's `_new_offset` commits only the first run of consecutive
        offsets per commit, and the duplicate splits the runs at every transaction marker:
        committed offsets advanced one transaction per partition per commit tick, and a
        restart replayed the rest. The gap is the offsets nobody sees (transaction markers,
        aborted records): strictly between the two messages."""
        await super()._add_gap(tp, offset_from, offset_to - 1)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        ledger = self.app.fetch_ledger
        if ledger is not None:
            ledger.forget((tp.topic, tp.partition) for tp in revoked)
        await super().on_partitions_revoked(revoked)


class _StoppingProducer(DrainingProducer):
    def on_failed_send(self, error: BaseException) -> None:
        exit_now(f"a table changelog write failed ({error!r}); committing past it would lose it")


class ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer
    Producer = _StoppingProducer  # flush() drains the buffer (processors/faust_producer.py)


class ReadCommittedApp(faust.App):
    """A Faust app whose stream consumers read committed records only.

    `fetch_ledger`, when set, is told every record the client returns for its topics and
    every partition revoked (processors/fetch_ledger.py)."""

    fetch_ledger: FetchLedger | None = None

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self)


def broker_urls(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{hostport.strip()}" for hostport in kafka.bootstrap_servers.split(",")]


def _credentials(kafka: KafkaSettings) -> faust.SASLCredentials | None:
    protocol = kafka.security_protocol.upper()
    if not protocol.startswith("SASL"):
        if protocol != "PLAINTEXT":
            raise ValueError(f"unsupported Kafka security protocol for Faust: {protocol}")
        return None
    context = None
    if protocol == "SASL_SSL":
        context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def broker_default_replication(kafka: KafkaSettings, timeout: float = 10.0) -> int:
    """The cluster's `default.replication.factor`, for topics Faust creates itself."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(kafka.client_config())
    broker = next(iter(admin.list_topics(timeout=timeout).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
    config = admin.describe_configs([resource])[resource].result(timeout)
    return int(config["default.replication.factor"].value)


def make_app(
    app_id: str,
    kafka: KafkaSettings,
    datadir: Path,
    *,
    partitions: int,
    session_timeout_s: float = 10.0,
    commit_interval_s: float = 1.0,
    replication_factor: int = 1,
    instance_id: str | None = None,
) -> ReadCommittedApp:
    """An app for one worker role. Keys and values stay raw bytes: the agents decode Avro
    themselves, and tables store Avro single-object encoded rows."""
    return ReadCommittedApp(
        app_id,
        broker=broker_urls(kafka),
        broker_credentials=_credentials(kafka),
        store="rocksdb://",  # rocksdict, which faust-streaming prefers when installed
        datadir=str(datadir),
        web_enabled=False,  # our own /healthz, /readyz and /metrics (processors/health.py)
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        # For the internal topics Faust creates (Faust needs an explicit one).
        topic_replication_factor=replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Faust's default session of 60 s would keep a dead member's partitions that long.
        # Static membership: a restarted instance (e.g. after kill -9) takes its partitions
        # back at once instead of waiting for the dead incarnation's session to expire. A
        # stopped instance stays in the group until then, too (resetting offsets waits).
        consumer_group_instance_id=f"{app_id}.{instance_id}" if instance_id else None,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(1.0, session_timeout_s / 3),
        broker_rebalance_timeout=max(20.0, 2 * session_timeout_s),
        broker_commit_interval=commit_interval_s,
        producer_linger=0.005,
        # Rows of derived topics may be up to 8 MiB (processors/topics.py): the changelog
        # producer must send them. Consumers need no change: the broker returns a record
        # batch larger than the fetch size when it is the first one (fetch v3+).
        producer_max_request_size=DERIVED_MAX_RECORD_BYTES + 64 * 1024,
        table_standby_replicas=0,
    )


def quiet_library_logs(level: int = logging.INFO) -> None:
    """aiokafka logs every send at DEBUG; at DEBUG level that is a large share of CPU."""
    for name in ("aiokafka", "faust", "mode", "rocksdict"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))


class Liveness:
    """Heartbeat and readiness of a Faust worker, for processors/health.py."""

    def __init__(self) -> None:
        self.last_beat = time.monotonic()
        self.started = False

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def ready(self, app: faust.App) -> bool:
        if not self.started or app.rebalancing:
            return False
        try:
            return bool(app.consumer.assignment())
        except Exception:  # consumer not started yet
            return False


class PositionTracker:
    """The next offset to process per (topic, partition), fed by the agents, read by the
    lag gauge."""

    def __init__(self) -> None:
        self.next_offset: dict[tuple[str, int], int] = {}

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset + 1 > self.next_offset.get(key, -1):
            self.next_offset[key] = offset + 1

    def update_lag(
        self, app: faust.App, lag: ConsumerLag, topics: set[str], transactional: set[str]
    ) -> None:
        """The lag of every assigned partition of `topics`; revoked partitions' series go."""
        try:
            assigned = app.consumer.assignment()
        except Exception:  # consumer not started yet
            return
        positions: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in assigned:
            if tp.topic not in topics:
                continue
            try:
                high = app.consumer.highwater(tp)
            except Exception:  # no fetch response for this partition yet
                continue
            if high is None:
                continue
            positions[(tp.topic, tp.partition)] = (high, self._next(app, tp))
        lag.update(positions, transactional)

    def _next(self, app: faust.App, tp: Any) -> int:
        """The next offset to process: past the last processed event, else (nothing
        processed since this process started) the group's committed offset, which Faust
        read when the partition was assigned, else the start of the partition."""
        processed = self.next_offset.get((tp.topic, tp.partition))
        if processed is not None:
            return processed
        committed = app.consumer._committed_offset.get(tp)
        return committed if committed is not None else 0


def exit_now(message: str, code: int = 3) -> None:
    """Stop the process at once, committing nothing more: the worker restarts from its
    committed offsets, which at-least-once processing with idempotent updates makes safe
    (the same path as a kill -9). Used for errors a retry inside the process cannot fix."""
    logging.getLogger("cqrs.worker").critical("%s; exiting", message)
    logging.shutdown()
    os._exit(code)


def run_worker(app: faust.App, loglevel: str, *, quiet: bool = False) -> None:
    """Run `app` in the foreground until SIGTERM/SIGINT (Faust's worker handles both).
    `quiet`: no start-up banner and spinner on stdout (only log lines, e.g. JSON ones)."""
    from faust.worker import Worker

    # Our own logging.basicConfig stays the only handler (else every line prints twice).
    worker = Worker(
        app, loglevel=loglevel, redirect_stdouts=False, override_logging=False, quiet=quiet
    )
    if quiet:
        worker.spinner = None  # Faust draws it on stdout whatever `quiet` says
    worker.execute_from_commandline()


def internal_topics(
    app_id: str, tables: Sequence[str] = (), partitions: int = 1
) -> list[TopicSpec]:
    """The topics Faust names after the app id: its leader-election topic and one compacted
    changelog per table of `tables` (partitioned like the source topic, as Faust requires).
    The projector's tables have none: their changelogs are the projection topics
    (processors/projector/tables.py); plain Faust tables (bench/bench_faust_floor.py) do."""
    specs = [TopicSpec(f"{app_id}-__assignor-__leader", 1, {})]
    specs += [TopicSpec(f"{app_id}-{t}-changelog", partitions, dict(DERIVED)) for t in tables]
    return specs


def prepare_topics(
    kafka: KafkaSettings,
    required: list[TopicSpec],
    internal: list[TopicSpec],
    replication_factor: int,
    timeout: float = 30.0,
) -> None:
    """Check the declared topics the worker uses, create Faust's internal topics, and wait
    until the metadata shows all of them with leaders.

    Faust would create its internal topics itself, but when it does so while starting, the
    consumer may subscribe before the new topic is in its metadata; it then drops the
    changelog from the subscription and fails its partition check. Creating them first
    removes the race."""
    from confluent_kafka.admin import AdminClient

    config = kafka.client_config()
    admin = AdminClient(config)
    check_declared_topics(config, required, timeout)
    create_topics(config, internal, replication_factor, timeout)
    names = {s.name: s.partitions for s in internal}
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        missing = [
            n
            for n, parts in names.items()
            if n not in topics
            or len(topics[n].partitions) != parts
            or any(p.leader < 0 for p in topics[n].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopicsNotReady(f"topics without leaders after {timeout:g}s: {missing}")
        time.sleep(0.1)
