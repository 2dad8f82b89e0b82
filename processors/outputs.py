"""Everything one decided command writes, encoded and checked before any of it is produced.

Data flows one way: the handler decides (`Decided`, with the process managers' commands and
their targets resolved), and `OutputBuilder.build` turns the outcome into records or refuses
it (`OutputRefused`). The command processor then asks the handler to reject the command
instead (`CommandHandler.retract`) and builds the rejection's records: see
`processors.command_processor.settle`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.command_handler import ACCEPTED, AggregateEntry, Decided, Issued
from processors.domain import AggregateType
from processors.wire import encode_snapshot, event_headers, issued_command_headers
from schemas.codec import Codec, default_codec
from schemas.wire import headers as ce
from schemas.wire.limits import (
    HEADER_OVERHEAD,
    MAX_DETAIL_CHARS,
    MAX_ID_BYTES,
    RECORD_OVERHEAD,
    record_size,
    snapshot_key,
    utf8_len,
)

Headers = list[tuple[str, bytes]]

_codec: Codec = default_codec()


class OutputRefused(Exception):
    """A decided command's output cannot be written; the command is rejected with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SnapshotRefused(Exception):
    """An aggregate's snapshot, encoded once per batch, cannot be written."""

    def __init__(self, aggregate: tuple[str, str], reason: str) -> None:
        super().__init__(f"snapshot of {aggregate[0]} {aggregate[1][:100]!r}: {reason}")
        self.aggregate = aggregate


@dataclass(slots=True)
class Outputs:
    """The encoded records of one decided command, each known to fit under the size limit."""

    events: list[tuple[bytes, Headers]]  # on the command's partition, keyed by its key
    snapshot: bytes | None  # only for aggregates in OutputBuilder.strict
    issued: list[tuple[str, int, bytes, Headers]]  # (key, partition, value, headers)


