"""Write base/monitoring/dashboard.json: the Grafana dashboard of the pipeline.

A pipeline overview on top, then one row per stage (processor, projector, sink, gateway),
each with its rate, latency quantiles, lag or backlog, and errors / dead letters; the panels
are in deploy/k8s/dashboard_panels.py, this module lays them out. tests/unit/test_dashboard.py
fails when this file and the JSON disagree. Run after changing a panel:

    .venv/bin/python deploy/k8s/render_dashboard.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deploy.k8s.dashboard_panels import ROWS, Panel

OUT = Path(__file__).parent / "base" / "monitoring" / "dashboard.json"
UID = "kafka-cqrs-pipeline"


def queries() -> list[str]:
    """Every panel's PromQL, in dashboard order (for checks against a running pipeline)."""
    return [expr for row in ROWS for panel in row.panels for expr, _ in panel.targets]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return {
        "uid": UID,
        "title": "kafka-cqrs pipeline",
        "description": "Is the pipeline keeping up, and where is it stuck? (docs/operations.md)",
        "tags": ["kafka-cqrs"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(up{job="processor"}, namespace)',
                        "refId": "namespace",
                    },
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
