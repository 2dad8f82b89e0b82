"""The command client: validate against the schema, produce with an idempotent producer keyed
by aggregate id, and optionally await the command's result.

    client = CommandClient(load_settings().kafka.client_config(), context="bank")
    result = client.send("bank.Deposit", {...}).result(timeout=10)

Results are matched by the causation id header of `<ctx>.command-results`, so the listener
decodes only the results this client is waiting for; thousands of commands can be in flight.
Delivery is tracked per command id (`PendingCommand.delivered`), and one thread serves the
producer's delivery reports: the results listener when there is one, else the caller's own
`send`/`flush`. Read your writes (`send(..., wait_for=...)`) waits with what the client is
given (`read_your_writes`, e.g. sinks.checkpoints.CheckpointWaiter): the client itself needs
no database.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processors import wire
from processors.registry import Registry, UnknownMessageType, default_registry
from processors.topics import ContextTopics
from schemas import headers as ce
from schemas.codec import Codec, default_codec

log = logging.getLogger(__name__)


class InvalidCommand(ValueError):
    """The command was not sent: its type is unknown or it does not match its schema."""


class CommandTimeout(TimeoutError):
    pass


class ReadYourWrites(Protocol):
    """Waits until a projection shows given event positions (sinks.checkpoints)."""

    def wait(self, projection: str, positions: Any, timeout: float) -> None: ...

    def close(self) -> None: ...


class CommandNotDelivered(RuntimeError):
    """Kafka did not take the command (e.g. it timed out in the producer's queue while no
    broker was reachable, or the producer failed fatally): it will get no result. Sending
    it again is safe: a command id that was processed already is answered with its first
    result. `code` is the librdkafka error code of the delivery report, when there was one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class EventPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    command_id: str
    command_type: str
    aggregate_id: str
    status: str  # ACCEPTED | REJECTED | CONFLICT
    reason: str
    detail: str
    version: int
    events: tuple[EventPosition, ...]
    processed_at: datetime

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPTED"

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CommandResult:
        processed = r["processed_at"]
        if isinstance(processed, int):
            processed = datetime.fromtimestamp(processed / 1000, UTC)
        return cls(
            command_id=r["command_id"],
            command_type=r["command_type"],
            aggregate_id=r["aggregate_id"],
            status=r["status"],
            reason=r["reason"],
            detail=r["detail"],
            version=r["version"],
            events=tuple(
                EventPosition(e["topic"], e["partition"], e["offset"]) for e in r["events"]
            ),
            processed_at=processed,
        )


STALL_S = 20.0  # no delivery report / no result record for this long: replace the client


@dataclass
class _Outgoing:
    produced_at: float  # monotonic
    value: bytes
    key: str
    headers: list[tuple[str, bytes]]
    # Resolved by the delivery report: None when the broker acknowledged the command,
    # CommandNotDelivered when Kafka did not take it. Kept across producer replacements.
    delivered: Future[None] = field(default_factory=Future)


def _discard(producer: Producer) -> None:
    producer.purge()
    producer.flush(0)