class OutputBuilder:
    """Encodes the events, snapshot and process-manager commands of a decided command, and
    refuses output that the producer or the broker would refuse: a record over
    `max_record_bytes`, or one its schema does not accept (a balance past the Avro long).

    Producing such a record fails inside the batch's transaction, which aborts, and the
    command comes back: the partition would stall on it forever. Refused here, the command
    is rejected (`too_large`, `invalid_output`) and the partition flows on."""

    def __init__(self, prefix: str, events_topic: str, max_record_bytes: int) -> None:
        self.prefix = prefix
        self.events_topic = events_topic
        self.max_record_bytes = max_record_bytes
        # Aggregates whose snapshot is encoded and checked after every command. Others are
        # encoded once per batch (`snapshot_value`), which is much cheaper; a snapshot
        # refused there puts its aggregate here and the batch is replayed.
        self.strict: set[tuple[str, str]] = set()
        # Everything in a record but its value is bounded: ids are capped at MAX_ID_BYTES and
        # appear at most 8 times, type names come from the catalog, and the stamp's values
        # are short. A value that leaves this much room fits without adding up the headers.
        longest_name = max(map(len, _codec.catalog.names()), default=0)
        bounded = 8 * MAX_ID_BYTES + 4 * longest_name + 4 * len(prefix) + 1024 + 512
        self._room = max_record_bytes - RECORD_OVERHEAD - 16 * (HEADER_OVERHEAD + 32) - bounded

    def build(self, stamp: ce.Stamp, d: Decided) -> Outputs:
        """The records of `d`; raises `OutputRefused` when one cannot be written."""
        msg = d.message
        events: list[tuple[bytes, Headers]] = []
        snapshot = None
        if d.status == ACCEPTED:
            first_version = d.version - len(d.events) + 1
            for i, event in enumerate(d.events):
                value = self._encode(event.type, event.data, "event")
                headers = event_headers(stamp, event.type, msg, first_version + i, self.prefix)
                self._fit("event", event.type, msg.key, value, headers)
                events.append((value, headers))
            if d.aggregate is not None and (d.aggregate.name, msg.key) in self.strict:
                snapshot = self._snapshot(d)
        issued = [self._issued(stamp, d, issue) for issue in d.issued]
        self._fit_result(d)
        return Outputs(events, snapshot, issued)

    def snapshot_value(self, agg: AggregateType[Any], key: str, entry: AggregateEntry) -> bytes:
        """The snapshot of an aggregate's state at the end of a batch."""
        try:
            value = encode_snapshot(agg, key, entry)
        except Exception as exc:
            raise SnapshotRefused((agg.name, key), f"{type(exc).__name__}: {exc}") from exc
        size = record_size(snapshot_key(agg.name, key), value, ())
        if size > self.max_record_bytes:
            raise SnapshotRefused((agg.name, key), f"{size:,} bytes")
        return value

    def _encode(self, type_name: str, record: Mapping[str, Any], what: str) -> bytes:
        try:
            return _codec.encode(type_name, record)
        except Exception as exc:  # EncodeError names the field; anything else is a bug
            raise OutputRefused("invalid_output", f"{what} {exc}") from exc

    def _fit(self, kind: str, type_name: str, key: str, value: bytes, headers: Any) -> None:
        if len(value) <= self._room:
            return
        size = record_size(key, value, headers)
        if size > self.max_record_bytes:
            raise OutputRefused(
                "too_large",
                f"the {kind} {type_name} it causes would be {size:,} bytes; Kafka takes at "
                f"most {self.max_record_bytes:,} (message.max.bytes)",
            )

    def _snapshot(self, d: Decided) -> bytes:
        assert d.aggregate is not None
        key = snapshot_key(d.aggregate.name, d.message.key)
        try:
            value = encode_snapshot(
                d.aggregate, d.message.key, AggregateEntry(d.snapshot_state, d.version)
            )
        except Exception as exc:  # to_record is domain code; the codec names the field
            raise OutputRefused(
                "invalid_output", f"snapshot {d.aggregate.state_schema}: {exc}"
            ) from exc
        self._fit("snapshot", d.aggregate.state_schema, key, value, ())
        return value

    def _issued(
        self, stamp: ce.Stamp, d: Decided, issue: Issued
    ) -> tuple[str, int, bytes, Headers]:
        command = issue.command
        if max(utf8_len(issue.aggregate_id), utf8_len(issue.command_id)) > MAX_ID_BYTES:
            raise OutputRefused(
                "too_large",
                f"the command {command.type} it causes names an id over {MAX_ID_BYTES} bytes",
            )
        value = self._encode(command.type, dict(command.data), "command")
        headers = issued_command_headers(stamp, issue, d.message)
        self._fit("command", command.type, issue.aggregate_id, value, headers)
        return issue.aggregate_id, issue.partition, value, headers

    def _fit_result(self, d: Decided) -> None:
        # Bounded rather than encoded: the events' offsets are known only after they are
        # produced. Ids are capped at parse time and the detail is clipped, so only a
        # command with a great many events, or a very long reason, can be over.
        if len(d.events) < 100 and len(d.reason) < 1000 and self._room > 100_000:
            return
        msg = d.message
        ids = utf8_len(msg.key) * 3 + utf8_len(msg.command_id) * 4
        ids += utf8_len(msg.correlation_id) + len(msg.command_type) * 2
        text = 4 * (min(len(d.detail), MAX_DETAIL_CHARS) + len(d.reason))
        positions = len(d.events) * (len(self.events_topic) + 24)
        size = RECORD_OVERHEAD + 400 + 600 + ids + text + positions  # 600: the traceparent
        if size > self.max_record_bytes:
            raise OutputRefused(
                "too_large",
                f"its result, naming {len(d.events)} events, would be about {size:,} bytes; "
                f"Kafka takes at most {self.max_record_bytes:,} (message.max.bytes)",
            )
