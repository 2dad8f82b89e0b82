"""producers/result_reader.py reads command results exactly as the codec does."""

from __future__ import annotations

import datetime as dt

import pytest

from producers.command_results import CommandResult
from producers.result_reader import ResultReader
from schemas.codec import default_codec

CODEC = default_codec()
READER = ResultReader(CODEC)


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "command_id": "5a0c1f3e-9d2b-4c1e-8f3a-000000000000-17",
        "command_type": "bank.Deposit",
        "aggregate_id": "acc-1",
        "status": "ACCEPTED",
        "reason": "",
        "detail": "",
        "version": 3,
        "events": [{"topic": "bank.events", "partition": 2, "offset": 41}],
        "processed_at": dt.datetime(2026, 12, 6, 1, 2, 3, 456000, tzinfo=dt.UTC),
    }
    base.update(changes)
    return base


CASES = [
    record(),
    record(status="REJECTED", reason="insufficient_funds", detail="balance 3 < 9", events=[]),
    record(status="CONFLICT", version=0, events=[]),
    record(
        command_id="ü" * 200,
        aggregate_id="конто-€-𝄞",
        detail="x" * 5000,
        version=2**62,
        events=[
            {"topic": "t" * 70, "partition": 2**31 - 1, "offset": 2**63 - 1},
            {"topic": "bank.events", "partition": 0, "offset": 0},
        ],
        processed_at=dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=dt.UTC),
    ),
    record(processed_at=dt.datetime(2262, 1, 1, tzinfo=dt.UTC), version=-5),
]


@pytest.mark.parametrize("fields", CASES)
def test_it_reads_what_the_codec_reads(fields: dict[str, object]) -> None:
    value = CODEC.encode("cqrs.CommandResult", fields)
    expected = CommandResult.from_record(CODEC.decode(value, "cqrs.CommandResult"))
    got = READER.read(value)
    assert got == expected
    assert got is not None and got.processed_at.tzinfo is expected.processed_at.tzinfo
    assert READER.command_id_of(value) == fields["command_id"]


def test_it_steps_aside_for_other_schemas_and_broken_bodies() -> None:
    value = CODEC.encode("cqrs.CommandResult", record())
    other = CODEC.encode("cqrs.EventPosition", {"topic": "t", "partition": 1, "offset": 2})
    assert READER.read(other) is None and READER.command_id_of(other) is None
    assert READER.command_id_of(None) is None
    assert READER.read(value[:-1]) is None  # truncated
    assert READER.read(value + b"\x00") is None  # trailing bytes
    assert READER.command_id_of(value[:11]) is None
    bad_utf8 = value[:11] + b"\xff" + value[12:]
    assert READER.read(bad_utf8) is None and READER.command_id_of(bad_utf8) is None
