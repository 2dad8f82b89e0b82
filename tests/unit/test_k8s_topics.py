"""The KafkaTopic resources are exactly the topics the code declares (processors/topics.py,
the same list `cqrsctl topics create` creates), and the KafkaUsers' ACLs name real topics,
groups and transactional ids."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

from processors.processor_config import ProcessorConfig
from processors.projector.app import projector_app_id
from processors.registry import default_registry
from processors.topics import ContextTopics, TopicSpec, declared_topics
from sinks.config import sink_group_id
from tests.unit.k8s_render import K8S_DIR, OVERLAYS, of_kind, render_overlay

# (replicas, min.insync.replicas) per overlay
DURABILITY = {"dev": (1, "1"), "prod": (3, "2")}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def render_topics_module() -> Any:
    spec = importlib.util.spec_from_file_location("render_topics", K8S_DIR / "render_topics.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_topics() -> dict[str, TopicSpec]:
    """The topics of the contexts the cluster runs (installed contexts may be more)."""
    contexts = [default_registry().context(n) for n in render_topics_module().DEPLOYED_CONTEXTS]
    specs = [s for ctx in contexts for s in declared_topics(ctx)]
    return {s.name: s for s in specs}


def manifest_topics(overlay: str) -> dict[str, dict[str, Any]]:
    topics = of_kind(render_overlay(overlay), "KafkaTopic")
    by_name = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in topics}
    assert len(by_name) == len(topics), "two KafkaTopics for one topic"
    return by_name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_equal_the_declared_topics(overlay: str) -> None:
    expected = code_topics()
    actual = manifest_topics(overlay)
    assert sorted(actual) == sorted(expected)
    replicas, min_isr = DURABILITY[overlay]
    for name, spec in expected.items():
        topic = actual[name]["spec"]
        config = {k: str(v) for k, v in topic["config"].items()}
        assert topic["partitions"] == spec.partitions, name
        assert config.pop("min.insync.replicas") == min_isr, name
        # Cleanup policy, retention and every other config exactly as the code declares.
        assert config == spec.config, name
        assert topic["replicas"] == replicas, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_belong_to_the_cluster_and_have_valid_names(overlay: str) -> None:
    docs = render_overlay(overlay)
    (kafka,) = of_kind(docs, "Kafka")
    for doc in of_kind(docs, "KafkaTopic") + of_kind(docs, "KafkaUser"):
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert DNS_SUBDOMAIN.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]


def test_the_generated_topics_file_is_up_to_date() -> None:
    module = render_topics_module()
    assert module.OUT.read_text() == module.render(), "run deploy/k8s/render_topics.py"


# --- ACLs ---------------------------------------------------------------------------------


def acls(user: str) -> list[dict[str, Any]]:
    (doc,) = [
        u for u in of_kind(render_overlay("prod"), "KafkaUser") if u["metadata"]["name"] == user
    ]
    assert doc["spec"]["authentication"]["type"] == "scram-sha-512"
    return doc["spec"]["authorization"]["acls"]


def allowed(user: str, rtype: str, name: str, operation: str) -> bool:
    """What the broker's simple authorizer would decide for the manifests' `user`."""
    return decide(acls(user), rtype, name, operation)


def decide(acls: list[dict[str, Any]], rtype: str, name: str, operation: str) -> bool:
    """What the broker's simple authorizer would decide (deny wins over allow)."""

    def matches(acl: dict[str, Any]) -> bool:
        res = acl["resource"]
        if res["type"] != rtype or operation not in acl["operations"] + ["All"]:
            return False
        if res.get("patternType", "literal") == "prefix":
            return name.startswith(res["name"])
        return res["name"] in (name, "*")

    rules = [a for a in acls if matches(a)]
    return any(a.get("type", "allow") == "allow" for a in rules) and not any(
        a.get("type") == "deny" for a in rules
    )


BANK = ContextTopics("bank")


BANK = ContextTopics("bank")
PROJECTOR_APP = projector_app_id(BANK.prefix)  # its consumer group
SINK_APP = sink_group_id(BANK.prefix)
# Topics named by pattern rather than declared one by one: every projection topic, and the
# topics Faust creates for an app (table changelogs, the assignor's leader topic), which it
# names `<app id>-...`; and those of rebuilt generations (deploy/k8s/render_generation.py):
# `<ctx>.projection.<name>_g<N>` and their projectors' `<ctx>.projector.<name>_g<N>-...`.
PATTERN_PREFIXES = (
    BANK.projection(""),
    f"{PROJECTOR_APP}.",
    *(f"{BANK.projection(p.name)}_g" for p in default_registry().context("bank").projections),
)


def test_every_acl_names_a_declared_topic() -> None:
    topics = set(code_topics())
    for user in of_kind(render_overlay("prod"), "KafkaUser"):
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            if res["type"] != "topic":
                continue
            if res.get("patternType") == "prefix":
                assert res["name"] in PATTERN_PREFIXES or any(
                    t.startswith(res["name"]) for t in topics
                ), res
            else:  # Faust's leader-election topic is the projector's, not the context's
                assert res["name"] in topics | {faust_leader_topic(PROJECTOR_APP)}, res


