"""Bad input, fuzzed with hypothesis, against a real command processor process.

Every input must end as exactly one dead letter (with reason headers) or exactly one result
(a rejection carries a known reason code); the worker keeps its PID; and valid commands sent
after the bad input, on every partition, are still processed. Oversized messages and strings
near the broker's limit are in test_fuzz_oversized.py.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from processors import wire
from processors.partitioning import partition_for
from processors.topic_reader import read_topic
from schemas.catalog import SchemaEntry
from schemas.codec import MAGIC, default_codec
from schemas.strategies import records
from schemas.wire import headers as ce
from schemas.wire.limits import MAX_ID_BYTES
from tests.support.write_side import BankRig, check_event_log, movement, read_events

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
PARTITIONS = 6
EXAMPLES_PER_CLASS = int(os.environ.get("CQRS_FUZZ_EXAMPLES", "50"))

# SQL and shell metacharacters, format strings, template and log-injection payloads, and
# Unicode that trips naive code: NUL, bidi overrides, combining marks, BOM, line separators.
NASTY = [
    "'; DROP TABLE accounts; --",
    "Robert'); DROP TABLE students;--",
    "' OR '1'='1",
    "$(rm -rf /)",
    "`reboot`",
    "a; cat /etc/passwd",
    "|| true &",
    "%s%s%n%x",
    "{{7*7}}${7*7}",
    "${jndi:ldap://127.0.0.1/a}",
    "\x00",
    "nul\x00inside",
    "\u202egnp.exe",
    "e\u0301\u0301\u0301",
    "\ufeffbom",
    "line\u2028sep",
    "🏦💸👩‍👩‍👧",
    "\\",
    '"',
    "\r\n\t",
    " ",
    "NULL",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\u0415UR",  # a Cyrillic capital IE, then UR
    "\uff45\uff55\uff52",  # fullwidth eur
]

# Every code a rejection may carry. decide_failed / evolve_failed are not here: a fuzzed
# command that makes the domain raise is a bug found, not an acceptable outcome.
KNOWN_REASONS = {
    "account_not_found",
    "account_closed",
    "account_exists",
    "invalid_amount",
    "invalid_currency",
    "invalid_owner",
    "currency_mismatch",
    "insufficient_funds",
    "non_zero_balance",
    "transfer_exists",
    "transfer_not_found",
    "same_account",
    "invalid_transition",
    "unknown_command",
    "key_mismatch",
    "wrong_partition",
    "version_conflict",
    "too_large",
    "invalid_output",
    "id_in_use",
    "invalid_text",
    "internal_command",  # a fuzzed transfer step sent by a client
}

_codec = default_codec()
_catalog = _codec.catalog
BANK_COMMANDS = [e for e in _catalog.in_context("bank", "commands")]
FOREIGN = [e for e in _catalog if e.name not in {c.name for c in BANK_COMMANDS}]
FINGERPRINTS = set(_catalog.fingerprints)

nasty_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=60),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=20)),
    st.text(min_size=300, max_size=3000),
)
absurd_amount = st.one_of(
    st.sampled_from([LONG_MIN, LONG_MIN + 1, -1, 0, 1, LONG_MAX - 1, LONG_MAX]),
    st.integers(LONG_MIN, LONG_MAX),
)
absurd_currency = st.one_of(
    st.sampled_from(["EUR", "eur", "EU", "EURO", "XXX", "€", "", "'; --", "\u0415UR", "E\x00R"]),
    st.text(max_size=5),
)


@dataclass
class BadInput:
    label: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    expect: str  # "dlq" or "result"
    command_id: str | None = None  # the ce_id a result would name
    dlq_types: frozenset[str] | None = None  # accepted dlq_error_type values (None: any)
    position: tuple[int, int] | None = None  # (partition, offset) once delivered
    outcomes: list[tuple[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        value = None if self.value is None else self.value[:40]
        key = None if self.key is None else self.key[:40]
        return f"{self.label} key={key!r} value={value!r} headers={self.headers!r:.200}"


def command_headers(command_id: str | bytes | None, type_name: str) -> list[tuple[str, Any]]:
    headers: list[tuple[str, Any]] = [
        (ce.SPECVERSION, b"1.0"),
        (ce.TYPE, type_name.encode()),
        (ce.SOURCE, b"/fuzz"),
        (ce.CONTENT_TYPE, b"application/avro"),
    ]
    if command_id is not None:
        cid = command_id.encode() if isinstance(command_id, str) else command_id
        headers.append((ce.ID, cid))
    return headers


def answered(key: bytes, label: str, type_name: str, value: bytes) -> BadInput:
    """A decodable command: a result is due, or a dead letter when its key is over the cap."""
    command_id = str(uuid.uuid4())
    if len(key) > MAX_ID_BYTES:
        return BadInput(
            label, key, value, command_headers(command_id, type_name), "dlq", command_id,
            frozenset({"OversizedId"}),
        )  # fmt: skip
    return BadInput(label, key, value, command_headers(command_id, type_name), "result", command_id)


# -- the classes of bad input ---------------------------------------------------------------


@st.composite
def random_bytes(draw: st.DrawFn) -> BadInput:
    key = draw(st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=20).map(str.encode)))
    value = draw(st.one_of(st.none(), st.binary(max_size=300)))
    assume(value is None or value[:2] != MAGIC or value[2:10] not in FINGERPRINTS)
    headers = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from([ce.ID, ce.TYPE, ce.EXPECTED_VERSION]), st.text()),
                st.one_of(st.none(), st.binary(max_size=30)),
            ),
            max_size=4,
        )
    )
    return BadInput("random_bytes", key, value, headers, "dlq")


@st.composite
def unknown_fingerprint(draw: st.DrawFn) -> BadInput:
    fingerprint = draw(st.binary(min_size=8, max_size=8).filter(lambda f: f not in FINGERPRINTS))
    body = draw(st.binary(max_size=200))
    key = draw(nasty_text.filter(lambda t: 0 < len(t.encode()) <= 200)).encode()
    headers = command_headers(str(uuid.uuid4()), "bank.Deposit")
    value = MAGIC + fingerprint + body
    return BadInput(
        "unknown_fingerprint", key, value, headers, "dlq", None, frozenset({"UnknownFingerprint"})
    )


@st.composite
def truncated(draw: st.DrawFn) -> BadInput:
    entry: SchemaEntry = draw(st.sampled_from(BANK_COMMANDS))
    record = draw(records(entry))
    value = _codec.encode(entry, record)
    cut = draw(st.integers(0, len(value) - 1))
    key = draw(st.text(min_size=1, max_size=30)).encode()
    headers = command_headers(str(uuid.uuid4()), entry.name)
    return BadInput(
        "truncated", key, value[:cut], headers, "dlq", None,
        frozenset({"TruncatedBody", "MalformedBody"}),
    )  # fmt: skip


def absurd(pool: list[str]) -> st.SearchStrategy[BadInput]:
    """Schema-valid commands with absurd values, often aimed at the pool's open accounts."""
    # Weighted towards open accounts, EUR and positive amounts, so that many absurd
    # commands are accepted and their strings reach the event store.
    account = st.one_of(st.sampled_from(pool), st.sampled_from(pool), nasty_text.filter(bool))
    money = st.fixed_dictionaries(
        {
            "amount": st.one_of(absurd_amount, st.integers(1, 10**6)),
            "currency": st.one_of(st.just("EUR"), absurd_currency),
        }
    )
    maybe_text = st.one_of(st.none(), nasty_text)
    deposits = st.tuples(
        st.just("bank.Deposit"),
        st.fixed_dictionaries({"account_id": account, "amount": money, "transfer_id": maybe_text}),
    )
    commands = st.one_of(
        deposits,
        deposits,
        st.tuples(
            st.just("bank.OpenAccount"),
            st.fixed_dictionaries(
                {"account_id": account, "owner": nasty_text, "currency": absurd_currency}
            ),
        ),
        st.tuples(
            st.sampled_from(["bank.Deposit", "bank.Withdraw"]),
            st.fixed_dictionaries(
                {"account_id": account, "amount": money, "transfer_id": maybe_text}
            ),
        ),
        st.tuples(st.just("bank.CloseAccount"), st.fixed_dictionaries({"account_id": account})),
        st.tuples(
            st.just("bank.RequestTransfer"),
            st.fixed_dictionaries(
                {
                    "transfer_id": nasty_text.filter(bool),
                    "from_account_id": account,
                    "to_account_id": account,
                    "amount": money,
                }
            ),
        ),
        st.tuples(
            st.sampled_from(["bank.RecordTransferDebit", "bank.CompleteTransfer"]),
            st.fixed_dictionaries({"transfer_id": nasty_text.filter(bool)}),
        ),
        st.tuples(
            st.just("bank.FailTransfer"),
            st.fixed_dictionaries(
                {
                    "transfer_id": nasty_text.filter(bool),
                    "reason": nasty_text,
                    "compensated": st.booleans(),
                }
            ),
        ),
    )

    def build(command: tuple[str, dict[str, Any]]) -> BadInput:
        type_name, data = command
        id_field = "transfer_id" if "Transfer" in type_name else "account_id"
        key = data[id_field].encode()
        return answered(key, "absurd_values", type_name, _codec.encode(type_name, data))

    return commands.map(build)


