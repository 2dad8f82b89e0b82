"""The Grafana dashboard names only metrics the code exports (deploy/metric_names.py), has
the promised layout, is the one deploy/k8s/render_dashboard.py writes, and is provisioned
through a ConfigMap that Grafana's sidecar picks up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy.k8s import render_dashboard
from deploy.metric_names import EXTERNAL, exported_names, known_names
from tests.unit.k8s_render import OVERLAYS, of_kind, render_overlay
from tests.unit.promql import metric_names

STAGE_ROWS = {
    "Command processor": "processor",
    "Projector": "projector",
    "Postgres sink": "sink",
    "HTTP gateway": "gateway",
}


def load() -> dict[str, Any]:
    return json.loads(render_dashboard.OUT.read_text())


def rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels under it (panels follow their row in the flat list)."""
    found: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = found.setdefault(panel["title"], [])
        else:
            assert current is not None, f"panel {panel['title']!r} is above the first row"
            current.append(panel)
    return found


def expressions(panels: list[dict[str, Any]]) -> list[str]:
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def unknown_names(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Panel title -> the metric names its queries use that nothing exports."""
    known = known_names()
    bad = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            missing = metric_names(target["expr"]) - known
            if missing:
                bad.setdefault(panel["title"], set()).update(missing)
    return bad


def test_the_committed_dashboard_is_the_rendered_one() -> None:
    assert render_dashboard.OUT.read_text() == render_dashboard.render(), (
        "run .venv/bin/python deploy/k8s/render_dashboard.py"
    )


def test_every_query_names_only_metrics_the_code_exports() -> None:
    dashboard = load()
    assert not unknown_names(dashboard)
    assert expressions(dashboard["panels"]) == render_dashboard.queries()
    used = {n for e in expressions(dashboard["panels"]) for n in metric_names(e)}
    # The parse found the metrics, not nothing: every stage's own names are among them.
    assert {"cqrs_commands_total", "cqrs_sink_latency_seconds_bucket", "up"} <= used
    assert {"gateway_http_requests_total", "cqrs_projector_events_total"} <= used


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("cqrs_commands_total", "cqrs_commands"),  # a counter without its _total
        ("cqrs_sink_latency_seconds_bucket", "cqrs_sink_latency_seconds"),  # no _bucket
        ("cqrs_consumer_lag_records", "cqrs_consumer_lagg"),  # a typo
        ("gateway_http_requests_total", "gateway_http_requests"),
    ],
)
def test_a_name_the_code_does_not_export_is_caught(old: str, new: str) -> None:
    text = render_dashboard.OUT.read_text()
    assert old in text
    broken = json.loads(text.replace(old, new))
    bad = unknown_names(broken)
    assert bad and all(names == {new} for names in bad.values()), bad


def test_an_overview_on_top_then_one_row_per_stage() -> None:
    dashboard = load()
    found = rows(dashboard)
    assert list(found) == ["Pipeline overview", *STAGE_ROWS]
    for title, panels in found.items():
        assert len(panels) >= 4, title
        for panel in panels:
            assert panel["targets"] and panel["description"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("row", "role"), STAGE_ROWS.items())
def test_each_stage_row_shows_its_own_roles_metrics(row: str, role: str) -> None:
    exprs = expressions(rows(load())[row])
    names = {n for e in exprs for n in metric_names(e)}
    assert names <= exported_names([role]) | set(EXTERNAL), names - exported_names([role])
    # rate, latency quantiles, and errors: each stage row has all three kinds of query.
    assert any("rate(" in e for e in exprs)
    assert any(e.startswith("histogram_quantile(") for e in exprs)
    assert any(f'job="{role}"' in e for e in exprs)


def test_the_overview_covers_rate_latency_lag_dlq_and_health() -> None:
    names = {n for e in expressions(rows(load())["Pipeline overview"]) for n in metric_names(e)}
    assert {
        "cqrs_commands_total",
        "cqrs_sink_latency_seconds_bucket",
        "cqrs_consumer_lag_records",
        "cqrs_dead_letters_total",
        "up",
    } <= names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dashboard_is_provisioned_through_a_sidecar_config_map(overlay: str) -> None:
    maps = [
        m
        for m in of_kind(render_overlay(overlay), "ConfigMap")
        if m["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    (config_map,) = maps
    ((key, text),) = config_map["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == load()


# --- the PromQL parser itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le, route) (rate(a_bucket"
            '{namespace="$namespace", job="gateway"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        (
            'sum by (job) (up{job=~"a|b"}) == 0 and on(job) group_left(x) b_total offset 5m',
            {"up", "b_total"},
        ),
        ("sum(rate(x_total[5m:1m])) by (pod) > 1e3", {"x_total"}),
        ('{__name__="abc", a="{x} [y] (z)"}', {"abc"}),
        ("deriv(sum without (pod) (lag)[10m:1m]) > 0 unless bool absent(z)", {"lag", "z"}),
        ("max without(pod) (a) / ignoring(b) c", {"a", "c"}),
        ('topk(5, count_values("v", m)) * on() group_right vector(1)', {"m"}),
        ("sum(x) and inf > nan", {"x"}),
    ],
)
def test_the_promql_parser_finds_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
