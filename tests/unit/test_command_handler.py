"""The processor's in-memory decision step, without Kafka: routing checks, conflicts,
duplicates, process-manager reactions, and the rollback journal of an aborted batch."""

from __future__ import annotations

import pytest

from processors.command_handler import (
    ACCEPTED,
    CONFLICT,
    REJECTED,
    CommandHandler,
    CommandMessage,
    Decided,
    Duplicate,
    PartitionState,
)
from processors.partitioning import partition_for
from processors.registry import default_registry

PARTITIONS = 6


@pytest.fixture
def handler() -> CommandHandler:
    h = CommandHandler(default_registry(), "bank", PARTITIONS, dedup_window=3)
    for p in range(PARTITIONS):
        h.assign(p, PartitionState())
    h.begin_batch()
    return h


def message(command_type: str, data: dict, command_id: str, **kw) -> CommandMessage:
    key = kw.pop("key", None) or data.get("account_id") or data["transfer_id"]
    return CommandMessage(
        partition=kw.pop("partition", partition_for(key, PARTITIONS)),
        offset=kw.pop("offset", 0),
        key=key,
        command_id=command_id,
        command_type=command_type,
        data=data,
        correlation_id=None,
        expected_version=kw.pop("expected_version", None),
        principal=kw.pop("principal", None),
        internal=kw.pop("internal", False),
    )


def open_(account: str, cid: str = "c-open") -> CommandMessage:
    return message(
        "bank.OpenAccount", {"account_id": account, "owner": "o", "currency": "EUR"}, cid
    )


def deposit(account: str, amount: int, cid: str, **kw) -> CommandMessage:
    data = {"account_id": account, "amount": {"amount": amount, "currency": "EUR"}}
    return message("bank.Deposit", data, cid, **kw)


def test_accepted_commands_bump_the_version(handler: CommandHandler):
    assert handler.handle(open_("a")).version == 1
    decided = handler.handle(deposit("a", 5, "c1"))
    assert isinstance(decided, Decided)
    assert (decided.status, decided.version, decided.events[0].data["balance"]) == (ACCEPTED, 2, 5)


def test_expected_version_mismatch_is_a_conflict_and_changes_nothing(handler: CommandHandler):
    handler.handle(open_("a"))
    stale = handler.handle(deposit("a", 5, "c1", expected_version=0))
    assert (stale.status, stale.reason, stale.version, stale.events) == (
        CONFLICT,
        "version_conflict",
        1,
        [],
    )
    assert handler.handle(deposit("a", 5, "c2", expected_version=1)).status == ACCEPTED


def test_a_repeated_command_id_is_a_duplicate(handler: CommandHandler):
    handler.handle(open_("a"))
    handler.handle(deposit("a", 5, "same"))
    assert isinstance(handler.handle(deposit("a", 5, "same")), Duplicate)


def test_dedup_window_keeps_the_last_results_only(handler: CommandHandler):
    p = partition_for("a", PARTITIONS)
    for i in range(4):
        handler.remember_result(p, f"c{i}", b"result")
    assert handler.first_result(p, "c0") is None
    assert handler.first_result(p, "c3") == b"result"


def test_wrong_partition_and_key_mismatch_are_rejected(handler: CommandHandler):
    right = partition_for("a", PARTITIONS)
    data = {"account_id": "a", "owner": "o", "currency": "EUR"}
    wrong = handler.handle(
        message("bank.OpenAccount", data, "c1", partition=(right + 1) % PARTITIONS)
    )
    assert (wrong.status, wrong.reason) == (REJECTED, "wrong_partition")
    mismatch = handler.handle(
        deposit("a", 1, "c2", key="b", partition=partition_for("b", PARTITIONS))
    )
    assert (mismatch.status, mismatch.reason) == (REJECTED, "key_mismatch")


def test_rollback_forgets_state_and_seen_ids_of_the_aborted_batch(handler: CommandHandler):
    handler.handle(open_("a"))
    handler.handle(deposit("a", 5, "c1"))
    handler.begin_batch()  # the batch above committed
    handler.handle(deposit("a", 7, "c2"))
    handler.handle(open_("b", "c-open-b"))
    handler.rollback()  # this one aborted
    replay = handler.handle(deposit("a", 7, "c2"))
    assert isinstance(replay, Decided) and replay.version == 3
    assert replay.events[0].data["balance"] == 12
    assert handler.handle(open_("b", "c-open-b")).status == ACCEPTED


def test_transfer_request_makes_the_saga_issue_the_debit_in_the_same_step(handler: CommandHandler):
    data = {
        "transfer_id": "t1",
        "from_account_id": "a",
        "to_account_id": "b",
        "amount": {"amount": 3, "currency": "EUR"},
    }
    decided = handler.handle(message("bank.RequestTransfer", data, "c-t"))
    assert [i.command_id for i in decided.issued] == ["pm:transfer:t1:debit"]
    target, partition = decided.issued[0].aggregate_id, decided.issued[0].partition
    assert (target, partition) == ("a", partition_for("a", PARTITIONS))
    # The debit's outcome (rejected: account a does not exist) feeds back to the saga.
    debit = decided.issued[0]
    outcome = handler.handle(
        message(debit.command.type, dict(debit.command.data), debit.command_id, internal=True)
    )
    assert outcome.reason == "account_not_found"
    assert [i.command.type for i in outcome.issued] == ["bank.FailTransfer"]


def test_an_internal_command_type_from_a_client_is_refused(handler: CommandHandler):
    handler.handle(open_("a"))
    handler.handle(deposit("a", 10, "c-dep"))
    request = {
        "transfer_id": "t1",
        "from_account_id": "a",
        "to_account_id": "b",
        "amount": {"amount": 3, "currency": "EUR"},
    }
    handler.handle(message("bank.RequestTransfer", request, "c-t"))
    fail = {"transfer_id": "t1", "reason": "forged", "compensated": True}
    # Even with the id the saga would use, on the public topic it is refused, no event.
    forged = handler.handle(message("bank.FailTransfer", fail, "pm:transfer:t1:fail"))
    assert (forged.status, forged.reason) == (REJECTED, "internal_command")
    assert "internal command" in forged.detail
    assert (forged.events, forged.issued) == ([], [])


def test_a_client_cannot_borrow_a_process_manager_command_id(handler: CommandHandler):
    handler.handle(open_("a"))
    handler.handle(deposit("a", 10, "c-dep"))
    # A public Withdraw with the saga's debit id: decided as the client's own withdrawal,
    # but its outcome does not drive the saga (no RecordTransferDebit issued).
    data = {"account_id": "a", "amount": {"amount": 3, "currency": "EUR"}, "transfer_id": "t9"}
    borrowed = handler.handle(message("bank.Withdraw", data, "pm:transfer:t9:debit"))
    assert borrowed.status == ACCEPTED
    assert borrowed.issued == []
    # The saga's own command with that id, on the internal topic, is not a duplicate of it.
    own = handler.handle(message("bank.Withdraw", data, "pm:transfer:t9:debit", internal=True))
    assert not isinstance(own, Duplicate)


def test_a_nul_character_in_any_string_is_rejected_before_deciding(handler: CommandHandler):
    data = {"account_id": "a", "owner": "Ada\x00Lovelace", "currency": "EUR"}
    decided = handler.handle(message("bank.OpenAccount", data, "c-nul"))
    assert (decided.status, decided.reason) == (REJECTED, "invalid_text")
    assert "owner" in decided.detail
    assert handler.handle(open_("a")).status == ACCEPTED
