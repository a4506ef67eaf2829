"""The device manager: the emulated budget raises torch's own CUDA OOM; holds and releases."""

from __future__ import annotations

import pytest
import torch

from faultdrill.target_service.device import DeviceManager, module_bytes
from faultdrill.target_service.models import DigitsNet

MIB = 1 << 20

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="emulation runs without a GPU")


@needs_no_gpu
def test_auto_without_gpu_is_an_emulated_cpu() -> None:
    dev = DeviceManager("auto", emulated_budget_bytes=64 * MIB)
    assert (dev.kind, dev.emulated, dev.name, dev.device) == ("cpu", True, "cpu", torch.device("cpu"))
    assert dev.memory() == (0, 64 * MIB)
    assert dev.utilization() is None
    assert dev.describe() == {"device": "cpu", "name": "cpu", "emulated": "true",
                              "total_bytes": str(64 * MIB)}  # fmt: skip
    dev.close()
    dev.close()  # idempotent


@needs_no_gpu
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'cuda' requested"):
        DeviceManager("cuda")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        DeviceManager("tpu")


def test_reserve_raises_torchs_own_oom_with_a_cuda_like_message() -> None:
    dev = DeviceManager("cpu", emulated_budget_bytes=16 * MIB)
    dev.set_model_bytes(4 * MIB)
    with dev.reserve(10 * MIB):
        assert dev.memory()[0] == 14 * MIB  # in-flight activations count while they live
        with pytest.raises(torch.cuda.OutOfMemoryError) as err, dev.reserve(4 * MIB):
            pass  # pragma: no cover
    assert isinstance(err.value, RuntimeError)
    assert str(err.value).startswith("CUDA out of memory (emulated). Tried to allocate 4.00 MiB")
    assert dev.memory()[0] == 4 * MIB  # released on exit


def test_small_requests_take_a_whole_allocator_segment() -> None:
    dev = DeviceManager("cpu", emulated_budget_bytes=8 * MIB)
    dev.hold(7 * MIB)
    assert not dev.can_allocate(1024)  # 1 KiB still needs a 2 MiB segment
    with pytest.raises(torch.cuda.OutOfMemoryError), dev.reserve(1024):
        pass  # pragma: no cover
    dev.release(1 * MIB)
    assert dev.can_allocate(1024)
    with dev.reserve(1024):
        pass


def test_hold_leaving_ignores_activations_in_flight() -> None:
    """A hog taken during a forward pass must not leave that pass's memory for the next one."""
    dev = DeviceManager("cpu", emulated_budget_bytes=64 * MIB)
    dev.set_model_bytes(10 * MIB)
    with dev.reserve(8 * MIB):  # a forward pass is running while the hog strikes
        assert dev.hold_leaving(0) == 54 * MIB
        assert dev.memory() == (64 * MIB, 64 * MIB)  # reported within the device, as NVML would
    assert not dev.can_allocate(1024)  # ... and once it ends, the next pass has nothing
    with pytest.raises(torch.cuda.OutOfMemoryError), dev.reserve(1024):
        pass  # pragma: no cover
    dev.release()
    assert dev.hold_leaving(4 * MIB) == 50 * MIB  # leave 4 MiB: two 2 MiB segments fit, a third not
    with dev.reserve(4 * MIB):
        assert not dev.can_allocate(1)
    with pytest.raises(ValueError):
        dev.hold_leaving(-1)


def test_hold_and_release_accounting() -> None:
    dev = DeviceManager("cpu", emulated_budget_bytes=100 * MIB)
    dev.set_model_bytes(10 * MIB)
    assert dev.hold(30 * MIB) == 30 * MIB
    assert dev.hold(20 * MIB) == 50 * MIB
    assert dev.memory() == (60 * MIB, 100 * MIB)
    assert dev.torch_memory() == (60 * MIB, 60 * MIB)
    assert dev.can_allocate(40 * MIB) and not dev.can_allocate(41 * MIB)
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"Tried to allocate 41\.00 MiB"):
        dev.hold(41 * MIB)
    assert dev.held_bytes == 50 * MIB  # all or nothing
    assert dev.release(15 * MIB) == 35 * MIB
    assert dev.release(1000 * MIB) == 0
    dev.hold(5 * MIB)
    assert dev.release() == 0
    assert dev.memory()[0] == 10 * MIB
    with pytest.raises(ValueError):
        dev.hold(-1)


def test_module_bytes_counts_parameters_and_buffers() -> None:
    net = DigitsNet()
    assert module_bytes(net) == 4 * (64 * 64 + 64 + 64 * 10 + 10)
    net.register_buffer("scale", torch.ones(100))
    assert module_bytes(net) == 4 * (64 * 64 + 64 + 64 * 10 + 10 + 100)


def test_empty_cache_is_safe_when_emulated() -> None:
    dev = DeviceManager("cpu")
    dev.empty_cache()
    assert dev.memory() == (0, 512 * MIB)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu_hold_release_and_oom() -> None:  # pragma: no cover - GPU only
    dev = DeviceManager("auto")
    assert (dev.kind, dev.emulated) == ("cuda", False)
    used0, total = dev.memory()
    assert 0 < used0 < total
    assert dev.hold(300 * MIB) == 300 * MIB
    assert dev.torch_memory()[0] >= 300 * MIB
    assert dev.release(100 * MIB) == 200 * MIB
    assert dev.release() == 0
    assert dev.can_allocate(MIB)
    assert not dev.can_allocate(total * 2)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        dev.hold(total * 2)
    assert dev.held_bytes == 0
    util = dev.utilization()
    assert util is None or 0.0 <= util <= 1.0
    dev.close()
