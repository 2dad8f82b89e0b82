"""Fuzzing the processor's pure steps without Kafka: parsing any record of the commands topic,
settling the output of absurd commands under a size limit, dead letters near the limit, and
the routing rules that keep one aggregate per id within one context."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from confluent_kafka import Message, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank.account import ACCOUNT
from processors import wire
from processors.command_handler import (
    ACCEPTED,
    REJECTED,
    CommandHandler,
    CommandMessage,
    Decided,
    PartitionState,
)
from processors.command_processor import settle
from processors.domain import AggregateType, BoundedContext, Event
from processors.outputs import OutputBuilder, SnapshotRefused
from processors.partitioning import partition_for
from processors.registry import Registry, default_registry
from schemas.codec import default_codec
from schemas.wire import headers as ce
from schemas.wire.dead_letter import Undecodable, dead_letter
from schemas.wire.limits import MAX_DETAIL_CHARS, MAX_ID_BYTES, record_size, snapshot_key

PARTITIONS = 6
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
_codec = default_codec()


def kafka_message(key: bytes | None, value: bytes | None, headers: list) -> Message:
    return Message(
        topic="bank.commands", partition=2, offset=7, key=key, value=value, headers=headers
    )


def deposit_value(account: str = "a", amount: int = 1) -> bytes:
    return _codec.encode(
        "bank.Deposit", {"account_id": account, "amount": {"amount": amount, "currency": "EUR"}}
    )


# -- parsing -------------------------------------------------------------------------------

header = st.tuples(
    st.one_of(
        st.sampled_from([ce.ID, ce.EXPECTED_VERSION, ce.CORRELATION_ID, ce.TYPE]), st.text()
    ),
    st.one_of(st.none(), st.binary(max_size=30), st.integers(-(10**30), 10**30).map(
        lambda n: str(n).encode()
    )),
)  # fmt: skip


@given(
    key=st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=1020, max_size=1030)),
    value=st.one_of(
        st.none(),
        st.binary(max_size=100),
        st.just(deposit_value()),
        st.binary(max_size=40).map(lambda b: deposit_value()[: len(b)]),
    ),
    headers=st.lists(header, max_size=5),
)
def test_any_record_parses_to_a_command_or_a_reason(key, value, headers) -> None:
    parsed = wire.parse_command(kafka_message(key, value, headers))
    if isinstance(parsed, Undecodable):
        assert parsed.reason and parsed.error_type
        return
    assert isinstance(parsed, CommandMessage)
    assert len(parsed.key.encode()) <= MAX_ID_BYTES
    assert parsed.command_id and len(parsed.command_id.encode()) <= MAX_ID_BYTES
    v = parsed.expected_version
    assert v is None or LONG_MIN < v <= LONG_MAX


@pytest.mark.parametrize("text", [b"1_0", b" 7", b"7 ", b"+5", b"0x1", b"1e3", b"9" * 20])
def test_an_expected_version_that_is_not_a_plain_decimal_is_malformed(text: bytes) -> None:
    # int() takes b"1_0" as 10 and b" 7" as 7: the header must not mean another number.
    headers = [(ce.ID, b"c1"), (ce.EXPECTED_VERSION, text)]
    parsed = wire.parse_command(kafka_message(b"a", deposit_value(), headers))
    assert isinstance(parsed, Undecodable), parsed
    assert parsed.error_type == "MalformedHeader" and ce.EXPECTED_VERSION in parsed.reason


@pytest.mark.parametrize("text,version", [(b"0", 0), (b"42", 42), (b"-1", -1), (b"", None)])
def test_plain_decimal_expected_versions_parse(text: bytes, version: int | None) -> None:
    headers = [(ce.ID, b"c1"), (ce.EXPECTED_VERSION, text)]
    parsed = wire.parse_command(kafka_message(b"a", deposit_value(), headers))
    assert isinstance(parsed, CommandMessage) and parsed.expected_version == version


@pytest.mark.parametrize(
    "key,headers,what",
    [
        (b"k" * 1025, [(ce.ID, b"c1")], "key (aggregate id) is 1025 bytes"),
        (b"a", [(ce.ID, b"c" * 1025)], "ce_id header is 1025 bytes"),
        (b"a", [(ce.ID, b"c1"), (ce.CORRELATION_ID, b"r" * 2000)], "ce_correlationid"),
    ],
)
def test_ids_over_the_cap_are_undecodable(key: bytes, headers: list, what: str) -> None:
    parsed = wire.parse_command(kafka_message(key, deposit_value(), headers))
    assert isinstance(parsed, Undecodable), parsed
    assert parsed.error_type == "OversizedId" and what in parsed.reason


# -- record sizes against librdkafka's own check --------------------------------------------


@pytest.fixture(scope="module")
def offline_producer():
    # Never connects: produce() checks the size locally, before anything is queued.
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "message.max.bytes": 5000}
    )
    yield producer
    producer.purge()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(
    key=st.one_of(st.none(), st.binary(max_size=3000)),
    value=st.binary(max_size=5000),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=2000)), max_size=4),
)
def test_record_size_is_an_upper_bound_of_librdkafkas_check(
    offline_producer, key, value, headers
) -> None:
    if record_size(key, value, headers) <= 5000:
        offline_producer.produce("t", value, key, headers=headers)  # must not raise
    offline_producer.purge()


def test_a_dead_letter_over_the_limit_is_cut_down_and_says_so(offline_producer) -> None:
    stamp = ce.Stamp("/bank/command-processor")
    why = Undecodable("BadMagic", "not Avro single-object encoding: " + "x" * 300)
    original = bytes(4900)
    msg = kafka_message(b"k" * 3000, original, [(ce.ID, b"c1")])
    key, value, headers = dead_letter(wire.original(msg), why, stamp.time_header, 5000)
    named = dict(headers)
    assert record_size(key, value, headers) <= 5000
    offline_producer.produce("t", value, key, headers=headers)  # librdkafka agrees
    assert named["dlq_truncated"] == b"key,value"
    assert named["dlq_original_size"] == b"4900"
    assert named["dlq_error_type"] == b"BadMagic" and named[ce.ID] == b"c1"
    assert value == original[: len(value)] and len(key) == MAX_ID_BYTES

    small = kafka_message(b"k", b"\x00" * 10, [(ce.ID, b"c1")])
    _, value, headers = dead_letter(wire.original(small), why, stamp.time_header, 5000)
    assert value == b"\x00" * 10 and "dlq_truncated" not in dict(headers)


# -- settling absurd commands under a small limit -------------------------------------------

LIMIT = 3000
nasty = st.one_of(
    st.sampled_from(["'; DROP TABLE accounts; --", "$(reboot)", "\x00", "\u202e", "🏦"]),
    st.text(max_size=20),
    st.text(min_size=500, max_size=1500),
)
amount = st.one_of(st.sampled_from([LONG_MIN, -1, 0, 1, LONG_MAX]), st.integers(LONG_MIN, LONG_MAX))
currency = st.one_of(st.just("EUR"), st.sampled_from(["eur", "", "XXX"]), st.text(max_size=4))
accounts = st.sampled_from(["a", "b", "'; --", "t"])


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, dict]:
    money = {"amount": draw(amount), "currency": draw(currency)}
    kind = draw(st.sampled_from(["open", "deposit", "withdraw", "close", "transfer"]))
    if kind == "open":
        data = {"account_id": draw(accounts), "owner": draw(nasty), "currency": draw(currency)}
        return "bank.OpenAccount", data
    if kind == "close":
        return "bank.CloseAccount", {"account_id": draw(accounts)}
    if kind == "transfer":
        data = {
            "transfer_id": draw(st.sampled_from(["t", "t2", "a"])),
            "from_account_id": draw(st.one_of(accounts, nasty)),
            "to_account_id": draw(st.one_of(accounts, nasty)),
            "amount": money,
        }
        return "bank.RequestTransfer", data
    name = "bank.Deposit" if kind == "deposit" else "bank.Withdraw"
    return name, {"account_id": draw(accounts), "amount": money, "transfer_id": None}


def new_handler(registry: Registry | None = None) -> CommandHandler:
    handler = CommandHandler(registry or default_registry(), "bank", PARTITIONS, 1000)
    for p in range(PARTITIONS):
        handler.assign(p, PartitionState())
    handler.begin_batch()
    return handler


def to_message(n: int, command_type: str, data: dict) -> CommandMessage:
    key = data.get("account_id") or data["transfer_id"]
    return CommandMessage(
        partition_for(key, PARTITIONS), n, key, f"c{n}", command_type, data, None, None
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(commands(), min_size=1, max_size=25))
def test_settled_output_always_fits_and_memory_matches_what_is_written(batch) -> None:
    handler = new_handler()
    builder = OutputBuilder("bank", "bank.events", LIMIT)
    stamp = ce.Stamp("/bank/command-processor")
    written: dict[tuple[str, str], list[bytes]] = {}
    for n, (command_type, data) in enumerate(batch):
        decided = handler.handle(to_message(n, command_type, data))
        assert isinstance(decided, Decided)
        settled, outputs = settle(handler, builder, stamp, decided)
        msg = settled.message
        for value, headers in outputs.events:
            assert record_size(msg.key, value, headers) <= LIMIT
        for target, _, value, headers in outputs.issued:
            assert record_size(target, value, headers) <= LIMIT
        assert settled.status != ACCEPTED or outputs.events
        if settled.status != ACCEPTED:
            assert settled.reason and not outputs.events and outputs.snapshot is None
        assert settled.reason not in ("decide_failed", "evolve_failed"), settled.detail
        if outputs.events:
            agg = settled.aggregate
            written.setdefault((agg.name, msg.key), []).extend(v for v, _ in outputs.events)
    # What memory holds is exactly the fold of what would have been written.
    for (name, key), values in written.items():
        agg = default_registry().aggregate(name)
        events = [_decoded_event(v) for v in values]
        entry = handler.owned[partition_for(key, PARTITIONS)].aggregates[(name, key)]
        assert entry.version == len(events)
        assert entry.state == agg.fold(events)
    held = {k for p in handler.owned.values() for k in p.aggregates}
    assert held == set(written)
    for name, key in held:  # bank states are never larger than the events that made them
        entry = handler.owned[partition_for(key, PARTITIONS)].aggregates[(name, key)]
        value = builder.snapshot_value(default_registry().aggregate(name), key, entry)
        assert record_size(snapshot_key(name, key), value, ()) <= LIMIT


def _decoded_event(value: bytes) -> Event:
    decoded = _codec.decode_message(value)
    return Event(decoded.schema.name, decoded.record)


def test_an_event_past_the_long_range_rejects_the_command_and_keeps_the_state() -> None:
    handler = new_handler()
    builder = OutputBuilder("bank", "bank.events", 1_000_000)
    stamp = ce.Stamp("/p")
    run = [
        ("bank.OpenAccount", {"account_id": "a", "owner": "o", "currency": "EUR"}),
        ("bank.Deposit", {"account_id": "a", "amount": {"amount": LONG_MAX, "currency": "EUR"}}),
        ("bank.Deposit", {"account_id": "a", "amount": {"amount": 1, "currency": "EUR"}}),
    ]
    outcomes = [
        settle(handler, builder, stamp, handler.handle(to_message(n, *c)))[0]
        for n, c in enumerate(run)
    ]
    assert [o.status for o in outcomes] == [ACCEPTED, ACCEPTED, REJECTED]
    assert outcomes[2].reason == "invalid_output" and "balance" in outcomes[2].detail
    assert outcomes[2].version == 2
    entry = handler.owned[partition_for("a", PARTITIONS)].aggregates[(ACCOUNT.name, "a")]
    assert (entry.version, entry.state.balance) == (2, LONG_MAX)


def test_too_large_output_is_rejected_and_names_the_record_and_the_limit() -> None:
    handler = new_handler()
    builder = OutputBuilder("bank", "bank.events", LIMIT)
    data = {"account_id": "a", "owner": "o" * LIMIT, "currency": "EUR"}
    decided = handler.handle(to_message(1, "bank.OpenAccount", data))
    settled, outputs = settle(handler, builder, ce.Stamp("/p"), decided)
    assert (settled.status, settled.reason) == (REJECTED, "too_large")
    assert "event bank.AccountOpened" in settled.detail and f"{LIMIT:,}" in settled.detail
    assert not outputs.events and handler.owned[partition_for("a", PARTITIONS)].aggregates == {}


def test_a_result_detail_is_clipped() -> None:
    money = {"amount": 1, "currency": "EUR"}
    msg = to_message(1, "bank.Deposit", {"account_id": "a", "amount": money})
    decided = Decided(msg, None, REJECTED, "key_mismatch", "x" * 900_000, 0, [], [])
    result = _codec.decode(wire.encode_result(decided, []), "cqrs.CommandResult")
    assert len(result["detail"]) <= MAX_DETAIL_CHARS
    assert result["detail"].endswith("(900000 chars)")


# -- a state that outgrows the limit while its events stay small ---------------------------


@dataclass(frozen=True)
class Pad:
    """A bank.AccountState whose owner carries one character per unit of balance."""

    account_id: str = "pad"
    owner: str = ""
    currency: str = "EUR"
    balance: int = 0
    status: str = "OPEN"


PAD = AggregateType(
    "grow.Pad", id_field="account_id", initial_state=Pad(), state_schema="bank.AccountState"
)


@PAD.decides("bank.Deposit")
def _grow(data, state: Pad):
    balance = state.balance + data["amount"]["amount"]
    return [Event("bank.Deposited", {**data, "balance": balance, "transfer_id": None})]


@PAD.evolves("bank.Deposited")
def _grown(state: Pad, data) -> Pad:
    return Pad(owner="o" * data["balance"], balance=data["balance"])


GROWING = BoundedContext(name="grow", aggregates=(PAD,))
"""A test context whose state grows with its balance, while each event stays small."""


def test_a_snapshot_over_the_limit_is_refused_at_the_end_and_checked_per_command_after() -> None:
    handler = CommandHandler(Registry([GROWING]), "grow", PARTITIONS, 1000)
    for p in range(PARTITIONS):
        handler.assign(p, PartitionState())
    handler.begin_batch()
    builder = OutputBuilder("grow", "grow.events", LIMIT)
    stamp = ce.Stamp("/p")
    pad = ("grow.Pad", "pad")

    def deposit(n: int, amount: int) -> Decided:
        money = {"amount": amount, "currency": "EUR"}
        msg = to_message(n, "bank.Deposit", {"account_id": "pad", "amount": money})
        return settle(handler, builder, stamp, handler.handle(msg))[0]

    def entry():
        return handler.owned[partition_for("pad", PARTITIONS)].aggregates[pad]

    assert deposit(1, 1000).status == ACCEPTED and deposit(2, 1000).status == ACCEPTED
    assert deposit(3, 1000).status == ACCEPTED  # per batch: checked only at its end
    with pytest.raises(SnapshotRefused) as refused:
        builder.snapshot_value(GROWING.aggregates[0], "pad", entry())
    assert refused.value.aggregate == pad
    # The processor aborts the batch, rolls memory back and replays it, checking this
    # aggregate's snapshot after every command.
    handler.rollback()
    builder.strict.add(pad)
    assert [deposit(1, 1000).status, deposit(2, 1000).status] == [ACCEPTED, ACCEPTED]
    third = deposit(3, 1000)
    assert (third.status, third.reason) == (REJECTED, "too_large")
    assert "snapshot bank.AccountState" in third.detail
    assert (entry().version, entry().state.balance) == (2, 2000)
    builder.snapshot_value(GROWING.aggregates[0], "pad", entry())  # fits


# -- one aggregate per id, and only this context's commands --------------------------------


def test_an_id_taken_by_another_aggregate_type_is_rejected() -> None:
    handler = new_handler()
    transfer = {
        "transfer_id": "x",
        "from_account_id": "a",
        "to_account_id": "b",
        "amount": {"amount": 1, "currency": "EUR"},
    }
    assert handler.handle(to_message(1, "bank.RequestTransfer", transfer)).status == ACCEPTED
    opened = handler.handle(
        to_message(2, "bank.OpenAccount", {"account_id": "x", "owner": "o", "currency": "EUR"})
    )
    # Accepted, both would write version 1 under key "x": two events with one ce_id, and
    # one stream of versions 1, 1, 2, ... for every consumer that knows aggregates by id.
    assert (opened.status, opened.reason) == (REJECTED, "id_in_use")
    assert "bank.Transfer" in opened.detail


def test_a_command_of_another_context_is_unknown_here() -> None:
    cart = AggregateType("shop.Cart", id_field="account_id", initial_state=Pad())
    cart.decides("Checkout")(lambda data, state: [Event("shop.CheckedOut", dict(data))])
    cart.evolves("CheckedOut")(lambda state, data: state)
    shop = BoundedContext(name="shop", aggregates=(cart,))
    bank = default_registry().context("bank")
    handler = new_handler(Registry([bank, shop]))
    decided = handler.handle(to_message(1, "shop.Checkout", {"account_id": "a"}))
    assert (decided.status, decided.reason) == (REJECTED, "unknown_command")
    assert "not a command of context bank" in decided.detail
    assert not decided.events


# -- trace context --------------------------------------------------------------------------

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@given(st.binary(max_size=100))
def test_any_traceparent_value_leaves_the_command_decodable(value: bytes) -> None:
    parsed = wire.parse_command(
        kafka_message(b"a", deposit_value(), [(ce.ID, b"c1"), (ce.TRACEPARENT, value)])
    )
    assert isinstance(parsed, CommandMessage), parsed
    assert parsed.traceparent is None or parsed.traceparent == value.decode()


def test_a_commands_traceparent_is_on_its_events_result_and_saga_commands() -> None:
    handler = new_handler()
    builder = OutputBuilder("bank", "bank.events", 1_000_000)
    stamp = ce.Stamp("/bank/command-processor")
    data = {
        "transfer_id": "t1",
        "from_account_id": "a",
        "to_account_id": "b",
        "amount": {"amount": 3, "currency": "EUR"},
    }
    headers = [(ce.ID, b"c1"), (ce.TRACEPARENT, TRACE.encode())]
    value = _codec.encode("bank.RequestTransfer", data)
    msg = wire.parse_command(kafka_message(b"t1", value, headers))
    assert isinstance(msg, CommandMessage) and msg.traceparent == TRACE
    msg = replace(msg, partition=partition_for("t1", PARTITIONS))
    decided, outputs = settle(handler, builder, stamp, handler.handle(msg))
    assert decided.status == ACCEPTED and outputs.events and outputs.issued
    for _, record_headers in outputs.events:
        assert dict(record_headers)[ce.TRACEPARENT] == TRACE.encode()
    for _, _, _, record_headers in outputs.issued:
        assert dict(record_headers)[ce.TRACEPARENT] == TRACE.encode()
    assert dict(wire.result_headers(stamp, msg))[ce.TRACEPARENT] == TRACE.encode()
    untraced = replace(msg, traceparent=None)
    assert ce.TRACEPARENT not in dict(wire.result_headers(stamp, untraced))
