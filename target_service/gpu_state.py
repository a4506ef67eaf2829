"""The GPU's own state, which outlives the process that uses it: DCGM fields, Xid events, "reset required".

A GPU keeps what happened to it when the application restarts: its volatile ECC counters, its clock-event
reasons, the last Xid the driver logged — and, after an uncorrectable error or a fall off the bus, the need for
a reset (``nvidia-smi -r``) before any process can use it again. So the emulated device keeps this state in a
small JSON file per replica (``FAULTDRILL_GPU_STATE_FILE``, written by the local platform under its workdir:
its ``/dev/nvidiaN``), which the target reads when it starts and when a fault is injected, the DCGM-compatible
exporter reads at every scrape (``experiments/platforms/local/dcgm.py``), and ``reset-gpu`` clears.

Injection has the shape of NVIDIA's own (``dcgmi test --inject --gpuid 0 -f 230 -v 79``): a DCGM field (by id
or name) and a value. What it does to the application follows the Xid's class in NVIDIA's Xid catalog
(immediate action, Ampere and newer; ``XID_CATALOG``):

* ``RESTART_APP`` (13, 31, 43, 94, …): the application's CUDA context is lost — the process is poisoned (every
  forward pass fails, ``gpu_faults.py``); a new process works.
* ``RESET_GPU`` (48, 74, 79, 95, 119, …): the GPU itself is unusable until reset — the process is poisoned and
  so is every process started on it until ``reset-gpu`` (79: fallen off the bus).
* ``NONE`` (63, 92, …): logged and counted; the application carries on.

Clock-event reasons slow the device down (hardware slowdown, thermal or power brake: 4x; software power cap or
thermal: 2x), the way the clocks would. ``DCGM_FI_DEV_XID_ERRORS`` holds only the last code, as in DCGM (a
known trap: a 48 followed by a 13 reads 13), so the file also keeps every event; the exporter publishes their
count per code (``DCGM_EXP_XID_ERRORS_COUNT``, as dcgm-exporter's own Xid counter does).

Example::

    >>> state = GpuState(None)
    >>> state.inject("DCGM_FI_DEV_XID_ERRORS", 79).action
    'RESET_GPU'
    >>> state.reset_required
    'Xid 79 (GPU has fallen off the bus): reset the GPU'
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FIELDS", "STICKY_XID", "THROTTLE_BITS", "XID_CATALOG", "Effect", "GpuState", "XidClass", "field_id",
           "slowdown_of"]

Action = Literal["RESTART_APP", "RESET_GPU", "NONE"]


@dataclass(frozen=True)
class XidClass:
    mnemonic: str
    description: str
    action: Action


# The Xids the emulated device knows, with the immediate action of NVIDIA's Xid catalog (Ampere and newer).
XID_CATALOG: dict[int, XidClass] = {
    8: XidClass("ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", "RESTART_APP"),
    13: XidClass("ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", "RESTART_APP"),
    31: XidClass("ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", "RESTART_APP"),
    43: XidClass("ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", "RESTART_APP"),
    45: XidClass("ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "Preemptive cleanup, due to previous errors", "NONE"),
    48: XidClass("DBE (Double Bit Error) ECC Error", "An uncorrectable double bit ECC error", "RESET_GPU"),
    63: XidClass("ECC_PAGE_RETIREMENT_OR_ROW_REMAPPING", "A row was remapped (reset to activate)", "NONE"),
    64: XidClass("ECC_PAGE_RETIREMENT_OR_ROW_REMAP_FAILURE", "Row remapping failed", "RESET_GPU"),
    74: XidClass("NVLINK_ERROR", "NVLink error", "RESET_GPU"),
    79: XidClass("GPU_HAS_FALLEN_OFF_THE_BUS", "GPU has fallen off the bus", "RESET_GPU"),
    92: XidClass("EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", "NONE"),
    94: XidClass("ROBUST_CHANNEL_CONTAINED_ERROR", "Contained ECC error", "RESTART_APP"),
    95: XidClass("ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained ECC error", "RESET_GPU"),
    119: XidClass("GSP_RPC_TIMEOUT", "Timeout waiting for the GSP", "RESET_GPU"),
}

STICKY_XID = 43
"""The Xid the driver logs when a kernel's device-side assert kills a process's context (``NVRM: Xid (PCI:…): 43,
pid=…, name=pt_main_thread``; RESTART_APP). The sticky error (``gpu_faults.py``) records it here, where it outlives
the process, as the driver's log and DCGM keep it."""

