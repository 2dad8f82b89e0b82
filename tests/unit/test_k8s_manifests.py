"""Every kustomize overlay renders, and every rendered document validates offline: core kinds
with kubernetes-validate (strict), custom kinds with the CRD JSON schemas in
../shared/k8s-schemas. Broken copies of the manifests show that the validation bites."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from tests.unit.k8s_render import (
    CRD_SCHEMAS,
    K8S_DIR,
    OVERLAYS,
    crd_schema_path,
    describe,
    is_core,
    render,
    render_overlay,
    validate_document,
    validate_documents,
)


def test_the_crd_schemas_are_beside_the_repository() -> None:
    assert CRD_SCHEMAS.is_dir(), f"{CRD_SCHEMAS} is missing: shared/ must sit beside the repo"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_document_validates(overlay: str) -> None:
    docs = render_overlay(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster"} <= kinds
    assert {"ConfigMap", "StatefulSet", "Deployment", "PodMonitor"} <= kinds
    assert {"Service", "HorizontalPodAutoscaler", "NetworkPolicy", "PrometheusRule"} <= kinds
    assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    if overlay == "prod":
        assert "ScheduledBackup" in kinds
    problems = validate_documents(docs)
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_kinds_use_one_strimzi_api_version_and_have_schemas(overlay: str) -> None:
    docs = render_overlay(overlay)
    custom = [d for d in docs if not is_core(d["apiVersion"])]
    assert all(crd_schema_path(d["apiVersion"], d["kind"]).is_file() for d in custom)
    strimzi = {d["apiVersion"] for d in custom if d["apiVersion"].startswith("kafka.strimzi.io/")}
    assert strimzi == {"kafka.strimzi.io/v1"}


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("kafka.strimzi.io/v1", "KafkaConnect"),  # a real kind, but no schema here
        ("postgresql.cnpg.io/v1", "Backup"),
        ("apps/v1", "Frobnicator"),  # not a Kubernetes kind at all
    ],
)
def test_a_kind_without_a_schema_fails(api_version: str, kind: str) -> None:
    doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    problems = validate_document(doc)
    assert problems and "no schema for this kind" in problems[0].message


# (file under deploy/k8s/base, text to replace once, the misspelt field the errors must name)
MISSPELLINGS = [
    # core kind, strict schema
    ("workers/processor.yaml", "readinessProbe:", "readinesProbe"),
    ("workers/sink.yaml", "      automountServiceAccountToken:", "automountServiceAcountToken"),
    # custom kinds: unknown fields under spec (the CRD schemas' additionalProperties: false)
    ("kafka/users.yaml", "  authorization:", "authorisation"),
    ("kafka/kafka.yaml", "  entityOperator:", "entityOperater"),
    ("postgres/cluster.yaml", "  managed:", "managd"),
    ("workers/podmonitor.yaml", "    - port: health", "prot"),
    ("autoscaling/keda.yaml", "  minReplicaCount: 1", "minReplicaCont"),
    ("monitoring/alerts.yaml", "      interval: 30s", "intervall"),
    # core kinds added with the gateway and the network policies
    ("gateway/gateway.yaml", "  minReplicas: 2", "minReplica"),
    ("network/policies.yaml", "  policyTypes: [Ingress, Egress]", "policyType"),
    # custom kinds: metadata, which the CRD schemas leave unchecked (validated as ObjectMeta)
    ("postgres/cluster.yaml", "  labels:", "lables"),
]


def _misspell(text: str, old: str, field: str) -> str:
    assert old in text, f"{old!r} not found: update the test"
    key = old.strip().lstrip("- ").split(":")[0]
    return text.replace(old, old.replace(key, field), 1)


def _broken_copy(tmp_path: Path, relpath: str, old: str, field: str) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    target = copy / "base" / relpath
    target.write_text(_misspell(target.read_text(), old, field))
    return copy


@pytest.mark.parametrize(("relpath", "old", "field"), MISSPELLINGS)
def test_a_misspelt_field_in_a_copy_is_caught(
    tmp_path: Path, relpath: str, old: str, field: str
) -> None:
    copy = _broken_copy(tmp_path, relpath, old, field)
    problems = validate_documents(render(copy / "overlays" / "dev"))
    assert any(field in p.message for p in problems), problems


def test_an_unknown_top_level_field_is_caught_although_the_crd_schema_allows_it(
    tmp_path: Path,
) -> None:
    # Labels put beside metadata instead of under it: the CRD schema's top level has no
    # additionalProperties: false, so jsonschema alone accepts this document.
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    topics = copy / "base" / "kafka" / "topics.yaml"
    topics.write_text(topics.read_text().replace("\nspec:\n", "\nlables: {a: b}\nspec:\n", 1))
    docs = render(copy / "overlays" / "dev")
    broken = next(d for d in docs if "lables" in d)
    schema = json.loads(crd_schema_path(broken["apiVersion"], broken["kind"]).read_text())
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
    problems = validate_documents(docs)
    assert [p.document for p in problems] == [describe(broken)]
    assert "lables" in problems[0].message


def test_a_wrong_type_in_a_custom_resource_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    topics = copy / "base" / "kafka" / "topics.yaml"
    topics.write_text(topics.read_text().replace("partitions: 6", "partitions: six", 1))
    problems = validate_documents(render(copy / "overlays" / "prod"))
    assert any("spec.partitions" in p.message and "six" in p.message for p in problems)


def test_a_duplicate_resource_is_caught() -> None:
    docs = render_overlay("dev")
    problems = validate_documents((*docs, docs[0]))
    assert [p.message for p in problems] == ["defined twice"]


@pytest.mark.parametrize(("strategy", "ok"), [("WARN", True), ("abort", True), ("maybe", False)])
def test_go_regex_patterns_of_the_crd_schemas_apply(strategy: str, ok: bool) -> None:
    # The PrometheusRule schema's pattern `^(?i)(abort|warn)?$` is RE2 syntax that Python's
    # re rejects as written; k8s_render moves the inline flag so that it still applies.
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "partial_response_strategy": strategy, "rules": []}]},
    }
    problems = validate_document(doc)
    assert not problems if ok else any("partial_response_strategy" in str(p) for p in problems)