class PendingCommand:
    """A sent command; `result()` waits for the processor's verdict, and when the command
    was sent with `wait_for`, also until that projection shows the command's effect."""

    def __init__(
        self,
        command_id: str,
        aggregate_id: str,
        future: Future[CommandResult] | None,
        read_your_writes: Callable[[CommandResult, float], None] | None = None,
        delivered: Future[None] | None = None,
    ):
        self.command_id = command_id
        self.aggregate_id = aggregate_id
        self._future = future
        self._read_your_writes = read_your_writes
        self._delivered = delivered

    def delivery(self, timeout: float = 30.0) -> None:
        """Return once the broker has acknowledged the command (its delivery report);
        CommandNotDelivered if Kafka did not take it, CommandTimeout if no report came in
        time. The caller must serve delivery reports meanwhile (`CommandClient.flush`)."""
        if self._delivered is None:
            raise RuntimeError("this command has no delivery report to wait for")
        try:
            self._delivered.result(timeout)
        except FutureTimeout:
            raise CommandTimeout(
                f"no delivery report for command {self.command_id} within {timeout:g}s"
            ) from None

    def add_delivery_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(None)` once the broker has acknowledged the command, or
        `callback(CommandNotDelivered)` if Kafka did not take it: on the thread serving the
        delivery reports (at once if the report is already in)."""
        if self._delivered is None:
            raise RuntimeError("this command has no delivery report to wait for")
        self._delivered.add_done_callback(lambda done: callback(done.exception()))

    def result(self, timeout: float = 30.0) -> CommandResult:
        if self._future is None:
            raise RuntimeError("this client was created with await_results=False")
        deadline = time.monotonic() + timeout
        try:
            result = self._future.result(timeout)
        except FutureTimeout:
            raise CommandTimeout(
                f"no result for command {self.command_id} within {timeout:g}s"
            ) from None
        if self._read_your_writes is not None and result.accepted:
            self._read_your_writes(result, max(0.0, deadline - time.monotonic()))
        return result

    def add_done_callback(
        self,
        callback: Callable[[CommandResult], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Call `callback(result)` as soon as the result arrives (on the client's listener
        thread; at once if it is already here), without blocking anyone: for clients that
        keep thousands of commands in flight and time each one. Read your writes is not
        awaited here. If the command was not delivered, `on_error(exc)` is called instead
        (without one, the failure is logged)."""
        if self._future is None:
            raise RuntimeError("this client was created with await_results=False")

        def done(future: Future[CommandResult]) -> None:
            error = future.exception()
            if error is None:
                callback(future.result())
            elif on_error is not None:
                on_error(error)
            else:
                log.error("command %s: %s", self.command_id, error)

        self._future.add_done_callback(done)


class CommandClient:
    def __init__(
        self,
        kafka: dict[str, Any],
        context: str = "bank",
        *,
        topic_prefix: str | None = None,
        await_results: bool = True,
        source: str = "/cqrs/python-client",
        registry: Registry | None = None,
        codec: Codec | None = None,
        producer_config: Mapping[str, Any] | None = None,
        read_your_writes: ReadYourWrites | None = None,
    ) -> None:
        self.registry = registry or default_registry()
        # For send(..., wait_for=<projection>); closed with the client.
        self._waiter = read_your_writes
        self.context = self.registry.context(context)
        self.topics = ContextTopics(topic_prefix or context)
        self.codec = codec or default_codec()
        self.source = source.encode()
        self._new_id = ce.IdSequence()
        config = {
            **kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",  # Java-compatible: same partition as Kafka's
            **(producer_config or {}),
        }
        self._max_record_bytes = int(config.get("message.max.bytes", wire.DEFAULT_MAX_RECORD_BYTES))
        # A per-message delivery callback (below) replaces the configured one: call both.
        self._configured_on_delivery = config.get("on_delivery")
        self._producer_config = config
        self._producer = Producer(config)
        # Bumped when the producer is replaced; a report of a replaced producer is ignored.
        self._producer_generation = 0
        self.producer_replacements = 0
        # Commands produced and not yet reported, oldest first: what a replacement re-sends.
        self._in_flight: dict[str, _Outgoing] = {}
        self.stall_s = STALL_S
        self._pending: dict[str, Future[CommandResult]] = {}
        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)  # notified as reports come in
        self._listener: _ResultListener | None = None
        if await_results:
            self._listener = _ResultListener(kafka, self.topics.results, self)
            self._listener.start()

    # -- sending ---------------------------------------------------------------------------

    def prepare(self, command_type: str, data: Mapping[str, Any]) -> tuple[str, bytes]:
        """Validate a command and encode it; returns (aggregate id, value)."""
        try:
            self.registry.aggregate_for_command(command_type)
        except UnknownMessageType as exc:
            raise InvalidCommand(str(exc)) from None
        if command_type.split(".", 1)[0] != self.context.name:
            raise InvalidCommand(f"{command_type} is not a command of {self.context.name}")
        try:
            self.codec.catalog.validate(command_type, data)
        except ValueError as exc:
            raise InvalidCommand(str(exc)) from None
        return self.encode(command_type, data)

    def encode(self, command_type: str, record: Mapping[str, Any]) -> tuple[str, bytes]:
        """Encode a command of this context already validated against its schema (the
        gateway validates its JSON itself); returns (aggregate id, value)."""
        agg = self.registry.aggregate_for_command(command_type)
        aggregate_id = str(record[agg.id_field])
        _check_id(f"{command_type}: field '{agg.id_field}'", aggregate_id)
        return aggregate_id, self.codec.encode(command_type, record)

    def send(
        self,
        command_type: str,
        data: Mapping[str, Any],
        *,
        command_id: str | None = None,
        expected_version: int | None = None,
        correlation_id: str | None = None,
        wait_for: str | None = None,
        principal: str | None = None,
    ) -> PendingCommand:
        """Validate and produce a command. With `wait_for="<projection>"`, the returned
        command's `result()` returns only once that projection's rows show the command's
        effect (read your writes; needs `read_your_writes`). `principal` (the `ce_principal`
        header) names who sends it; the processor carries it onto the command's events."""
        read_your_writes = self._read_your_writes(wait_for) if wait_for else None
        aggregate_id, value = self.prepare(command_type, data)
        return self.send_encoded(
            command_type,
            aggregate_id,
            value,
            command_id=command_id,
            expected_version=expected_version,
            correlation_id=correlation_id,
            principal=principal,
            read_your_writes=read_your_writes,
        )

    def send_encoded(
        self,
        command_type: str,
        aggregate_id: str,
        value: bytes,
        *,
        command_id: str | None = None,
        expected_version: int | None = None,
        correlation_id: str | None = None,
        principal: str | None = None,
        read_your_writes: Callable[[CommandResult, float], None] | None = None,
    ) -> PendingCommand:
        """Produce a command `encode` (or `prepare`) returned."""
        command_id = command_id or self._new_id()
        _check_id("command id", command_id)
        if correlation_id:
            _check_id("correlation id", correlation_id)
        headers = [
            (ce.SPECVERSION, b"1.0"),
            (ce.ID, command_id.encode()),
            (ce.TYPE, command_type.encode()),
            (ce.SOURCE, self.source),
            (ce.TIME, ce.time_header_value()),
            (ce.SUBJECT, aggregate_id.encode()),
            (ce.CONTENT_TYPE, b"application/avro"),
        ]
        if correlation_id:
            headers.append((ce.CORRELATION_ID, correlation_id.encode()))
        if expected_version is not None:
            headers.append((ce.EXPECTED_VERSION, str(expected_version).encode()))
        if principal:
            _check_id("principal", principal)
            headers.append((ce.PRINCIPAL, principal.encode()))
        size = wire.record_size(aggregate_id, value, headers)
        if size > self._max_record_bytes:
            # librdkafka would refuse it too, but as "Broker: Message size too large".
            raise InvalidCommand(
                f"{command_type} is {size:,} bytes with its key and headers; the producer "
                f"takes at most {self._max_record_bytes:,} (message.max.bytes): nothing was sent"
            )
        future: Future[CommandResult] | None = None
        if self._listener is not None:
            future = Future()
            with self._lock:
                self._pending.setdefault(command_id, future)
                future = self._pending[command_id]
        outgoing = _Outgoing(time.monotonic(), value, aggregate_id, headers)
        with self._lock:
            self._in_flight[command_id] = outgoing
        self._produce(command_id, outgoing)
        if self._listener is None:  # else the listener serves the delivery reports
            self._producer.poll(0)
            self._replace_a_stalled_producer()
        return PendingCommand(
            command_id, aggregate_id, future, read_your_writes, outgoing.delivered
        )

    def _produce(self, command_id: str, outgoing: _Outgoing) -> None:
        producer, generation = self._producer, self._producer_generation
        while True:
            try:
                producer.produce(
                    self.topics.commands,
                    outgoing.value,
                    outgoing.key,
                    headers=outgoing.headers,
                    # A failed delivery report carries no headers, so bind the id here.
                    on_delivery=partial(self._on_delivery, command_id, generation),
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.05)

    def _replace_a_stalled_producer(self) -> None:
        """librdkafka#5430: a producer that saw a partition without a leader (a broker
        restarting) can stay stuck on it for good, its messages never sent.
        When the oldest command produced has had no delivery report for `stall_s`, a new
        producer takes over and sends every unreported command again. A command that did
        reach Kafka is then there twice, which the processor answers with its first result.
        A broker that is down for long only costs a replacement per `stall_s`."""
        with self._lock:
            oldest = next(iter(self._in_flight.values()), None)
            now = time.monotonic()
            if oldest is None or now - oldest.produced_at < self.stall_s:
                return
            stale = self._producer
            self._producer = Producer(self._producer_config)
            self._producer_generation += 1
            self.producer_replacements += 1
            again = list(self._in_flight.items())
            self._in_flight.clear()
            for command_id, outgoing in again:
                outgoing.produced_at = now
                self._in_flight[command_id] = outgoing
        log.warning(
            "no delivery report for %.0fs: a new producer sends %d commands again",
            self.stall_s,
            len(again),
        )
        for command_id, outgoing in again:
            self._produce(command_id, outgoing)
        # The old one may hang in its own queue: drop it on the side (its reports are ignored).
        discard = threading.Thread(target=_discard, args=(stale,), name="producer-discard")
        discard.daemon = True
        discard.start()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every command sent has its delivery report; CommandTimeout if some
        have none after `timeout`."""
        if self._listener is None or not self._listener.is_alive():
            remaining = self._producer.flush(timeout)
        else:  # the listener polls the producer: wait for it to have served every report
            deadline = time.monotonic() + timeout
            with self._delivered:
                while self._in_flight and time.monotonic() < deadline:
                    self._delivered.wait(max(0.0, deadline - time.monotonic()))
                remaining = len(self._in_flight)
        if remaining:
            raise CommandTimeout(f"{remaining} commands still undelivered after {timeout:g}s")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._listener is not None:
                self._listener.stop()
            if self._waiter is not None:
                self._waiter.close()

    @property
    def listening(self) -> bool:
        """Whether results are being read (False once the listener thread died)."""
        return self._listener is not None and self._listener.is_alive()

    def __enter__(self) -> CommandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- read your writes ------------------------------------------------------------------

    def _read_your_writes(self, projection: str) -> Callable[[CommandResult, float], None]:
        known = [p.name for p in self.context.projections]
        if projection not in known:
            raise InvalidCommand(
                f"wait_for: {self.context.name} has no projection "
                f"{projection!r} (known: {', '.join(known) or 'none'})"
            )
        waiter = self._waiter
        if waiter is None:
            raise InvalidCommand("wait_for needs the client's read_your_writes (a read model)")

        def wait(result: CommandResult, timeout: float) -> None:
            waiter.wait(projection, result.events, timeout)

        return wait

    # -- results ---------------------------------------------------------------------------

    def _deliver(self, command_id: str, value: bytes) -> None:
        with self._lock:
            future = self._pending.pop(command_id, None)
        if future is not None and not future.done():
            record = self.codec.decode(value, "cqrs.CommandResult")
            future.set_result(CommandResult.from_record(record))

    def _on_delivery(
        self, command_id: str, generation: int, err: KafkaError | None, msg: Message
    ) -> None:
        """A command Kafka did not take gets no result: tell whoever waits for it now,
        rather than letting them wait out their timeout."""
        if generation != self._producer_generation:
            return  # a replaced producer: its command was sent again
        if self._configured_on_delivery is not None:
            self._configured_on_delivery(err, msg)
        with self._delivered:
            outgoing = self._in_flight.pop(command_id, None)
            self._delivered.notify_all()
        if err is None:
            if outgoing is not None and not outgoing.delivered.done():
                outgoing.delivered.set_result(None)
            return
        failure = CommandNotDelivered(
            f"command {command_id} was not delivered to Kafka: {err.str()}", err.code()
        )
        if outgoing is not None and not outgoing.delivered.done():
            outgoing.delivered.set_exception(failure)
        with self._lock:
            future = self._pending.pop(command_id, None)
        if future is not None and not future.done():
            future.set_exception(failure)

    def _awaiting_delivery(self) -> bool:
        return bool(self._in_flight)

    def _is_waiting_for(self, command_id: str) -> bool:
        return command_id in self._pending

    def _has_waiters(self) -> bool:
        return bool(self._pending)


def _check_id(what: str, text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > wire.MAX_ID_BYTES:
        raise InvalidCommand(
            f"{what}: {size:,} bytes; ids are at most {wire.MAX_ID_BYTES} bytes (UTF-8)"
        )


# Leadership moving (a new topic, a broker restart): librdkafka does not flag these retriable.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


class _ResultListener(threading.Thread):
    """Reads `<ctx>.command-results` from its end at start-up, before any command is sent.

    Around a broker restart its librdkafka consumer can fall silent: no record and no log
    line, while the results are committed (docs/reliability.md). So when commands wait and
    no record has come for `stall_s`, it replaces the consumer with a new one at the
    positions it had reached (the old one is closed on a side
    thread, in case it hangs). A quiet topic with waiters (the processor is down) only costs
    a reconnect per `stall_s`.
    """

    def __init__(
        self, kafka: dict[str, Any], topic: str, client: CommandClient, stall_s: float = STALL_S
    ) -> None:
        super().__init__(name="command-results", daemon=True)
        self._client = client
        self._kafka = kafka
        self._topic = topic
        self.stall_s = stall_s
        self.reconnects = 0
        self._stopping = threading.Event()
        self._consumer = self._new_consumer()
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise InvalidCommand(f"cannot read {topic}: {meta.error}")
        # next offset to read per partition: where a replacement consumer starts
        self._next = {p: self._end_of(topic, p) for p in meta.partitions}
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in self._next.items()])
        self._last_record = time.monotonic()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                **self._kafka,
                "group.id": f"{self._topic}.client-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 20,
                # librdkafka's default ("largest") would jump over every result written
                # between a lost position and the end, e.g. when a broker restart makes its
                # offset look out of range: waiters would time out on results that exist.
                "auto.offset.reset": "earliest",
            }
        )

    def describe(self) -> str:
        """For diagnostics: is it reading, and where."""
        quiet = time.monotonic() - self._last_record
        return (
            f"results listener alive={self.is_alive()}, last record {quiet:.1f}s ago, "
            f"reconnects {self.reconnects}, next offsets {dict(sorted(self._next.items()))}"
        )

    def _end_of(self, topic: str, partition: int, timeout: float = 30.0) -> int:
        # A topic created a moment ago, or a broker that just restarted, answers "not
        # leader" for a while: retry what the broker says is retriable.
        deadline = time.monotonic() + timeout
        while True:
            try:
                tp = TopicPartition(topic, partition)
                return self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            except KafkaException as exc:
                err = exc.args[0]
                if not (
                    isinstance(err, KafkaError) and (err.retriable() or err.code() in _TRANSIENT)
                ):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self) -> None:
        causation = ce.CAUSATION_ID
        try:
            while not self._stopping.is_set():
                # This thread alone serves the producer's delivery reports: a command Kafka
                # refused fails its waiter now, not at the sender's next send or flush. While
                # commands await a report, it looks for them every few milliseconds.
                self._client._producer.poll(0)
                wait = 0.005 if self._client._awaiting_delivery() else 0.1
                records = 0
                for msg in self._consumer.consume(1000, wait):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("reading command results: %s", err.str())
                        continue
                    records += 1
                    self._next[msg.partition()] = msg.offset() + 1
                    for k, v in msg.headers() or ():
                        if k == causation and v is not None:
                            command_id = v.decode()
                            if self._client._is_waiting_for(command_id):
                                self._client._deliver(command_id, msg.value())
                            break
                now = time.monotonic()
                if records:
                    self._last_record = now
                elif now - self._last_record > self.stall_s and self._client._has_waiters():
                    self._reconnect()
                self._client._replace_a_stalled_producer()
        finally:
            self._consumer.close()

    def _reconnect(self) -> None:
        log.warning(
            "no command result for %.0fs while commands wait: new consumer for %s at %s",
            self.stall_s,
            self._topic,
            dict(sorted(self._next.items())),
        )
        stale = self._consumer
        self._consumer = self._new_consumer()
        self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in self._next.items()])
        self.reconnects += 1
        self._last_record = time.monotonic()
        threading.Thread(target=stale.close, name="command-results-close", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)
