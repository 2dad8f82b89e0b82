"""A reader that polls a projection's relation every few milliseconds during a rebuild or a
swap, and records every row that vanished or went back to an older version."""

from __future__ import annotations

import threading
import time

import psycopg


class PollingReader(threading.Thread):
    def __init__(self, dsn: str, relation: str, key: str, every_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.query = f"SELECT {key}, version FROM {relation}"  # the test's own names
        self.every_s = every_s
        self.polls = 0
        self.seen: dict[str, int] = {}
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    rows = dict(conn.execute(self.query).fetchall())  # type: ignore[arg-type]
                    self.polls += 1
                    for key, version in self.seen.items():
                        now = rows.get(key)
                        if now is None or now < version:
                            self.problems.append(f"poll {self.polls}: {key} {version} -> {now}")
                    self.seen.update(rows)
                    time.sleep(self.every_s)
        except BaseException as exc:  # reported by the test
            self.error = exc
