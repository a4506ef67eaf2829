"""The inference device: a real CUDA GPU, or the CPU with an emulated device-memory budget.

Without a GPU, the emulated budget drives the very code path a GPU would: a forward pass
that does not fit raises torch's own ``torch.cuda.OutOfMemoryError``, memory held through
the chaos API counts against the budget, and ``memory()`` reports the accounting the way
NVML reports a real GPU. On a GPU, allocations are real and NVML answers; NVML errors are
logged once and never crash the target.

Example::

    >>> dev = DeviceManager("cpu", emulated_budget_bytes=64 << 20)
    >>> dev.emulated, dev.kind
    (True, 'cpu')
    >>> dev.hold(60 << 20)
    62914560
    >>> dev.can_allocate(8 << 20)
    False
    >>> dev.release()
    0
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["DEFAULT_EMULATED_BUDGET", "DeviceManager", "module_bytes"]

log = logging.getLogger(__name__)

DEFAULT_EMULATED_BUDGET = 512 * 1024 * 1024
_MIB = 1024 * 1024
# The CUDA caching allocator hands out memory in segments of at least 2 MiB; rounding the
# emulated requests the same way keeps "a few MiB free" meaning the same thing on both.
_SEGMENT = 2 * _MIB
# Real holds are made of chunks, so a partial release frees real memory promptly.
_HOLD_CHUNK = 256 * _MIB


def module_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (what it occupies on the device)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _segments(nbytes: int) -> int:
    return max(_SEGMENT, -(-nbytes // _SEGMENT) * _SEGMENT) if nbytes > 0 else 0


def _mib(nbytes: int) -> str:
    return f"{nbytes / _MIB:.2f} MiB"


class DeviceManager:
    """Where the model runs, and the device-memory faults it can suffer.

    ``choice`` is ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"`` (an error
    without a GPU). Thread-safe: the inference worker reserves memory while the admin API
    holds and releases it.
    """

    def __init__(self, choice: str = "auto", emulated_budget_bytes: int = DEFAULT_EMULATED_BUDGET) -> None:
        choice = str(getattr(choice, "value", choice))  # accepts the config's DeviceChoice
        if choice not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {choice!r}")
        cuda = torch.cuda.is_available()
        if choice == "cuda" and not cuda:
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        if emulated_budget_bytes < 0:
            raise ValueError(f"emulated_budget_bytes must be >= 0, got {emulated_budget_bytes}")
        self.kind = "cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu"
        self.emulated = self.kind != "cuda"
        self.device = torch.device("cpu") if self.emulated else torch.device("cuda", torch.cuda.current_device())
        self.budget = emulated_budget_bytes
        self._lock = threading.Lock()
        self._model_bytes = 0
        self._held_bytes = 0  # emulated accounting, or the sum of the real chunks
        self._inflight = 0
        self._chunks: list[torch.Tensor] = []
        self._nvml: Any = None
        self._nvml_handle: Any = None
        self._nvml_failed = False
        self.name = "cpu"
        if not self.emulated:
            self.name = torch.cuda.get_device_name(self.device)
            self._init_nvml()

    # -- description -------------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        """Labels for an info metric: device, name, emulated, total bytes."""
        return {
            "device": self.kind,
            "name": self.name,
            "emulated": "true" if self.emulated else "false",
            "total_bytes": str(self.memory()[1]),
        }

    def set_model_bytes(self, nbytes: int) -> None:
        """What the loaded model occupies (counted against the emulated budget)."""
        with self._lock:
            self._model_bytes = max(0, int(nbytes))

    # -- forward passes ----------------------------------------------------------------

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Around a forward pass that needs ``nbytes`` of activations.

        Emulated: raises ``torch.cuda.OutOfMemoryError`` when model + held + in-flight +
        ``nbytes`` exceeds the budget. On cuda a no-op: the real allocations raise.
        """
        if not self.emulated:
            yield
            return
        need = _segments(nbytes)
        with self._lock:
            used = self._model_bytes + self._held_bytes + self._inflight
            if used + need > self.budget:
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory (emulated). Tried to allocate {_mib(need)}. "
                    f"GPU 0 has a total capacity of {_mib(self.budget)} of which "
                    f"{_mib(max(0, self.budget - used))} is free. Of the allocated memory "
                    f"{_mib(self._model_bytes)} is the model, {_mib(self._held_bytes)} is "
                    f"held by the chaos API and {_mib(self._inflight)} is in use by other "
                    "forward passes."
                )
            self._inflight += need
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= need

    def can_allocate(self, nbytes: int) -> bool:
        """Whether ``nbytes`` could be allocated now (a real trial allocation on cuda)."""
        if self.emulated:
            with self._lock:
                used = self._model_bytes + self._held_bytes + self._inflight
                return used + _segments(nbytes) <= self.budget
        ok = True
        probe: torch.Tensor | None = None
        try:
            probe = torch.empty(max(1, nbytes), dtype=torch.uint8, device=self.device)
        except torch.cuda.OutOfMemoryError:
            ok = False
        # Freed outside the except block: the traceback would keep the frame alive.
        del probe
        return ok

    # -- chaos: holding device memory ----------------------------------------------------

    def hold(self, nbytes: int) -> int:
        """Hold ``nbytes`` more device memory; returns the total held.

        All or nothing: raises ``torch.cuda.OutOfMemoryError`` (real or emulated) when it
        does not fit, holding nothing more.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if self.emulated:
            with self._lock:
                used = self._model_bytes + self._held_bytes + self._inflight
                if used + nbytes > self.budget:
                    raise torch.cuda.OutOfMemoryError(
                        f"CUDA out of memory (emulated). Tried to allocate {_mib(nbytes)}. "
                        f"GPU 0 has a total capacity of {_mib(self.budget)} of which "
                        f"{_mib(max(0, self.budget - used))} is free."
                    )
                self._held_bytes += nbytes
                return self._held_bytes
        new: list[torch.Tensor] = []
        failed = False
        remaining = nbytes
        try:
            while remaining > 0:
                size = min(_HOLD_CHUNK, remaining)
                new.append(torch.empty(size, dtype=torch.uint8, device=self.device))
                remaining -= size
        except torch.cuda.OutOfMemoryError:
            failed = True
        if failed:
            new.clear()
            torch.cuda.empty_cache()
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Could not hold {_mib(nbytes)} more on {self.name}.")
        with self._lock:
            self._chunks.extend(new)
            self._held_bytes += nbytes
            return self._held_bytes

    def hold_leaving(self, leave_bytes: int) -> int:
        """Hold device memory until only ``leave_bytes`` stay free *between* forward passes.

        What a hog does: memory that an in-flight forward pass is using now is free again
        a moment later, so a one-shot "total - used" would leave exactly that much for the
        next pass (and no OOM under light load). Emulated: the hold is computed against the
        model and what is held, not the in-flight activations, which keep the memory they
        already have. On cuda: what the driver has free plus what torch's caching allocator
        holds unused (our own allocations reuse it), less ``leave_bytes``. Returns the total held.
        """
        if leave_bytes < 0:
            raise ValueError(f"leave_bytes must be >= 0, got {leave_bytes}")
        if self.emulated:
            with self._lock:
                extra = max(0, self.budget - self._model_bytes - self._held_bytes - leave_bytes)
                self._held_bytes += extra
                return self._held_bytes
        used, total = self.memory()
        cached = max(0, int(torch.cuda.memory_reserved(self.device)) - int(torch.cuda.memory_allocated(self.device)))
        return self.hold(max(0, total - used + cached - leave_bytes))

    def release(self, nbytes: int | None = None) -> int:
        """Release ``nbytes`` of held memory (``None``: all); returns what is still held."""
        with self._lock:
            target = self._held_bytes if nbytes is None else min(max(0, nbytes), self._held_bytes)
            if self.emulated:
                self._held_bytes -= target
                return self._held_bytes
            freed = 0
            while self._chunks and freed < target:
                chunk = self._chunks.pop()
                size = chunk.numel()
                del chunk
                freed += size
            self._held_bytes -= freed
            if freed > target:
                # The last chunk was larger than asked: hold its remainder again.
                # The memory was just freed, so this allocation fits.
                self._chunks.append(torch.empty(freed - target, dtype=torch.uint8, device=self.device))
                self._held_bytes += freed - target
            held = self._held_bytes
        # Hand the cached blocks back to the driver so NVML (and the alerts) see it freed.
        torch.cuda.empty_cache()
        return held

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    # -- observations --------------------------------------------------------------------

    def memory(self) -> tuple[int, int]:
        """(used, total) device memory: NVML on a GPU, else the emulated accounting."""
        if self.emulated:
            with self._lock:  # a hold made during a forward pass may overlap it for a moment
                return min(self.budget, self._model_bytes + self._held_bytes + self._inflight), self.budget
        if self._nvml_handle is not None:
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(self._nvml_handle)
                return int(info.used), int(info.total)
            except Exception as exc:
                self._nvml_error("nvmlDeviceGetMemoryInfo", exc)
        free, total = torch.cuda.mem_get_info(self.device)
        return int(total - free), int(total)

    def utilization(self) -> float | None:
        """GPU utilisation 0..1 from NVML; ``None`` when emulated or NVML is unavailable."""
        if self.emulated or self._nvml_handle is None:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._nvml_handle).gpu) / 100
        except Exception as exc:
            self._nvml_error("nvmlDeviceGetUtilizationRates", exc)
            return None

    def torch_memory(self) -> tuple[int, int]:
        """(allocated, reserved) by torch on the device; emulated: the accounting."""
        if self.emulated:
            with self._lock:
                used = self._model_bytes + self._held_bytes + self._inflight
            return used, used
        return (
            int(torch.cuda.memory_allocated(self.device)),
            int(torch.cuda.memory_reserved(self.device)),
        )

    def empty_cache(self) -> None:
        """Return cached blocks to the driver (after an OOM); a no-op when emulated."""
        if not self.emulated:
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Release held memory and shut NVML down (idempotent)."""
        self.release()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.warning("nvmlShutdown failed: %s", exc)
            self._nvml = None
            self._nvml_handle = None

    # -- NVML --------------------------------------------------------------------------

    def _init_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:
            log.warning("NVML unavailable (%s): GPU utilisation will not be reported", exc)
            return
        self._nvml = pynvml
        try:
            # By UUID: CUDA_VISIBLE_DEVICES renumbers devices for torch but not for NVML.
            uuid = str(torch.cuda.get_device_properties(self.device).uuid)
            self._nvml_handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            try:
                self._nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
            except Exception as exc:
                self._nvml_error("nvmlDeviceGetHandle", exc)

    def _nvml_error(self, what: str, exc: Exception) -> None:
        # Logged once: a flapping driver must not flood the log at every scrape.
        if not self._nvml_failed:
            log.warning("%s failed (%s); falling back to torch's view of memory", what, exc)
            self._nvml_failed = True