# DCGM field ids (dcgm_fields.h) of what the emulated device reports and accepts.
FIELDS: dict[str, int] = {
    "DCGM_FI_DEV_SM_CLOCK": 100, "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 112, "DCGM_FI_DEV_GPU_TEMP": 150,
    "DCGM_FI_DEV_POWER_USAGE": 155, "DCGM_FI_DEV_GPU_UTIL": 203, "DCGM_FI_DEV_XID_ERRORS": 230,
    "DCGM_FI_DEV_FB_FREE": 251, "DCGM_FI_DEV_FB_USED": 252, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 310,
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 311, "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 312, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 313,
}  # fmt: skip
INJECTABLE = ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_GPU_TEMP",
              "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")  # fmt: skip
# DCGM_CLOCKS_EVENT_REASON_* bits and the slowdown each means for the emulated device.
THROTTLE_BITS: dict[str, tuple[int, float]] = {
    "GPU_IDLE": (0x1, 1.0), "CLOCKS_SETTING": (0x2, 1.0), "SW_POWER_CAP": (0x4, 2.0), "HW_SLOWDOWN": (0x8, 4.0),
    "SYNC_BOOST": (0x10, 1.0), "SW_THERMAL": (0x20, 2.0), "HW_THERMAL": (0x40, 4.0), "HW_POWER_BRAKE": (0x80, 4.0),
}  # fmt: skip
_DEFAULTS = {"xid_last": 0, "xid_events": [], "ecc_sbe_vol": 0, "ecc_dbe_vol": 0, "ecc_sbe_agg": 0, "ecc_dbe_agg": 0,
             "clocks_event_reasons": 0, "temperature_c": 45.0, "power_w": 70.0, "reset_required": None,
             "lost": False}  # fmt: skip
_MAX_EVENTS = 256


def slowdown_of(reasons: int) -> float:
    """The slowdown a clock-event reasons bitmask means: the largest of its bits' (1.0: full speed)."""
    return max([f for bit, f in THROTTLE_BITS.values() if reasons & bit] or [1.0])


def field_id(field: str | int) -> str:
    """A DCGM field given by name or id → its name among the injectable ones (``ValueError`` says which are)."""
    names = {v: k for k, v in FIELDS.items()}
    name = names.get(field) if isinstance(field, int) else str(field)
    if name not in INJECTABLE:
        known = ", ".join(f"{n} ({FIELDS[n]})" for n in INJECTABLE)
        raise ValueError(f"field {field!r} cannot be injected here; injectable: {known}")
    return name


@dataclass(frozen=True)
class Effect:
    """What an injection did to the application: ``poison`` (its context is lost) and why, a ``slowdown``."""

    field: str
    value: float
    action: Action
    poison: str | None = None
    slowdown: float = 1.0


