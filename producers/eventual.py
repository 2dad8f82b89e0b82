"""`Eventual`: the command client's per-command completion slot (a result, a delivery
report), settled once by the thread that serves the client (the results listener or the
sender's own `poll`).

It has the part of `concurrent.futures.Future`'s interface the client uses (`done`,
`result`, `exception`, `set_result`, `set_exception`, `add_done_callback`), at a fraction
of its cost: no `threading.Condition` per slot. Settling takes one module-wide lock for a
few instructions; a `threading.Event` is made only when someone blocks on an unsettled slot.
A value can also be settled raw with a function that makes it (`set_raw`): it is made on
the first `result()`, so a result nobody reads is never decoded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()  # held only for a few assignments
_PENDING, _DONE, _FAILED = 0, 1, 2


class Eventual:
    __slots__ = ("_callbacks", "_event", "_make", "_raw", "_state", "_value")

    def __init__(self) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._make: Callable[[Any], Any] | None = None
        self._raw: Any = None
        self._callbacks: list[Callable[[Eventual], None]] | None = None
        self._event: threading.Event | None = None

    # -- settling (the client's serving thread) --------------------------------------------

    def set_result(self, value: Any) -> bool:
        """Settle with `value`; False (and no change) if it was settled already."""
        return self._settle(_DONE, value, None)

    def set_raw(self, raw: Any, make: Callable[[Any], Any]) -> bool:
        """Settle with `make(raw)`, called on the first `result()` rather than now."""
        return self._settle(_DONE, raw, make)

    def set_exception(self, error: BaseException) -> bool:
        return self._settle(_FAILED, error, None)

    def _settle(self, state: int, value: Any, make: Callable[[Any], Any] | None) -> bool:
        with _lock:
            if self._state:
                return False
            if make is None:
                self._value = value
            else:
                self._raw, self._make = value, make
            self._state = state
            callbacks, event = self._callbacks, self._event
            self._callbacks = None
        if event is not None:
            event.set()
        if callbacks:
            for callback in callbacks:
                callback(self)
        return True

    # -- reading ---------------------------------------------------------------------------

    def done(self) -> bool:
        return self._state != _PENDING

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it is settled, after waiting up to `timeout` seconds for it."""
        if self._state:
            return True
        with _lock:
            if self._state:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """The value, or the error raised; `TimeoutError` if unsettled after `timeout`."""
        if not self._state and not self.wait(timeout):
            raise TimeoutError
        if self._state == _FAILED:
            raise self._value
        make = self._make
        if make is not None:  # two readers at once may both make it: equal values
            self._value = make(self._raw)
            self._make = None
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._state and not self.wait(timeout):
            raise TimeoutError
        return self._value if self._state == _FAILED else None

    def add_done_callback(self, callback: Callable[[Eventual], None]) -> None:
        """`callback(self)` once settled, on the settling thread (at once if settled)."""
        if not self._state:
            with _lock:
                if not self._state:
                    if self._callbacks is None:
                        self._callbacks = [callback]
                    else:
                        self._callbacks.append(callback)
                    return
        callback(self)
