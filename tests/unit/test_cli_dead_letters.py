"""The parts of `cqrsctl dlq` and `cqrsctl tail` that need no broker: selecting dead letters,
what a replay would send, and topic short names."""

from __future__ import annotations

import datetime as dt

import pytest

from cqrsctl.dead_letters import (
    REPLAY_OF,
    DeadLetter,
    Filters,
    parse_position,
    parse_since,
    replay,
)
from cqrsctl.tail_cmd import resolve_topic
from processors.partitioning import partition_for

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def letter(
    *headers: tuple[str, bytes], key: bytes | None = b"acc-1", offset: int = 7
) -> DeadLetter:
    return DeadLetter(
        topic="bank.dlq",
        partition=2,
        offset=offset,
        key=key,
        value=b"\xc3\x01value",
        headers=[("ce_id", b"cmd-1"), *headers],
        timestamp=NOW,
        message=None,  # type: ignore[arg-type] - not read by these functions
    )


def test_positions_and_since_parse_or_say_what_is_expected() -> None:
    assert parse_position("3:17") == (3, 17)
    for bad in ("3", "3:", ":4", "a:1", "1:-2", "1:2:3"):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_position(bad)
    assert parse_since("15m", NOW) == NOW - dt.timedelta(minutes=15)
    assert parse_since("1.5h", NOW) == NOW - dt.timedelta(minutes=90)
    assert parse_since("2d", NOW) == NOW - dt.timedelta(days=2)
    assert parse_since("2026-05-01T13:00:00+02:00") == dt.datetime(2026, 5, 1, 11, tzinfo=dt.UTC)
    for bad in ("yesterday", "5 minutes", "10w", ""):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad, NOW)


def test_filters_match_reason_or_error_type_in_any_case_and_the_dlq_time() -> None:
    old = letter(
        ("dlq_error_type", b"BadMagic"),
        ("dlq_reason", b"expected first bytes c3 01"),
        ("dlq_time", b"2026-05-01T10:00:00.000000Z"),
    )
    assert Filters(reason="badmagic").accepts(old)
    assert Filters(reason="FIRST BYTES").accepts(old)
    assert not Filters(reason="MissingHeader").accepts(old)
    assert Filters(since=NOW - dt.timedelta(hours=2)).accepts(old)
    assert not Filters(since=NOW - dt.timedelta(hours=1)).accepts(old)
    # Without dlq_time, the record's timestamp counts.
    assert Filters(since=NOW - dt.timedelta(hours=1)).accepts(letter())
    assert Filters(positions=frozenset({(2, 7)})).accepts(old)
    assert not Filters(positions=frozenset({(2, 8)})).accepts(old)


def test_a_dry_run_plans_the_original_record_on_its_keys_partition() -> None:
    dead = letter(
        ("dlq_error_type", b"UnknownFingerprint"),
        ("dlq_source_partition", b"4"),
        (REPLAY_OF, b"bank.dlq:0:1"),
    )
    (plan,) = replay({}, [dead], "bank.commands", 6, dry_run=True, timeout_s=1)
    assert plan.action == "would_replay"
    assert plan.partition == partition_for("acc-1", 6)
    assert plan.headers == [("ce_id", b"cmd-1"), (REPLAY_OF, b"bank.dlq:2:7")]
    # No UTF-8 key (it will be dead-lettered again): back to the partition it came from.
    (plan,) = replay({}, [letter(("dlq_source_partition", b"4"), key=b"\xff")], "c", 6, True, 1)
    assert plan.partition == 4


def test_a_truncated_dead_letter_is_not_replayed() -> None:
    cut = letter(
        ("dlq_truncated", b"value"),
        ("dlq_source_topic", b"bank.commands"),
        ("dlq_source_partition", b"1"),
        ("dlq_source_offset", b"99"),
    )
    (plan,) = replay({}, [cut], "bank.commands", 6, dry_run=False, timeout_s=1)
    assert plan.action == "skipped"
    assert "bank.commands partition 1 offset 99" in plan.detail


def test_short_topic_names_resolve_under_the_prefix() -> None:
    assert resolve_topic("events", "bank") == "bank.events"
    assert resolve_topic("results", "t1") == "t1.command-results"
    assert resolve_topic("dlq", "bank") == "bank.dlq"
    assert resolve_topic("projection.accounts", "bank") == "bank.projection.accounts"
    assert resolve_topic("other.events", "bank") == "other.events"
