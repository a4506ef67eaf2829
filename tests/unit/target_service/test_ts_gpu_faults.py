"""The device's faults beyond memory and the deep-health compute check, on the engine itself (real torch).

The HTTP-level effects (500s, probes, restarts) are in tests/unit/faults/test_faults_gpu_device.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from faultdrill.target_service.batcher import BatchConfig, EngineError, InferenceEngine, estimate_bytes_per_row
from faultdrill.target_service.device import DeviceManager
from faultdrill.target_service.gpu_faults import DeviceFaults
from faultdrill.target_service.gpu_state import STICKY_XID, GpuState
from faultdrill.target_service.health import ComputeCheck
from faultdrill.target_service.metrics import TargetMetrics
from faultdrill.target_service.models import DigitsNet


def _bits(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.contiguous().view(torch.uint8).numpy().tobytes() for k, v in model.state_dict().items()}


def _engine(health_interval_s: float = 0.05) -> tuple[InferenceEngine, torch.nn.Module]:
    torch.manual_seed(0)
    model = DigitsNet().eval()
    x = np.random.default_rng(0).random((16, 64), dtype=np.float32) * 16
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).double()
    check = ComputeCheck(x, classes=logits.argmax(1).numpy(), probs=torch.softmax(logits, 1).numpy(), atol=0.05)
    engine = InferenceEngine(model, DeviceManager("cpu"), BatchConfig(health_check_interval_s=health_interval_s),
                             TargetMetrics(CollectorRegistry(), "digits"), estimate_bytes_per_row(model),
                             health=check)  # fmt: skip
    return engine, model


def test_corruption_is_restored_bit_for_bit_whatever_the_mode() -> None:
    model = DigitsNet()
    loaded = _bits(model)
    faults = DeviceFaults(model, emulated=True)
    assert faults.layers() == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    hows = ({"mode": "bitflip", "count": 40, "bit": 30, "seed": 3}, {"mode": "bitflip", "bit": 31, "count": 5},
            {"mode": "scale", "factor": -1.0}, {"mode": "scale", "layer": "net.0.bias", "factor": 0.0})  # fmt: skip
    for how in hows:
        done = faults.corrupt(**how)  # type: ignore[arg-type]
        assert _bits(model) != loaded and not faults.weights_intact() and faults.corruption == done
        assert done["layer"] == how.get("layer", "net.2.weight")
        assert faults.restore() and _bits(model) == loaded and faults.corruption is None
    faults.corrupt("bitflip", count=3)
    faults.corrupt("scale", factor=2.0)  # a second corruption first restores the first: one rollback suffices
    assert faults.restore() and _bits(model) == loaded


def test_bad_corruptions_are_refused_and_change_nothing() -> None:
    model = DigitsNet()
    loaded = _bits(model)
    faults = DeviceFaults(model, emulated=True)
    with pytest.raises(ValueError, match=r"no floating-point parameter 'net\.7\.weight'; the model has net\.0\.weight"):
        faults.corrupt("bitflip", layer="net.7.weight")
    with pytest.raises(ValueError, match=r"bit must be in 0\.\.31"):
        faults.corrupt("bitflip", bit=40)
    with pytest.raises(ValueError, match="mode must be one of bitflip, scale"):
        faults.corrupt("zero")  # type: ignore[arg-type]
    assert _bits(model) == loaded and faults.weights_intact()


def test_a_poisoned_device_refuses_every_pass_until_the_process_ends() -> None:
    faults = DeviceFaults(DigitsNet(), emulated=True)
    faults.check()  # healthy: nothing raised
    message = faults.poison("test")
    assert "device-side assert triggered (emulated: test)" in message
    for _ in range(3):
        with pytest.raises(torch.AcceleratorError, match="device-side assert"):
            faults.check()
    assert faults.poison("again") == message and faults.state()["sticky_error"] == message  # no undo, no change


def test_the_sticky_error_records_its_xid_once_and_its_rollback_takes_only_that_back() -> None:
    gpu = GpuState(None)
    gpu.inject("DCGM_FI_DEV_XID_ERRORS", 92)  # an earlier event of another code stays
    since = time.time()
    faults = DeviceFaults(DigitsNet(), emulated=True, gpu=gpu)
    faults.poison("test", xid=STICKY_XID)
    faults.poison("again", xid=STICKY_XID)  # already poisoned: no second event
    doc = gpu.read()
    assert doc["xid_last"] == 43 and [e["xid"] for e in doc["xid_events"]] == [92, 43] and doc["reset_required"] is None
    assert gpu.forget_xid(STICKY_XID, since) == 1 and gpu.forget_xid(STICKY_XID, since) == 0
    doc = gpu.read()
    assert doc["xid_last"] == 92 and [e["xid"] for e in doc["xid_events"]] == [92]
    DeviceFaults(DigitsNet(), emulated=True, gpu=gpu).poison("an injected Xid poisons", xid=None)
    assert [e["xid"] for e in gpu.read()["xid_events"]] == [92]  # the cause records itself, not twice


def test_slowdown_factor_and_its_dead_man() -> None:
    faults = DeviceFaults(DigitsNet(), emulated=True)
    with pytest.raises(ValueError, match="factor is >= 1"):
        faults.slow(0.5)
    faults.slow(5.0, seconds=0.2)
    t0 = time.perf_counter()
    faults.after_forward(0.01)
    assert time.perf_counter() - t0 >= 0.04  # (5 - 1) x 10 ms held on top of the pass
    assert faults.factor == 5.0
    time.sleep(0.25)
    assert faults.factor == 1.0 and faults.state()["slowdown_factor"] == 1.0  # ended by itself


def test_compute_check_sees_wrong_answers_and_a_poisoned_device() -> None:
    engine, _ = _engine()
    assert engine.check_compute() == engine.health.judge(engine._forward(engine.health.inputs))  # type: ignore[union-attr]
    assert engine.check_compute().kind == "ok"  # type: ignore[union-attr]
    engine.faults.corrupt("scale", factor=-1.0)
    verdict = engine.check_compute()
    assert verdict is not None and verdict.kind == "wrong_answers"
    assert verdict.reason.endswith("of 16 known answers wrong")
    engine.faults.corrupt("bitflip", count=200)
    verdict = engine.check_compute()
    assert verdict is not None and "not finite" in verdict.reason
    engine.faults.restore()
    assert engine.check_compute().kind == "ok"  # type: ignore[union-attr]
    engine.faults.poison()
    verdict = engine.check_compute()
    assert verdict is not None and verdict.kind == "compute_error" and verdict.reason.startswith("AcceleratorError")


def test_the_worker_runs_the_check_and_failing_needs_the_threshold_in_a_row() -> None:
    async def scenario() -> None:
        engine, _ = _engine(health_interval_s=0.05)
        engine.warmup()
        engine.start(asyncio.get_running_loop())
        try:
            await asyncio.sleep(0.2)
            assert engine.health_verdict is not None and engine.health_verdict.kind == "ok"
            assert engine.compute_failing is None
            engine.faults.poison()
            for _ in range(100):
                if engine.compute_failing == "compute_error":
                    break
                await asyncio.sleep(0.02)
            assert engine.compute_failing == "compute_error" and engine._health_fails >= 2
            with pytest.raises(EngineError):  # requests fail too: the zombie
                await engine.infer(np.zeros((1, 64), np.float32), time.monotonic() + 5)
            checks = engine.metrics.registry.get_sample_value(
                "inference_compute_checks_total", {"model": "digits", "result": "compute_error"})  # fmt: skip
            assert checks is not None and checks >= 2
        finally:
            await engine.stop(1.0)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_busy_ratio_is_the_share_of_time_in_forward_passes() -> None:
    engine, _ = _engine(health_interval_s=0)
    x = np.zeros((32, 64), np.float32)
    engine.busy_ratio()
    time.sleep(1.0)
    idle = engine.busy_ratio()
    engine.faults.slow(200.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.1:
        engine._forward(x)
    busy = engine.busy_ratio()
    assert idle < 0.05 and busy > 0.9, (idle, busy)


def test_a_pass_longer_than_the_period_counts_in_each_period_it_spans() -> None:
    """A slow GPU's passes outlast the 1 s period: the one in flight counts up to the reading, the rest in the
    next, so a saturated device reads ~1 in every period (not 1 clamped from 1.4, then 0.6)."""
    engine, _ = _engine(health_interval_s=0)
    x = np.zeros((32, 64), np.float32)
    t0 = time.perf_counter()
    engine._forward(x)
    engine.faults.slow(max(2.0, 0.7 / max(time.perf_counter() - t0, 1e-5)))  # each pass now lasts ~0.7 s
    done = threading.Event()

    def saturate() -> None:
        while not done.is_set():
            engine._forward(x)

    worker = threading.Thread(target=saturate, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        engine.busy_ratio()
        readings = []
        for _ in range(4):
            time.sleep(1.0)
            readings.append(engine.busy_ratio())
    finally:
        done.set()
        engine.faults.slow(1.0)
        worker.join(5)
    assert min(readings) > 0.9, readings
