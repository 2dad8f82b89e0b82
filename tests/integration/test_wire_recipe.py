"""A client built from docs/wire-format.md's own recipe decodes every topic of a real pipeline.

The client (tests/support/java/RecipeDecoder.java) is Avro's Java library following the doc:
one `Schema.Parser` per schema file with the named types it uses parsed first, a `SchemaStore`
of them all, and `BinaryMessageDecoder` for the single-object encoded values. The pipeline
(processor, projector, sink) runs a workload that puts records on every topic of the bank:
public and internal commands, events, accepted, rejected and conflicting results, snapshots,
projection rows and checkpoint records, a retried command, and a dead letter. Every value
must decode in Java to what our own codec decodes, and every record must carry the headers
the doc lists for its topic, under the doc's names (written out here, not taken from our
code). A retried command's two results must be equal, with one event (the doc's "Retries")."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from confluent_kafka import Message, Producer

from processors.partitioning import partition_for
from processors.topic_reader import partition_count, read_topic
from schemas.codec import LATEST, Codec, CodecError, default_codec
from tests.support.java_recipe import RecipeDecoder, missing_jdk
from tests.support.read_side import PROJECTION_NAMES, ReadSideRig
from tests.support.topics import read_until
from tests.support.write_side import movement, open_account

# docs/wire-format.md, "The records of each topic" and "Projection topics".
CLOUDEVENT = {
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_subject",
    "content-type",
}
EVENT = CLOUDEVENT | {"ce_correlationid", "ce_causationid", "ce_aggregateversion"}
REQUIRED_HEADERS = {
    "commands": CLOUDEVENT,
    "internal-commands": CLOUDEVENT | {"ce_causationid", "ce_correlationid"},
    "events": EVENT,
    "command-results": (EVENT - {"ce_aggregateversion"}) | {"ce_commandtopic"},
    "aggregates": set(),
    "row": CLOUDEVENT | {"ce_sourcepartition", "ce_checkpoint", "ce_sourceoffset"},
    "checkpoint": CLOUDEVENT | {"ce_sourcepartition", "ce_checkpoint"},
    "dlq": {
        "dlq_reason",
        "dlq_error_type",
        "dlq_source_topic",
        "dlq_source_partition",
        "dlq_source_offset",
        "dlq_time",
    },
}
# "every writer of ours writes UTC with milliseconds"
CE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)
RETRIED = "retried-1"  # a command sent twice: two identical results, one event
JUNK = b"junk-1"  # the key of the one value that is not a message: on commands, then the DLQ


def as_json(value: Any) -> Any:
    """Our codec's record as Avro's GenericData prints it (no logical-type conversions)."""
    if isinstance(value, dt.datetime):
        return (value - EPOCH) // dt.timedelta(milliseconds=1)  # timestamp-millis
    if isinstance(value, dt.date):
        return (value - EPOCH.date()).days  # date
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def headers_of(msg: Message) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers() or () if v is not None}


def run_workload(rig: ReadSideRig) -> None:
    """Every kind of record the doc describes, on the bank's topics."""
    bank = rig.bank
    money = {"amount": 300, "currency": "EUR"}
    with rig.client() as client:
        for account in ("acc-a", "acc-b"):
            assert client.send("bank.OpenAccount", open_account(account)).result(60).accepted
        assert client.send("bank.Deposit", movement("acc-a", 1000)).result(60).accepted
        rejected = client.send("bank.Withdraw", movement("acc-b", 5)).result(60)
        assert (rejected.status, rejected.reason) == ("REJECTED", "insufficient_funds")
        conflict = client.send("bank.Deposit", movement("acc-a", 1), expected_version=99)
        assert conflict.result(60).status == "CONFLICT"
        transfer = {
            "transfer_id": "t1",
            "from_account_id": "acc-a",
            "to_account_id": "acc-b",
            "amount": money,
        }
        assert client.send("bank.RequestTransfer", transfer).result(60).accepted
        first = client.send("bank.Deposit", movement("acc-a", 7), command_id=RETRIED)
        assert first.result(60).accepted
    with rig.client() as client:  # a client that retries after a restart
        again = client.send("bank.Deposit", movement("acc-a", 7), command_id=RETRIED)
        assert again.result(60).accepted
    producer = Producer(bank.kafka)
    partitions = partition_count(bank.kafka, bank.topics.commands)
    partition = partition_for(JUNK.decode(), partitions)
    producer.produce(bank.topics.commands, b"not avro", JUNK, partition=partition)
    assert producer.flush(30) == 0

    def completed(messages: list[Message]) -> bool:
        return any(headers_of(m).get("ce_type") == "bank.TransferCompleted" for m in messages)

    events = bank.topics.events
    read_until(bank.kafka, events, completed, partitions=partitions, timeout=120)
    read_until(bank.kafka, bank.topics.dlq, lambda m: len(m) >= 1, partitions=partitions)
    rig.wait_caught_up()


