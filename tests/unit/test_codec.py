"""The single-object codec: exact bytes, round trips for every catalog schema, resolution
between versions, upcasters, and a typed error for every kind of bad input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import Catalog, SchemaEntry, default_catalog
from schemas.codec import (
    LATEST,
    BadMagic,
    Codec,
    CodecError,
    EncodeError,
    MalformedBody,
    SchemaResolutionError,
    TruncatedBody,
    UnknownFingerprint,
    UpcastError,
    default_codec,
)
from schemas.fingerprint import crc64_avro, to_wire
from schemas.strategies import records
from schemas.upcasters import UpcasterRegistry

CATALOG = default_catalog()
CODEC = default_codec()

DEPOSITED_V1 = {
    "account_id": "acc-1",
    "amount": {"amount": 2500, "currency": "EUR"},
    "balance": 10_000,
    "transfer_id": None,
}


def test_a_hand_built_message_decodes_and_encodes_to_the_same_bytes() -> None:
    # bank.CloseAccount {"account_id": "acc-1"}, written out byte by byte from the spec:
    canonical = (
        '{"name":"bank.CloseAccount","type":"record",'
        '"fields":[{"name":"account_id","type":"string"}]}'
    )
    message = bytes.fromhex(
        "c3 01"  # single-object marker
        "b2 80 e6 a4 8c 48 98 ba"  # CRC-64-AVRO of the canonical form, little-endian
        "0a 61 63 63 2d 31"  # string: zigzag length 5, then "acc-1"
    )
    assert message[2:10] == to_wire(crc64_avro(canonical.encode()))
    assert CATALOG.get("bank.CloseAccount").canonical_form == canonical
    assert CODEC.decode(message) == {"account_id": "acc-1"}
    assert CODEC.encode("bank.CloseAccount", {"account_id": "acc-1"}) == message
    assert CODEC.writer_schema(message) is CATALOG.get("bank.CloseAccount")


@pytest.mark.parametrize("entry", list(CATALOG), ids=lambda e: e.label)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_schema_round_trips(entry: SchemaEntry, data: st.DataObject) -> None:
    record = data.draw(records(entry))
    entry.validate(record)  # the generator and the validator agree
    message = CODEC.encode(entry, record)
    assert message[:2] == b"\xc3\x01"
    assert message[2:10] == entry.fingerprint_bytes
    decoded = CODEC.decode_message(message)
    assert decoded.record == record
    assert decoded.writer.fingerprint == entry.fingerprint
    assert decoded.schema is decoded.writer


def test_a_v1_event_reads_into_v2_with_the_default() -> None:
    v1, v2 = CATALOG.versions("bank.Deposited")
    message = CODEC.encode(v1, DEPOSITED_V1)
    assert CODEC.decode(message) == DEPOSITED_V1  # None: the writer's own schema
    upgraded = {**DEPOSITED_V1, "memo": None}
    assert CODEC.decode(message, "bank.Deposited") == upgraded  # a name: its latest version
    assert CODEC.decode(message, v2) == upgraded
    decoded = CODEC.decode_message(message, LATEST)
    assert (decoded.schema, decoded.writer, decoded.record) == (v2, v1, upgraded)


def test_a_v2_event_reads_into_a_v1_reader_without_the_new_field() -> None:
    v1, _ = CATALOG.versions("bank.Deposited")
    message = CODEC.encode("bank.Deposited", {**DEPOSITED_V1, "memo": "rent"})
    assert CODEC.decode(message, v1) == DEPOSITED_V1


# -- bad input -------------------------------------------------------------------------------


def deposited_message() -> bytes:
    return CODEC.encode(CATALOG.get("bank.Deposited", 1), DEPOSITED_V1)


def test_wrong_magic_is_bad_magic_showing_the_bytes() -> None:
    with pytest.raises(BadMagic, match="expected first bytes c3 01, got 7b 22"):
        CODEC.decode(b'{"account_id": "acc-1"}')


def test_an_unknown_fingerprint_names_it_in_hex() -> None:
    message = b"\xc3\x01" + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(UnknownFingerprint, match="0102030405060708") as caught:
        CODEC.decode(message)
    assert caught.value.fingerprint == bytes.fromhex("0102030405060708")


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (0, "message is 0 bytes"),
        (1, "message is 1 bytes"),
        (6, "message is 6 bytes; the single-object header alone is 10"),
        (12, r"body of bank\.Deposited v1 ends early \(2 body bytes\)"),
        (-1, r"body of bank\.Deposited v1 ends early"),
    ],
)
def test_a_truncated_message_is_truncated_body(cut: int, message: str) -> None:
    with pytest.raises(TruncatedBody, match=message):
        CODEC.decode(deposited_message()[:cut])


def test_no_value_at_all_is_truncated_body() -> None:
    with pytest.raises(TruncatedBody, match="None"):
        CODEC.decode(None)  # type: ignore[arg-type]


def test_trailing_bytes_are_a_malformed_body() -> None:
    with pytest.raises(
        MalformedBody, match=r"2 trailing bytes after a complete bank\.Deposited v1"
    ):
        CODEC.decode(deposited_message() + b"\x00\x00")


def test_bad_utf8_and_a_bad_union_index_are_malformed_bodies() -> None:
    header = deposited_message()[:10]
    bad_utf8 = header + b"\x04\xff\xfe" + bytes.fromhex("c827 06455552") + b"\x02\x00"
    with pytest.raises(MalformedBody, match=r"not valid bank\.Deposited v1"):
        CODEC.decode(bad_utf8)
    bad_branch = deposited_message()[:-1] + b"\x0a"  # union branch 5 of ["null", "string"]
    with pytest.raises(MalformedBody, match=r"not valid bank\.Deposited v1"):
        CODEC.decode(bad_branch)


def test_an_impossible_reader_is_a_schema_resolution_error() -> None:
    with pytest.raises(SchemaResolutionError, match=r"bank\.Deposited v1.*bank\.Withdrawn"):
        CODEC.decode(deposited_message(), "bank.Withdrawn")
    with pytest.raises(SchemaResolutionError, match=r"unknown schema 'bank\.Nope'"):
        CODEC.decode(deposited_message(), "bank.Nope")


def test_an_invalid_record_is_an_encode_error_naming_the_field() -> None:
    bad = {**DEPOSITED_V1, "amount": {"amount": "lots", "currency": "EUR"}}
    with pytest.raises(EncodeError, match=r"field 'amount\.amount': expected long") as caught:
        CODEC.encode("bank.Deposited", bad)
    assert caught.value.validation is not None
    assert caught.value.validation.path == "amount.amount"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(CodecError):  # anything else fails the test
        CODEC.decode(data)


@settings(max_examples=400, deadline=None)
@given(entry=st.sampled_from(list(CATALOG)), body=st.binary(max_size=64))
def test_random_bodies_behind_a_valid_header_raise_only_codec_errors(
    entry: SchemaEntry, body: bytes
) -> None:
    with contextlib.suppress(CodecError):
        CODEC.decode(b"\xc3\x01" + entry.fingerprint_bytes + body, LATEST)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 200), value=st.integers(0, 255))
def test_a_corrupted_byte_raises_only_codec_errors(position: int, value: int) -> None:
    message = bytearray(CODEC.encode("bank.Deposited", {**DEPOSITED_V1, "memo": "m" * 20}))
    message[position % len(message)] = value
    with contextlib.suppress(CodecError):
        CODEC.decode(bytes(message), "bank.Deposited")


# -- upcasters -------------------------------------------------------------------------------


def _customer(version: int, fields: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": "Customer", "namespace": "crm", "fields": fields, **extra}


@pytest.fixture
def crm_catalog(tmp_path: Path) -> Catalog:
    folder = tmp_path / "crm" / "entities"
    folder.mkdir(parents=True)
    ident = {"name": "id", "type": "string"}
    versions = {
        1: _customer(1, [ident, {"name": "name", "type": "string"}]),
        # Splitting a field is a change resolution cannot express: declared NONE on purpose.
        2: _customer(
            2,
            [
                ident,
                {"name": "first_name", "type": "string"},
                {"name": "last_name", "type": "string"},
            ],
            compatibility="NONE",
        ),
        3: _customer(
            3,
            [
                ident,
                {"name": "first_name", "type": "string"},
                {"name": "last_name", "type": "string"},
                {"name": "email", "type": ["null", "string"], "default": None},
            ],
        ),
    }
    for version, schema in versions.items():
        (folder / f"Customer.v{version}.avsc").write_text(json.dumps(schema))
    return Catalog.load(tmp_path)


def split_name(record: dict[str, Any]) -> dict[str, Any]:
    first, _, last = record["name"].partition(" ")
    return {"id": record["id"], "first_name": first, "last_name": last}


def test_an_upcaster_runs_after_resolution_and_before_later_resolution(
    crm_catalog: Catalog,
) -> None:
    registry = UpcasterRegistry()
    codec = Codec(crm_catalog, registry)
    message = codec.encode(crm_catalog.get("crm.Customer", 1), {"id": "c1", "name": "Ada Lovelace"})
    # Without an upcaster, Avro resolution cannot fill first_name: a typed error.
    with pytest.raises(SchemaResolutionError, match=r"crm\.Customer v1"):
        codec.decode(message, LATEST)
    registry.register("crm.Customer", 1, split_name)  # also invalidates the cached plans
    decoded = codec.decode_message(message, LATEST)
    assert decoded.schema.version == 3
    assert decoded.record == {
        "id": "c1",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": None,
    }
    assert codec.decode(message, crm_catalog.get("crm.Customer", 2)) == split_name(
        {"id": "c1", "name": "Ada Lovelace"}
    )
    assert codec.decode(message) == {"id": "c1", "name": "Ada Lovelace"}  # writer: untouched


def test_a_failing_upcaster_is_an_upcast_error(crm_catalog: Catalog) -> None:
    registry = UpcasterRegistry()
    registry.register("crm.Customer", 1, lambda record: {"id": record["id"]})
    codec = Codec(crm_catalog, registry)
    message = codec.encode(crm_catalog.get("crm.Customer", 1), {"id": "c1", "name": "Ada"})
    with pytest.raises(UpcastError, match=r"crm\.Customer v1 -> v2 .*field 'first_name': missing"):
        codec.decode(message, LATEST)


def test_an_upcaster_cannot_be_registered_twice() -> None:
    registry = UpcasterRegistry()
    registry.register("crm.Customer", 1, split_name)
    with pytest.raises(ValueError, match=r"crm\.Customer v1 is already registered"):
        registry.register("crm.Customer", 1, split_name)
