"""gpu_sticky_error, gpu_slowdown, gpu_wrong_output and gpu_xid against a real LocalStack replica (emulated device).

Each is measured from outside, as a user sees it: inference answers, the probes' HTTP status, the target's own
metrics; and each is rolled back after a SIGKILL of the process that injected it, through the ledger.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_helpers import start_python, wait_for_line
from prometheus_client.parser import text_string_to_metric_families

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import ConfigError, InjectionError
from faultdrill.faults.gpu_slowdown import NO_CUDA_CO_TENANT, GpuSlowdownFault
from faultdrill.faults.gpu_sticky import GpuStickyErrorFault
from faultdrill.faults.gpu_wrong import GpuWrongOutputFault
from faultdrill.faults.gpu_xid import GpuXidFault
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.process import admin_request
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import Topology
from faultdrill.gamedays.actions import ActionContext, parse_action, run_action
from faultdrill.target_service.answers import read

pytestmark = pytest.mark.slow

CHILD = """
import time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.topology import Topology
from faultdrill.faults.registry import FaultRegistry
registry = FaultRegistry()
registry.load_entry_points()
topo = Topology.model_validate_json({topo!r})
scope = Scope(pids=frozenset({pids!r}), paths=frozenset({paths!r}))
ctx = FaultContext.create({state!r}, topology=topo, scope=scope)
fault = registry.get({name!r})()
inj = fault.inject(fault.parse_config({cfg!r}), ctx)
print("injected", inj.id, flush=True)
time.sleep(60)
"""


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("gdev"), with_proxy=False) as s:
        yield s


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    return FaultContext.create(tmp_path / "state", topology=stack.topology(), scope=stack.scope(), supervisor=stack)


def _fresh(ctx: FaultContext, stack: LocalStack) -> FaultContext:
    """The same run's context after a restart: the new process is in its scope, as a platform's would be."""
    return FaultContext.create(ctx.state_dir, topology=stack.topology(), scope=stack.scope(), supervisor=stack)


def _state(stack: LocalStack) -> dict[str, Any]:
    h = stack.handle("replica-0")
    assert h.admin_url is not None and h.admin_token_file is not None
    return admin_request(h.admin_url, h.admin_token_file, "GET", "/admin/state")


def _known(stack: LocalStack) -> tuple[dict[str, Any], list[int]]:
    """One request of the replica's known answers (every row) and the classes a correct model gives."""
    assert stack.model_registry is not None  # set once the stack is up
    ka = read(str(stack.model_registry / "digits" / "1" / "known_answers.json"))
    data = [v for a in ka.answers for v in a.inputs[0]["data"]]
    body = {"inputs": [{"name": "input", "shape": [len(ka.answers), 64], "datatype": "FP32", "data": data}]}
    return body, [c for a in ka.answers for c in (a.cls or ())]


def _infer(stack: LocalStack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.handle('replica-0').url}/v2/models/digits/infer", json=body, timeout=10)


def _probe(stack: LocalStack, which: str) -> int:
    try:
        return httpx.get(f"{stack.handle('replica-0').url}/v2/health/{which}", timeout=5).status_code
    except httpx.HTTPError:
        return 0  # not listening (yet): starting or stopped