class GpuState:
    """One GPU's state: in ``path`` (shared with the exporter and across restarts), or in memory (``None``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mem: dict[str, Any] = json.loads(json.dumps(_DEFAULTS))

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return json.loads(json.dumps(self._mem))
        with contextlib.suppress(FileNotFoundError):
            try:
                doc = json.loads(self.path.read_text())
            except ValueError:
                doc = {}  # a torn or hand-edited file reads as a healthy GPU, never a crash
            return {**_DEFAULTS, **(doc if isinstance(doc, dict) else {})}
        return json.loads(json.dumps(_DEFAULTS))

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is None:
            self._mem = json.loads(json.dumps(doc))
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gpu-state-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)  # atomic: the exporter never reads half a file

    @property
    def reset_required(self) -> str | None:
        return self.read().get("reset_required")

    def slowdown(self) -> float:
        """The slowdown the current clock-event reasons mean (the largest of their bits')."""
        return slowdown_of(int(self.read().get("clocks_event_reasons") or 0))

    def inject(self, field: str | int, value: float) -> Effect:
        """Set one field as DCGM injection does, with its effect on the GPU; returns the effect on the application."""
        name = field_id(field)
        with self._lock:
            doc = self.read()
            effect = Effect(name, float(value), "NONE")
            if name == "DCGM_FI_DEV_XID_ERRORS":
                xid = int(value)
                known = XID_CATALOG.get(xid, XidClass("UNKNOWN", "an Xid this catalog does not know", "RESET_GPU"))
                doc["xid_last"] = xid
                doc["xid_events"] = [*doc["xid_events"], {"xid": xid, "at": time.time()}][-_MAX_EVENTS:]
                if xid == 48:  # the DBE that Xid 48 reports
                    doc["ecc_dbe_vol"] += 1
                    doc["ecc_dbe_agg"] += 1
                why = f"Xid {xid} ({known.description})"
                if known.action == "RESET_GPU":
                    doc["reset_required"] = f"{why}: reset the GPU"
                    doc["lost"] = doc["lost"] or xid == 79
                effect = Effect(name, float(value), known.action,
                                poison=None if known.action == "NONE" else f"{why}, {known.mnemonic}")  # fmt: skip
            elif name == "DCGM_FI_DEV_CLOCKS_EVENT_REASONS":
                doc["clocks_event_reasons"] = int(value)
            elif name == "DCGM_FI_DEV_GPU_TEMP":
                doc["temperature_c"] = float(value)
            elif name == "DCGM_FI_DEV_POWER_USAGE":
                doc["power_w"] = float(value)
            else:  # ECC counters: an injected total; the aggregate (lifetime) count follows it up
                key = "ecc_dbe" if "DBE" in name else "ecc_sbe"
                rise = max(0, int(value) - int(doc[f"{key}_vol"]))
                doc[f"{key}_vol"], doc[f"{key}_agg"] = int(value), int(doc[f"{key}_agg"]) + rise
            self.write(doc)
        if name == "DCGM_FI_DEV_CLOCKS_EVENT_REASONS":
            effect = Effect(name, float(value), "NONE", slowdown=self.slowdown())
        return effect

    def reset(self) -> dict[str, Any]:
        """What ``nvidia-smi -r`` does: volatile counters, clock events and "reset required" cleared; the lifetime
        (aggregate) ECC counts and the event history stay. Returns the state before."""
        with self._lock:
            before = self.read()
            self.write({**before, "ecc_sbe_vol": 0, "ecc_dbe_vol": 0, "clocks_event_reasons": 0, "xid_last": 0,
                        "reset_required": None, "lost": False})  # fmt: skip
        return before

    def forget_xid(self, xid: int, since: float) -> int:
        """Remove the events of Xid ``xid`` logged at or after ``since`` (wall time), which a fault recorded and
        its rollback takes back (other events stay); ``xid_last`` falls back to the last event left. Returns how
        many were removed."""
        with self._lock:
            doc = self.read()
            events = [e for e in doc["xid_events"] if isinstance(e, dict)]
            kept = [e for e in events if not (e.get("xid") == xid and isinstance(e.get("at"), int | float)
                                              and e["at"] >= since)]  # fmt: skip
            if len(kept) == len(events):
                return 0
            last = int(kept[-1].get("xid") or 0) if kept else 0
            self.write({**doc, "xid_events": kept, "xid_last": last if doc["xid_last"] == xid else doc["xid_last"]})
            return len(events) - len(kept)

    def restore(self, doc: dict[str, Any]) -> None:
        """Put back a state read earlier (a fault's rollback)."""
        with self._lock:
            self.write({**_DEFAULTS, **doc})
