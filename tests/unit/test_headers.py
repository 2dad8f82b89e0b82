"""CloudEvents Kafka headers: exact names and values, round trips, tolerant reading, and
typed errors that name the header."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.wire.headers import (
    REQUIRED,
    CloudEventHeaders,
    HeaderError,
    MalformedHeader,
    MissingHeader,
    Stamp,
    format_time,
    new_id,
    new_traceparent,
    parse_time,
    time_header_value,
    trace_id,
    valid_traceparent,
)

TIME = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)

EVENT = CloudEventHeaders(
    id="5b0a7c1e-0000-4000-8000-000000000001",
    type="bank.Deposited",
    source="/bank/command-processor",
    subject="acc-1",
    time=TIME,
    correlation_id="corr-1",
    causation_id="cmd-1",
    aggregate_version=7,
)


def test_an_event_writes_exactly_the_contracts_headers() -> None:
    assert EVENT.to_kafka() == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"5b0a7c1e-0000-4000-8000-000000000001"),
        ("ce_type", b"bank.Deposited"),
        ("ce_source", b"/bank/command-processor"),
        ("ce_time", b"2024-05-01T12:00:00.123Z"),
        ("ce_subject", b"acc-1"),
        ("content-type", b"application/avro"),
        ("ce_correlationid", b"corr-1"),
        ("ce_causationid", b"cmd-1"),
        ("ce_aggregateversion", b"7"),
    ]


def test_a_command_carries_its_expected_version() -> None:
    command = CloudEventHeaders(
        id=new_id(),
        type="bank.Deposit",
        source="/cli",
        subject="acc-1",
        time=TIME,
        expected_version=3,
    )
    headers = dict(command.to_kafka())
    assert headers["ce_expectedversion"] == b"3"
    assert "ce_aggregateversion" not in headers
    # ce_time is written to the millisecond.
    read = CloudEventHeaders.from_kafka(command.to_kafka())
    assert read == replace(command, time=TIME.replace(microsecond=123000))


ids = st.text(min_size=1, max_size=30)


@given(
    id_=ids,
    type_=ids,
    source=ids,
    subject=ids,
    time=st.datetimes(timezones=st.just(dt.UTC), min_value=dt.datetime(1, 1, 2)),
    correlation=st.none() | ids,
    version=st.none() | st.integers(0, 2**63 - 1),
)
def test_round_trip(
    id_: str,
    type_: str,
    source: str,
    subject: str,
    time: dt.datetime,
    correlation: str | None,
    version: int | None,
) -> None:
    headers = CloudEventHeaders(
        id=id_,
        type=type_,
        source=source,
        subject=subject,
        time=time,
        correlation_id=correlation,
        aggregate_version=version,
    )
    millis = time.replace(microsecond=time.microsecond // 1000 * 1000)
    assert CloudEventHeaders.from_kafka(headers.to_kafka()) == replace(headers, time=millis)


def test_reading_is_tolerant_of_none_values_extras_and_repeats() -> None:
    raw = [
        *EVENT.to_kafka(),
        ("ce_causationid", None),  # a None value counts as absent
        ("traceparent", b"00-abc"),  # not ours: ignored
        ("ce_traceparent", b"00-def"),  # another CloudEvents extension: kept
        ("ce_subject", b"acc-2"),  # repeated: the last one wins
    ]
    read = CloudEventHeaders.from_kafka(raw)
    assert read.subject == "acc-2"
    assert read.causation_id == "cmd-1"
    assert read.extensions == {"traceparent": "00-def"}
    assert dict(read.to_kafka())["ce_traceparent"] == b"00-def"


def test_optional_headers_may_be_missing() -> None:
    minimal = [(k, v) for k, v in EVENT.to_kafka() if k in REQUIRED]
    read = CloudEventHeaders.from_kafka(minimal)
    assert read.correlation_id is None
    assert read.aggregate_version is None
    assert read.content_type == "application/avro"


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_header_is_named(name: str) -> None:
    raw = [(k, v) for k, v in EVENT.to_kafka() if k != name]
    with pytest.raises(MissingHeader, match=f"missing required header {name}") as caught:
        CloudEventHeaders.from_kafka(raw)
    assert caught.value.header == name


def test_no_headers_at_all() -> None:
    with pytest.raises(MissingHeader, match="ce_specversion"):
        CloudEventHeaders.from_kafka(None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ce_specversion", b"0.3", "expected '1.0', got '0.3'"),
        ("ce_time", b"yesterday", "not an RFC 3339 timestamp: 'yesterday'"),
        ("ce_time", b"2024-05-01T12:00:00", "not an RFC 3339 timestamp"),  # no offset
        ("ce_aggregateversion", b"-1", "expected a non-negative integer, got '-1'"),
        ("ce_expectedversion", b"three", "expected a long, got 'three'"),
        ("ce_id", b"\xff\xfe", "value is not UTF-8"),
        ("ce_id", b"", "header ce_id is empty"),
    ],
)
def test_a_malformed_header_is_named(name: str, value: bytes, message: str) -> None:
    raw = [*EVENT.to_kafka(), (name, value)]
    with pytest.raises(MalformedHeader, match=message) as caught:
        CloudEventHeaders.from_kafka(raw)
    assert caught.value.header == name
    assert isinstance(caught.value, HeaderError)


def test_times_are_rfc3339_utc_and_any_offset_or_precision_is_read() -> None:
    assert format_time(
        dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    ) == ("2024-05-01T12:00:00.000Z")
    assert parse_time("2024-05-01T14:00:00.123456789+02:00") == dt.datetime(
        2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC
    )
    assert parse_time("2024-05-01T12:00:00Z") == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(dt.datetime(2024, 5, 1))


TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_travels_as_the_plain_w3c_header() -> None:
    headers = dict(replace(EVENT, traceparent=TRACE).to_kafka())
    assert headers["traceparent"] == TRACE.encode()
    assert CloudEventHeaders.from_kafka(list(headers.items())).traceparent == TRACE


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        b"\xff\xfe",  # not UTF-8
        TRACE.upper().encode(),  # the spec's hex is lowercase
        b"ff" + TRACE[2:].encode(),  # version ff is invalid
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",  # all-zero parent id
        TRACE.encode() + b"-extra",  # version 00 has exactly four fields
        b"00-" + b"a" * 600,
    ],
)
def test_an_invalid_traceparent_reads_as_none_and_never_fails_the_record(value: bytes) -> None:
    read = CloudEventHeaders.from_kafka([*EVENT.to_kafka(), ("traceparent", value)])
    assert read.traceparent is None
    assert read.subject == EVENT.subject


def test_a_later_version_may_append_fields_and_new_traceparents_are_valid() -> None:
    later = "01" + TRACE[2:] + "-more"
    assert valid_traceparent(later) == later
    fresh = new_traceparent()
    assert valid_traceparent(fresh) == fresh and fresh != new_traceparent()


def test_every_writer_formats_ce_time_to_the_millisecond() -> None:
    assert format_time(TIME) == "2024-05-01T12:00:00.123Z"
    assert time_header_value().decode()[-5:-1].startswith(".")
    stamp = Stamp("/p")
    assert stamp.time_header == format_time(stamp.time).encode()


def test_a_log_line_names_the_trace_by_its_trace_id() -> None:
    assert trace_id(TRACE) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id(None) is None