def _until(check: Any, timeout: float = 15.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def _metric(stack: LocalStack, name: str, **labels: str) -> float:
    text = httpx.get(f"{stack.handle('replica-0').url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip


def test_bad_configs_are_located_and_inject_nothing(ctx: FaultContext, stack: LocalStack) -> None:
    with pytest.raises(ConfigError, match="did you mean 'factor'"):
        GpuSlowdownFault().parse_config({"target": "replica-0", "facter": 3})
    with pytest.raises(ConfigError, match=r"^factor: "):
        GpuSlowdownFault().parse_config({"target": "replica-0", "factor": 0.5})
    with pytest.raises(ConfigError, match=r"^mode: "):
        GpuWrongOutputFault().parse_config({"target": "replica-0", "mode": "flip"})
    with pytest.raises(ConfigError, match=r"^bit: "):
        GpuWrongOutputFault().parse_config({"target": "replica-0", "bit": 64})
    fault = GpuStickyErrorFault()
    with pytest.raises(ConfigError, match="did you mean 'replica-0'"):
        fault.inject(fault.parse_config({"target": "replica0"}), ctx)
    wrong = GpuWrongOutputFault()
    with pytest.raises(Exception, match=r"no floating-point parameter 'net\.9\.weight'"):
        wrong.inject(wrong.parse_config({"target": "replica-0", "layer": "net.9.weight"}), ctx)
    state = _state(stack)
    assert ctx.ledger.ids() == [] and state["weights_intact"] and state["sticky_error"] is None


@pytest.mark.skipif(_cuda(), reason="this host has a CUDA GPU")
def test_co_tenant_without_cuda_is_refused_by_preflight(ctx: FaultContext) -> None:
    fault = GpuSlowdownFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "co_tenant"})
    assert [(p.code, p.message) for p in fault.preflight(cfg, ctx)] == [("no_cuda", NO_CUDA_CO_TENANT)]
    assert "python -m faultdrill.faults.gpu_hog --device cuda:0 --compute 8192" in fault.plan(cfg, ctx)[0]
    with pytest.raises(InjectionError, match=r"GPU co-tenant failed: torch.cuda.is_available\(\) is False"):
        fault.inject(cfg, ctx)  # the hog checks for itself too, and is reaped
    assert ctx.ledger.ids() == [] and not list(ctx.state_dir.glob("gpu_hog-*"))


def test_sticky_error_makes_a_zombie_that_deep_probes_take_out_and_rollback_restarts(
        ctx: FaultContext, stack: LocalStack) -> None:  # fmt: skip
    body, _ = _known(stack)
    fault = GpuStickyErrorFault()
    cfg = fault.parse_config({"target": "replica-0", "duration_s": 30})
    assert fault.preflight(cfg, ctx) == [] and "/admin/device/sticky-error" in fault.plan(cfg, ctx)[0]
    before = stack.handle("replica-0").pid
    t0 = time.monotonic()
    inj = fault.inject(cfg, ctx)
    try:
        failed = _infer(stack, body)
        assert failed.status_code == 500 and failed.json()["error"].startswith("internal error"), failed.text
        result = fault.verify(inj, ctx)
        assert result.effective and result.emulated == inj.emulated == (not _cuda()), result
        assert "device-side assert" in result.details["sticky_error"]
        gpu = _state(stack)["gpu"]  # the Xid the driver logs for it, in the GPU state that outlives the process
        assert gpu["xid_last"] == 43 and gpu["xid_codes"] == [43] and not gpu["reset_required"]
        unready = _until(lambda: _probe(stack, "ready") == 503)  # two compute checks, a second apart
        dead = _until(lambda: _probe(stack, "live") == 503)
        assert _state(stack)["readiness_reason"].startswith("device cannot compute: AcceleratorError")
        assert _metric(stack, "inference_compute_checks_total", result="compute_error") >= 2
        assert _infer(stack, body).status_code == 500  # still poisoned: nothing in the process undoes it
    finally:
        t1 = time.monotonic()
        fault.undo(inj, ctx)
    assert stack.handle("replica-0").pid != before  # the repair is a new process
    _until(lambda: _probe(stack, "ready") == 200, 60)
    healthy = time.monotonic() - t1
    assert _infer(stack, body).status_code == 200 and _state(stack)["sticky_error"] is None
    assert _state(stack)["gpu"]["xid_codes"] == [] and _state(stack)["gpu"]["xid_last"] == 0  # record taken back
    print(f"\ngpu_sticky_error: inject->unready {unready:.2f} s, ->liveness 503 {dead:.2f} s "
          f"(from inject {time.monotonic() - t0:.1f} s incl. rollback), rollback->ready {healthy:.2f} s")
    assert not fault.verify(inj, ctx).effective
    fault.rollback(inj, ctx)  # idempotent: the poisoned process is gone


