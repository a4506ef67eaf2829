"""``bad_canary``: located config errors, preflight, the bad versions' real effect, and the ledger
round trip — a killed injector's record undone by ``rollback_pending`` in another process, and an
in-process inject/undo through a supervisor."""

from __future__ import annotations

import json
import signal
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from faults_helpers import start_python, wait_for_line

from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.canary import BadCanaryFault
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.ledger import rollback_pending
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.gamedays.actions import RecordingSupervisor


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faultdrill.target_service.models import train_digits
    from faultdrill.target_service.registry import ModelRegistry

    root = tmp_path_factory.mktemp("registry")
    model, metrics = train_digits(seed=0)
    ModelRegistry(root).publish("digits", model, {"kind": "digits"}, metrics, version="2")
    return root


def _topology(models: Path, url: str | None = None) -> Topology:
    canary = ServiceHandle(name="canary-0", role="replica", url=url, model_registry=models, model_name="digits",
                           model_version="2")  # fmt: skip
    stable = ServiceHandle(name="replica-0", role="replica", model_registry=models, model_name="digits",
                           model_version="1")  # fmt: skip
    return Topology(services={"canary-0": canary, "replica-0": stable})


def test_config_errors_are_located() -> None:
    fault = BadCanaryFault()
    with pytest.raises(ConfigError) as info:
        fault.parse_config({"mdoe": "slow"}, file="exp.yaml")
    assert info.value.suggestion == "mode" and "unknown key 'mdoe'" in str(info.value)
    with pytest.raises(ConfigError, match="mode"):
        fault.parse_config({"mode": "sluggish"})
    with pytest.raises(ConfigError, match="logit_scale"):
        fault.parse_config({"mode": "low_confidence", "logit_scale": 2})


def test_preflight_without_a_canary_or_supervisor_injects_nothing(tmp_path: Path, models: Path) -> None:
    fault = BadCanaryFault()
    only_stable = Topology(services={"replica-0": _topology(models).services["replica-0"]})
    ctx = FaultContext.create(tmp_path / "state", topology=only_stable, scope=Scope().with_paths(models))
    cfg = fault.parse_config({"mode": "erroring"})
    assert [p.code for p in fault.preflight(cfg, ctx)] == ["no_canary"]
    assert [p.code for p in fault.preflight(fault.parse_config({"target": "replica-0"}), ctx)] == ["no_canary"]
    ctx = FaultContext.create(tmp_path / "state", topology=_topology(models), scope=Scope())
    with pytest.raises(PreflightError) as info:
        fault.inject(cfg, ctx)
    assert {p.code for p in info.value.problems} == {"no_supervisor", "blast_radius"}
    assert ctx.ledger.pending() == [] and sorted(p.name for p in (models / "digits").iterdir()) == ["2"]


@pytest.mark.parametrize("mode", ["slow", "low_confidence", "erroring"])
def test_each_bad_version_has_its_real_effect(tmp_path: Path, models: Path, mode: str) -> None:
    from faultdrill.faults.canary_models import publish_bad_version
    from faultdrill.target_service.models import example_inputs
    from faultdrill.target_service.registry import ModelRegistry

    reg = ModelRegistry(models)
    publish_bad_version(models, "digits", "2", f"t-{mode}", mode, width=4096, logit_scale=0.15)
    try:
        x = torch.tensor(example_inputs(64))
        good = torch.softmax(reg.load("digits", "2", torch.device("cpu")).model(x), 1)
        bad_model = reg.load("digits", f"t-{mode}", torch.device("cpu")).model
        bad = torch.softmax(bad_model(x), 1)
        if mode == "slow":  # the same function in a 64x wider network
            assert torch.allclose(bad, good, atol=1e-5) and bad_model.net[0].out_features == 4096
        elif mode == "low_confidence":  # same predictions, flatter softmax
            assert torch.equal(bad.argmax(1), good.argmax(1))
            assert float(bad.max(1).values.mean()) < 0.6 < float(good.max(1).values.mean())
        else:
            assert torch.isnan(bad).all()
    finally:
        import shutil

        shutil.rmtree(models / "digits" / f"t-{mode}")


CHILD = """
import sys, time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.canary import BadCanaryFault
from faultdrill.faults.topology import Topology
from faultdrill.gamedays.actions import RecordingSupervisor
topo = Topology.model_validate_json(sys.argv[1])
ctx = FaultContext.create({state!r}, topology=topo, scope=Scope().with_paths({allowed!r}),
                          supervisor=RecordingSupervisor(topo))
fault = BadCanaryFault()
inj = fault.inject(fault.parse_config({{"mode": "low_confidence"}}), ctx)
print("injected", inj.id, flush=True)
time.sleep(120)
"""


def test_a_killed_injection_is_undone_by_rollback_pending_in_another_process(tmp_path: Path, models: Path) -> None:
    state = tmp_path / "state"
    code = CHILD.format(state=str(state), allowed=str(models))
    proc = start_python(code.replace("sys.argv[1]", repr(_topology(models).model_dump_json())))
    try:
        injection_id = wait_for_line(proc, "injected", timeout=60).split()[1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    records = FaultContext.create(state).ledger.pending()
    assert [r.id for r in records] == [injection_id]
    undo = records[0].undo
    assert (undo["prior_version"], undo["services"], undo["restarted"]) == ("2", ["canary-0"], True)
    bad_dir = Path(undo["version_dir"])
    assert (bad_dir / "manifest.json").is_file() and bad_dir.name == f"bad-{injection_id}"
    registry = FaultRegistry()
    registry.register(BadCanaryFault, source="tests")
    results = rollback_pending(registry, FaultContext.create(state))  # no platform left: the files only
    assert [r.outcome.value for r in results] == ["rolled_back"], results
    assert not bad_dir.exists() and (models / "digits" / "2" / "manifest.json").is_file()
    assert rollback_pending(registry, FaultContext.create(state)) == []


def test_inject_and_undo_through_a_supervisor(tmp_path: Path, models: Path, serve_http) -> None:  # type: ignore[no-untyped-def]
    class Replica(BaseHTTPRequestHandler):  # answers as a ready replica on the prior version
        def log_message(self, *_: object) -> None:
            return

        def do_GET(self) -> None:
            body = json.dumps({"ready": True, "model": {"name": "digits", "version": "2"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    topo = _topology(models, serve_http(Replica))
    sup = RecordingSupervisor(topo)
    ctx = FaultContext.create(tmp_path / "state", topology=topo, scope=Scope().with_paths(models), supervisor=sup)
    fault = BadCanaryFault()
    cfg = fault.parse_config({"mode": "erroring", "wait_s": 1})
    assert any("restart canary-0" in line for line in fault.plan(cfg, ctx))
    inj = fault.inject(cfg, ctx)
    bad = inj.undo["bad_version"]
    assert sup.calls == [("restart", "canary-0", {"FAULTDRILL_MODEL_VERSION": bad})]
    assert len(ctx.ledger.pending()) == 1 and (models / "digits" / bad).is_dir()
    verification = fault.verify(inj, ctx)  # the fake still serves "2": not effective, and says so
    assert verification.effective is False and verification.details["version_published"] is True
    fault.undo(inj, ctx)
    assert sup.calls[-1] == ("restart", "canary-0", {"FAULTDRILL_MODEL_VERSION": "2"})
    assert not (models / "digits" / bad).exists() and ctx.ledger.pending() == []
    fault.rollback(inj, ctx)  # idempotent
    assert not (models / "digits" / bad).exists()
