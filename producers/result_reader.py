"""Reading `<ctx>.command-results` records for the command client, cheaply.

`command_id_of` finds the command a result answers from the value's first bytes (the
`cqrs.CommandResult` v1 body starts with `command_id`), without building the record's
headers; `ResultReader.read` decodes a v1 result straight into a `CommandResult`. Both
handle only single-object encoded `cqrs.CommandResult` v1 (the only version written today):
for anything else (another writer schema, a body they cannot read) they step aside, and the
caller uses the headers (`ce_causationid`) and the codec, which also name what is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.command_results import CommandResult, EventPosition
from schemas.avro_reader import read_long as _long
from schemas.avro_reader import read_string as _string
from schemas.codec import MAGIC, Codec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES = ("ACCEPTED", "REJECTED", "CONFLICT")  # cqrs.CommandStatus, in symbol order
_START = len(MAGIC) + 8


class ResultReader:
    """Reads `cqrs.CommandResult` v1 values; `None` for anything else (see the module)."""

    def __init__(self, codec: Codec) -> None:
        entry = codec.catalog.get("cqrs.CommandResult", 1)
        self.prefix = MAGIC + entry.fingerprint_bytes

    def command_id_of(self, value: bytes | None) -> str | None:
        if value is None or not value.startswith(self.prefix):
            return None
        try:
            return _string(value, _START)[0]
        except (IndexError, ValueError):
            return None

    def read(self, value: bytes) -> CommandResult | None:
        if not value.startswith(self.prefix):
            return None
        try:
            return self._read(value)
        except (IndexError, ValueError):
            return None

    def _read(self, data: bytes) -> CommandResult | None:
        command_id, pos = _string(data, _START)
        command_type, pos = _string(data, pos)
        aggregate_id, pos = _string(data, pos)
        status_index, pos = _long(data, pos)
        if not 0 <= status_index < len(_STATUSES):
            return None
        reason, pos = _string(data, pos)
        detail, pos = _string(data, pos)
        version, pos = _long(data, pos)
        events: list[EventPosition] = []
        count, pos = _long(data, pos)
        while count:
            if count < 0:  # a block with its size in bytes
                count = -count
                _, pos = _long(data, pos)
            for _ in range(count):
                topic, pos = _string(data, pos)
                partition, pos = _long(data, pos)
                offset, pos = _long(data, pos)
                if not -(2**31) <= partition < 2**31:
                    return None
                events.append(EventPosition(topic, partition, offset))
            count, pos = _long(data, pos)
        millis, pos = _long(data, pos)
        if pos != len(data):
            return None
        return CommandResult(
            command_id,
            command_type,
            aggregate_id,
            _STATUSES[status_index],
            reason,
            detail,
            version,
            tuple(events),
            _EPOCH + timedelta(microseconds=millis * 1000),
        )