def test_the_processor_may_write_its_topics_in_transactions_under_its_own_ids() -> None:
    config = ProcessorConfig(context="bank", kafka={}, instance_id="bank-processor-0")
    user = "cqrs-processor"
    for topic in (BANK.commands, BANK.internal_commands):
        assert allowed(user, "topic", topic, "Read"), topic
    for topic in (BANK.events, BANK.results, BANK.aggregates, BANK.dlq, BANK.internal_commands):
        assert allowed(user, "topic", topic, "Write"), topic
    # Clients' commands are the clients' to write: the processor only reads them.
    assert not allowed(user, "topic", BANK.commands, "Write")
    for topic in (BANK.aggregates, BANK.results):  # state restore
        assert allowed(user, "topic", topic, "Read"), topic
    assert allowed(user, "group", config.group_id, "Read")
    assert allowed(user, "transactionalId", config.transactional_id, "Write")
    assert not allowed(user, "transactionalId", "someone-else.0", "Write")
    assert not allowed(user, "topic", BANK.projection("accounts"), "Write")


def test_the_client_may_send_public_commands_and_read_results_and_projections_only() -> None:
    user = "cqrs-client"
    assert allowed(user, "topic", BANK.commands, "Write")
    assert allowed(user, "topic", BANK.results, "Read")
    assert allowed(user, "group", f"{BANK.results}.client-0123", "Read")
    for p in default_registry().context("bank").projections:
        assert allowed(user, "topic", BANK.projection(p.name), "Read"), p.name
    assert allowed(user, "group", "bank.client-reports", "Read")
    # Of every topic the code declares, it writes the public commands topic alone, and
    # reads results and projections alone.
    for topic in code_topics():
        writes = allowed(user, "topic", topic, "Write")
        assert writes == (topic == BANK.commands), topic
        reads = allowed(user, "topic", topic, "Read")
        assert reads == (topic == BANK.results or topic.startswith(BANK.projection(""))), topic
    # The internal commands topic is denied outright, so a broader allow cannot open it.
    assert any(
        a.get("type") == "deny"
        and a["resource"]["name"] == BANK.internal_commands
        and "Write" in a["operations"]
        for a in acls(user)
    )
    assert not allowed(user, "group", ProcessorConfig("bank", {}).group_id, "Read")
    assert not any(a["resource"]["type"] == "transactionalId" for a in acls(user))


def test_only_the_processor_may_write_internal_commands() -> None:
    writers = [
        u["metadata"]["name"]
        for u in of_kind(render_overlay("prod"), "KafkaUser")
        if allowed(u["metadata"]["name"], "topic", BANK.internal_commands, "Write")
    ]
    assert writers == ["cqrs-processor"]


def test_only_the_processor_may_write_events() -> None:
    writers = [
        u["metadata"]["name"]
        for u in of_kind(render_overlay("prod"), "KafkaUser")
        if allowed(u["metadata"]["name"], "topic", BANK.events, "Write")
    ]
    assert writers == ["cqrs-processor"]


def faust_leader_topic(app_id: str) -> str:
    return f"{app_id}-__assignor-__leader"


def test_the_projector_reads_events_writes_projections_and_may_not_write_events() -> None:
    user = "cqrs-projector"
    assert allowed(user, "topic", BANK.events, "Read")
    assert not allowed(user, "topic", BANK.events, "Write")
    # The deny holds even if a broader allow is added later.
    assert any(
        a.get("type") == "deny"
        and a["resource"]["name"] == BANK.events
        and "Write" in a["operations"]
        for a in acls(user)
    )
    projections = default_registry().context("bank").projections
    assert projections
    for p in projections:
        # its rows, and its tables' changelogs (read back to recover): the same topics
        for op in ("Write", "Read"):
            assert allowed(user, "topic", BANK.projection(p.name), op), (p.name, op)
        assert not allowed(user, "topic", BANK.projection(p.name), "Create"), p.name
        # no changelog topics of Faust's own any more, and no right to make them
        changelog = f"{PROJECTOR_APP}-{p.name}-changelog"
        for op in ("Create", "Write", "Read"):
            assert not allowed(user, "topic", changelog, op), (changelog, op)
    for op in ("Create", "Write", "Read"):
        assert allowed(user, "topic", faust_leader_topic(PROJECTOR_APP), op), op
    assert allowed(user, "group", PROJECTOR_APP, "Read")
    for topic in (BANK.commands, BANK.results, BANK.aggregates, BANK.dlq):
        assert not allowed(user, "topic", topic, "Write"), topic
    assert not allowed(user, "topic", BANK.commands, "Read")


def test_the_sink_reads_projection_topics_and_writes_none() -> None:
    user = "cqrs-sink"
    for p in default_registry().context("bank").projections:
        assert allowed(user, "topic", BANK.projection(p.name), "Read"), p.name
    assert allowed(user, "group", SINK_APP, "Read")
    # Not a Faust app (any more): no topic of its own to create, no cluster config to read.
    assert not allowed(user, "topic", faust_leader_topic(SINK_APP), "Create")
    assert not any(op in a["operations"] for a in acls(user) for op in ("Write", "All", "Create"))
    assert not any(a["resource"]["type"] == "cluster" for a in acls(user))
    for topic in (BANK.events, BANK.commands, BANK.results, BANK.aggregates):
        assert not allowed(user, "topic", topic, "Read"), topic
