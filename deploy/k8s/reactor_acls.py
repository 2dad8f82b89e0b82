"""The Kafka ACLs of a context's reactor principal (processors/reactor.py), in the form of a
Strimzi KafkaUser's `spec.authorization.acls` (deploy/k8s/base/kafka/users.yaml).

A reactor reads the other contexts' event topics it reacts to and writes its own context's
internal commands topic, in transactions under its own ids; it never writes the public
commands topic (a client's), nor any events topic. With the processor's principal, it is the
only writer of `<ctx>.internal-commands`: that is what makes its commands internal
(docs/security.md). The deployed context (bank) reacts to no other context, so the manifests
have no reactor user; a cluster that runs one (e.g. shop's) gives it a KafkaUser of its own,
`cqrs-<ctx>-reactor`, with `reactor_acls(ReactorConfig("shop", kafka={}))`.
"""

from __future__ import annotations

from typing import Any

from processors.reactor import ReactorConfig
from processors.registry import default_registry
from processors.topics import ContextTopics


def acl(rtype: str, name: str, operations: list[str], **extra: str) -> dict[str, Any]:
    pattern = extra.pop("patternType", "literal")
    return {"resource": {"type": rtype, "name": name, "patternType": pattern}} | {
        "operations": operations,
        **extra,
    }


def reactor_acls(config: ReactorConfig) -> list[dict[str, Any]]:
    """The reactor of `config.context`: least privilege, with denies on the public commands
    and the events topics so a broader allow added later cannot open them."""
    ctx = default_registry().context(config.context)
    topics = config.topics
    sources = [
        ContextTopics(config.sources.get(name, name)).events for name in ctx.foreign_event_types()
    ]
    acls = [acl("topic", source, ["Read", "Describe"]) for source in sources]
    acls += [
        acl("topic", topics.internal_commands, ["Write", "Describe"]),
        acl("group", config.group_id, ["Read", "Describe"]),
        # Transactional ids `<prefix>.reactor.<instance id>`.
        acl("transactionalId", f"{config.group_id}.", ["Write", "Describe"], patternType="prefix"),
        acl("topic", topics.commands, ["Write"], type="deny"),
        acl("topic", topics.events, ["Write"], type="deny"),
    ]
    return acls
