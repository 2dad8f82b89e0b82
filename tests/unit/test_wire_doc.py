"""docs/wire-format.md against the code: the fingerprints it gives for schemas with logical
types, the runtime's reason codes, and the dead-letter headers and error types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from schemas.catalog import default_catalog
from schemas.codec import CodecError
from schemas.wire import dead_letter

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "wire-format.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end]


def _has_logical_type(node: Any) -> bool:
    if isinstance(node, dict):
        return "logicalType" in node or any(map(_has_logical_type, node.values()))
    if isinstance(node, list):
        return any(map(_has_logical_type, node))
    return False


def test_the_doc_gives_the_fingerprint_of_every_schema_with_a_logical_type() -> None:
    block = DOC.split("<!-- logical-type-fingerprints:start -->")[1].split("<!-- ")[0]
    documented = set(re.findall(r"\| `([\w.]+)` \| v(\d+) \| `([0-9a-f]{16})` \|", block))
    expected = {
        (e.name, str(e.version), e.fingerprint_hex)
        for e in default_catalog()
        if _has_logical_type(e.schema)
    }
    assert documented == expected


def _runtime_reasons() -> set[str]:
    """The reason codes the processor itself writes, read from its source."""
    found: set[str] = set()
    for name in ("command_handler.py", "outputs.py"):
        source = (ROOT / "processors" / name).read_text(encoding="utf-8")
        found |= set(re.findall(r'_reject\(msg, "(\w+)"', source))
        found |= set(re.findall(r'Decided\(msg, agg, (?:REJECTED|CONFLICT), "(\w+)"', source))
        found |= set(re.findall(r'OutputRefused\(\s*"(\w+)"', source))
        found |= set(re.findall(r'retract\(decided, "(\w+)"', source))
    return found


def test_every_runtime_reason_code_is_documented_and_no_other() -> None:
    reasons = _runtime_reasons()
    assert {"wrong_partition", "too_large", "invalid_output", "version_conflict"} <= reasons
    table = _section("Results and reason codes").split("| reason |")[1].split("\n\n")[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    assert documented == reasons


def test_every_dead_letter_header_and_error_type_is_documented() -> None:
    section = _section("Dead letters")
    headers = {
        value
        for name, value in vars(dead_letter).items()
        if name.isupper()
        and isinstance(value, str)
        and value.startswith("dlq_")
        and value != "dlq_"
    }
    assert headers == set(re.findall(r"^\| `(dlq_\w+)` \|", section, re.MULTILINE))
    documented_types = set(re.findall(r"`([A-Z]\w+)`", section))
    assert set(dead_letter.ERROR_TYPES) <= documented_types
    # The codec's own errors are the error types of undecodable values.
    codec_errors = {c.__name__ for c in CodecError.__subclasses__()} - {"EncodeError"}
    assert codec_errors <= set(dead_letter.ERROR_TYPES)
