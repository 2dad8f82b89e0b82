"""Whether the projector may trust its local RocksDB tables when it starts.

Faust writes a table value to RocksDB at once and to the changelog topic a little later.
After a kill -9 in between, RocksDB holds a row the changelog lacks; the replayed event then
finds the row already applied and writes nothing, so the changelog would miss that change
for good (and a replica restored from it, e.g. on another node, would hold a stale row).
So, as Kafka Streams does after an unclean shutdown, the projector keeps its local tables
only after a clean stop, marked by a file; otherwise it discards them and Faust restores
them from the changelogs, which hold at least everything up to the committed source
offsets (Faust flushes its producer before it commits).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "clean-shutdown"


class LocalState:
    def __init__(self, data_dir: Path, table_dir: Path) -> None:
        self.marker = data_dir / MARKER
        self.table_dir = table_dir

    def prepare(self) -> bool:
        """Call before the worker starts; returns True when the tables were discarded."""
        if self.marker.exists():
            self.marker.unlink()  # from now on, only a clean stop may vouch for the files
            return False
        if self.table_dir.exists() and any(self.table_dir.iterdir()):
            log.warning(
                "no clean shutdown recorded: discarding %s, the tables are restored from "
                "their changelogs",
                self.table_dir,
            )
            shutil.rmtree(self.table_dir)
            return True
        return False

    def mark_clean(self) -> None:
        """Call after the worker stopped normally (tables closed, producer flushed)."""
        self.marker.write_text("the tables in this folder match their changelogs\n")
