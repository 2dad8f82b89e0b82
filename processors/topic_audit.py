"""Declared topics against the topics that exist on the broker: missing topics, partition
counts and config values that drifted from the declaration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from processors.topics import TopicSpec


@dataclass(frozen=True)
class TopicAudit:
    name: str
    declared_partitions: int
    partitions: int | None  # None: the topic does not exist
    declared_config: dict[str, str]
    drift: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key: (want, have)

    @property
    def exists(self) -> bool:
        return self.partitions is not None

    @property
    def status(self) -> str:
        """ok | missing | partitions | config: the first difference found."""
        if not self.exists:
            return "missing"
        if self.partitions != self.declared_partitions:
            return "partitions"
        return "config" if self.drift else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "status": self.status,
            "declared_partitions": self.declared_partitions,
            "partitions": self.partitions,
            "declared_config": self.declared_config,
            "drift": {k: {"declared": w, "actual": h} for k, (w, h) in self.drift.items()},
        }


def audit_topics(
    kafka: dict[str, Any], specs: list[TopicSpec], timeout: float = 10.0
) -> list[TopicAudit]:
    """One TopicAudit per declared topic, from the broker's metadata and topic configs.
    Raises KafkaException when the broker cannot be reached."""
    admin = AdminClient(kafka)
    existing = admin.list_topics(timeout=timeout).topics
    present = [s for s in specs if s.name in existing and existing[s.name].error is None]
    configs: dict[str, dict[str, str | None]] = {}
    if present:
        futures = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, s.name) for s in present],
            request_timeout=timeout,
        )
        for resource, future in futures.items():
            entries = future.result(timeout)
            configs[resource.name] = {k: e.value for k, e in entries.items()}
    audits = []
    for spec in specs:
        if spec.name not in configs:
            audits.append(TopicAudit(spec.name, spec.partitions, None, dict(spec.config)))
            continue
        actual = configs[spec.name]
        drift = {k: (v, actual.get(k)) for k, v in spec.config.items() if actual.get(k) != v}
        audits.append(
            TopicAudit(
                spec.name,
                spec.partitions,
                len(existing[spec.name].partitions),
                dict(spec.config),
                drift,
            )
        )
    return audits