def test_wrong_output_answers_200_and_wrong_until_restored_bit_for_bit(ctx: FaultContext, stack: LocalStack) -> None:
    body, classes = _known(stack)
    assert _infer(stack, body).json()["parameters"]["predictions"] == classes  # a correct replica first
    for params in ({"mode": "bitflip", "count": 64}, {"mode": "scale", "factor": -1}):
        fault = GpuWrongOutputFault()
        cfg = fault.parse_config({"target": "replica-0", "duration_s": 30, **params})
        inj = fault.inject(cfg, ctx)
        try:
            reply = _infer(stack, body)
            assert reply.status_code == 200  # silent: the server has no idea
            doc = reply.json()
            wrong = sum(p != c for p, c in zip(doc["parameters"]["predictions"], classes, strict=True))
            flat = doc["outputs"][0]["data"]
            non_finite = sum(1 for v in flat if not isinstance(v, float) or not math.isfinite(v))
            assert wrong + non_finite >= len(classes) // 2, (params, wrong, non_finite)
            result = fault.verify(inj, ctx)
            assert result.effective and result.details["weights_intact"] is False
            unready = _until(lambda: _probe(stack, "ready") == 503)
            assert _probe(stack, "live") == 200  # out of rotation, not restarted: a person looks at the GPU
            assert "wrong answers" in _state(stack)["readiness_reason"]
        finally:
            t1 = time.monotonic()
            fault.undo(inj, ctx)
        assert _state(stack)["weights_intact"] is True  # bit for bit: the digest taken at load
        _until(lambda: _probe(stack, "ready") == 200)
        print(f"\ngpu_wrong_output {params['mode']}: {wrong} wrong + {non_finite} non-finite values; inject->unready "
              f"{unready:.2f} s, rollback->ready {time.monotonic() - t1:.2f} s")
        assert _infer(stack, body).json()["parameters"]["predictions"] == classes
        assert not fault.verify(inj, ctx).effective


def test_slowdown_multiplies_the_forward_pass_and_the_target_ends_it_by_itself(
        ctx: FaultContext, stack: LocalStack) -> None:  # fmt: skip
    body, _ = _known(stack)

    def per_pass(n: int = 30) -> float:
        s0 = _metric(stack, "inference_compute_duration_seconds_sum")
        c0 = _metric(stack, "inference_compute_duration_seconds_count")
        for _ in range(n):
            assert _infer(stack, body).status_code == 200  # nothing fails: it is only slow
        return (_metric(stack, "inference_compute_duration_seconds_sum") - s0) / (
            _metric(stack, "inference_compute_duration_seconds_count") - c0)

    fault = GpuSlowdownFault()
    baseline = per_pass()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "factor": 50, "duration_s": 4}), ctx)
    try:
        result = fault.verify(inj, ctx)
        assert result.effective and result.emulated and result.details["slowdown_factor"] == 50
        slowed = per_pass()
        assert slowed > 10 * baseline, (baseline, slowed)  # measured by the target itself, side by side
        assert _probe(stack, "ready") == 200 and _probe(stack, "live") == 200  # every check passes
        _until(lambda: _state(stack)["slowdown_factor"] == 1.0, 10)  # the target's own dead-man at the duration
    finally:
        fault.undo(inj, ctx)
    print(f"\ngpu_slowdown x50: forward pass {baseline * 1e3:.3f} ms -> {slowed * 1e3:.3f} ms "
          f"({slowed / baseline:.0f}x)")
    assert not fault.verify(inj, ctx).effective


