"""faults.chaostoolkit: one inject/rollback action per registered fault, resolved by name, acting on the
target a state file describes (through the real control API, over a fake platform)."""

from __future__ import annotations

import inspect
import os
import signal
from pathlib import Path

import httpx
import pytest

import faultdrill.faults.chaostoolkit as ctk
from faultdrill.faults.base import FaultContext
from faultdrill.faults.chaostoolkit import (
    DEFAULT_STATE,
    RemoteSupervisor,
    RemoteSupervisorError,
    TargetState,
    fault_activities,
    read_state,
    state_path,
)
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import FaultRegistry


def _fake_registry() -> FaultRegistry:
    registry = FaultRegistry()
    registry.register(FakeFault, source="tests")
    return registry


def test_ctk_public_api_is_pinned():
    assert sorted(ctk.__all__) == ["DEFAULT_STATE", "RemoteSupervisor", "RemoteSupervisorError", "TargetState",
                                   "discover", "inject_fault", "read_state", "rollback_fault", "state_path",
                                   "write_state"]  # fmt: skip


def test_ctk_every_installed_fault_resolves_to_an_inject_and_a_rollback_action():
    for name in FaultRegistry.installed().names():
        inject, rollback = getattr(ctk, f"inject_{name}"), getattr(ctk, f"rollback_{name}")
        assert inject.__name__ == f"inject_{name}" and inject.__module__ == "faultdrill.faults.chaostoolkit"
        assert {"state", "configuration", "verify"} <= set(inspect.signature(inject).parameters)
        assert list(inspect.signature(rollback).parameters) == ["target", "injection_id", "state", "configuration"]
        assert f"inject_{name}" in dir(ctk)
    with pytest.raises(AttributeError, match="inject_no_such_fault"):
        ctk.inject_no_such_fault  # noqa: B018


def test_ctk_inject_signature_is_the_fault_config_required_first():
    params = inspect.signature(ctk.inject_oom_kill).parameters
    names = list(params)
    assert names[0] == "target" and params["target"].default is inspect.Parameter.empty
    assert params["rate_mib_s"].default == 200.0 and params["rate_mib_s"].annotation is float
    assert names[-3:] == ["verify", "state", "configuration"]


def test_ctk_chaos_toolkit_validates_activity_arguments_against_the_signature():
    from chaoslib.exceptions import InvalidActivity
    from chaoslib.provider.python import validate_python_activity

    good = {"type": "action", "name": "x", "provider": {"type": "python", "module": "faultdrill.faults.chaostoolkit",
            "func": "inject_oom_kill", "arguments": {"target": "replica-0", "mode": "leak"}}}  # fmt: skip
    validate_python_activity(good)
    bad = {**good, "provider": {**good["provider"], "arguments": {"target": "replica-0", "rate": 1}}}
    with pytest.raises(InvalidActivity, match="rate"):
        validate_python_activity(bad)


def test_ctk_state_path_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAULTDRILL_CTK_STATE", raising=False)
    assert state_path() == tmp_path / DEFAULT_STATE
    monkeypatch.setenv("FAULTDRILL_CTK_STATE", "env.json")
    assert state_path() == tmp_path / "env.json"
    assert state_path(configuration={"faultdrill_state": "conf.json"}) == tmp_path / "conf.json"
    assert state_path("arg.json", {"faultdrill_state": "conf.json"}) == tmp_path / "arg.json"


def test_ctk_no_target_says_how_to_start_one(tmp_path):
    with pytest.raises(ConfigError, match=r"no faultdrill target is up .*faultdrill_up"):
        read_state(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="no faultdrill target is up"):
        ctk.inject_fault("process_kill", target="replica-0", state=str(tmp_path / "none.json"))


