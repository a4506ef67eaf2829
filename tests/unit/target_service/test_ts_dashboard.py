"""The Grafana dashboard of the target: importable as is, and every query names real series."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "target_service" / "dashboards" / "target.json"

# The rules test owns the PromQL metric-name extraction and the set of known series; reuse both
# rather than keep a second copy in step (test modules are not a package: import by path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ts_alert_rules import known_metrics, metric_names  # noqa: E402

sys.path.pop(0)

# A panel per theme the issue names, found by title.
THEMES = {
    "latency": r"\blatency\b",
    "errors": r"\berror",
    "saturation": r"\bsaturation\b",
    "GPU": r"\bGPU\b",
    "breaker": r"\bbreaker\b",
    "restarts": r"\brestarts\b",
    "host memory": r"\bhost memory\b",
    "SLO burn rate": r"\bSLO burn rate\b",
    "certificates": r"\bcertificate\b",
    "firing alerts": r"\bfiring alerts\b",
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels() -> list[dict[str, Any]]:
    return [p for p in panels(dashboard()) if p["type"] != "row"]


def test_dashboard_is_an_importable_grafana_model() -> None:
    doc = dashboard()
    assert doc["title"] and doc["uid"] and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", doc["uid"])
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    assert doc["id"] is None, "an exported dashboard carries no database id"
    assert doc["panels"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    inputs = {i["name"] for i in doc.get("__inputs", [])}
    assert "DS_PROMETHEUS" in inputs or variables.get("datasource", {}).get("query") == "prometheus"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_uses_the_templated_datasource() -> None:
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("panel", query_panels(), ids=lambda p: p["title"])
def test_panel_has_a_title_and_queries_existing_series(panel: dict[str, Any]) -> None:
    assert panel["title"].strip()
    assert panel["targets"], f"{panel['title']}: no queries"
    for target in panel["targets"]:
        names = metric_names(target["expr"])
        assert names, f"{panel['title']}: {target['expr']!r} selects nothing"
        unknown = names - known_metrics()
        assert not unknown, f"{panel['title']}: no such metric {sorted(unknown)}"


@pytest.mark.parametrize(("theme", "pattern"), THEMES.items())
def test_a_panel_covers_each_theme(theme: str, pattern: str) -> None:
    titles = [p["title"] for p in query_panels()]
    assert any(re.search(pattern, title, re.IGNORECASE) for title in titles), f"no {theme} panel in {titles}"