def bad_headers(pool: list[str]) -> st.SearchStrategy[BadInput]:
    """A valid deposit to an open account, with a missing or malformed envelope."""

    @st.composite
    def build(draw: st.DrawFn) -> BadInput:
        account = draw(st.sampled_from(pool))
        value = _codec.encode("bank.Deposit", movement(account, 1))
        key = account.encode()
        headers = command_headers(None, "bank.Deposit")
        variant = draw(
            st.sampled_from(
                [
                    "no_id",
                    "null_id",
                    "empty_id",
                    "non_utf8_id",
                    "huge_id",
                    "bad_version",
                    "good_version",
                    "non_utf8_correlation",
                    "huge_correlation",
                ]
            )
        )
        command_id = str(uuid.uuid4())

        def dead(*types: str) -> BadInput:
            label = f"headers:{variant}"
            return BadInput(label, key, value, headers, "dlq", None, frozenset(types))

        if variant == "no_id":
            return dead("MissingHeader")
        if variant == "null_id":
            headers.append((ce.ID, None))
            return dead("MissingHeader")
        if variant == "empty_id":
            headers.append((ce.ID, b""))
            return dead("MissingHeader")
        if variant == "non_utf8_id":
            headers.append((ce.ID, b"\xff\xfe" + uuid.uuid4().bytes))
            return dead("MalformedHeader")
        if variant == "huge_id":
            headers.append((ce.ID, (command_id * 60).encode()))
            return dead("OversizedId")
        headers.append((ce.ID, command_id.encode()))
        if variant == "bad_version":
            bad = draw(
                st.one_of(
                    st.sampled_from(
                        [b"abc", b"1.5", b"0x10", b"\xff", b"1_0", b" 7", b"+5", b"1e3", b"9" * 25]
                    ),
                    st.binary(min_size=1, max_size=12).filter(
                        lambda b: not b.isdigit() and not (b[:1] == b"-" and b[1:].isdigit())
                    ),
                )
            )
            headers.append((ce.EXPECTED_VERSION, bad))
            return dead("MalformedHeader")
        if variant == "non_utf8_correlation":
            headers.append((ce.CORRELATION_ID, b"\xc0\xaf"))
            return dead("MalformedHeader")
        if variant == "huge_correlation":
            headers.append((ce.CORRELATION_ID, b"c" * (MAX_ID_BYTES + 1)))
            return dead("OversizedId")
        version = draw(st.integers(-(10**18), 10**18))
        headers.append((ce.EXPECTED_VERSION, str(version).encode()))
        return BadInput(f"headers:{variant}", key, value, headers, "result", command_id)

    return build()


