"""schemas/avro_writer.py writes exactly fastavro's bytes, or steps aside for fastavro."""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.avro_writer import compile_writer
from schemas.catalog import Catalog
from schemas.codec import Codec, default_codec
from schemas.strategies import records

CATALOG = default_codec().catalog
ENTRIES = list(CATALOG._entries)


def fastavro_bytes(parsed: Any, record: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parsed, record)
    return out.getvalue()


def same_or_both_fail(parsed: Any, record: Any) -> None:
    encode = compile_writer(parsed)
    assert encode is not None
    try:
        expected = fastavro_bytes(parsed, record)
    except Exception:
        expected = None
    try:
        got = encode(record)
    except Exception:
        got = None  # the codec then asks fastavro
    if got is not None:
        assert got == expected


def test_every_schema_of_the_repo_is_generated() -> None:
    assert len(ENTRIES) > 40
    for entry in ENTRIES:
        assert compile_writer(entry.parsed) is not None, entry.label


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.label)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_schema_of_the_repo_writes_fastavros_bytes(entry: Any, data: st.DataObject) -> None:
    record = data.draw(records(entry))
    encode = compile_writer(entry.parsed)
    assert encode is not None
    assert encode(record) == fastavro_bytes(entry.parsed, record)


EDGE = parse_schema(
    {
        "type": "record",
        "name": "t.Edge",
        "fields": [
            {"name": "s", "type": "string"},
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "b", "type": "boolean"},
            {"name": "by", "type": "bytes"},
            {"name": "d", "type": "double"},
            {"name": "f", "type": "float"},
            {"name": "n", "type": "null"},
            {"name": "e", "type": {"type": "enum", "name": "t.E", "symbols": ["A", "B", "C"]}},
            {"name": "a", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": ["null", "string"]}},
            {"name": "u1", "type": ["null", "string"], "default": None},
            {"name": "u2", "type": ["long", "null"], "default": 5},
            {
                "name": "r",
                "type": {
                    "type": "record",
                    "name": "t.Inner",
                    "fields": [
                        {"name": "x", "type": "long"},
                        {"name": "next", "type": ["null", "t.Inner"], "default": None},
                    ],
                },
            },
            {"name": "r2", "type": "t.Inner"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "fx", "type": {"type": "fixed", "name": "t.F", "size": 3}},
            {"name": "dflt", "type": "string", "default": "zz"},
            {"name": "arr_d", "type": {"type": "array", "items": "string"}, "default": []},
        ],
    }
)


def edge(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "s": "héllo 𝄞 ünïcode",
        "i": -(2**31),
        "l": 2**63 - 1,
        "b": True,
        "by": b"\x00\xff",
        "d": -1.5e300,
        "f": 0.25,
        "n": None,
        "e": "C",
        "a": [0, -1, 1, 63, -64, 64, 2**40, -(2**63)],
        "m": {"k": "v", "ü": None},
        "u1": "x",
        "u2": None,
        "r": {"x": -3, "next": {"x": 4, "next": None}},
        "r2": {"x": 0},
        "ts": dt.datetime(2026, 12, 6, 1, 2, 3, 999999, tzinfo=dt.UTC),
        "day": dt.date(1969, 12, 31),
        "fx": b"abc",
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "record",
    [
        edge(),
        edge(i=2**31 - 1, l=-(2**63), b=False, by=b"", a=[], m={}, u1=None, u2=-7),
        edge(a=(1, 2), ts=-1, day=19000, s=""),
        edge(ts=dt.datetime(1901, 1, 1, 0, 0, 0, 1000, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
        edge(ts=dt.datetime(1969, 12, 31, 23, 59, 59, 999, tzinfo=dt.UTC)),
    ],
)
def test_edge_cases_write_fastavros_bytes(record: dict[str, Any]) -> None:
    encode = compile_writer(EDGE)
    assert encode is not None
    assert encode(record) == fastavro_bytes(EDGE, record)


def test_missing_fields_take_their_defaults_or_null_as_fastavro_does() -> None:
    record = edge()
    for name in ("u1", "u2", "dflt", "arr_d"):
        record.pop(name, None)
    same_or_both_fail(EDGE, record)
    encode = compile_writer(EDGE)
    assert encode is not None and encode(record) == fastavro_bytes(EDGE, record)


@pytest.mark.parametrize(
    "changes",
    [
        {"l": 2**63},
        {"i": 2**31},
        {"l": True},
        {"l": 1.0},
        {"s": b"bytes"},
        {"s": "\ud800"},
        {"e": "D"},
        {"b": 1},
        {"d": 1},
        {"f": 1e300},
        {"ts": dt.datetime(2026, 1, 1)},  # naive
        {"day": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        {"fx": b"ab"},
        {"r": None},
        {"u1": ("string", "x")},
        {"a": {1, 2}},
        {"m": {1: "x"}},
        {"n": 0},
    ],
)
def test_values_it_does_not_write_are_left_to_fastavro(changes: dict[str, Any]) -> None:
    encode = compile_writer(EDGE)
    assert encode is not None
    with pytest.raises(Exception):  # noqa: B017 (any error means: ask fastavro)
        encode(edge(**changes))
    same_or_both_fail(EDGE, edge(**changes))


def test_a_missing_field_without_default_is_left_to_fastavro() -> None:
    record = edge()
    del record["s"]
    encode = compile_writer(EDGE)
    assert encode is not None
    with pytest.raises(Exception):  # noqa: B017
        encode(record)


UNSUPPORTED = [
    {
        "type": "record",
        "name": "t.U",
        "fields": [{"name": "u", "type": ["null", "string", "long"]}],
    },
    {
        "type": "record",
        "name": "t.D",
        "fields": [
            {
                "name": "d",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
            }
        ],
    },
    {
        "type": "record",
        "name": "t.M",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}],
    },
]


@pytest.mark.parametrize("schema", UNSUPPORTED, ids=lambda s: s["name"])
def test_unsupported_schemas_get_no_writer_and_the_codec_uses_fastavro(schema: Any) -> None:
    parsed = parse_schema(schema)
    assert compile_writer(parsed) is None
    codec = Codec(Catalog([]))
    assert codec._writer_for_parsed(parsed, b"") is None


def test_the_codec_falls_back_to_fastavro_for_a_value_the_writer_leaves(monkeypatch) -> None:
    codec = Codec()
    entry = codec.catalog.latest("bank.Deposited")
    record = {
        "account_id": "a-1",
        "amount": {"amount": 5, "currency": "EUR"},
        "balance": True,  # fastavro writes a bool as a long; the generated writer leaves it
        "transfer_id": None,
    }
    assert codec.encode(entry, record) == codec.encode(entry, {**record, "balance": 1})
    calls: list[Any] = []
    import schemas.codec as codec_module

    real = codec_module.schemaless_writer
    monkeypatch.setattr(
        codec_module, "schemaless_writer", lambda *a: (calls.append(a), real(*a))[1]
    )
    codec.encode(entry, {**record, "balance": 1})
    assert calls == []  # the generated writer wrote it
    codec.encode(entry, record)
    assert len(calls) == 1  # fastavro wrote it
