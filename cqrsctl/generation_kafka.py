"""What a projection generation N >= 2 leaves in Kafka, and its removal: the consumer groups
of its projector (the Faust app id `<prefix>.projector.P_gN`) and of its sink
(`<prefix>.sink.P_gN`), its projection topic `<prefix>.projection.P_gN` (also its table's
changelog), and the topics Faust made for its app (the assignor's topic, named
`<app id>-...`). Generation 1's groups and topics are the shared workers' and stay.

`drop` and `gc` (cqrsctl/projections_cmd.py) refuse while a member of either group is
connected: removing a running worker's topics would only make it fail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from processors.generations import generation_name
from processors.projector.app import projector_app_id
from sinks.config import sink_group_id

TIMEOUT_S = 30.0


class WorkersRunning(RuntimeError):
    """A consumer group of the generation has members: its workers are still running."""


@dataclass(frozen=True, slots=True)
class GenerationKafka:
    groups: tuple[str, ...]  # the projector's, the sink's
    topic: str  # its projection topic
    app_id: str  # the projector's app id, the prefix of the topics Faust made for it

    @classmethod
    def of(cls, prefix: str, projection: str, generation: int) -> GenerationKafka | None:
        """None for generation 1, whose groups and topics are shared."""
        if generation < 2:
            return None
        app_id = projector_app_id(prefix, projection, generation)
        groups = (app_id, sink_group_id(prefix, projection, generation))
        topic = f"{prefix}.projection.{generation_name(projection, generation)}"
        return cls(groups, topic, app_id)

    def topics_in(self, existing: Iterable[str]) -> list[str]:
        """Its topics among `existing` topic names."""
        own = f"{self.app_id}-"
        return sorted(t for t in existing if t == self.topic or t.startswith(own))


def check_stopped(admin: AdminClient, found: GenerationKafka) -> None:
    """WorkersRunning if a member of one of its groups is connected."""
    futures = admin.describe_consumer_groups(list(found.groups), request_timeout=TIMEOUT_S)
    for group, future in futures.items():
        members = len(future.result(TIMEOUT_S).members)
        if members:
            raise WorkersRunning(
                f"{group} has {members} member(s): stop the generation's workers first"
            )


def delete(admin: AdminClient, found: GenerationKafka) -> list[str]:
    """Delete its groups and topics; the names deleted (a name already gone is skipped)."""
    deleted: list[str] = []
    for group, future in admin.delete_consumer_groups(
        list(found.groups), request_timeout=TIMEOUT_S
    ).items():
        try:
            future.result(TIMEOUT_S)
            deleted.append(group)
        except KafkaException as exc:
            if _code(exc) != KafkaError.GROUP_ID_NOT_FOUND:
                raise
    topics = found.topics_in(admin.list_topics(timeout=TIMEOUT_S).topics)
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=TIMEOUT_S).values():
            future.result(TIMEOUT_S * 2)
    return deleted + topics


def _code(exc: KafkaException) -> Any:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None
