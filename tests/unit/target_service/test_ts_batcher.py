"""The inference engine: dynamic batching, backpressure, deadlines, OOM handling, freezes.

Real torch throughout; the emulated device budget drives the CUDA out-of-memory path.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from faultdrill.target_service.batcher import (
    BatchConfig,
    DeadlineExceeded,
    DeviceOutOfMemory,
    EngineStopped,
    InferenceEngine,
    QueueFull,
    estimate_bytes_per_row,
)
from faultdrill.target_service.device import DeviceManager
from faultdrill.target_service.metrics import TargetMetrics
from faultdrill.target_service.models import DigitsNet, HeavyNet, example_inputs

MIB = 1 << 20
LABELS = {"model": "digits"}


def make_engine(
    config: BatchConfig | None = None,
    *,
    budget: int = 512 * MIB,
    bytes_per_row: int | None = None,
    model: torch.nn.Module | None = None,
) -> tuple[InferenceEngine, DeviceManager, TargetMetrics, torch.nn.Module]:
    model = (model or DigitsNet()).eval()
    metrics = TargetMetrics(CollectorRegistry(), model="digits")
    device = DeviceManager("cpu", emulated_budget_bytes=budget)
    engine = InferenceEngine(
        model,
        device,
        config or BatchConfig(),
        metrics,
        bytes_per_row if bytes_per_row is not None else estimate_bytes_per_row(model),
    )
    return engine, device, metrics, model


def sample(metrics: TargetMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, LABELS) or 0.0


def expected(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def run(test: Callable[[], Awaitable[None]], limit_s: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(test(), limit_s))


async def wait_until(cond: Callable[[], bool], limit_s: float = 3.0) -> None:
    give_up = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > give_up:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def frozen_engine(engine: InferenceEngine) -> None:
    engine.start(asyncio.get_running_loop())
    engine.freeze(30)
    await wait_until(lambda: engine.is_frozen)


def test_results_are_the_models_logits() -> None:
    async def body() -> None:
        engine, _, _, model = make_engine()
        engine.warmup()
        engine.start(asyncio.get_running_loop())
        for rows in (1, 3, 40):
            x = example_inputs(rows, seed=rows)
            out = await engine.infer(x, soon())
            assert out.shape == (rows, 10) and out.dtype == np.float32
            np.testing.assert_allclose(out, expected(model, x), rtol=1e-5, atol=1e-6)
        await engine.stop(1.0)

    run(body)


def test_inference_runs_on_one_worker_thread_off_the_loop() -> None:
    threads: set[str] = set()

    class Recording(DigitsNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            threads.add(threading.current_thread().name)
            return super().forward(x)

    async def body() -> None:
        engine, *_ = make_engine(model=Recording())
        engine.start(asyncio.get_running_loop())
        await asyncio.gather(*(engine.infer(example_inputs(1), soon()) for _ in range(20)))
        await engine.stop(1.0)

    run(body)
    assert threads == {"inference-worker"}


def test_concurrent_requests_are_batched() -> None:
    async def body() -> None:
        config = BatchConfig(max_batch_size=8, max_queue_delay_s=0.05)
        engine, _, metrics, model = make_engine(config)
        engine.start(asyncio.get_running_loop())
        xs = [example_inputs(1, seed=i) for i in range(16)]
        outs = await asyncio.gather(*(engine.infer(x, soon()) for x in xs))
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_allclose(out, expected(model, x), rtol=1e-5, atol=1e-6)
        batches = sample(metrics, "inference_batch_size_count")
        assert sample(metrics, "inference_batch_size_sum") == 16
        assert batches <= 4  # 16 requests, 8 rows a batch: ideally 2
        assert sample(metrics, "inference_queue_duration_seconds_count") == 16
        assert sample(metrics, "inference_compute_duration_seconds_count") == batches
        await engine.stop(1.0)

    run(body)


def test_a_request_is_never_split_across_batches() -> None:
    async def body() -> None:
        config = BatchConfig(max_batch_size=8, max_queue_delay_s=0.01)
        engine, _, metrics, model = make_engine(config)
        await frozen_engine(engine)
        xs = [example_inputs(5, seed=i) for i in range(3)] + [example_inputs(20, seed=9)]
        tasks = [asyncio.create_task(engine.infer(x, soon())) for x in xs]
        await wait_until(lambda: engine.queue_depth == 4)
        engine.unfreeze()
        outs = await asyncio.gather(*tasks)
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_allclose(out, expected(model, x), rtol=1e-5, atol=1e-6)
        # 5+5 > 8, so every 5-row request runs alone; the 20-row one runs whole.
        assert sample(metrics, "inference_batch_size_count") == 4
        assert sample(metrics, "inference_batch_size_sum") == 35
        await engine.stop(1.0)

    run(body)


def test_queue_full_rejects_at_once_at_the_bound() -> None:
    async def body() -> None:
        engine, _, metrics, _ = make_engine(BatchConfig(max_queue_size=4))
        await frozen_engine(engine)
        tasks = [asyncio.create_task(engine.infer(example_inputs(1), soon())) for _ in range(4)]
        await wait_until(lambda: engine.queue_depth == 4)
        assert sample(metrics, "inference_pending_requests") == 4
        started = time.monotonic()
        with pytest.raises(QueueFull, match="4 requests waiting"):
            await engine.infer(example_inputs(1), soon())
        assert time.monotonic() - started < 0.1
        engine.unfreeze()
        outs = await asyncio.gather(*tasks)
        assert all(o.shape == (1, 10) for o in outs)
        assert sample(metrics, "inference_pending_requests") == 0
        await engine.stop(1.0)

    run(body)


def test_unbounded_queue_never_rejects() -> None:
    async def body() -> None:
        engine, *_ = make_engine(BatchConfig(max_queue_size=None))
        await frozen_engine(engine)
        tasks = [asyncio.create_task(engine.infer(example_inputs(1), soon())) for _ in range(600)]
        await wait_until(lambda: engine.queue_depth == 600)
        engine.unfreeze()
        outs = await asyncio.gather(*tasks)
        assert len(outs) == 600
        await engine.stop(1.0)

    run(body)


def test_deadline_expiry_while_queued_never_computes() -> None:
    async def body() -> None:
        engine, _, metrics, _ = make_engine()
        await frozen_engine(engine)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="while it was queued"):
            await engine.infer(example_inputs(2), time.monotonic() + 0.2)
        assert 0.15 < time.monotonic() - started < 1.0
        assert engine.queue_depth == 0
        with pytest.raises(DeadlineExceeded, match="before it was queued"):
            await engine.infer(example_inputs(1), time.monotonic() - 1)
        engine.unfreeze()
        await asyncio.sleep(0.2)
        assert sample(metrics, "inference_batch_size_count") == 0
        assert sample(metrics, "inference_compute_duration_seconds_count") == 0
        await engine.stop(1.0)

    run(body)


def test_emulated_oom_fails_with_device_out_of_memory() -> None:
    async def body() -> None:
        engine, device, metrics, _ = make_engine(budget=64 * MIB, bytes_per_row=MIB)
        engine.start(asyncio.get_running_loop())
        used, total = device.memory()
        device.hold(total - used)
        with pytest.raises(DeviceOutOfMemory, match="half batch size"):
            await engine.infer(example_inputs(1), soon())
        # The batch and its one-row retry both ran out of memory.
        assert sample(metrics, "inference_cuda_oom_total") == 2
        assert sample(metrics, "inference_oom_retries_total") == 1
        device.release()
        assert (await engine.infer(example_inputs(1), soon())).shape == (1, 10)
        await engine.stop(1.0)

    run(body)


def test_half_batch_retry_rescues_a_batch_that_fits_at_half_size() -> None:
    async def body() -> None:
        engine, device, metrics, model = make_engine(BatchConfig(max_batch_size=8), budget=64 * MIB, bytes_per_row=MIB)
        engine.start(asyncio.get_running_loop())
        used, total = device.memory()
        device.hold(total - used - 5 * MIB)  # 8 rows need 8 MiB; 4 rows fit
        x = example_inputs(8)
        out = await engine.infer(x, soon())
        np.testing.assert_allclose(out, expected(model, x), rtol=1e-5, atol=1e-6)
        assert sample(metrics, "inference_cuda_oom_total") == 1
        assert sample(metrics, "inference_oom_retries_total") == 1
        assert sample(metrics, "inference_compute_duration_seconds_count") == 2
        assert sample(metrics, "inference_batch_size_sum") == 8
        await engine.stop(1.0)

    run(body)


def test_rows_whose_retry_chunk_fails_again_fail_and_the_others_succeed() -> None:
    async def body() -> None:
        engine, device, metrics, model = make_engine(BatchConfig(max_batch_size=16), budget=64 * MIB, bytes_per_row=MIB)
        await frozen_engine(engine)
        used, total = device.memory()
        device.hold(total - used - 3 * MIB)  # 9 rows: chunks of 4 fail, the last row fits
        xs = [example_inputs(4, seed=1), example_inputs(4, seed=2), example_inputs(1, seed=3)]
        tasks = [asyncio.create_task(engine.infer(x, soon())) for x in xs]
        await wait_until(lambda: engine.queue_depth == 3)
        engine.unfreeze()
        results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], DeviceOutOfMemory)
        assert isinstance(results[1], DeviceOutOfMemory)
        np.testing.assert_allclose(results[2], expected(model, xs[2]), rtol=1e-5, atol=1e-6)
        assert sample(metrics, "inference_batch_size_count") == 1
        assert sample(metrics, "inference_cuda_oom_total") == 3  # the batch + two chunks
        assert sample(metrics, "inference_oom_retries_total") == 1
        await engine.stop(1.0)

    run(body)


def test_repeated_ooms_make_unready_until_memory_is_back() -> None:
    async def body() -> None:
        config = BatchConfig(oom_window_s=10, oom_unready_threshold=3, oom_recheck_s=0.05)
        engine, device, _, _ = make_engine(config, budget=64 * MIB, bytes_per_row=MIB)
        engine.start(asyncio.get_running_loop())
        used, total = device.memory()
        device.hold(total - used)
        for attempt in range(3):
            assert not engine.oom_unready, attempt
            with pytest.raises(DeviceOutOfMemory):
                await engine.infer(example_inputs(1), soon())
        assert engine.oom_unready
        await asyncio.sleep(0.3)  # several rechecks: memory is still held
        assert engine.oom_unready
        device.release()
        started = time.monotonic()
        await wait_until(lambda: not engine.oom_unready, limit_s=2.0)
        assert time.monotonic() - started < 1.0
        await engine.stop(1.0)

    run(body)


def test_ooms_outside_the_window_do_not_add_up() -> None:
    async def body() -> None:
        config = BatchConfig(oom_window_s=0.2, oom_unready_threshold=2, oom_recheck_s=0.05)
        engine, device, _, _ = make_engine(config, budget=64 * MIB, bytes_per_row=MIB)
        engine.start(asyncio.get_running_loop())
        device.hold(device.memory()[1] - device.memory()[0])
        for _ in range(2):
            with pytest.raises(DeviceOutOfMemory):
                await engine.infer(example_inputs(1), soon())
            assert not engine.oom_unready
            await asyncio.sleep(0.3)
        await engine.stop(1.0)

    run(body)


def test_freeze_stalls_the_heartbeat_and_unfreeze_recovers() -> None:
    async def body() -> None:
        engine, *_ = make_engine()
        engine.start(asyncio.get_running_loop())
        await asyncio.sleep(0.3)
        assert engine.heartbeat_age() < 0.25  # ticks while idle
        engine.freeze(30)
        await wait_until(lambda: engine.is_frozen)
        task = asyncio.create_task(engine.infer(example_inputs(1), soon(10)))
        await asyncio.sleep(1.2)
        assert engine.heartbeat_age() > 1.0
        assert not task.done() and engine.queue_depth == 1  # queued requests wait
        engine.unfreeze()
        assert (await asyncio.wait_for(task, 2.0)).shape == (1, 10)
        await wait_until(lambda: engine.heartbeat_age() < 0.25)
        assert not engine.is_frozen
        await engine.stop(1.0)

    run(body)


def test_a_timed_freeze_ends_by_itself() -> None:
    async def body() -> None:
        engine, *_ = make_engine()
        engine.start(asyncio.get_running_loop())
        engine.freeze(0.3)
        await wait_until(lambda: engine.is_frozen)
        await wait_until(lambda: not engine.is_frozen, limit_s=2.0)
        assert (await engine.infer(example_inputs(1), soon())).shape == (1, 10)
        await engine.stop(1.0)

    run(body)


def test_stop_drains_queued_work_then_refuses() -> None:
    async def body() -> None:
        engine, *_ = make_engine(BatchConfig(max_batch_size=4))
        await frozen_engine(engine)
        tasks = [asyncio.create_task(engine.infer(example_inputs(3), soon())) for _ in range(6)]
        await wait_until(lambda: engine.queue_depth == 6)
        engine.unfreeze()
        await engine.stop(5.0)
        assert all(t.result().shape == (3, 10) for t in tasks)
        with pytest.raises(EngineStopped):
            await engine.infer(example_inputs(1), soon())

    run(body)


def test_stop_of_a_stuck_worker_fails_what_is_left() -> None:
    async def body() -> None:
        engine, *_ = make_engine()
        await frozen_engine(engine)
        task = asyncio.create_task(engine.infer(example_inputs(1), soon()))
        await wait_until(lambda: engine.queue_depth == 1)
        started = time.monotonic()
        await engine.stop(0.2)
        assert time.monotonic() - started < 2.0
        with pytest.raises(EngineStopped):
            await task

    run(body)


def test_bad_input_and_not_started() -> None:
    async def body() -> None:
        engine, *_ = make_engine()
        with pytest.raises(EngineStopped):
            await engine.infer(example_inputs(1), soon())
        engine.start(asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="already started"):
            engine.start(asyncio.get_running_loop())
        for bad in (np.zeros((0, 64), np.float32), np.zeros(64, np.float32)):
            with pytest.raises(ValueError):
                await engine.infer(bad, soon())
        # float64 rows are converted, not rejected
        assert (await engine.infer(example_inputs(2).astype(np.float64), soon())).shape == (2, 10)
        await engine.stop(1.0)

    run(body)


def test_heavy_model_knobs_and_bytes_per_row() -> None:
    assert estimate_bytes_per_row(HeavyNet(1024, 2)) == 1024 * 4 * 4
    assert estimate_bytes_per_row(DigitsNet()) == 64 * 4 * 4

    async def body() -> None:
        model = HeavyNet(width=96, depth=3)
        engine, device, _, _ = make_engine(model=model)
        assert device.memory()[0] == sum(p.numel() * 4 for p in model.parameters())
        seconds = engine.warmup()
        assert 0 < seconds < 5
        engine.start(asyncio.get_running_loop())
        x = example_inputs(5)
        out = await engine.infer(x, soon())
        np.testing.assert_allclose(out, expected(model, x), rtol=1e-5, atol=1e-6)
        await engine.stop(1.0)

    run(body)
