"""The reactor principal's Kafka ACLs (deploy/k8s/reactor_acls.py), decided as the broker's
authorizer would: shop's reactor writes shop.internal-commands and no other topic, reads
bank.events and no other topic, under its own group and transactional ids."""

from __future__ import annotations

from deploy.k8s.reactor_acls import reactor_acls
from processors.reactor import ReactorConfig
from processors.registry import default_registry
from processors.topics import declared_topics
from tests.unit.test_k8s_topics import decide


def test_the_reactor_writes_only_its_contexts_internal_commands() -> None:
    config = ReactorConfig("shop", kafka={}, instance_id="r0")
    acls = reactor_acls(config)
    every_topic = [
        spec.name
        for name in ("bank", "shop")
        for spec in declared_topics(default_registry().context(name))
    ]
    assert "shop.internal-commands" in every_topic and "bank.events" in every_topic
    for topic in every_topic:
        assert decide(acls, "topic", topic, "Write") == (topic == "shop.internal-commands"), topic
        assert decide(acls, "topic", topic, "Read") == (topic == "bank.events"), topic
    assert decide(acls, "group", config.group_id, "Read")
    assert decide(acls, "transactionalId", config.transactional_id, "Write")
    assert not decide(acls, "transactionalId", "shop.command-processor.0", "Write")
    assert not decide(acls, "group", "shop.command-processor", "Read")
    # Denied outright, so that a broader allow added later cannot open them.
    denied = {a["resource"]["name"] for a in acls if a.get("type") == "deny"}
    assert denied == {"shop.commands", "shop.events"}
    wider = [*acls, {"resource": {"type": "topic", "name": "shop.", "patternType": "prefix"},
                     "operations": ["Write"]}]  # fmt: skip
    assert not decide(wider, "topic", "shop.commands", "Write")


def test_the_reactor_reads_the_sources_under_their_prefixes() -> None:
    config = ReactorConfig("shop", kafka={}, topic_prefix="s1", sources={"bank": "b1"})
    acls = reactor_acls(config)
    assert decide(acls, "topic", "b1.events", "Read")
    assert not decide(acls, "topic", "bank.events", "Read")
    assert decide(acls, "topic", "s1.internal-commands", "Write")
    assert decide(acls, "transactionalId", "s1.reactor.r7", "Write")
