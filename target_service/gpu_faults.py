"""GPU failures beyond memory, as the device suffers them: the sticky error, the slow GPU, the wrong GPU.

The chaos admin API (``admin.py``) pulls these levers; the inference worker (``batcher.py``) meets them on every
forward pass, the same way on a real GPU and on the CPU's emulated device:

* **sticky error** (the zombie): on CUDA a real device-side fault — an out-of-bounds index, caught by PyTorch's
  own device-side assert — poisons the process's CUDA context, and every later CUDA call fails with
  ``torch.AcceleratorError`` until the process exits; nothing in the process can undo it. Emulated, the device
  refuses every forward pass with the same exception and message shape, also until the process exits. The HTTP
  server, its probes and the worker thread keep running: only a health check that *computes* sees it. The
  driver logs an Xid 43 for it, which the GPU state records (``gpu_state.STICKY_XID``): that record outlives the
  process, so the Xid alert pages even when the deep probes restart the zombie before Prometheus scraped its
  counters.
* **slowdown** (throttling, clock slowdown, a co-tenant): every forward pass takes ``factor`` times as long — the
  worker is held busy for the extra time, so the replica's capacity falls by the same factor. Always emulated
  in-process (on CUDA too: real throttling needs clock limits or a co-tenant process, which the framework's
  ``gpu_slowdown`` fault starts from outside).
* **wrong output** (silent data corruption): bits flipped in, or a scale applied to, a layer's weights where
  they live — in device memory on CUDA — so answers are HTTP 200 and wrong. The changed elements' original
  values are kept and written back bit for bit on ``restore``; ``weights_intact`` compares a digest of every
  parameter with the one taken at load. Real on both devices: the weights are the model's own tensors.

Written by hand: no library injects faults into a torch model's own tensors or its CUDA context; PyTorch's
device-side assert is the trigger and ``torch.AcceleratorError`` the error.

Example::

    >>> from torch import nn
    >>> faults = DeviceFaults(nn.Linear(4, 2), emulated=True)
    >>> faults.corrupt("scale", factor=-1.0)["changed"]
    8
    >>> faults.weights_intact(), faults.restore(), faults.weights_intact()
    (False, True, True)
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from .gpu_state import GpuState

__all__ = ["CORRUPTIONS", "DeviceFaults", "sticky_device_error"]

CORRUPTIONS = ("bitflip", "scale")
_ILLEGAL = ("CUDA error: device-side assert triggered (emulated: {why}). CUDA kernel errors might be "
            "asynchronously reported at some other API call. The CUDA context is unusable until the process "
            "exits.")  # fmt: skip


def sticky_device_error(message: str) -> Exception:
    """The exception a poisoned CUDA context raises (``torch.AcceleratorError``, a ``RuntimeError``)."""
    cls = getattr(torch, "AcceleratorError", RuntimeError)
    return cls(message)


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _as_int(t: torch.Tensor) -> torch.Tensor:
    return t.view({torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
                   torch.float64: torch.int64}[t.dtype])  # fmt: skip


class DeviceFaults:
    """The device-fault state of one replica's model (thread-safe: the admin API sets, the worker reads)."""

    def __init__(self, model: nn.Module, *, emulated: bool, gpu: GpuState | None = None) -> None:
        self.model = model
        self.emulated = emulated
        self.gpu = gpu
        self._lock = threading.Lock()
        self._sticky: str | None = None
        self._sticky_at: float | None = None
        self._factor = 1.0
        self._factor_until: float | None = None
        self._throttle = 1.0
        self._saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (param, flat index, old values)
        self._corruption: dict[str, Any] | None = None
        self._digest = _digest(model)

    # -- the sticky error ----------------------------------------------------------------

    def poison(self, why: str = "out-of-bounds index in a kernel", *, xid: int | None = None) -> str:
        """Make the device unusable for the rest of the process's life; returns the error every call now gets.

        ``xid``: the Xid the driver logs for this fault (a device-side assert: 43, "GPU stopped processing"),
        recorded in the GPU state, which outlives the process: the page that survives a restart faster than a
        scrape (the compute-check counter dies with the process). None when the Xid is the cause, not the
        consequence (an injected Xid records itself)."""
        with self._lock:
            if self._sticky is not None:
                return self._sticky
        message = _ILLEGAL.format(why=why)
        if not self.emulated:
            message = self._real_device_assert()
        with self._lock:
            self._sticky, self._sticky_at = message, time.monotonic()
        if xid is not None and self.gpu is not None:
            self.gpu.inject("DCGM_FI_DEV_XID_ERRORS", xid)
        return message

    def _real_device_assert(self) -> str:
        """A real device-side fault on CUDA: an index past the end of a tensor trips PyTorch's device-side assert,
        which leaves the context poisoned (every later CUDA call raises)."""
        device = next(self.model.parameters()).device
        x = torch.zeros(1, device=device)
        bad = torch.tensor([1 << 20], device=device)
        try:
            x[bad] += 1  # index_put with an out-of-range index: the kernel asserts
            torch.cuda.synchronize(device)
        except RuntimeError as exc:
            return str(exc).splitlines()[0]
        raise RuntimeError("the out-of-bounds kernel did not fault: this CUDA build may not check indices")

    @property
    def sticky(self) -> str | None:
        return self._sticky

    def check(self) -> None:
        """Before a forward pass: the emulated poisoned context refuses it (a real one raises by itself)."""
        if self._sticky is not None and self.emulated:
            raise sticky_device_error(self._sticky)

    # -- the slow GPU ----------------------------------------------------------------------

    def slow(self, factor: float, seconds: float | None = None) -> float:
        """Every forward pass ``factor`` times as long; for ``seconds`` only when given (the dead-man: back to
        full speed then, whoever forgot to undo it)."""
        if not factor >= 1.0:
            raise ValueError(f"a slowdown factor is >= 1, got {factor}")
        self._factor = float(factor)
        self._factor_until = None if seconds is None else time.monotonic() + seconds
        return self._factor

    def throttle(self, factor: float) -> None:
        """The slowdown the GPU's clock-event reasons mean (``gpu_state.py``), on top of ``slow``'s."""
        self._throttle = max(1.0, float(factor))

    def refresh(self) -> None:
        """Read the GPU's state again (the worker does, every health interval): its clock-event reasons may have
        changed from outside the process (an injection's rollback, a reset)."""
        if self.gpu is not None:
            self.throttle(self.gpu.slowdown())

    @property
    def factor(self) -> float:
        if self._factor_until is not None and time.monotonic() >= self._factor_until:
            self._factor, self._factor_until = 1.0, None
        return self._factor * self._throttle

    def after_forward(self, elapsed_s: float) -> None:
        """Hold the worker ``(factor - 1) × elapsed`` longer: the pass took ``factor`` times as long."""
        factor = self.factor
        if factor > 1.0 and elapsed_s > 0:
            time.sleep((factor - 1.0) * elapsed_s)

    # -- the wrong GPU -----------------------------------------------------------------------

    def layers(self) -> list[str]:
        """Names of the floating-point parameters, in model order (``net.2.weight``)."""
        return [n for n, p in self.model.named_parameters() if p.is_floating_point()]

    def corrupt(self, mode: Literal["bitflip", "scale"], *, layer: str | None = None, count: int = 16, bit: int = 30,
                factor: float = -1.0, seed: int = 0) -> dict[str, Any]:  # fmt: skip
        """Corrupt one layer's parameter in place (``layer`` None: the last weight). ``bitflip`` flips ``bit`` of
        ``count`` elements chosen by ``seed``; ``scale`` multiplies every element by ``factor``. Corrupting again
        first restores, so a rollback always returns the weights as loaded."""
        if mode not in CORRUPTIONS:
            raise ValueError(f"mode must be one of {', '.join(CORRUPTIONS)}, got {mode!r}")
        params = dict(self.model.named_parameters())
        names = self.layers()
        name = layer if layer is not None else next(n for n in reversed(names) if n.endswith("weight"))
        if name not in params or name not in names:
            raise ValueError(f"no floating-point parameter {name!r}; the model has {', '.join(names)}")
        self.restore()
        p = params[name]
        flat = p.data.view(-1)
        with torch.no_grad(), self._lock:
            if mode == "bitflip":
                ints = _as_int(flat)
                width = ints.element_size() * 8
                if not 0 <= bit < width:
                    raise ValueError(f"bit must be in 0..{width - 1} for {p.dtype}, got {bit}")
                gen = torch.Generator().manual_seed(seed)
                index = torch.randperm(flat.numel(), generator=gen)[: max(1, min(count, flat.numel()))].to(p.device)
                self._saved.append((p, index, flat[index].clone()))
                mask = torch.tensor(1 << bit if bit < width - 1 else -(1 << bit), dtype=ints.dtype, device=p.device)
                ints[index] = ints[index] ^ mask
            else:
                index = torch.arange(flat.numel(), device=p.device)
                self._saved.append((p, index, flat.clone()))
                flat.mul_(factor)
            changed = int(index.numel())
            how = {"bit": bit, "seed": seed} if mode == "bitflip" else {"factor": factor}
            self._corruption = {"mode": mode, "layer": name, "changed": changed, "elements": flat.numel(), **how}
        return dict(self._corruption)

    def restore(self) -> bool:
        """Write every corrupted element back bit for bit; whether the weights now match the ones loaded."""
        with torch.no_grad(), self._lock:
            while self._saved:
                p, index, old = self._saved.pop()
                p.data.view(-1)[index] = old
            self._corruption = None
        return self.weights_intact()

    @property
    def corruption(self) -> dict[str, Any] | None:
        return None if self._corruption is None else dict(self._corruption)

    def weights_intact(self) -> bool:
        """Whether every parameter is bit for bit what was loaded (a digest of them all)."""
        return _digest(self.model) == self._digest

    def state(self) -> dict[str, Any]:
        try:
            intact: bool | None = self.weights_intact()
        except RuntimeError:  # a poisoned CUDA context cannot copy the weights out to digest them
            intact = None
        return {"sticky_error": self._sticky, "slowdown_factor": self.factor, "corruption": self.corruption,
                "weights_intact": intact}  # fmt: skip