def topic_records(rig: ReadSideRig) -> list[tuple[str, Message]]:
    """(kind, record) of every topic; kind names the doc's row of REQUIRED_HEADERS."""
    t = rig.bank.topics
    kinds = {
        "commands": t.commands,
        "internal-commands": t.internal_commands,
        "events": t.events,
        "command-results": t.results,
        "aggregates": t.aggregates,
        "dlq": t.dlq,
    }
    out = [(kind, m) for kind, topic in kinds.items() for m in read_topic(rig.kafka, topic)]
    for name in PROJECTION_NAMES:
        for m in read_topic(rig.kafka, t.projection(name)):
            checkpoint = headers_of(m).get("ce_type") == "cqrs.ProjectionCheckpoint"
            out.append(("checkpoint" if checkpoint else "row", m))
    return out


def check_headers(kind: str, msg: Message, decoded_type: str | None) -> None:
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    headers = headers_of(msg)
    missing = REQUIRED_HEADERS[kind] - set(headers)
    assert not missing, f"{where}: the doc lists {sorted(missing)}; has {sorted(headers)}"
    if kind == "aggregates":
        assert not headers, f"{where}: the doc says snapshots have no headers: {headers}"
    if kind == "dlq" or kind == "aggregates":
        return
    assert headers["ce_type"] == decoded_type, where
    assert headers["ce_subject"] == msg.key().decode(), where
    assert headers["ce_specversion"] == "1.0" and headers["content-type"] == "application/avro"
    assert CE_TIME.fullmatch(headers["ce_time"]), f"{where}: ce_time {headers['ce_time']}"
    if kind == "command-results":
        assert "ce_aggregateversion" not in headers, where
        assert headers["ce_commandtopic"] in ("public", "internal"), where
    if kind == "events":
        suffix = f":{msg.key().decode()}:{headers['ce_aggregateversion']}"
        assert headers["ce_id"].endswith(suffix), f"{where}: ce_id {headers['ce_id']}"


def check_record(kind: str, msg: Message, answer: dict[str, Any], codec: Codec) -> str:
    """Java's answer is our codec's, and the record's headers are the doc's; returns what
    kind of record it was (a type, a result status, or "junk")."""
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    if msg.key() == JUNK:
        assert "error" in answer, f"{where}: the junk value decoded: {answer}"
        with pytest.raises(CodecError):
            codec.decode(msg.value())
        if kind == "dlq":
            assert headers_of(msg)["dlq_error_type"] == "BadMagic", where
            check_headers(kind, msg, None)
        return "junk"
    assert "error" not in answer, f"{where}: Java could not decode it: {answer['error']}"
    ours = codec.decode_message(msg.value(), LATEST)
    assert answer["type"] == ours.schema.name, where
    expected = as_json(ours.record)
    if answer["type"] == "cqrs.AggregateSnapshot":
        assert answer["state"] == as_json(codec.decode(expected.pop("state"), LATEST)), where
        answer["record"].pop("state")
    assert answer["record"] == expected, where
    check_headers(kind, msg, answer["type"])
    return answer["record"]["status"] if kind == "command-results" else answer["type"]


def test_a_client_from_the_docs_recipe_decodes_every_topic(read_side: ReadSideRig, tmp_path):
    why = missing_jdk()
    if why:
        pytest.skip(why)
    java = RecipeDecoder(tmp_path)  # first, so that a broken build fails before the pipeline
    read_side.bank.processor()
    read_side.sink()
    read_side.projector()
    run_workload(read_side)

    records = topic_records(read_side)
    answers = java.decode([m.value() for _, m in records])
    codec = default_codec()
    seen: dict[str, set[str]] = {}
    retried_results, retried_events = [], []
    for (kind, msg), answer in zip(records, answers, strict=True):
        seen.setdefault(kind, set()).add(check_record(kind, msg, answer, codec))
        if kind == "command-results" and answer["record"]["command_id"] == RETRIED:
            retried_results.append(answer["record"])
        if kind == "events" and headers_of(msg)["ce_causationid"] == RETRIED:
            retried_events.append(answer["record"])

    # "Retries": the first result's value once more, and no new event.
    assert len(retried_results) == 2 and retried_results[0] == retried_results[1]
    assert len(retried_events) == 1
    # The workload reached every kind of record the doc describes.
    assert {"bank.OpenAccount", "bank.RequestTransfer"} <= seen["commands"]
    assert {"bank.Withdraw", "bank.Deposit", "bank.CompleteTransfer"} <= seen["internal-commands"]
    assert {"bank.Deposited", "bank.TransferCompleted"} <= seen["events"]
    assert seen["command-results"] == {"ACCEPTED", "REJECTED", "CONFLICT"}
    assert seen["aggregates"] == {"cqrs.AggregateSnapshot"}
    assert seen["row"] == {"bank.AccountRow", "bank.DailyTotalRow", "bank.EventLogRow"}
    assert seen["checkpoint"] == {"cqrs.ProjectionCheckpoint"}
    assert seen["dlq"] == {"junk"}