def test_xid_effect_follows_its_class_restart_app_or_reset_gpu(ctx: FaultContext, stack: LocalStack) -> None:
    body, classes = _known(stack)
    fault = GpuXidFault()
    with pytest.raises(ConfigError, match="give either xid, or field and value"):
        fault.parse_config({"target": "replica-0"})
    with pytest.raises(ConfigError, match="cannot be injected here; injectable: DCGM_FI_DEV_XID_ERRORS"):
        fault.parse_config({"target": "replica-0", "field": "DCGM_FI_DEV_FB_FREE", "value": 1})
    assert "Graphics Engine Exception: RESTART_APP" in fault.plan(fault.parse_config(
        {"target": "replica-0", "xid": 13}), ctx)[0]  # fmt: skip
    # Xid 13: the application's context is lost; a new process on the same GPU is healthy.
    inj = fault.inject(fault.parse_config({"target": "replica-0", "xid": 13, "duration_s": 30}), ctx)
    try:
        assert _infer(stack, body).status_code == 500
        result = fault.verify(inj, ctx)
        assert result.effective and result.details["xid_last"] == 13 and result.details["reset_required"] is None
        stack.restart("replica-0")  # what the RESTART_APP class asks for
        assert _infer(stack, body).json()["parameters"]["predictions"] == classes
    finally:
        fault.undo(inj, ctx)
    # Xid 79: the GPU is gone until reset; restarting the application does not help, reset-gpu does.
    ctx = _fresh(ctx, stack)  # a new process: the run's scope follows it
    inj = fault.inject(fault.parse_config({"target": "replica-0", "xid": 79, "duration_s": 30}), ctx)
    try:
        assert "fallen off the bus" in str(fault.verify(inj, ctx).details["reset_required"])
        stack.restart("replica-0", wait=False)  # a new process cannot even warm its model up on this GPU
        assert stack.wait_exit("replica-0", 30) is not None
        assert "model load failed: CUDA error: device-side assert triggered (emulated: Xid 79" in (
            stack.workdir / "replica-0.log").read_text()  # fmt: skip
        said = run_action(parse_action("reset-gpu replica-0"), ActionContext(supervisor=stack, topology=stack.topology))
        assert said.startswith("drained and stopped replica-0, reset its GPU (Xid 79 (GPU has fallen off the bus)")
        assert _infer(stack, body).status_code == 200 and _state(stack)["gpu"]["reset_required"] is None
    finally:
        fault.undo(inj, ctx)
    # Clock events: hardware slowdown bits slow every pass down; the rollback gives the clocks back.
    ctx = _fresh(ctx, stack)
    inj = fault.inject(fault.parse_config({"target": "replica-0", "field": 112, "value": 0x48, "duration_s": 30}), ctx)
    try:
        assert fault.verify(inj, ctx).effective and _state(stack)["slowdown_factor"] == 4.0
        assert _infer(stack, body).status_code == 200  # slower, not failing
    finally:
        fault.undo(inj, ctx)
    _until(lambda: _state(stack)["slowdown_factor"] == 1.0, 5)  # the worker re-reads the GPU state each second
    assert _state(stack)["gpu"]["clocks_event_reasons"] == 0 and _probe(stack, "ready") == 200


@pytest.mark.parametrize("name, cfg", [
    ("gpu_sticky_error", {"target": "replica-0", "duration_s": 60}),
    ("gpu_xid", {"target": "replica-0", "xid": 79, "duration_s": 60}),
    ("gpu_wrong_output", {"target": "replica-0", "mode": "scale", "factor": -1, "duration_s": 60}),
    ("gpu_slowdown", {"target": "replica-0", "factor": 20, "duration_s": 60}),
])  # fmt: skip
def test_crash_mid_fault_then_rollback_pending(name: str, cfg: dict[str, Any], ctx: FaultContext,
                                               stack: LocalStack) -> None:  # fmt: skip
    body, classes = _known(stack)
    registry = FaultRegistry()
    registry.load_entry_points()
    topo = Topology(services={"replica-0": ctx.topology.get("replica-0")}).model_dump_json()
    before = stack.handle("replica-0").pid
    code = CHILD.format(topo=topo, state=str(ctx.state_dir), pids=sorted(ctx.scope.pids), name=name, cfg=cfg,
                        paths=sorted(str(p) for p in ctx.scope.paths))  # fmt: skip
    proc = start_python(code)
    try:
        wait_for_line(proc, "injected", timeout=30)
        state = _state(stack)
        assert state["sticky_error"] or state["weights_intact"] is False or state["slowdown_factor"] == 20, state
        if name == "gpu_xid":
            assert state["gpu"]["reset_required"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # From the ledger alone: no supervisor (the run that had one is dead too).
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir))
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    if name in ("gpu_sticky_error", "gpu_xid"):  # SIGTERM to the poisoned process; its platform restarts it
        stack.wait_exit("replica-0", 15)
        stack.start("replica-0")
        assert stack.handle("replica-0").pid != before
    state = _state(stack)
    assert (state["sticky_error"], state["weights_intact"], state["slowdown_factor"]) == (None, True, 1.0)
    assert state["gpu"]["reset_required"] is None and state["gpu"]["xid_last"] == 0  # the GPU state restored
    assert _infer(stack, body).json()["parameters"]["predictions"] == classes  # the system, not the ledger
    assert rollback_pending(registry, FaultContext.create(ctx.state_dir)) == []
