"""One replica's state: model loading, readiness, liveness, and the levers chaos pulls.

Readiness and liveness are decided here and nowhere else, so the misconfiguration profiles
(``readiness_ignores_model``, ``liveness_checks_dependency``) change exactly one place.

* liveness  = the process answers, its inference worker ticked within ``liveness_stall_s``, and the
  device can still compute (the deep-health compute check, ``health.py``; never GPU memory, never the
  dependency);
* readiness = model loaded and warmed up, not draining, not in OOM cool-down, and the compute check
  passes (the device computes, and computes the known answers right).

``shallow_health`` drops the compute check from both: the zombie's probes.

torch is imported only when the model is loaded (in a worker thread), so the HTTP port and
the probes answer while torch loads: readiness is false, liveness true.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> r = Replica(TargetSettings(), TargetMetrics(CollectorRegistry(), "digits"))
    >>> r.ready()
    False
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Misconfiguration, TargetSettings
from .metrics import TargetMetrics

if TYPE_CHECKING:
    from .batcher import InferenceEngine
    from .device import DeviceManager
    from .features import FeatureClient
    from .gpu_state import GpuState
    from .registry import ModelManifest

__all__ = ["LoadedState", "Replica"]

log = logging.getLogger("target")


@dataclass
class LoadedState:
    """What exists once the model is loaded; absent while loading."""

    manifest: ModelManifest
    device: DeviceManager
    engine: InferenceEngine
    input_width: int
    load_seconds: float


class Replica:
    """State of one target process. Created before the model loads."""

    def __init__(self, settings: TargetSettings, metrics: TargetMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.started_at = time.monotonic()
        self.loaded: LoadedState | None = None
        self.load_error: str | None = None
        self.draining = False
        self.features: FeatureClient | None = None
        self._leak: list[bytearray] = []
        self._leak_task: asyncio.Task[None] | None = None
        self._leak_lock = threading.Lock()
        self._shallow = settings.misconfigured(Misconfiguration.shallow_health)
        self.gpu: GpuState | None = None  # the GPU's own state, once the model is loaded
        for profile in settings.misconfigurations:
            metrics.misconfiguration.labels(profile=profile.value).set(1)

    # -- probes --------------------------------------------------------------------------
    def live(self) -> bool:
        if (
            self.settings.misconfigured(Misconfiguration.liveness_checks_dependency)
            and self.features is not None
            and self.settings.feature_store_url
            and not self.features.reachable
        ):
            return False
        if self.loaded is None:
            return True  # loading: the process answers, nothing is stuck yet
        engine = self.loaded.engine
        if engine.heartbeat_age() >= self.settings.liveness_stall_s:
            return False
        return self._shallow or engine.compute_failing != "compute_error"

    def ready(self) -> bool:
        if self.settings.misconfigured(Misconfiguration.readiness_ignores_model):
            return True
        if self.loaded is None or self.draining:
            return False
        engine = self.loaded.engine
        return not engine.oom_unready and (self._shallow or (engine.compute_failing is None and (
            not engine.checks_compute or engine.health_passed)))

    def readiness_reason(self) -> str:
        if self.loaded is None:
            return "model failed to load" if self.load_error else "model loading"
        if self.draining:
            return "draining"
        engine = self.loaded.engine
        if engine.oom_unready:
            return "device out of memory (cool-down)"
        if (failing := engine.compute_failing) is not None and engine.health_verdict is not None:
            what = "device cannot compute" if failing == "compute_error" else "wrong answers"
            return f"{what}: {engine.health_verdict.reason}" + (" (ignored: shallow_health)" if self._shallow else "")
        if engine.checks_compute and not engine.health_passed and not self._shallow:
            last = engine.health_verdict
            return "no compute check passed yet" + ("" if last is None else f" (last: {last.kind}: {last.reason})")
        return "ready"

    # -- loading -------------------------------------------------------------------------
    def load(self, loop: asyncio.AbstractEventLoop) -> LoadedState:
        """Load, warm up and start the model (blocking; run it in a thread)."""
        t0 = time.monotonic()
        import torch  # deferred: 2-3 s, and the probes must answer meanwhile

        from .batcher import BatchConfig, InferenceEngine, estimate_bytes_per_row
        from .device import DeviceManager
        from .gpu_faults import DeviceFaults
        from .gpu_state import GpuState
        from .health import ComputeCheck
        from .registry import ModelRegistry

        s = self.settings
        torch.set_num_threads(s.torch_threads)
        device = DeviceManager(s.device.value, s.emulated_device_memory_bytes)
        registry = ModelRegistry(s.model_registry)
        loaded = registry.load(s.model, s.model_version, device.device)
        model = loaded.model
        device.set_model_bytes(
            sum(p.numel() * p.element_size() for p in model.parameters())
        )
        width = int(loaded.manifest.inputs[0].shape[-1])
        gpu = GpuState(s.gpu_state_file)
        faults = DeviceFaults(model, emulated=device.emulated, gpu=gpu)
        if (needed := gpu.reset_required) is not None:  # the GPU, not the process, is broken: a new process too
            faults.poison(needed)
        faults.throttle(gpu.slowdown())
        self.gpu = gpu
        unbounded = s.misconfigured(Misconfiguration.unbounded_queue)
        engine = InferenceEngine(
            model,
            device,
            BatchConfig(
                max_batch_size=s.max_batch_size,
                max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
                max_queue_size=None if unbounded else s.max_queue_size,
                oom_window_s=s.oom_window_s,
                oom_unready_threshold=s.oom_unready_threshold,
                oom_recheck_s=s.oom_recheck_s,
                health_check_interval_s=s.health_check_interval_s,
                health_failure_threshold=s.health_failure_threshold,
            ),
            self.metrics,
            bytes_per_row=estimate_bytes_per_row(model),
            output="probabilities",
            faults=faults,
            health=ComputeCheck.for_model(registry.known_answers(s.model, loaded.manifest.version), width),
        )
        engine.warmup()
        if engine.checks_compute:  # the known answers, before any traffic: ready at once, or never with wrong ones
            engine.record_check()
        # Everything loaded so far (torch, the model) lives as long as the process: move it out
        # of the collector's reach so full collections under load stay short (tail latency).
        gc.collect()
        gc.freeze()
        engine.start(loop)
        manifest = loaded.manifest
        self.metrics.model_info.info(
            {
                "name": manifest.name,
                "version": manifest.version,
                "sha256": manifest.sha256,
                "accuracy": str(manifest.metrics.get("accuracy", "n/a")),
            }
        )
        self.metrics.device_info.info(
            {"device": device.kind, "name": device.name, "emulated": str(device.emulated).lower()}
        )
        self.metrics.emulated_device.set(1 if device.emulated else 0)
        state = LoadedState(manifest, device, engine, width, time.monotonic() - t0)
        self.loaded = state
        return state

    # -- gauges refreshed at scrape time -------------------------------------------------
    def refresh_gauges(self) -> None:
        m = self.metrics
        m.ready.set(1 if self.ready() else 0)
        m.live.set(1 if self.live() else 0)
        if self.loaded is None:
            return
        dev = self.loaded.device
        gpu = "0" if dev.kind == "cuda" else "emulated"
        used, total = dev.memory()
        m.gpu_memory_used.labels(gpu=gpu).set(used)
        m.gpu_memory_total.labels(gpu=gpu).set(total)
        util = dev.utilization() if not dev.emulated else self.loaded.engine.busy_ratio()
        if util is not None:
            m.gpu_utilization.labels(gpu=gpu).set(util)
        allocated, reserved = dev.torch_memory()
        m.torch_allocated.set(allocated)
        m.torch_reserved.set(reserved)

    def describe(self) -> dict[str, Any]:
        """Server metadata for ``GET /v2`` (OIP plus the device facts a game day needs)."""
        doc: dict[str, Any] = {
            "name": "faultdrill-target",
            "version": "0.1.0",
            "extensions": ["binary_tensor_data", "faultdrill_chaos_admin", "faultdrill_misconfiguration"],
            "ready": self.ready(),
            "live": self.live(),
            "readiness_reason": self.readiness_reason(),
            "misconfigurations": [p.value for p in self.settings.misconfigurations],
        }
        if self.loaded is not None:
            dev = self.loaded.device
            doc["device"] = {
                "kind": dev.kind,
                "name": dev.name,
                "emulated": dev.emulated,
                "label": f"{dev.kind} ({'emulated' if dev.emulated else 'real'})",
            }
            doc["model"] = {"name": self.loaded.manifest.name, "version": self.loaded.manifest.version}
        if self.features is not None:
            doc["dependency"] = {
                "feature_store": self.settings.feature_store_url,
                "breaker": self.features.breaker_state,
                "reachable": self.features.reachable,
                "last_error": self.features.last_error,
                "transitions": [{"at": at, "from": a, "to": b} for at, a, b in self.features.transitions],
            }
        return doc

    # -- host-memory leak lever (chaos admin) --------------------------------------------
    def start_leak(self, rate_bytes_s: int, max_bytes: int) -> None:
        self.stop_leak()
        self._leak_task = asyncio.get_running_loop().create_task(
            self._leak_loop(rate_bytes_s, max_bytes)
        )

    async def _leak_loop(self, rate_bytes_s: int, max_bytes: int) -> None:
        step = 0.1
        chunk = max(4096, int(rate_bytes_s * step))
        while self.leaked_bytes() + chunk <= max_bytes:
            block = bytearray(chunk)
            block[::4096] = b"\x01" * len(block[::4096])  # touch every page: resident, charged
            with self._leak_lock:
                self._leak.append(block)
            self.metrics.admin_leaked.set(self.leaked_bytes())
            await asyncio.sleep(step)

    def stop_leak(self, free: bool = True) -> int:
        if self._leak_task is not None:
            self._leak_task.cancel()
            self._leak_task = None
        if free:
            with self._leak_lock:
                self._leak.clear()
        self.metrics.admin_leaked.set(self.leaked_bytes())
        return self.leaked_bytes()

    def leaked_bytes(self) -> int:
        with self._leak_lock:
            return sum(len(b) for b in self._leak)
