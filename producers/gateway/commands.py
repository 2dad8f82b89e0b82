"""Commands over HTTP: a JSON body becomes an Avro command through the command client.

`submit` confirms that the broker has the command (acks=all) before it answers, so a 202
means the command is in `<ctx>.commands`, not merely queued in this process: the producer's
delivery reports resolve an asyncio future per request. Delivery reports carry no headers,
so they are matched by key: one aggregate's commands share a partition, whose reports come
in produce order, and the event loop registers and produces each command in one step.

Waiting for the processor's result costs no thread (the result's future calls back into
the event loop); waiting for a read model blocks a worker thread (the checkpoint waiter is
thread-based), and a limiter bounds how many such threads exist at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from confluent_kafka import KafkaError, Message

from processors.domain import BoundedContext
from processors.registry import Registry
from processors.wire import MAX_ID_BYTES
from producers.command_client import (
    CommandClient,
    CommandResult,
    CommandTimeout,
    InvalidCommand,
    PendingCommand,
)
from producers.gateway.avro_json import from_json
from producers.gateway.config import GatewayConfig
from producers.gateway.responses import ClientError
from schemas import headers as ce
from schemas.catalog import Catalog
from schemas.validation import ValidationError
from sinks.checkpoints import CheckpointWaiter, ReadModelTimeout
from sinks.db import ReadModelError

# An Idempotency-Key is a command id: printable ASCII without spaces at its ends.
IDEMPOTENCY_KEY = re.compile(r"[!-~](?:[ -~]*[!-~])?")
WAIT_RESULT = "result"


class CommandRejectedByGateway(ClientError):
    """The request cannot become a command. `status` is the HTTP status to answer with;
    `field` is the dotted path of the failing field when there is one."""


class Unavailable(RuntimeError):
    """Kafka or Postgres did not do its part in time (503)."""


class WaitTimeout(TimeoutError):
    """No result, or no read-model catch-up, within the request's timeout (504).
    `result` is set when the command was decided but the read model lagged."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Submitted:
    command_id: str
    command_type: str
    aggregate_id: str
    result: CommandResult | None = None  # set when the request waited for it
    result_seconds: float | None = None  # from producing the command to its result


