"""Whether the projector may trust its local RocksDB tables when it starts.

The projector writes a row to its table (RocksDB) at once and to the table's changelog,
the projection topic (processors/projector/tables.py), a little later. After a kill -9 in
between, RocksDB holds a row the topic lacks; the replayed event then finds the row already
applied and would not change it, so only a replay's republication would repair the topic,
and a replica restored from it meanwhile (e.g. on another node) would hold a stale row.
So, as Kafka Streams does after an unclean shutdown, the projector keeps its local tables
only after a clean stop, marked by a file; otherwise it discards them and they are restored
from the projection topics (processors/projector/table_restore.py), which hold at least
everything up to the committed source offsets (a batch is acknowledged only once the broker
has its records).

The tables are also discarded when they come from another Kafka: a rebuilt cluster (another
cluster id) or recreated projection topics (other topic ids). Faust would otherwise keep rows
and persisted changelog offsets of the old topics: its recovery stops with `ConsistencyError`
("persisted offset ... higher than ... highwater") when the new changelog is shorter but not
empty, and silently keeps the old rows when it is empty. The identity is written to a file at
each start, next to the marker.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "clean-shutdown"
IDENTITY = "kafka-identity.json"


def kafka_identity(client_config: dict[str, Any], topics: list[str]) -> dict[str, Any]:
    """The cluster id and the topic id of each of `topics`: what the local tables were built
    from. Raises if the cluster cannot be asked or a topic is missing."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config)
    cluster_id = admin.list_topics(timeout=30).cluster_id  # metadata: no extra ACL
    described = admin.describe_topics(TopicCollection(sorted(topics)), request_timeout=30)
    return {
        "cluster_id": cluster_id,
        "topic_ids": {name: str(f.result().topic_id) for name, f in described.items()},
    }


class LocalState:
    def __init__(self, data_dir: Path, table_dir: Path) -> None:
        self.marker = data_dir / MARKER
        self.identity_file = data_dir / IDENTITY
        self.table_dir = table_dir

    def prepare(self, identity: dict[str, Any] | None = None) -> bool:
        """Call before the worker starts, with the Kafka identity it runs against
        (`kafka_identity`); returns True when the tables were discarded."""
        clean = self.marker.exists()
        if clean:
            self.marker.unlink()  # from now on, only a clean stop may vouch for the files
        why = None if clean else "no clean shutdown recorded"
        if identity is not None:
            if self._recorded() not in (None, identity):
                why = "the Kafka cluster or the projection topics are not the tables' sources"
            self.identity_file.write_text(json.dumps(identity, sort_keys=True) + "\n")
        if why is None or not (self.table_dir.exists() and any(self.table_dir.iterdir())):
            return False
        log.warning(
            "%s: discarding %s, the tables are restored from the projection topics",
            why,
            self.table_dir,
        )
        shutil.rmtree(self.table_dir)
        return True

    def _recorded(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.identity_file.read_text())
        except (OSError, ValueError):
            return None

    def mark_clean(self) -> None:
        """Call after the worker stopped normally (tables closed, producer flushed)."""
        self.marker.write_text("the tables in this folder match their projection topics\n")
