"""A DCGM-compatible exporter for the local platform: each replica's GPU as dcgm-exporter shows it.

On Kubernetes, NVIDIA's dcgm-exporter (a DaemonSet) serves ``DCGM_FI_*`` fields per GPU, with the ``pod``,
``namespace`` and ``container`` of the pod using it; alert rules on Xids, ECC errors and clock events read them.
The local platform has no DCGM, so this collector serves the same names and labels, computed at scrape time:

* from each replica's **GPU state** (``target_service/gpu_state.py``: the file its emulated device keeps, which
  outlives the process) — the last Xid, volatile and aggregate ECC counts, clock-event reasons, temperature and
  power, and the Xid events of the last 5 minutes as ``DCGM_EXP_XID_ERRORS_COUNT{xid, window_size_in_ms}``
  (dcgm-exporter's own counter, which avoids the trap of ``DCGM_FI_DEV_XID_ERRORS``: it holds only the last
  code);
* and, where the machine has a GPU and ``pynvml``, from **NVML** (temperature, power, SM clock, utilisation,
  framebuffer, ECC totals, clock-event reasons): real values, with what a fault injected laid over them
  (injected Xids and ECC counts added, injected clock-event bits OR-ed in), as DCGM's injection does.

Labels as dcgm-exporter's: ``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname``, plus ``namespace``,
``pod``, ``container``. An emulated GPU's UUID is ``GPU-emulated-<replica>`` and its ``modelName``
``faultdrill emulated GPU``, so no one mistakes it for hardware.

Written by hand: dcgm-exporter needs DCGM's host engine and a GPU; this is the stand-in the rules are tested
against on a CPU machine (field names and ids from ``dcgm_fields.h``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faultdrill.experiments.observe.observers import ObserverContext
from faultdrill.target_service.gpu_state import GpuState, slowdown_of

__all__ = ["DCGM_SERIES", "XID_WINDOW_S", "DcgmCollector", "nvml_fields"]

XID_WINDOW_S = 300.0
"""``DCGM_EXP_XID_ERRORS_COUNT``'s window (dcgm-exporter's default: 5 minutes)."""
_EMULATED_SM_CLOCK_MHZ = 1410.0
_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "namespace", "pod", "container"]
_GAUGES = {
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "Total number of single-bit volatile ECC errors.",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "Total number of double-bit volatile ECC errors.",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": "Total number of single-bit persistent ECC errors.",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "Total number of double-bit persistent ECC errors.",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_SM_CLOCK": "SM frequency (in MHz).",
}

DCGM_SERIES = frozenset({*_GAUGES, "DCGM_EXP_XID_ERRORS_COUNT"})
"""Every series this exporter serves (the names dcgm-exporter gives them)."""


def nvml_fields(index: int = 0) -> dict[str, float] | None:
    """Real NVML values of GPU ``index`` under DCGM field names; None without a GPU or ``pynvml``."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        out: dict[str, float] = {
            "DCGM_FI_DEV_GPU_TEMP": float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "DCGM_FI_DEV_POWER_USAGE": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "DCGM_FI_DEV_SM_CLOCK": float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
        }
        with contextlib.suppress(Exception):
            out["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"] = float(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h))
        with contextlib.suppress(Exception):  # ECC off, or not supported by this board
            out["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] = float(pynvml.nvmlDeviceGetTotalEccErrors(
                h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC))  # fmt: skip
            out["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] = float(pynvml.nvmlDeviceGetTotalEccErrors(
                h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC))  # fmt: skip
        return out
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _fields(state: dict[str, Any], real: dict[str, float] | None) -> dict[str, float]:
    factor = slowdown_of(int(state.get("clocks_event_reasons") or 0))
    emulated = {
        "DCGM_FI_DEV_XID_ERRORS": float(state.get("xid_last") or 0),
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": float(state.get("ecc_sbe_vol") or 0),
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": float(state.get("ecc_dbe_vol") or 0),
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": float(state.get("ecc_sbe_agg") or 0),
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": float(state.get("ecc_dbe_agg") or 0),
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": float(state.get("clocks_event_reasons") or 0),
        "DCGM_FI_DEV_GPU_TEMP": float(state.get("temperature_c") or 0),
        "DCGM_FI_DEV_POWER_USAGE": float(state.get("power_w") or 0),
        "DCGM_FI_DEV_SM_CLOCK": _EMULATED_SM_CLOCK_MHZ / factor,
    }
    if real is None:
        return emulated
    merged = {**emulated, **{k: v for k, v in real.items() if k in _GAUGES}}
    merged["DCGM_FI_DEV_XID_ERRORS"] = emulated["DCGM_FI_DEV_XID_ERRORS"]  # NVML has no "last Xid": the injected
    for key in ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"):
        merged[key] = real.get(key, 0.0) + emulated[key]
    merged["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"] = float(int(real.get("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 0))
                                                       | int(emulated["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]))  # fmt: skip
    return merged


class DcgmCollector(Collector):
    """The ``DCGM_FI_*`` series of every replica's GPU (see the module docstring); registered beside the platform
    exporter's kube-state-metrics series, on the same endpoint."""

    def __init__(self, ctx: ObserverContext, namespace: str, *, container: str = "target",
                 xid_window_s: float = XID_WINDOW_S) -> None:  # fmt: skip
        self.ctx = ctx
        self.namespace = namespace
        self.container = container
        self.xid_window_s = xid_window_s
        """The Xid count's window: 5 minutes, divided by the run's alerting speedup (rules are time-scaled)."""
        self.hostname = socket.gethostname()
        self._has_nvml: bool | None = None  # looked up at the first scrape

    def _nvml(self) -> dict[str, float] | None:
        if self._has_nvml is False:
            return None
        real = nvml_fields()
        self._has_nvml = real is not None
        return real

    def collect(self) -> Iterator[Metric]:
        families = {name: GaugeMetricFamily(name, doc, labels=_LABELS) for name, doc in _GAUGES.items()}
        xids = GaugeMetricFamily("DCGM_EXP_XID_ERRORS_COUNT", "Count of XID Errors within user-specified time "
                                 "window (see xid-count-window-size param).",
                                 labels=[*_LABELS, "xid", "window_size_in_ms"])  # fmt: skip
        real = self._nvml()
        now = time.time()
        for handle in sorted(self.ctx.topology().by_role("replica"), key=lambda h: h.name):
            if handle.gpu_state_file is None:
                continue
            state = GpuState(handle.gpu_state_file).read()
            uuid = "GPU-emulated-" + handle.name if real is None else "GPU-0"
            model = "faultdrill emulated GPU" if real is None else "NVIDIA GPU"
            labels = ["0", uuid, "nvidia0", model, self.hostname, self.namespace, handle.name, self.container]
            for name, value in _fields(state, real).items():
                families[name].add_metric(labels, value)
            counts: dict[int, int] = {}
            for event in state.get("xid_events") or []:
                if isinstance(event, dict) and now - float(event.get("at", 0)) <= self.xid_window_s:
                    counts[int(event.get("xid", 0))] = counts.get(int(event.get("xid", 0)), 0) + 1
            for xid, n in sorted(counts.items()):
                xids.add_metric([*labels, str(xid), str(int(self.xid_window_s * 1000))], n)
        yield from families.values()
        yield xids
