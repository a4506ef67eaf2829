"""Time scaling of rules and Alertmanager config (experiments.alerting.timescale)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultdrill.experiments.alerting import timescale
from faultdrill.experiments.alerting.timescale import (
    describe_scaling,
    format_duration,
    parse_duration,
    scale_alertmanager,
    scale_duration,
    scale_expr,
    scale_rules,
)

ALERTS_DIR = Path(__file__).resolve().parents[3] / "target_service" / "alerts"


def test_public_api_is_pinned() -> None:
    assert sorted(timescale.__all__) == [
        "ALERTMANAGER_DEFAULTS", "MIN_GROUP_WAIT_S", "describe_scaling", "format_duration", "parse_duration",
        "scale_alertmanager", "scale_duration", "scale_expr", "scale_rules",
    ]  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("0s", 0.0), ("500ms", 0.5), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0),
    ("1d", 86400.0), ("2w", 14 * 86400.0), ("1y", 365 * 86400.0), ("1h0m30s250ms", 3630.25),
])  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5m", "5M", "m", "30s1m", "-5m", "5 m", "1h 30m"])
def test_parse_duration_rejects_what_prometheus_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.5, "500ms"), (1, "1s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (86400 * 2 + 1, "2d1s"),
    (0.0004, "0s"), (0.0006, "1ms"),
])  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("text", "speedup", "minimum", "out"), [
    ("5m", 60, 0, "5s"), ("1h", 60, 0, "1m"), ("30s", 60, 0, "500ms"), ("6h", 60, 0, "6m"),
    ("1h30m", 60, 0, "1m30s"), ("30d", 60, 0, "12h"), ("1ms", 60, 0, "1ms"), ("0", 60, 0, "0s"),
    ("5m", 600, 4, "4s"), ("5m", 60, 4, "5s"), ("90s", 1, 0, "90s"), ("2s", 1, 4, "4s"), ("10m", 2.5, 0, "4m"),
])  # fmt: skip
def test_scale_duration(text: str, speedup: float, minimum: float, out: str) -> None:
    assert scale_duration(text, speedup, minimum_s=minimum) == out


@pytest.mark.parametrize("speedup", [0, -1, float("inf"), float("nan")])
def test_bad_speedup_is_refused(speedup: float) -> None:
    with pytest.raises(ValueError, match="speedup"):
        scale_duration("5m", speedup)


@pytest.mark.parametrize(("expr", "out"), [
    ("rate(x[5m])", "rate(x[5s])"),
    ("rate(x_bucket{le=\"0.5\"}[5m])", "rate(x_bucket{le=\"0.5\"}[5s])"),
    ('sum(rate(x{path=~"a[0-9]+"}[10m]))', 'sum(rate(x{path=~"a[0-9]+"}[10s]))'),
    ("max_over_time(rate(x[5m])[1h:5m])", "max_over_time(rate(x[5s])[1m:5s])"),
    ("max_over_time(x[1h:])", "max_over_time(x[1m:])"),
    ("x[ 10m : 1m ]", "x[ 10s : 1s ]"),
    ("x offset 5m", "x offset 5s"),
    ("rate(x[10m] OFFSET 1h)", "rate(x[10s] OFFSET 1m)"),
    ("x offset -1h", "x offset -1m"),
    ("rate(x[1m])", "rate(x[4s])"),  # clamped: 4 × scrape interval
    ("x[1h:30s]", "x[1m:500ms]"),  # a resolution is not clamped
    ("x{a='[5m]', b=`[1h]`, c=\"offset 5m\"}[2h]", "x{a='[5m]', b=`[1h]`, c=\"offset 5m\"}[2m]"),
    ('x{a="quote \\" [5m]"}[20m]', 'x{a="quote \\" [5m]"}[20s]'),
    ("x[10m] # rate(y[5m]) offset 5m\n + y[20m]", "x[10s] # rate(y[5m]) offset 5m\n + y[20s]"),
    ('foo{offset="1"} + sum by (offset) (z[20m])', 'foo{offset="1"} + sum by (offset) (z[20s])'),
    ("time() - cert_expiry > 14 * 86400", "time() - cert_expiry > 14 * 86400"),  # thresholds stay
    ("histogram_quantile(0.95, sum by (le) (rate(d_bucket[5m]))) > 2", "histogram_quantile(0.95, sum by (le) "
     "(rate(d_bucket[5s]))) > 2"),
])  # fmt: skip
def test_scale_expr(expr: str, out: str) -> None:
    assert scale_expr(expr, 60, min_range_s=4) == out


def test_scale_expr_leaves_an_unterminated_string_alone() -> None:
    assert scale_expr('x[10m] + y{a="[5m]', 60) == 'x[10s] + y{a="[5m]'


def _rules() -> dict[str, Any]:
    return {"groups": [
        {"name": "slo", "interval": "30s", "rules": [
            {"record": "job:errors:ratio_rate5m", "expr": "sum(rate(e[5m])) / sum(rate(r[5m]))"},
            {"alert": "Burn", "expr": "job:errors:ratio_rate5m > 14.4 * 0.001 and rate(e[1h]) > 0",
             "for": "2m", "keep_firing_for": "10m", "labels": {"severity": "critical", "window": "5m"},
             "annotations": {"summary": "burning over [1h] for 5m", "runbook_url": "runbooks/x.md"}},
            {"alert": "Instant", "expr": "up == 0", "for": "0s", "labels": {"severity": "warning"}},
        ]},
        {"name": "plain", "rules": [{"alert": "Down", "expr": "up == 0", "for": "5m"}]},
    ]}  # fmt: skip


def test_scale_rules_scales_durations_and_nothing_else() -> None:
    doc = _rules()
    out = scale_rules(doc, 60, min_range_s=4)
    slo, plain = out["groups"]
    assert slo["interval"] == "500ms"
    assert slo["rules"][0] == {"record": "job:errors:ratio_rate5m", "expr": "sum(rate(e[5s])) / sum(rate(r[5s]))"}
    burn = slo["rules"][1]
    assert burn["expr"] == "job:errors:ratio_rate5m > 14.4 * 0.001 and rate(e[1m]) > 0"
    assert (burn["for"], burn["keep_firing_for"]) == ("2s", "10s")
    assert burn["labels"] == {"severity": "critical", "window": "5m"}
    assert burn["annotations"]["summary"] == "burning over [1h] for 5m"
    assert slo["rules"][2]["for"] == "0s"
    assert "interval" not in plain and plain["rules"][0]["for"] == "5s"
    assert doc == _rules(), "the input must not be modified"


def test_speedup_one_is_an_identical_copy() -> None:
    doc = _rules()
    out = scale_rules(doc, 1, min_range_s=4)
    assert out == doc and out is not doc and out["groups"] is not doc["groups"]
    am = {"route": {"receiver": "chat"}, "receivers": [{"name": "chat"}]}
    assert scale_alertmanager(am, 1) == am


def test_scale_rules_names_a_bad_duration() -> None:
    with pytest.raises(ValueError, match=r"groups\[0\]\.rules\[0\]\.for: not a Prometheus duration: '5 min'"):
        scale_rules({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 min"}]}]}, 60,
                    min_range_s=4)  # fmt: skip


def test_scale_alertmanager_walks_the_route_tree_and_clamps() -> None:
    doc = {
        "route": {"receiver": "chat", "group_by": ["alertname"], "routes": [
            {"matchers": ['severity="critical"'], "receiver": "pager", "group_wait": "10s", "repeat_interval": "1h",
             "routes": [{"receiver": "pager", "group_interval": "10m"}]},
            {"matchers": ['severity="ticket"'], "receiver": "ticket"},
        ]},
        "receivers": [{"name": "chat"}, {"name": "pager"}, {"name": "ticket"}],
        "inhibit_rules": [{"source_matchers": ['severity="critical"'], "equal": ["alertname"]}],
    }  # fmt: skip
    out = scale_alertmanager(doc, 60)
    root = out["route"]
    # Root defaults are written out, then scaled (group_wait 30s -> 500ms is also the clamp).
    assert (root["group_wait"], root["group_interval"], root["repeat_interval"]) == ("500ms", "5s", "4m")
    pager = root["routes"][0]
    assert (pager["group_wait"], pager["repeat_interval"]) == ("500ms", "1m")  # 10s/60 clamped to 0.5s
    assert pager["routes"][0] == {"receiver": "pager", "group_interval": "10s"}
    assert root["routes"][1] == {"matchers": ['severity="ticket"'], "receiver": "ticket"}  # inherits
    assert out["global"] == {"resolve_timeout": "5s"}
    assert out["inhibit_rules"] == doc["inhibit_rules"] and out["receivers"] == doc["receivers"]
    assert "group_wait" not in doc["route"], "the input must not be modified"


def test_scale_alertmanager_keeps_global_settings() -> None:
    out = scale_alertmanager({"global": {"resolve_timeout": "10m", "smtp_from": "a@b"}, "route": {"receiver": "x"}}, 60)
    assert out["global"] == {"resolve_timeout": "10s", "smtp_from": "a@b"}


def test_describe_scaling() -> None:
    assert describe_scaling(1) == ["time scale: none (speedup 1: production durations)"]
    lines = describe_scaling(60, min_range_s=4)
    text = "\n".join(lines)
    assert lines[0] == "time scale: speedup 60× (one production minute = 1s in this run)"
    for word in ("for", "keep_firing_for", "offset", "group_wait", "repeat_interval", "resolve_timeout",
                 "at least 4s", "not scaled: thresholds"):  # fmt: skip
        assert word in text


def _promtool() -> str:
    return shutil.which("promtool") or "promtool"  # the tests carry @pytest.mark.tools("promtool")


@pytest.mark.tools("promtool")
def test_scaled_rules_still_pass_promtool(tmp_path: Path) -> None:
    tool = _promtool()
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(scale_rules(_rules(), 60, min_range_s=4)))
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.tools("promtool")
@pytest.mark.parametrize("speedup", [1, 60, 600])
def test_scaled_shipped_rules_pass_promtool(tmp_path: Path, speedup: float) -> None:
    shipped = ALERTS_DIR / "rules.yml"
    tool = _promtool()
    doc = yaml.safe_load(shipped.read_text())
    scaled = scale_rules(doc, speedup, min_range_s=4)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(scaled, sort_keys=False))
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    names = [r.get("alert") or r.get("record") for g in doc["groups"] for r in g["rules"]]
    assert names == [r.get("alert") or r.get("record") for g in scaled["groups"] for r in g["rules"]]


@pytest.mark.tools("amtool")
def test_scaled_shipped_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    shipped = ALERTS_DIR / "alertmanager.yml"
    tool = shutil.which("amtool") or "amtool"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(scale_alertmanager(yaml.safe_load(shipped.read_text()), 60), sort_keys=False))
    done = subprocess.run([tool, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
