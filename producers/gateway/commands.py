"""Commands over HTTP: a JSON body becomes an Avro command through the command client.

The route checks the command type once (`check_type`) and `submit` validates the JSON once
against the command's schema; the command client then encodes and produces the record
without checking it again. `submit` confirms that the broker has the command (acks=all)
before it answers, so a 202 means the command is in `<ctx>.commands`, not merely queued in
this process: the command client tracks each command's delivery report by command id, and
its results listener, the only thread that polls the producer, serves them.

Waiting for the processor's result costs no thread (the result's future calls back into
the event loop); waiting for a read model blocks a worker thread (the checkpoint waiter is
thread-based), and a limiter bounds how many such threads exist at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from processors.domain import BoundedContext
from processors.registry import Registry
from producers.command_client import (
    CommandClient,
    CommandResult,
    InvalidCommand,
    PendingCommand,
)
from producers.gateway.avro_json import from_json
from producers.gateway.config import GatewayConfig
from producers.gateway.responses import ClientError
from schemas.catalog import Catalog
from schemas.validation import ValidationError
from schemas.wire import headers as ce
from schemas.wire.limits import MAX_ID_BYTES
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
        self._new_id = ce.IdSequence()
        self.limiter = anyio.CapacityLimiter(config.max_waiting)
        self.client = CommandClient(
            config.kafka,
            config.context,
            topic_prefix=config.topic_prefix,
            source=f"/{config.context}/http-gateway",
            registry=registry,
            producer_config={"message.timeout.ms": int(config.delivery_timeout_s * 1000)},
        )
        self.waiter = CheckpointWaiter(
            config.query_dsn, read_schema, events_topic=self.client.topics.events
        )

    def close(self) -> None:
        self.client.close()
        self.waiter.close()

    @property
    def results_listener_alive(self) -> bool:
        return self.client.listening

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
        traceparent: str | None = None,
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
        aggregate_id, value = self.encode(command_type, record)
        deadline = time.monotonic() + timeout
        command_id = idempotency_key or self._new_id()
        sent = time.monotonic()
        try:
            pending = self.client.send_encoded(
                command_type,
                aggregate_id,
                value,
                command_id=command_id,
                expected_version=expected_version,
                principal=principal,
                traceparent=traceparent,
            )
        except InvalidCommand as exc:  # e.g. over the producer's record size
            raise CommandRejectedByGateway(422, "invalid_command", str(exc)) from None
        await self._delivery(pending)
        if wait is None:
            return Submitted(command_id, command_type, pending.aggregate_id)
        result = await self._result(pending, deadline)
        result_seconds = time.monotonic() - sent
        if wait != WAIT_RESULT and result.accepted:
            await self._read_model(wait, result, deadline)
        return Submitted(command_id, command_type, pending.aggregate_id, result, result_seconds)

    def check_type(self, command_type: str) -> None:
        """404 unless clients may send `command_type` (a public type of this context)."""
        if command_type not in self.command_types:
            known = ", ".join(sorted(self.command_types))
            raise CommandRejectedByGateway(
                404,
                "unknown_command_type",
                f"{self.context.name} has no command type {command_type!r} (known: {known})",
            )

    def encode(self, command_type: str, record: dict[str, Any]) -> tuple[str, bytes]:
        try:
            return self.client.encode(command_type, record)
        except InvalidCommand as exc:  # an id over the size limit
            raise CommandRejectedByGateway(422, "invalid_command", str(exc)) from None

    def validate(self, command_type: str, body: Any) -> dict[str, Any]:
        """The body as the command's Avro record; 422 naming the field that does not fit.
        `command_type` passed `check_type`."""
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

    async def _delivery(self, pending: PendingCommand) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: BaseException | None) -> None:  # on the client's listener thread
            outcome = None if error is None else Unavailable(f"Kafka refused the command: {error}")
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(_settle, delivered, outcome)

        pending.add_delivery_callback(report)
        try:
            # librdkafka reports a failure by message.timeout.ms; the margin is a backstop.
            await asyncio.wait_for(delivered, self.config.delivery_timeout_s + 5)
        except TimeoutError:
            raise Unavailable(f"Kafka did not acknowledge command {pending.command_id}") from None

    # -- waiting ---------------------------------------------------------------------------

    async def _result(self, pending: PendingCommand, deadline: float) -> CommandResult:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[CommandResult] = loop.create_future()

        def deliver(result: CommandResult) -> None:  # on the client's listener thread
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(_settle_result, arrived, result)

        # Not delivered: `_delivery` has answered 503 already, so nobody waits here.
        pending.add_done_callback(deliver, on_error=lambda error: None)
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