class CommandGateway:
    def __init__(
        self, config: GatewayConfig, registry: Registry, catalog: Catalog, read_schema: str
    ) -> None:
        self.config = config
        self.context: BoundedContext = registry.context(config.context)
        self.catalog = catalog
        # Clients may send only the public command types: an internal one is not found here.
        self.command_types = self.context.public_command_types
        self.projections = tuple(p.name for p in self.context.projections)
        self.id_fields = {
            t: agg.id_field for agg in self.context.aggregates for t in agg.command_types
        }
        self._new_id = ce.IdSequence()
        self._deliveries: dict[bytes, deque[asyncio.Future[None]]] = {}  # by Kafka key
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._work = threading.Event()  # set when a request starts awaiting a delivery
        self.limiter = anyio.CapacityLimiter(config.max_waiting)
        self.client = CommandClient(
            config.kafka,
            config.context,
            topic_prefix=config.topic_prefix,
            source=f"/{config.context}/http-gateway",
            registry=registry,
            producer_config={
                "on_delivery": self._on_delivery,
                "message.timeout.ms": int(config.delivery_timeout_s * 1000),
            },
        )
        self.waiter = CheckpointWaiter(
            config.query_dsn, read_schema, events_topic=self.client.topics.events
        )
        self._poller = threading.Thread(target=self._poll, name="gateway-deliveries", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stopping.set()
        self._work.set()
        self._poller.join(5)
        self.client.close()
        self.waiter.close()

    @property
    def results_listener_alive(self) -> bool:
        listener = getattr(self.client, "_listener", None)
        return listener is None or listener.is_alive()

    # -- the request -----------------------------------------------------------------------

    def wait_targets(self) -> tuple[str, ...]:
        return (WAIT_RESULT, *self.projections)

    async def submit(
        self,
        command_type: str,
        body: Any,
        *,
        idempotency_key: str | None,
        expected_version: int | None,
        wait: str | None,
        timeout: float,
        principal: str | None = None,
    ) -> Submitted:
        record = self.validate(command_type, body)
        if idempotency_key is not None and not _valid_key(idempotency_key):
            raise CommandRejectedByGateway(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_ID_BYTES} printable ASCII characters",
            )
        if wait is not None and wait not in self.wait_targets():
            raise CommandRejectedByGateway(
                400,
                "invalid_parameter",
                f"wait must be one of {', '.join(self.wait_targets())}, got {wait!r}",
                "wait",
            )
        deadline = time.monotonic() + timeout
        command_id = idempotency_key or self._new_id()
        key = str(record[self.id_fields[command_type]]).encode("utf-8", "surrogatepass")
        delivered = self._expect_delivery(key)
        sent = time.monotonic()
        try:
            pending = self.client.send(
                command_type,
                record,
                command_id=command_id,
                expected_version=expected_version,
                principal=principal,
            )
        except InvalidCommand as exc:
            self._forget_delivery(key, delivered)
            raise CommandRejectedByGateway(422, "invalid_command", str(exc)) from None
        except Exception:
            self._forget_delivery(key, delivered)
            raise
        await self._delivery(delivered, key, command_id)
        if wait is None:
            return Submitted(command_id, command_type, pending.aggregate_id)
        result = await self._result(pending, deadline)
        result_seconds = time.monotonic() - sent
        if wait != WAIT_RESULT and result.accepted:
            await self._read_model(wait, result, deadline)
        return Submitted(command_id, command_type, pending.aggregate_id, result, result_seconds)

    def validate(self, command_type: str, body: Any) -> dict[str, Any]:
        if command_type not in self.command_types:
            known = ", ".join(sorted(self.command_types))
            raise CommandRejectedByGateway(
                404,
                "unknown_command_type",
                f"{self.context.name} has no command type {command_type!r} (known: {known})",
            )
        if not isinstance(body, Mapping):
            raise CommandRejectedByGateway(
                422,
                "invalid_command",
                f"{command_type}: the body must be a JSON object, got {_json_kind(body)}",
                "",
            )
        entry = self.catalog.latest(command_type)
        record = from_json(entry.schema, body)
        try:
            entry.validate(record)
        except ValidationError as exc:
            raise CommandRejectedByGateway(422, "invalid_command", str(exc), exc.path) from None
        return record

    # -- delivery reports ------------------------------------------------------------------

    def _expect_delivery(self, key: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._deliveries.setdefault(key, deque()).append(future)
        self._work.set()
        return future

    def _forget_delivery(self, key: bytes, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiting = self._deliveries.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._deliveries[key]

    async def _delivery(self, future: asyncio.Future[None], key: bytes, command_id: str) -> None:
        try:
            # librdkafka reports a failure by message.timeout.ms; the margin is a backstop.
            await asyncio.wait_for(future, self.config.delivery_timeout_s + 5)
        except TimeoutError:
            self._forget_delivery(key, future)
            raise Unavailable(f"Kafka did not acknowledge command {command_id}") from None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Called by librdkafka on whichever thread polls the producer.
        key = msg.key()
        with self._lock:
            waiting = self._deliveries.get(key) if key is not None else None
            if not waiting:
                return
            future = waiting.popleft()  # one key's records are acknowledged in order
            if not waiting:
                del self._deliveries[key]
        outcome = None if err is None else Unavailable(f"Kafka refused the command: {err.str()}")
        # RuntimeError: the loop closed at shutdown, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            future.get_loop().call_soon_threadsafe(_settle, future, outcome)

    def _poll(self) -> None:
        # Serves delivery reports while any request awaits one; idle, it sleeps until a
        # command is registered. `flush` is the command client's public way to poll its
        # producer (it also sends what lingers at once).
        while not self._stopping.is_set():
            self._work.clear()
            with self._lock:
                busy = bool(self._deliveries)
            if not busy:
                self._work.wait(0.5)
                continue
            started = time.monotonic()
            try:
                self.client.flush(0.1)
            except CommandTimeout:
                continue
            if time.monotonic() - started < 0.001:
                # Registered but not produced yet (the loop is between the two steps).
                self._stopping.wait(0.001)

    # -- waiting ---------------------------------------------------------------------------

    async def _result(self, pending: PendingCommand, deadline: float) -> CommandResult:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[CommandResult] = loop.create_future()

        def deliver(result: CommandResult) -> None:  # on the client's listener thread
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(_settle_result, arrived, result)

        _on_result(pending, deliver)
        try:
            return await asyncio.wait_for(arrived, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise WaitTimeout(
                f"no result for command {pending.command_id} within the timeout; "
                "it may still be processed (retry with the same Idempotency-Key)"
            ) from None

    async def _read_model(self, projection: str, result: CommandResult, deadline: float) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            await anyio.to_thread.run_sync(
                self.waiter.wait, projection, result.events, remaining, limiter=self.limiter
            )
        except ReadModelTimeout as exc:
            raise WaitTimeout(str(exc), result) from None
        except ReadModelError as exc:
            raise Unavailable(str(exc)) from None


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _settle_result(future: asyncio.Future[CommandResult], result: CommandResult) -> None:
    if not future.done():
        future.set_result(result)


def _on_result(pending: PendingCommand, callback: Callable[[CommandResult], None]) -> None:
    """Call `callback(result)` on the client's thread when the command's result arrives, so
    no thread sits waiting for it. Like cqrsctl/driver.py, this reaches the pending command's
    future until PendingCommand offers `add_done_callback` itself."""
    add = getattr(pending, "add_done_callback", None)
    if add is not None:
        add(callback)
        return
    future = pending._future
    if future is None:
        raise RuntimeError("the command client does not await results")
    future.add_done_callback(lambda f: callback(f.result()))


def _valid_key(key: str) -> bool:
    return len(key) <= MAX_ID_BYTES and IDEMPOTENCY_KEY.fullmatch(key) is not None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def result_json(result: CommandResult) -> dict[str, Any]:
    processed = result.processed_at
    return {
        "command_id": result.command_id,
        "command_type": result.command_type,
        "aggregate_id": result.aggregate_id,
        "status": result.status,
        "reason": result.reason,
        "detail": result.detail,
        "version": result.version,
        "events": [
            {"topic": e.topic, "partition": e.partition, "offset": e.offset} for e in result.events
        ],
        "processed_at": processed.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
