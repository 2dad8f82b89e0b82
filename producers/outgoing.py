"""The command client's bookkeeping of one command in flight, and the checks of its ids."""

from __future__ import annotations

from confluent_kafka import Producer

from producers.command_results import InvalidCommand
from producers.eventual import Eventual
from schemas.wire.limits import MAX_ID_BYTES


class Outgoing:
    """A command produced and not yet reported. `delivered` is settled by the delivery
    report: None when the broker acknowledged the command, CommandNotDelivered when Kafka
    did not take it. Kept across producer replacements."""

    __slots__ = ("delivered", "headers", "key", "produced_at", "value")

    def __init__(self, produced_at: float, value: bytes, key: str, headers: list) -> None:
        self.produced_at = produced_at  # monotonic
        self.value = value
        self.key = key
        self.headers = headers
        self.delivered = Eventual()


def discard(producer: Producer) -> None:
    producer.purge()
    producer.flush(0)


def check_id(what: str, text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise InvalidCommand(
            f"{what}: {size:,} bytes; ids are at most {MAX_ID_BYTES} bytes (UTF-8)"
        )
