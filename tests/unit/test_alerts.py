"""The alert rules (the PrometheusRule in deploy/k8s/base/monitoring/alerts.yaml) pass
Prometheus's own checks: `promtool check rules`, and `promtool test rules` with the cases in
tests/unit/alerts_test.yaml (input series, the alerts that must and must not fire). Every
rule names only metrics the code exports (deploy/metric_names.py) and has a runbook entry
in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.metric_names import known_names
from tests.unit.k8s_render import OVERLAYS, REPO, of_kind, render_overlay
from tests.unit.promql import metric_names

ALERTS = REPO / "deploy" / "k8s" / "base" / "monitoring" / "alerts.yaml"
CASES = Path(__file__).parent / "alerts_test.yaml"
OPERATIONS = REPO / "docs" / "operations.md"
REQUIRED = {
    "CqrsConsumerLagGrowing",
    "CqrsDeadLettersArriving",
    "CqrsWorkerDown",
    "CqrsTransactionAbortsRising",
    "CqrsSinkCheckpointStalled",
    "CqrsReadYourWritesTimeouts",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install prometheus (.ci/run does)"
    return path


def groups(rule: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rule = rule or yaml.safe_load(ALERTS.read_text())
    return rule["spec"]["groups"]


def rules() -> list[dict[str, Any]]:
    return [r for g in groups() for r in g["rules"]]


def run_promtool(tmp_path: Path, rule_groups: list[dict[str, Any]], *args: str) -> str:
    """Write the groups as a plain rules file beside the test cases and run promtool."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
    shutil.copy(CASES, tmp_path / CASES.name)
    proc = subprocess.run(
        [promtool(), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"promtool {' '.join(args)} failed:\n{output}")
    return output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_ships_the_rules(overlay: str) -> None:
    (rule,) = of_kind(render_overlay(overlay), "PrometheusRule")
    assert groups(rule) == groups()


def test_promtool_check_rules(tmp_path: Path) -> None:
    out = run_promtool(tmp_path, groups(), "check", "rules", "rules.yaml")
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_promtool_test_rules(tmp_path: Path) -> None:
    out = run_promtool(tmp_path, groups(), "test", "rules", CASES.name)
    assert "SUCCESS" in out


def test_every_required_alert_exists_and_has_test_cases() -> None:
    names = {r["alert"] for r in rules()}
    assert names >= REQUIRED
    cases = yaml.safe_load(CASES.read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == names and firing == names, (names - tested, names - firing)


def test_every_rule_names_only_metrics_the_code_exports() -> None:
    known = known_names()
    used: set[str] = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)
        used |= names
    assert {"cqrs_consumer_lag_records", "cqrs_dead_letters_total", "up"} <= used


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    headings = {
        m.group(1).strip()
        for m in re.finditer(r"^#+\s+(.+)$", OPERATIONS.read_text(), re.MULTILINE)
    }
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["alert"] in headings, f"docs/operations.md has no section {rule['alert']}"
        anchor = rule["annotations"]["runbook"]
        assert anchor == f"docs/operations.md#{rule['alert'].lower()}"


# --- the checks bite ---------------------------------------------------------------------------


def _mutated(alert: str, old: str, new: str) -> list[dict[str, Any]]:
    mutated = groups()
    (rule,) = [r for g in mutated for r in g["rules"] if r.get("alert") == alert]
    assert old in rule["expr"], f"{old!r} not in {alert}: update the test"
    rule["expr"] = rule["expr"].replace(old, new, 1)
    return mutated


@pytest.mark.parametrize(
    ("alert", "old", "new", "expect"),
    [
        # Without the `unless ... offset` half, the first dead letter of a type goes unseen.
        (
            "CqrsDeadLettersArriving",
            "cqrs_dead_letters_total unless cqrs_dead_letters_total offset 5m",
            "cqrs_dead_letters_total offset 1y",
            "CqrsDeadLettersArriving",
        ),
        # Without the marker discount, a caught-up sink looks stalled.
        (
            "CqrsSinkCheckpointStalled",
            'clamp_min(cqrs_consumer_lag_records{job="sink"} - 1, 0)',
            'cqrs_consumer_lag_records{job="sink"}',
            "CqrsSinkCheckpointStalled",
        ),
        # A threshold that is too high misses growing lag.
        ("CqrsConsumerLagGrowing", "> 100", "> 100000", "CqrsConsumerLagGrowing"),
    ],
)
def test_promtool_test_rules_fails_on_a_broken_rule(
    tmp_path: Path, alert: str, old: str, new: str, expect: str
) -> None:
    with pytest.raises(AssertionError) as err:
        run_promtool(tmp_path, _mutated(alert, old, new), "test", "rules", CASES.name)
    assert f"alertname: {expect}" in str(err.value)


def test_promtool_check_rules_fails_on_bad_promql(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"rules\.yaml"):
        run_promtool(
            tmp_path, _mutated("CqrsWorkerDown", "== 0", "== ="), "check", "rules", "rules.yaml"
        )
