"""Eventual: the command client's per-command completion slot."""

from __future__ import annotations

import threading
import time

import pytest

from producers.eventual import Eventual


def test_a_value_reaches_waiters_and_callbacks_once():
    slot = Eventual()
    seen: list[object] = []
    slot.add_done_callback(lambda done: seen.append(done.result()))
    assert not slot.done()
    assert slot.set_result(7)
    assert not slot.set_result(8)  # settled once
    assert not slot.set_exception(RuntimeError("late"))
    assert slot.done() and slot.result() == 7 and slot.exception() is None
    slot.add_done_callback(lambda done: seen.append(done.result()))  # at once
    assert seen == [7, 7]


def test_an_error_is_raised_by_result_and_returned_by_exception():
    slot = Eventual()
    error = RuntimeError("not delivered")
    slot.set_exception(error)
    assert slot.exception() is error
    with pytest.raises(RuntimeError, match="not delivered"):
        slot.result()


def test_an_unsettled_slot_times_out():
    slot = Eventual()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        slot.result(0.05)
    with pytest.raises(TimeoutError):
        slot.exception(0.01)
    assert time.monotonic() - started >= 0.05
    assert not slot.wait(0)


def test_a_blocked_reader_wakes_when_another_thread_settles():
    slot = Eventual()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(slot.result(5)))
    reader.start()
    time.sleep(0.05)
    slot.set_result("r")
    reader.join(5)
    assert got == ["r"]


def test_a_raw_value_is_made_once_on_first_read():
    slot = Eventual()
    made: list[bytes] = []

    def make(raw: bytes) -> str:
        made.append(raw)
        return raw.decode()

    assert slot.set_raw(b"abc", make)
    assert made == []  # nobody read it yet
    assert slot.result() == "abc" and slot.result() == "abc"
    assert made == [b"abc"]


def test_many_threads_settle_and_wait_without_losing_a_wake_up():
    slots = [Eventual() for _ in range(2000)]
    results: list[int] = []
    lock = threading.Lock()

    def read() -> None:
        for index, slot in enumerate(slots):
            value = slot.result(5)
            assert value == index
            with lock:
                results.append(value)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for index, slot in enumerate(slots):
        slot.set_result(index)
    for reader in readers:
        reader.join(10)
    assert len(results) == 3 * len(slots)
