"""The command client: validate against the schema, produce with an idempotent producer keyed
by aggregate id, and optionally await the command's result.

    client = CommandClient(load_settings().kafka.client_config(), context="bank")
    result = client.send("bank.Deposit", {...}).result(timeout=10)

Results on `<ctx>.command-results` are matched to commands by command id (read from the
value's first bytes, or the causation id header), so the listener
(producers/results_listener.py) hands over only the results this client is waiting for, and
each is decoded when first read; thousands of commands can be in flight, each with a light
completion slot (producers/eventual.py). Delivery is tracked per command id
(`PendingCommand.delivery`, `add_delivery_callback`), and one thread serves the producer's
delivery reports: the results listener when there is one, else the caller's own
`send`/`flush`. Read your writes (`send(..., wait_for=...)`) waits with what the client is
given (`read_your_writes`, e.g. sinks.checkpoints.CheckpointWaiter): the client itself needs
no database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from confluent_kafka import (
    KafkaError,
    Message,
    Producer,
)

from processors.registry import Registry, UnknownMessageType, default_registry
from processors.topics import ContextTopics
from producers.command_results import (
    CommandNotDelivered,
    CommandResult,
    CommandTimeout,
    InvalidCommand,
    PendingCommand,
)
from producers.eventual import Eventual
from producers.outgoing import Outgoing, check_id, discard
from producers.result_reader import ResultReader
from producers.results_listener import STALL_S, ResultListener
from schemas.codec import Codec, default_codec
from schemas.wire import headers as ce
from schemas.wire.limits import (
    DEFAULT_MAX_RECORD_BYTES,
    HEADER_OVERHEAD,
    MAX_ID_BYTES,
    RECORD_OVERHEAD,
    record_size,
)

log = logging.getLogger(__name__)


class ReadYourWrites(Protocol):
    """Waits until a projection shows given event positions (sinks.checkpoints)."""

    def wait(self, projection: str, positions: Any, timeout: float) -> None: ...

    def close(self) -> None: ...


# The producer's settings unless `producer_config` overrides them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # Commands sent within 10 ms share one Produce request: at a few hundred commands/s
    # that is a few commands per request instead of about one.
    "linger.ms": 10,
    "partitioner": "murmur2_random",  # Java-compatible: same partition as Kafka's
}


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
        self.source = source
        self._new_id = ce.IdSequence()
        config = {**kafka, **PRODUCER_DEFAULTS, **(producer_config or {})}
        self._max_record_bytes = int(config.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES))
        # A bound of a command's size apart from its value, type and traceparent: the key and
        # the ids are at most MAX_ID_BYTES each (checked), the other headers are short.
        self._size_bound = (
            RECORD_OVERHEAD + 16 * (HEADER_OVERHEAD + 32) + 5 * MAX_ID_BYTES + 4 * len(source) + 128
        )
        # A per-message delivery callback (below) replaces the configured one: call both.
        self._configured_on_delivery = config.get("on_delivery")
        self._producer_config = config
        self._producer = Producer(config)
        # Bumped when the producer is replaced; a report of a replaced producer is ignored.
        self._producer_generation = 0
        self.producer_replacements = 0
        # Commands produced and not yet reported, oldest first: what a replacement re-sends.
        self._in_flight: dict[str, Outgoing] = {}
        self.stall_s = STALL_S
        self._pending: dict[str, Eventual] = {}
        self._results = ResultReader(self.codec)
        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)  # notified as reports come in
        self._listener: ResultListener | None = None
        if await_results:
            self._listener = ResultListener(kafka, self.topics.results, self)
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
        check_id(f"{command_type}: field '{agg.id_field}'", aggregate_id)
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
        traceparent: str | None = None,
    ) -> PendingCommand:
        """Validate and produce a command. With `wait_for="<projection>"`, the returned
        command's `result()` returns only once that projection's rows show the command's
        effect (read your writes; needs `read_your_writes`). `principal` (the `ce_principal`
        header) names who sends it; the processor carries it onto the command's events, as it
        does a valid W3C `traceparent` (an invalid one is not sent)."""
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
            traceparent=traceparent,
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
        traceparent: str | None = None,
        read_your_writes: Callable[[CommandResult, float], None] | None = None,
    ) -> PendingCommand:
        """Produce a command `encode` (or `prepare`) returned."""
        command_id = command_id or self._new_id()
        check_id("command id", command_id)
        if correlation_id:
            check_id("correlation id", correlation_id)
        if principal:
            check_id("principal", principal)
        headers = ce.CloudEventHeaders(
            id=command_id,
            type=command_type,
            source=self.source,
            subject=aggregate_id,
            time=ce.Stamp(self.source).time,
            correlation_id=correlation_id or None,
            expected_version=expected_version,
            principal=principal or None,
            traceparent=ce.valid_traceparent(traceparent),
        ).to_kafka()
        if (
            len(value) + self._size_bound + 4 * len(command_type) + len(traceparent or "")
            > self._max_record_bytes
            and (size := record_size(aggregate_id, value, headers)) > self._max_record_bytes
        ):
            # librdkafka would refuse it too, but as "Broker: Message size too large".
            raise InvalidCommand(
                f"{command_type} is {size:,} bytes with its key and headers; the producer "
                f"takes at most {self._max_record_bytes:,} (message.max.bytes): nothing was sent"
            )
        outgoing = Outgoing(time.monotonic(), value, aggregate_id, headers)
        future: Eventual | None = None
        with self._lock:
            if self._listener is not None:
                future = self._pending.get(command_id)
                if future is None:
                    future = self._pending[command_id] = Eventual()
            self._in_flight[command_id] = outgoing
        self._produce(command_id, outgoing)
        if self._listener is None:  # else the listener serves the delivery reports
            self._producer.poll(0)
            self._replace_a_stalled_producer()
        return PendingCommand(
            command_id, aggregate_id, future, read_your_writes, outgoing.delivered
        )

    def _produce(self, command_id: str, outgoing: Outgoing) -> None:
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
        dropping = threading.Thread(target=discard, args=(stale,), name="producer-discard")
        dropping.daemon = True
        dropping.start()

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
        """The result of `command_id` (decoded when someone reads it), if it is awaited."""
        with self._lock:
            future = self._pending.pop(command_id, None)
        if future is not None:
            future.set_raw(value, self._decode_result)

    def _decode_result(self, value: bytes) -> CommandResult:
        result = self._results.read(value)
        if result is None:  # not v1, or not readable: the codec reads it or says why not
            record = self.codec.decode(value, "cqrs.CommandResult")
            result = CommandResult.from_record(record)
        return result

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
            if outgoing is not None:
                outgoing.delivered.set_result(None)
            return
        failure = CommandNotDelivered(
            f"command {command_id} was not delivered to Kafka: {err.str()}", err.code()
        )
        if outgoing is not None:
            outgoing.delivered.set_exception(failure)
        with self._lock:
            future = self._pending.pop(command_id, None)
        if future is not None:
            future.set_exception(failure)

    def _awaiting_delivery(self) -> bool:
        return bool(self._in_flight)

    def _has_waiters(self) -> bool:
        return bool(self._pending)
