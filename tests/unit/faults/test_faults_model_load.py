"""model_load_failure: bad configs, each mode for real against a LocalStack replica, crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults_helpers import child_env, start_python, wait_for_line

from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.ledger import rollback_pending
from faultdrill.faults.model_load import ModelLoadFailureFault
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.register(ModelLoadFailureFault, source="tests")
    return reg


def _offline_ctx(tmp_path: Path, scope: Scope | None = None) -> FaultContext:
    artifact = tmp_path / "models" / "digits" / "1" / "model.pt"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"weights")
    topo = Topology(services={"replica-0": ServiceHandle(
        name="replica-0", role="replica", model_registry=tmp_path / "models", model_name="digits", model_version="1"),
        "feature-store": ServiceHandle(name="feature-store", role="feature_store")})  # fmt: skip
    return FaultContext.create(tmp_path / "state", topology=topo,
                               scope=Scope().with_paths(tmp_path) if scope is None else scope)  # fmt: skip


def test_unknown_key_and_wrong_type_are_located() -> None:
    fault = ModelLoadFailureFault()
    with pytest.raises(ConfigError, match="did you mean 'flip_bytes'") as err:
        fault.parse_config({"target": "replica-0", "flip_byte": 3}, file="exp.yaml")
    assert str(err.value).startswith("exp.yaml: flip_byte: unknown key")
    with pytest.raises(ConfigError, match="flip_bytes"):
        fault.parse_config({"target": "replica-0", "flip_bytes": "many"})
    with pytest.raises(ConfigError, match="mode"):
        fault.parse_config({"target": "replica-0", "mode": "corupt"})


def test_unknown_or_wrong_role_target_injects_nothing(tmp_path: Path) -> None:
    ctx = _offline_ctx(tmp_path)
    fault = ModelLoadFailureFault()
    with pytest.raises(ConfigError, match="did you mean 'replica-0'"):
        fault.inject(fault.parse_config({"target": "replica-O"}), ctx)
    with pytest.raises(ConfigError, match="needs a replica"):
        fault.inject(fault.parse_config({"target": "feature-store"}), ctx)
    assert ctx.ledger.ids() == [] and (tmp_path / "models/digits/1/model.pt").read_bytes() == b"weights"


def test_out_of_scope_artifact_and_bad_version_without_supervisor_are_refused(tmp_path: Path) -> None:
    ctx = _offline_ctx(tmp_path, scope=Scope())
    fault = ModelLoadFailureFault()
    with pytest.raises(PreflightError, match="refused to touch path"):
        fault.inject(fault.parse_config({"target": "replica-0", "mode": "corrupt"}), ctx)
    problems = fault.preflight(fault.parse_config({"target": "replica-0", "mode": "bad_version",
                                                   "bad_version": "1"}), ctx)  # fmt: skip
    assert {p.code for p in problems} == {"no_supervisor", "version_exists"}
    assert ctx.ledger.ids() == [] and (tmp_path / "models/digits/1/model.pt").read_bytes() == b"weights"


def test_corrupt_without_supervisor_changes_only_the_file_and_restores_it(tmp_path: Path) -> None:
    ctx = _offline_ctx(tmp_path)
    artifact = tmp_path / "models/digits/1/model.pt"
    (artifact.parent / "manifest.json").write_text(json.dumps({"sha256": _sha(artifact)}))
    fault = ModelLoadFailureFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "corrupt", "flip_bytes": 3}), ctx)
    assert artifact.read_bytes() != b"weights" and fault.verify(inj, ctx).effective
    fault.undo(inj, ctx)
    assert artifact.read_bytes() == b"weights" and not fault.verify(inj, ctx).effective
    fault.rollback(inj, ctx)
    assert artifact.read_bytes() == b"weights"


# -- for real ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("model-stack"), replicas=1, with_proxy=False) as s:
        yield s


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["corrupt", "missing", "bad_version"])
def test_mode_fails_startup_and_rollback_recovers(stack: LocalStack, tmp_path: Path, mode: str) -> None:
    ctx = FaultContext.create(tmp_path / "state", scope=stack.scope(), topology=stack.topology(), supervisor=stack)
    assert stack.model_registry is not None
    artifact = stack.model_registry / "digits" / "1" / "model.pt"
    before = _sha(artifact)
    fault = ModelLoadFailureFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": mode})
    assert fault.preflight(cfg, ctx) == []
    inj = fault.inject(cfg, ctx)
    try:
        started = time.monotonic()
        v = fault.verify(inj, ctx)
        assert v.effective, v.details
        assert v.details["exit_code"] == 1 and v.details["ever_ready"] is False
        assert v.details["load_failed_logged"] is True
        if mode == "corrupt":
            assert v.details["checksum_failure_logged"] is True
        print(f"\nmodel_load_failure {mode}: inject->exit 1 observed {(time.monotonic() - started) * 1000:.0f} ms")
    finally:
        started = time.monotonic()
        fault.undo(inj, ctx)
    print(f"model_load_failure {mode}: rollback->ready {(time.monotonic() - started) * 1000:.0f} ms")
    assert _sha(artifact) == before
    url = stack.handle("replica-0").url
    assert httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    pid = stack.handle("replica-0").pid
    fault.rollback(inj, ctx)  # idempotent: ready already, no second restart
    assert stack.handle("replica-0").pid == pid and _sha(artifact) == before


@pytest.mark.slow
def test_bad_version_is_in_the_spec_a_plain_restart_does_not_repair_it_rollback_model_does(
    stack: LocalStack, tmp_path: Path
) -> None:
    """bad_version changes the replica's spec (``set_env``), as a Deployment's would be: a plain restart starts it
    on the bad version again; ``rollback-model`` writes a good version to the spec; the fault's rollback puts the
    original spec back and leaves the replica ready on its own version."""
    from faultdrill.gamedays.actions import ActionContext, parse_action, run_action

    ctx = FaultContext.create(tmp_path / "state", scope=stack.scope(), topology=stack.topology(), supervisor=stack)
    fault = ModelLoadFailureFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "bad_version"}), ctx)
    assert inj.undo["spec_previous"] == {"FAULTDRILL_MODEL_VERSION": None} and inj.undo["original_version"] == "1"
    assert ctx.ledger.get(inj.id).undo["spec_previous"] == {"FAULTDRILL_MODEL_VERSION": None}  # durable
    try:
        assert stack.wait_exit("replica-0", 60) == 1
        stack.restart("replica-0", wait=False)  # what a runbook's plain `restart $REPLICA` does
        assert stack.wait_exit("replica-0", 60) == 1, "a plain restart repaired a bad version in the spec"
        assert stack.handle("replica-0").model_version == "999999"
        said = run_action(parse_action("rollback-model replica-0"), ActionContext(stack, stack.topology))
        assert "version 1" in said and stack.handle("replica-0").model_version == "1"
        stack.restart("replica-0")  # the repair is in the spec too: a later plain restart keeps it
        assert stack.handle("replica-0").model_version == "1"
        url = stack.handle("replica-0").url
        assert httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    finally:
        fault.undo(inj, ctx)
    assert "FAULTDRILL_MODEL_VERSION" not in stack.service("replica-0").process.env  # the spec as it was
    assert stack.handle("replica-0").model_version == "1"
    assert httpx.get(f"{stack.handle('replica-0').url}/v2/health/ready", timeout=2).status_code == 200


def test_bad_version_after_a_crash_needs_no_supervisor_to_roll_back(tmp_path: Path, registry: FaultRegistry) -> None:
    """The spec lived in the platform's process, which died with the run (and its replicas): ``rollback --pending``
    has only the record, and nothing to restore."""
    ctx = _offline_ctx(tmp_path)
    fault = ModelLoadFailureFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "bad_version"})
    inj = fault.new_injection(cfg, ctx, mode="bad_version", target="replica-0", undo={
        "service": "replica-0", "url": None, "log_file": None, "log_offset": 0, "restarted": True, "wait_s": 60.0,
        "described": False, "version_dir": str(tmp_path / "models/digits/999999"), "original_version": "1",
        "spec_previous": {"FAULTDRILL_MODEL_VERSION": None}})  # fmt: skip
    ctx.ledger.write(inj.model_copy(update={"owner_pid": 2**22 + 1}))  # an owner that is gone
    results = rollback_pending(registry, FaultContext.create(tmp_path / "state"))
    assert [r.outcome.value for r in results] == ["rolled_back"], results


CHILD = """
import sys, time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.model_load import ModelLoadFailureFault
from faultdrill.faults.topology import Topology
topo = Topology.model_validate_json(sys.argv[1])
ctx = FaultContext.create({state!r}, topology=topo, scope=Scope().with_paths({allowed!r}))
fault = ModelLoadFailureFault()
inj = fault.inject(fault.parse_config({{"target": "replica-0", "mode": {mode!r}}}), ctx)
print("injected", inj.id, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["corrupt", "missing"])
def test_crash_then_rollback_pending_restores_the_artifact(
    stack: LocalStack, tmp_path: Path, registry: FaultRegistry, mode: str
) -> None:
    assert stack.model_registry is not None
    artifact = stack.model_registry / "digits" / "1" / "model.pt"
    before = _sha(artifact)
    state = tmp_path / "state"
    code = CHILD.format(state=str(state), allowed=str(stack.workdir), mode=mode)
    proc = start_python(code.replace("sys.argv[1]", repr(stack.topology().model_dump_json())))
    try:
        wait_for_line(proc, "injected")
        assert not artifact.exists() or _sha(artifact) != before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    results = rollback_pending(registry, FaultContext.create(state))
    assert [r.outcome.value for r in results] == ["rolled_back"], results
    assert _sha(artifact) == before  # on disk, not in the ledger
    assert rollback_pending(registry, FaultContext.create(state)) == []
    if mode == "missing":
        return  # one fresh start is enough to prove the restored artifact loads
    port = free_port()
    env = {**child_env(), "FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(stack.model_registry),
           "FAULTDRILL_FEATURE_STORE_URL": "https://127.0.0.1:9"}  # fmt: skip
    env.pop("FAULTDRILL_ADMIN_PORT", None)
    serve = subprocess.Popen([sys.executable, "-m", "faultdrill.target_service", "serve"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ready = False
        for _ in range(600):  # <= 60 s
            if serve.poll() is not None:
                break
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        assert ready, f"fresh serve not ready (rc={serve.poll()})"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(serve.pid, signal.SIGKILL)
            serve.wait(5)
