"""PendingCommand.add_done_callback: results reach a callback without anyone blocking."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future

import pytest

from producers.command_client import CommandResult, PendingCommand


def result(command_id: str) -> CommandResult:
    return CommandResult(
        command_id, "bank.Deposit", "a-1", "ACCEPTED", "", "", 2, (), dt.datetime.now(dt.UTC)
    )


def test_the_callback_gets_the_result_when_it_arrives_or_at_once_if_it_is_there():
    future: Future[CommandResult] = Future()
    pending = PendingCommand("c-1", "a-1", future)
    seen: list[CommandResult] = []
    pending.add_done_callback(seen.append)
    assert seen == []
    future.set_result(result("c-1"))
    assert [r.command_id for r in seen] == ["c-1"]
    pending.add_done_callback(seen.append)  # already resolved: called at once
    assert [r.command_id for r in seen] == ["c-1", "c-1"]


def test_a_client_that_awaits_no_results_says_so():
    with pytest.raises(RuntimeError, match="await_results=False"):
        PendingCommand("c-1", "a-1", None).add_done_callback(print)
