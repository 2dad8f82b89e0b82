"""A projection topic as an outside consumer reads it: plain confluent-kafka, read_committed,
and the decoding docs/wire-format.md documents (single-object encoding, writer schema found by
its CRC-64-AVRO fingerprint, computed here with fastavro, not with the project's codec). Every
record must be one of the two documented kinds (docs/read-side.md): a row, or a checkpoint
record; both keyed, valued and with CloudEvents headers."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import fastavro.schema

from processors.topic_reader import read_topic
from schemas.catalog import default_catalog
from schemas.wire import headers as ce
from tests.support.read_side import PROJECTION_NAMES, ReadSideRig

CE_HEADERS = (ce.SPECVERSION, ce.ID, ce.TYPE, ce.SOURCE, ce.TIME, ce.SUBJECT, ce.CONTENT_TYPE)
ROW_TYPES = {
    "accounts": "bank.AccountRow",
    "daily_totals": "bank.DailyTotalRow",
    "event_log": "bank.EventLogRow",
}
CHECKPOINT_TYPE = "cqrs.ProjectionCheckpoint"


def writer_schemas() -> dict[bytes, tuple[str, Any]]:
    """Fingerprint (wire order) -> (full name, parsed schema), from the self-contained schemas
    that `cqrsctl schemas show` prints."""
    out = {}
    for entry in default_catalog():
        canonical = fastavro.schema.to_parsing_canonical_form(entry.schema)
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        out[fingerprint] = (entry.name, fastavro.parse_schema(entry.schema))
    return out


def decode(value: bytes, schemas: dict[bytes, tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert value[:2] == b"\xc3\x01", value[:2]
    name, schema = schemas[value[2:10]]
    body = io.BytesIO(value[10:])
    record = fastavro.schemaless_reader(body, schema, None)
    assert body.read() == b"", "trailing bytes after the Avro body"
    return name, record


def test_projection_topics_hold_only_rows_and_checkpoint_records(read_side: ReadSideRig):
    read_side.bank.processor("p0", ready=False)
    projector, sink = read_side.projector(ready=False), read_side.sink(ready=False)
    for worker in (*read_side.bank.workers, projector, sink):
        worker.wait_ready(90)
    owned = [f"acc-{i:02d}" for i in range(24)]
    with read_side.client() as client:
        # Openings alone first: daily_totals ignores them, so its partitions get checkpoint
        # records (no row of it changed).
        opens = [
            client.send("bank.OpenAccount", {"account_id": a, "owner": a, "currency": "EUR"})
            for a in owned
        ]
        assert all(p.result(60).accepted for p in opens)
        read_side.wait_caught_up()
        money = {"amount": 10, "currency": "EUR"}
        deposits = [client.send("bank.Deposit", {"account_id": a, "amount": money}) for a in owned]
        assert all(p.result(60).accepted for p in deposits)
    read_side.wait_caught_up()

    schemas = writer_schemas()
    seen: dict[str, dict[str, int]] = {}
    for name in PROJECTION_NAMES:
        topic = read_side.bank.topics.projection(name)
        kinds = seen.setdefault(name, {"row": 0, "checkpoint": 0})
        for msg in read_topic(read_side.kafka, topic):
            where = f"{topic}[{msg.partition()}]@{msg.offset()}"
            key, value = msg.key(), msg.value()
            assert key, f"{where}: empty key"
            assert value is not None, f"{where}: no value (a tombstone)"
            headers = {k: v.decode() for k, v in msg.headers() or []}
            missing = [h for h in CE_HEADERS if h not in headers]
            assert not missing, f"{where}: no {missing}"
            assert headers[ce.SPECVERSION] == "1.0"
            assert headers[ce.CONTENT_TYPE] == "application/avro"
            assert headers[ce.SUBJECT] == key.decode()
            assert headers[ce.SOURCE] == "/bank/projector"
            ce.parse_time(headers[ce.TIME])
            assert int(headers["ce_sourcepartition"]) == msg.partition()
            checkpoint = int(headers["ce_checkpoint"])
            schema_name, record = decode(value, schemas)
            assert schema_name == headers[ce.TYPE], f"{where}: value is not its ce_type"
            if schema_name == CHECKPOINT_TYPE:
                kinds["checkpoint"] += 1
                assert key == f"__cqrs_checkpoint__:{msg.partition()}".encode()
                assert record == {
                    "projection": name,
                    "source_topic": read_side.bank.topics.events,
                    "source_partition": msg.partition(),
                    "checkpoint": checkpoint,
                }
                assert "ce_sourceoffset" not in headers
            else:
                kinds["row"] += 1
                assert schema_name == ROW_TYPES[name], f"{where}: {schema_name}"
                assert not key.startswith(b"__cqrs_checkpoint__")
                assert int(headers["ce_sourceoffset"]) >= 0
                assert headers[ce.CAUSATION_ID]
    assert seen["daily_totals"]["checkpoint"] > 0, seen  # the openings' batches
    assert all(kinds["row"] > 0 for kinds in seen.values()), seen
