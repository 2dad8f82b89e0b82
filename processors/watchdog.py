"""A last resort against library calls that block past their own timeout.

librdkafka's `send_offsets_to_transaction` can block forever after the group coordinator's
broker restarts, whatever timeout it is given (confluentinc/librdkafka#5456, #5511: the
cached coordinator is never re-resolved). A blocked C call cannot be interrupted from
Python, so the process exits instead and its supervisor (Kubernetes, the fault harness)
starts a fresh one: its open transaction is aborted by the next incarnation, nothing is
lost or duplicated, and a restart costs seconds, not the minutes of waiting for a liveness
probe."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE: an internal error the supervisor answers with a restart


class Watchdog:
    def __init__(self, check_every_s: float = 0.5) -> None:
        self._lock = threading.Lock()
        self._what: str | None = None
        self._deadline = 0.0
        self._thread = threading.Thread(
            target=self._watch, args=(check_every_s,), name="watchdog", daemon=True
        )
        self._thread.start()

    @contextmanager
    def bounded(self, what: str, seconds: float) -> Iterator[None]:
        """The block must return within `seconds`, or the process exits."""
        with self._lock:
            self._what, self._deadline = what, time.monotonic() + seconds
        try:
            yield
        finally:
            with self._lock:
                self._what = None

    def _watch(self, every: float) -> None:
        while True:
            time.sleep(every)
            with self._lock:
                what, late = self._what, time.monotonic() - self._deadline
            if what is not None and late > 0:
                log.critical("%s is blocked past its deadline: exiting for a restart", what)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(EXIT_CODE)
