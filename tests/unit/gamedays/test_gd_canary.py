"""The canary game day's plan and runbook: valid, executable against a real control API, and the
``gameday run --misconfig`` option (unknown profile → located error, exit 2, nothing started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.local.canary import CanaryController
from faultdrill.experiments.platforms.local.control import ControlServer
from faultdrill.experiments.platforms.local.split import PoolStats, TrafficSplit
from faultdrill.experiments.spec.canary import CanarySpec
from faultdrill.experiments.spec.rules import rules_path
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.gamedays.actions import ActionContext, ActionError, parse_action, run_action
from faultdrill.gamedays.gameday_run import run_gameday
from faultdrill.gamedays.plan import check_plan
from faultdrill.gamedays.runbook import parse_runbook
from faultdrill.gamedays.runbook_check import check_runbooks

ROOT = Path(__file__).resolve().parents[3]
PLAN = ROOT / "gamedays" / "plans" / "canary.yaml"
RUNBOOK = ROOT / "gamedays" / "runbooks" / "canary-rollback.md"


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.load_entry_points()
    return reg


def test_the_plan_is_valid_with_a_good_and_bad_canaries(registry: FaultRegistry) -> None:
    loaded, errors = check_plan(PLAN, registry)
    assert errors == [] and loaded is not None
    names = [name for name, _spec, _base in loaded.scenarios]
    assert names == ["good-canary-promoted", "erroring-canary-never-ready", "low-confidence-canary-rolled-back"]
    for _name, spec, _base in loaded.scenarios:
        assert spec.target.canary is not None and spec.target.canary.version == "2"
    modes = [f.params["mode"] for _n, spec, _b in loaded.scenarios for f in spec.faults]
    assert modes == ["erroring", "low_confidence"]


def test_the_runbook_passes_the_static_check() -> None:
    assert check_runbooks([RUNBOOK], rules_file=rules_path("default", spec_file=None)) == []
    book = parse_runbook(RUNBOOK)
    actions = [s.command.action.name for s in book.steps if s.command is not None and s.command.action is not None]
    assert actions == ["canary-status", "rollback-canary"]


def test_the_runbook_actions_drive_a_real_control_api(tmp_path: Path) -> None:
    tl, stopped = Timeline(), []
    ctl = CanaryController(CanarySpec(), TrafficSplit(10), PoolStats(), tl, canary_ready=lambda: True,
                           stop_canary=lambda: stopped.append(True))  # fmt: skip
    ctl.new_revision("3")
    server = ControlServer(ctl, tmp_path / "canary.token")
    server.start()
    try:
        topo = Topology(services={"canary-control": ServiceHandle(
            name="canary-control", role="other", url=server.url, admin_token_file=server.token_file)})  # fmt: skip
        ctx = ActionContext(supervisor=None, topology=lambda: topo)
        assert run_action(parse_action("canary-status"), ctx).startswith("canary phase progressing, weight 0 %")
        out = run_action(parse_action("rollback-canary"), ctx)
        assert out.startswith("rolled back the canary") and "weight 0 %" in out and stopped == [True]
        assert tl.select("canary")[-1].get("by") == "manual"
        assert run_action(parse_action("rollback-canary"), ctx).startswith("the canary was already rolled back")
        (tmp_path / "canary.token").write_text("wrong")
        with pytest.raises(ActionError, match="401"):
            run_action(parse_action("canary-status"), ctx)
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="unknown target 'canary-control'"):
        run_action(parse_action("canary-status"), ActionContext(supervisor=None, topology=Topology))


def test_an_unknown_misconfiguration_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        run_gameday(PLAN, out=tmp_path, misconfigurations=("no_canary_analisys",), plain=True)
    assert info.value.suggestion == "no_canary_analysis" and info.value.field == "--misconfig"
    assert list(tmp_path.iterdir()) == []
    cmd = [sys.executable, "-m", "faultdrill", "gameday", "run", str(PLAN), "--out", str(tmp_path),
           "--misconfig", "bogus"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "unknown misconfiguration 'bogus'" in result.stderr + result.stdout and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