def test_ctk_remote_supervisor_speaks_to_the_control_api(fake_target):
    sup = RemoteSupervisor(fake_target.state)
    assert sup.topology().get("replica-0").url == fake_target.platform.replica_url
    assert sup.scope().pids == frozenset({os.getpid()})
    assert sup.stop("replica-0", hold=True) == -15
    sup.kill("replica-0", signal.SIGSTOP)
    sup.restart("replica-0", env={"A": "1"}, wait=False)
    assert sup.wait_exit("replica-0", 2.5) == 0
    assert sup.exit_status("replica-0") is None
    assert sup.handle("replica-0").name == "replica-0"
    assert fake_target.platform.calls == [("stop", "replica-0", True), ("kill", "replica-0", int(signal.SIGSTOP)),
                                          ("restart", "replica-0", {"A": "1"}, False),
                                          ("wait_exit", "replica-0", 2.5)]  # fmt: skip
    with pytest.raises(RemoteSupervisorError, match="unknown service 'nowhere'"):
        sup.start("nowhere")


def test_ctk_control_api_needs_the_token(fake_target):
    url = fake_target.state.control_url
    assert httpx.get(f"{url}/topology").status_code == 401
    assert httpx.get(f"{url}/topology", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.post(f"{url}/supervisor", json={"op": "shutdown_everything"},
                   headers={"Authorization": f"Bearer {fake_target.token}"})  # fmt: skip
    assert r.status_code == 409 and "unknown supervisor call 'shutdown_everything'" in r.json()["error"]


def test_ctk_not_ready_target_is_refused(tmp_path):
    state = TargetState(status="failed", pid=1, owner_pid=1, state_dir=tmp_path, workdir=tmp_path, error="boom")
    with pytest.raises(ConfigError, match=r"not ready \(status failed: boom\)"):
        RemoteSupervisor(state)


def test_ctk_inject_then_rollback_through_the_ledger(fake_target, tmp_path):
    acts = fault_activities(_fake_registry())
    flag = tmp_path / "allowed" / "flag"
    flag.write_text("original\n")
    out = acts["inject_fake"](path=str(flag), content="broken\n", duration_s=30, state=str(fake_target.path))
    assert flag.read_text() == "broken\n"
    assert out["fault"] == "fake" and out["verified"]["effective"] is True
    ctx = FaultContext.create(fake_target.state.state_dir)
    assert [r.id for r in ctx.ledger.pending()] == [out["injection_id"]]
    done = acts["rollback_fake"](state=str(fake_target.path))
    assert done["rolled_back"] == [out["injection_id"]]
    assert flag.read_text() == "original\n" and ctx.ledger.pending() == []
    assert acts["rollback_fake"](state=str(fake_target.path))["rolled_back"] == []  # idempotent


def test_ctk_rollback_works_when_the_target_is_gone(fake_target, tmp_path):
    acts = fault_activities(_fake_registry())
    flag = tmp_path / "allowed" / "flag"
    out = acts["inject_fake"](path=str(flag), verify=False, state=str(fake_target.path))
    assert "verified" not in out and flag.exists()
    fake_target.path.unlink()  # the target stopped; the ledger is where it was ($FAULTDRILL_STATE_DIR)
    assert acts["rollback_fake"](injection_id=out["injection_id"], state=str(fake_target.path))["rolled_back"] == \
        [out["injection_id"]]  # fmt: skip
    assert not flag.exists()


def test_ctk_preflight_problems_refuse_before_anything_changes(fake_target, tmp_path):
    acts = fault_activities(_fake_registry())
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(PreflightError, match="blast_radius"):
        acts["inject_fake"](path=str(outside / "flag"), state=str(fake_target.path))
    assert not (outside / "flag").exists()
    assert FaultContext.create(fake_target.state.state_dir).ledger.pending() == []


def test_ctk_unknown_param_is_a_config_error_with_a_suggestion(fake_target):
    with pytest.raises(ConfigError, match="did you mean 'content'"):
        fault_activities(_fake_registry())["inject_fake"](path="/x", contents="y", state=str(fake_target.path))


def test_ctk_state_file_round_trip(tmp_path):
    state = TargetState(status="starting", pid=os.getpid(), owner_pid=1, state_dir=tmp_path, workdir=tmp_path)
    ctk.write_state(tmp_path / "s" / "t.json", state)
    assert read_state(tmp_path / "s" / "t.json") == state and state.alive() and not state.ready
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["t.json"]  # no temp file left
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable target state file"):
        read_state(Path(tmp_path / "bad.json"))
