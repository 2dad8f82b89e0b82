"""schemas/avro_reader.py reads what fastavro reads, or steps aside for fastavro."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.avro_reader import compile_reader
from schemas.codec import HEADER_SIZE, Codec, MalformedBody, TruncatedBody, default_codec
from schemas.strategies import records
from tests.unit.test_avro_writer import EDGE, UNSUPPORTED, edge

CATALOG = default_codec().catalog
ENTRIES = list(CATALOG._entries)


def body(parsed: Any, record: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parsed, record)
    return out.getvalue()


def fastavro_read(parsed: Any, data: bytes) -> Any:
    return schemaless_reader(BytesIO(data), parsed, None)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True is not 1, a date not a datetime)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "tzinfo"):
        return a == b and a.tzinfo is b.tzinfo
    return bool(a == b)


def test_every_schema_of_the_repo_is_generated() -> None:
    for entry in ENTRIES:
        assert compile_reader(entry.parsed) is not None, entry.label


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.label)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_schema_of_the_repo_reads_as_fastavro(entry: Any, data: st.DataObject) -> None:
    raw = body(entry.parsed, data.draw(records(entry)))
    read = compile_reader(entry.parsed)
    assert read is not None
    got, end = read(raw, 0)
    assert end == len(raw)
    assert same(got, fastavro_read(entry.parsed, raw))


@pytest.mark.parametrize(
    "record",
    [
        edge(),
        edge(i=2**31 - 1, l=-(2**63), b=False, by=b"", a=[], m={}, u1=None, u2=-7),
        edge(ts=-1, day=-700000, s="", d=float("inf"), f=float("-inf")),
    ],
)
def test_edge_cases_read_as_fastavro(record: dict[str, Any]) -> None:
    raw = body(EDGE, record)
    read = compile_reader(EDGE)
    assert read is not None
    got, end = read(raw, 0)
    assert end == len(raw)
    assert same(got, fastavro_read(EDGE, raw))


def test_broken_bodies_raise() -> None:
    read = compile_reader(EDGE)
    assert read is not None
    raw = body(EDGE, edge())
    for broken in (raw[:-1], raw[:5], b"", b"\xff" * 12):
        with pytest.raises(Exception):  # noqa: B017 (any error means: ask fastavro)
            read(broken, 0)


@pytest.mark.parametrize("schema", UNSUPPORTED, ids=lambda s: s["name"])
def test_unsupported_schemas_get_no_reader(schema: Any) -> None:
    assert compile_reader(parse_schema(schema)) is None


def test_the_codec_reads_with_it_and_leaves_broken_bodies_to_fastavro(monkeypatch) -> None:
    codec = Codec()
    record = {"account_id": "a-1", "amount": {"amount": 5, "currency": "EUR"}, "balance": 7}
    data = codec.encode("bank.Withdrawn", record)
    calls: list[Any] = []
    import schemas.codec as codec_module

    real = codec_module.schemaless_reader
    monkeypatch.setattr(
        codec_module, "schemaless_reader", lambda *a: (calls.append(a), real(*a))[1]
    )
    assert codec.decode(data) == fastavro_read(codec.writer_schema(data).parsed, data[HEADER_SIZE:])
    assert calls == []  # the generated reader read it
    with pytest.raises(TruncatedBody):
        codec.decode(data[:-1])
    with pytest.raises(MalformedBody, match="trailing"):
        codec.decode(data + b"\x00")
    assert len(calls) == 2  # fastavro read them, and named what was wrong