@st.composite
def foreign_types(draw: st.DrawFn) -> BadInput:
    """Well-formed records of types that are not bank commands: events, states, rows, and
    the runtime's own records."""
    entry: SchemaEntry = draw(st.sampled_from(FOREIGN))
    record = draw(records(entry))
    key = draw(st.text(min_size=1, max_size=30)).encode()
    found = answered(key, "foreign_type", entry.name, _codec.encode(entry, record))
    return found


# -- the run -------------------------------------------------------------------------------


def account_on_each_partition(prefix: str) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < PARTITIONS:
        candidate = f"{prefix}-{i}"
        found.setdefault(partition_for(candidate, PARTITIONS), candidate)
        i += 1
    return [found[p] for p in range(PARTITIONS)]


def fuzz(strategy: st.SearchStrategy[BadInput], send: Callable[[BadInput], None]) -> None:
    @settings(
        max_examples=EXAMPLES_PER_CLASS,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(bad: BadInput) -> None:
        send(bad)

    one()


def test_fuzzed_bad_input_is_answered_or_dead_lettered_once_and_never_stalls(bank: BankRig):
    started = time.monotonic()
    worker = bank.processor()
    pid = worker.proc.pid
    pool = [
        *NASTY[:14],
        *account_on_each_partition("fuzz-pool"),
    ]
    # NUL is refused in every string (invalid_text), so ids holding one cannot be opened.
    pool = [a for a in pool if "\x00" not in a]
    with bank.client() as client:
        opened = [
            client.send(
                "bank.OpenAccount", {"account_id": a, "owner": a, "currency": "EUR"}
            ).result(60)
            for a in pool
        ]
    assert all(r.accepted for r in opened), [r for r in opened if not r.accepted]

    producer = Producer({**bank.kafka, "partitioner": "murmur2_random", "linger.ms": 5})
    sent: list[BadInput] = []
    delivery_errors: list[KafkaError] = []

    def send(bad: BadInput) -> None:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                delivery_errors.append(err)
            else:
                bad.position = (msg.partition(), msg.offset())

        producer.produce(
            bank.topics.commands, bad.value, bad.key, headers=bad.headers, on_delivery=on_delivery
        )
        producer.poll(0)
        sent.append(bad)

    for strategy in (
        random_bytes(),
        unknown_fingerprint(),
        truncated(),
        absurd(pool),
        bad_headers(pool),
        foreign_types(),
    ):
        fuzz(strategy, send)
    assert producer.flush(60) == 0
    assert not delivery_errors, delivery_errors[:5]

    # Liveness: after all of it, a valid command on EVERY partition is still processed.
    live = account_on_each_partition("fuzz-live")
    with bank.client() as client:
        for account in live:
            opened_live = client.send(
                "bank.OpenAccount", {"account_id": account, "owner": "o", "currency": "EUR"}
            )
            assert opened_live.result(90).accepted, account
        deposits = [client.send("bank.Deposit", movement(a, 5)) for a in live]
        live_results = [d.result(90) for d in deposits]
    assert all(r.accepted and r.version == 2 for r in live_results), live_results
    assert {r.events[0].partition for r in live_results} == set(range(PARTITIONS))
    assert {bad.position[0] for bad in sent if bad.position} == set(range(PARTITIONS))

    # Accounting: every input is exactly one dead letter or exactly one result.
    by_position = {bad.position: bad for bad in sent}
    by_command_id = {bad.command_id: bad for bad in sent if bad.command_id}
    for msg in read_topic(bank.kafka, bank.topics.dlq):
        h = dict(msg.headers())
        position = (int(h["dlq_source_partition"]), int(h["dlq_source_offset"]))
        assert position in by_position, f"a dead letter for no input: {h}"
        by_position[position].outcomes.append(("dlq", h))
    for msg in read_topic(bank.kafka, bank.topics.results):
        command_id = wire.result_command_id(msg)
        if command_id in by_command_id:
            by_command_id[command_id].outcomes.append(
                ("result", _codec.decode(msg.value(), "cqrs.CommandResult"))
            )
    counts: Counter[str] = Counter()
    why: Counter[str] = Counter()  # dead-letter error types and rejection reasons
    problems = []
    for bad in sent:
        counts[bad.label.split(":")[0]] += 1
        if len(bad.outcomes) != 1:
            problems.append(f"{len(bad.outcomes)} outcomes for {bad.describe()}")
            continue
        kind, outcome = bad.outcomes[0]
        if kind != bad.expect:
            got = f"{kind} {outcome!r:.300}"
            problems.append(f"expected {bad.expect}, got {got} for {bad.describe()}")
            continue
        if kind == "dlq":
            error_type = outcome["dlq_error_type"].decode()
            counts["dead-lettered"] += 1
            why[f"dlq:{error_type}"] += 1
            if not outcome["dlq_reason"] or (bad.dlq_types and error_type not in bad.dlq_types):
                problems.append(f"dead letter {error_type} for {bad.describe()}")
        else:
            counts[outcome["status"].lower()] += 1
            why[outcome["reason"] or "accepted"] += 1
            if outcome["status"] != "ACCEPTED" and outcome["reason"] not in KNOWN_REASONS:
                problems.append(f"reason {outcome['reason']!r} ({outcome['detail']:.200})")
            if bad.label == "foreign_type" and outcome["reason"] != "unknown_command":
                problems.append(f"foreign type answered {outcome!r:.300}")
    assert not problems, "\n".join(problems[:20])

    # Nothing the bad input did reached the event store except accepted commands' events.
    events = read_events(bank.kafka, bank.topics.events)
    check_event_log(events)
    accepted_ids = {
        bad.command_id
        for bad in sent
        if bad.outcomes and bad.outcomes[0][0] == "result"
        and bad.outcomes[0][1]["status"] == "ACCEPTED"
    }  # fmt: skip
    fuzz_ids = {bad.command_id for bad in sent if bad.command_id}
    stray = [e for e in events if e.causation_id in fuzz_ids - accepted_ids]
    assert not stray, stray[:5]

    assert worker.alive and worker.proc.pid == pid, worker.log_tail()
    rejected = counts["rejected"] + counts["conflict"]
    print(
        f"\nfuzz: inputs tried {len(sent)} "
        f"({', '.join(f'{k} {counts[k]}' for k in sorted(counts) if k not in _TOTALS)}); "
        f"rejected {rejected}, accepted {counts['accepted']}, "
        f"dead-lettered {counts['dead-lettered']}, crashes 0, stalled partitions 0, "
        f"{time.monotonic() - started:.0f} s\n"
        f"fuzz outcomes: {', '.join(f'{k} {n}' for k, n in why.most_common())}"
    )


_TOTALS = {"accepted", "rejected", "conflict", "dead-lettered"}
