"""Dynamic batching with backpressure, deadlines and out-of-memory handling.

Requests wait in a bounded queue; ONE worker thread (inference off the event loop: torch
releases the GIL inside its ops) takes up to ``max_batch_size`` rows, waiting at most
``max_queue_delay_s`` after the first request for the batch to fill (Triton's dynamic
batcher). A full queue rejects at once (``QueueFull``: the server answers 503/429 with
``Retry-After``) instead of letting latency grow without bound; a request whose deadline
passes while queued is dropped, never computed.

Out of memory, the same path for a real GPU and the emulated budget: the batch's
``torch.cuda.OutOfMemoryError`` is counted, references are dropped *outside* the except
block (the traceback would keep the activations alive), the cache is emptied and the batch
is retried once in chunks of half its rows; rows whose chunk fails again get
``DeviceOutOfMemory`` (507). Repeated OOMs in a window make ``oom_unready`` true until the
worker finds memory free again.

Between batches the worker runs the deep-health **compute check** (``health.py``) every
``health_check_interval_s``: a fixed batch through the same forward pass, judged against its known answers;
``compute_error``/``wrong_answers`` after ``health_failure_threshold`` checks in a row are what the probes read.
A batch that fails (not out of memory) brings the next check forward to at once, and a failed check is
repeated after ``health_recheck_s``: a poisoned device is known within a fraction of a second of its first
failed request, not an interval later.
Every forward pass meets the device's faults (``gpu_faults.py``: a poisoned context raises, a slowdown holds the
worker longer), and the time the worker spends in forward passes is the emulated device's utilisation.

Example::

    engine = InferenceEngine(model, DeviceManager("cpu"), BatchConfig(), metrics,
                             bytes_per_row=estimate_bytes_per_row(model))
    engine.warmup()
    engine.start(asyncio.get_running_loop())
    logits = await engine.infer(rows, deadline=time.monotonic() + 5)
    await engine.stop(drain_timeout_s=10)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from opentelemetry import trace
from opentelemetry.trace import Span
from torch import nn

from .device import DeviceManager, module_bytes
from .gpu_faults import DeviceFaults
from .health import ComputeCheck, HealthVerdict
from .metrics import TargetMetrics
from .spans import record_engine_spans, start_batch_span
from .tracing import TRACER_NAME

__all__ = [
    "BatchConfig",
    "DeadlineExceeded",
    "DeviceOutOfMemory",
    "EngineError",
    "EngineStopped",
    "InferenceEngine",
    "QueueFull",
    "estimate_bytes_per_row",
]

# The idle worker wakes this often to prove it is alive (liveness reads heartbeat_age).
_TICK_S = 0.05


class EngineError(Exception):
    """Base of the engine's errors."""


class QueueFull(EngineError):
    """The queue holds ``max_queue_size`` requests: shed (503, or 429) with Retry-After."""


class DeadlineExceeded(EngineError):
    """The request's deadline passed before it was computed (504)."""


class DeviceOutOfMemory(EngineError):
    """The batch ran out of device memory, also at half batch size (507)."""


class EngineStopped(EngineError):
    """The engine is not started, is draining, or has stopped (503)."""


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.002
    max_queue_size: int | None = 256  # None: unbounded (the misconfiguration profile)
    oom_window_s: float = 10.0
    oom_unready_threshold: int = 3
    oom_recheck_s: float = 0.5
    health_check_interval_s: float = 0.5  # 0: no compute check
    health_failure_threshold: int = 2
    health_recheck_s: float = 0.1  # after a failed check (or a failed batch), the next one comes this soon


def estimate_bytes_per_row(model: nn.Module, safety_factor: int = 4) -> int:
    """Device bytes one row needs in a forward pass: widest layer × 4 bytes × a margin.

    The margin covers the input and output of a layer living at once plus the
    allocator's slack, so the emulated budget runs out when a real GPU would.
    """
    widths = [max(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    return max(widths, default=64) * 4 * safety_factor


@dataclass(eq=False)
class _Request:
    x: np.ndarray
    deadline: float
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    temperature: float = 1.0
    bias: np.ndarray | None = None
    expired: bool = False
    span: Span | None = None  # the request's span, when it is recorded (tracing on and sampled)
    started: float | None = None  # traced requests: when their batch started (monotonic)
    batch: tuple[int, int, int, Span | None] | None = None  # traced: (batch id, requests, rows, batch span)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


class InferenceEngine:
    """Batches requests from the event loop onto one inference worker thread."""

    def __init__(
        self,
        model: nn.Module,
        device: DeviceManager,
        config: BatchConfig,
        metrics: TargetMetrics,
        bytes_per_row: int,
        *,
        output: Literal["logits", "probabilities"] = "logits",
        faults: DeviceFaults | None = None,
        health: ComputeCheck | None = None,
    ) -> None:
        # "probabilities": softmax((logits + bias) / temperature) per request, computed once per
        # batch in the worker (and the confidence histogram observed there), so the event loop
        # -- the server's bottleneck -- only serialises.
        self.output = output
        self.model = model
        self.device = device
        self.config = config
        self.metrics = metrics
        self.bytes_per_row = bytes_per_row
        device.set_model_bytes(module_bytes(model))
        self._labels = {"model": metrics.model}
        # Label children bound once: .labels() costs a dict lookup and a lock per call.
        self._m_batch_size = metrics.batch_size.labels(**self._labels)
        self._m_compute_duration = metrics.compute_duration.labels(**self._labels)
        self._m_confidence = metrics.confidence.labels(**self._labels)
        self._m_cuda_oom = metrics.cuda_oom.labels(**self._labels)
        self._m_oom_retries = metrics.oom_retries.labels(**self._labels)
        self._m_pending = metrics.pending.labels(**self._labels)
        self._m_pending.set_function(lambda: len(self._queue))  # read at scrape time, not set per request
        self._m_queue_duration = metrics.queue_duration.labels(**self._labels)
        self._m_running = metrics.running.labels(**self._labels)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._busy = False
        self._waiting = False
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat = time.monotonic()
        self._frozen_until = 0.0
        self._unfreeze = threading.Event()
        self._in_freeze = threading.Event()
        self._oom_times: collections.deque[float] = collections.deque()
        self._oom_unready = False
        self._next_recheck = 0.0
        self._tracer = trace.get_tracer(TRACER_NAME)  # a no-op until a provider is installed
        self._batch_seq = itertools.count(1)
        self.faults = faults if faults is not None else DeviceFaults(model, emulated=device.emulated)
        self.health = health
        self._health_next = 0.0
        self._health_fails = 0
        self.health_verdict: HealthVerdict | None = None  # the last compute check's
        self.health_passed = False
        """A compute check passed since the process started: a new process is not ready before (a model version
        that answers wrongly from its first pass never takes traffic, not even between two checks)."""
        self._m_checks = {k: metrics.compute_checks.labels(result=k, **self._labels)
                          for k in ("ok", "compute_error", "wrong_answers")}  # fmt: skip
        self._busy_s = 0.0
        self._pass_started: float | None = None  # perf_counter() of the forward pass in flight
        self._busy_mark = (time.perf_counter(), 0.0)
        self._busy_ratio = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    def warmup(self, passes: int = 3) -> float:
        """A few forward passes at batch 1 and full batch (sync, before start); seconds."""
        started = time.perf_counter()
        for rows in (1, self.config.max_batch_size):
            x = np.zeros((rows, _in_features(self.model)), dtype=np.float32)
            for _ in range(passes):
                self._forward(x)
        return time.perf_counter() - started

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker thread; results are handed back on ``loop``."""
        if self._thread is not None:
            raise RuntimeError("the inference engine is already started")
        self._loop = loop
        self._accepting = True
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)
        self._thread.start()

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop accepting, finish queued work (at most ``drain_timeout_s``), stop the thread.

        Requests still queued after the drain timeout fail with ``EngineStopped``.
        """
        self._accepting = False
        give_up = time.monotonic() + drain_timeout_s
        while time.monotonic() < give_up:
            with self._cond:
                if not self._queue and not self._busy:
                    break
            await asyncio.sleep(0.01)
        with self._cond:
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            self._cond.notify_all()
        self.unfreeze()
        _deliver([(r, EngineStopped("the inference engine stopped before this request ran")) for r in leftover])
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    # -- the API of the event loop ---------------------------------------------------------

    async def infer(
        self, x: np.ndarray, deadline: float, *, temperature: float = 1.0, bias: np.ndarray | None = None
    ) -> np.ndarray:
        """Logits (or probabilities) ``[n, 10]`` for rows ``x`` (``[n, 64]``), by ``deadline`` (monotonic).

        ``temperature`` and ``bias`` calibrate the softmax when the engine outputs probabilities.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"expected rows of shape [n, features] with n >= 1, got {x.shape}")
        if not self._accepting:
            raise EngineStopped("the inference engine is not accepting requests")
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        loop = asyncio.get_running_loop()
        req = _Request(x=x, deadline=deadline, future=loop.create_future(), loop=loop,
                       temperature=temperature, bias=bias)  # fmt: skip
        if (span := trace.get_current_span()).is_recording():
            req.span = span
            span.set_attribute("faultdrill.rows", req.rows)
        limit = self.config.max_queue_size
        with self._cond:
            if limit is not None and len(self._queue) >= limit:
                raise QueueFull(f"the inference queue is full ({limit} requests waiting)")
            self._queue.append(req)
            self._queued_rows += req.rows
            if self._waiting:  # a busy worker takes it with the next batch: no wake-up needed
                self._cond.notify()
        # A timer handle per request (cheap) rather than wait_for(), which creates a task each.
        timer = loop.call_at(loop.time() + (deadline - now), self._expire, req)
        try:
            return await req.future
        except asyncio.CancelledError:
            if req.expired:
                if self._withdraw(req):
                    raise DeadlineExceeded("the request's deadline passed while it was queued") from None
                raise DeadlineExceeded("the request's deadline passed during compute") from None
            self._withdraw(req)  # the client went away: never compute it
            raise
        finally:
            timer.cancel()
            if req.span is not None:
                record_engine_spans(self._tracer, req.span, enqueued=req.enqueued, started=req.started,
                                    batch=req.batch, error=_error_of(req))  # fmt: skip

    @staticmethod
    def _expire(req: _Request) -> None:
        if not req.future.done():
            req.expired = True
            req.future.cancel()  # a late outcome is dropped, not left unretrieved

    def _withdraw(self, req: _Request) -> bool:
        """Remove a request still in the queue; False when the worker already took it."""
        with self._cond:
            try:
                self._queue.remove(req)
            except ValueError:
                return False
            self._queued_rows -= req.rows
            return True

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        """Whether a request would be shed now (``QueueFull``): the server checks it before reading the body, so a
        refusal under overload costs the event loop next to nothing (the queue may still fill in between)."""
        limit = self.config.max_queue_size
        return limit is not None and len(self._queue) >= limit

    @property
    def oom_unready(self) -> bool:
        return self._oom_unready

    def heartbeat_age(self) -> float:
        """Seconds since the worker last proved itself responsive."""
        return time.monotonic() - self._heartbeat

    # -- chaos -------------------------------------------------------------------------

    def freeze(self, seconds: float) -> None:
        """Block the worker thread for ``seconds`` (a stuck worker: requests wait)."""
        with self._cond:
            self._unfreeze.clear()
            self._frozen_until = time.monotonic() + max(0.0, seconds)
            self._cond.notify_all()

    def unfreeze(self) -> None:
        self._frozen_until = 0.0
        self._unfreeze.set()

    @property
    def is_frozen(self) -> bool:
        """Whether the worker thread is blocked in a freeze right now."""
        return self._in_freeze.is_set()

    # -- the worker thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            self._freeze_point()
            self._recheck_memory()
            self._health_tick()
            batch = self._collect()
            if batch is None:
                if self._stopping:
                    return
                continue
            batch_span = self._trace_batch(batch)
            try:
                self._execute(batch)
            finally:
                if batch_span is not None:
                    batch_span.end()
                with self._cond:
                    self._busy = False
                self._m_running.set(0)

    def _trace_batch(self, batch: list[_Request]) -> Span | None:
        """Stamp traced requests with their batch's start and id; the batch's own span (linked to them)
        when it serves more than one request (a batch of one is its request's ``model.forward``)."""
        traced = [r.span for r in batch if r.span is not None]
        if not traced:
            return None
        started, rows = time.monotonic(), sum(r.rows for r in batch)
        bid = next(self._batch_seq)
        span = start_batch_span(self._tracer, bid, traced, rows, started) if len(batch) > 1 else None
        info = (bid, len(batch), rows, span)
        for r in batch:
            r.started, r.batch = started, info
        return span

    def _freeze_point(self) -> None:
        if time.monotonic() >= self._frozen_until:
            return
        self._in_freeze.set()
        try:
            while not self._stopping and time.monotonic() < self._frozen_until:
                self._unfreeze.wait(min(self._frozen_until - time.monotonic(), 3600.0))
        finally:
            self._in_freeze.clear()

    def _collect(self) -> list[_Request] | None:
        """Wait for a batch: up to max_batch_size rows, or max_queue_delay after the first."""
        cfg = self.config
        with self._cond:
            if not self._queue and not self._stopping:
                self._waiting = True
                self._cond.wait(_TICK_S)
                self._waiting = False
            if not self._queue or self._frozen():
                return None
            fill_by = self._queue[0].enqueued + cfg.max_queue_delay_s
            while self._queued_rows < cfg.max_batch_size and not self._stopping:
                remaining = fill_by - time.monotonic()
                if remaining <= 0 or self._frozen():
                    break
                self._waiting = True
                self._cond.wait(remaining)
                self._waiting = False
            if self._frozen() or not self._queue:
                return None
            batch: list[_Request] = []
            expired: list[_Request] = []
            rows = 0
            now = time.monotonic()
            while self._queue:
                req = self._queue[0]
                if req.deadline <= now:
                    expired.append(self._queue.popleft())
                    self._queued_rows -= req.rows
                    continue
                # A request is never split: it waits for the next batch unless it is first.
                if batch and rows + req.rows > cfg.max_batch_size:
                    break
                batch.append(self._queue.popleft())
                self._queued_rows -= req.rows
                rows += req.rows
            self._busy = bool(batch)
        _deliver([(r, DeadlineExceeded("the request's deadline passed while it was queued")) for r in expired])
        return batch or None

    def _frozen(self) -> bool:
        return time.monotonic() < self._frozen_until

    def _execute(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        queue_hist = self._m_queue_duration
        for req in batch:
            queue_hist.observe(started - req.enqueued)
        self._m_running.set(len(batch))
        x = batch[0].x if len(batch) == 1 else np.concatenate([r.x for r in batch])
        self._m_batch_size.observe(x.shape[0])
        out: np.ndarray | None = None
        oom = False
        try:
            out = self._timed_forward(x)
        except torch.cuda.OutOfMemoryError:
            oom = True
        except Exception as exc:
            _deliver([(r, _failure(exc)) for r in batch])
            self._health_next = 0.0  # a failed batch: check the device now (passive health)
            return
        if not oom and out is not None:
            self._hand_back(batch, out, None)
            return
        # Out of the except block: the exception, its traceback and the activations its
        # frames referenced are gone now, so empty_cache() can really return the memory.
        self._record_oom()
        self.device.empty_cache()
        self._m_oom_retries.inc()
        self._hand_back(batch, *self._retry_in_halves(x))

    def _retry_in_halves(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` again in chunks of half its rows; (outputs, ok mask per row)."""
        rows = x.shape[0]
        half = max(1, rows // 2)
        out = np.zeros((rows, 0), dtype=np.float32)
        ok = np.zeros(rows, dtype=bool)
        for start in range(0, rows, half):
            chunk_out: np.ndarray | None = None
            try:
                chunk_out = self._timed_forward(x[start : start + half])
            except torch.cuda.OutOfMemoryError:
                self._m_cuda_oom.inc()
            except Exception:
                pass  # reported as out of memory below: the retry exists only for OOM
            if chunk_out is None:
                self.device.empty_cache()
                continue
            if out.shape[1] == 0:
                out = np.zeros((rows, chunk_out.shape[1]), dtype=np.float32)
            out[start : start + half] = chunk_out
            ok[start : start + half] = True
        return out, ok

    def _postprocess(self, batch: list[_Request], logits: np.ndarray) -> np.ndarray:
        """Calibrated softmax for the whole batch at once; records prediction confidence."""
        temps = np.empty((logits.shape[0], 1), dtype=np.float32)
        bias = np.zeros_like(logits)
        start = 0
        for req in batch:
            end = start + req.rows
            temps[start:end] = req.temperature
            if req.bias is not None:
                bias[start:end] = req.bias
            start = end
        z = (logits + bias) / temps
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        hist = self._m_confidence
        for c in z.max(axis=1).tolist():
            hist.observe(c)
        return z

    def _hand_back(self, batch: list[_Request], out: np.ndarray, ok: np.ndarray | None) -> None:
        if self.output == "probabilities" and out.shape[1] > 0:
            out = self._postprocess(batch, out)
        items: list[_Outcome] = []
        start = 0
        for req in batch:
            end = start + req.rows
            if ok is None or bool(ok[start:end].all()):
                items.append((req, out[start:end]))
            else:
                items.append((req, DeviceOutOfMemory(
                    f"device out of memory for a batch of {len(out)} rows, "
                    "also after a retry at half batch size"
                )))  # fmt: skip
            start = end
        _deliver(items)

    def _timed_forward(self, x: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self._forward(x)
        self._m_compute_duration.observe(time.perf_counter() - started)
        return out

    def _forward(self, x: np.ndarray) -> np.ndarray:
        self.faults.check()  # a poisoned (emulated) context refuses the pass
        started = self._pass_started = time.perf_counter()
        try:
            with self.device.reserve(x.shape[0] * self.bytes_per_row), torch.inference_mode():
                inputs = torch.from_numpy(x).to(self.device.device)
                return self.model(inputs).float().cpu().numpy()
        finally:
            self.faults.after_forward(time.perf_counter() - started)  # a slow GPU: the pass took longer
            self._busy_s += time.perf_counter() - started
            self._pass_started = None

    def busy_ratio(self) -> float:
        """Share of the last second or more that the worker spent in forward passes (the emulated device's
        utilisation, as NVML's is the share of a sample period a kernel ran). Calls within a second of the last
        measured one (several scrapers) get that same value. The pass in flight counts up to now (and the rest of
        it in the next period), so long passes — a slow GPU's — neither overflow one period nor leave the next
        looking idle."""
        started, busy = self._pass_started, self._busy_s
        now = time.perf_counter()
        if started is not None and self._pass_started == started and self._busy_s == busy:
            busy += now - started
        then, before = self._busy_mark
        if now - then >= 1.0:
            self._busy_ratio = min(1.0, max(0.0, (busy - before) / (now - then)))
            self._busy_mark = (now, busy)
        return self._busy_ratio

    # -- deep health -------------------------------------------------------------------

    def _health_tick(self) -> None:
        interval = self.config.health_check_interval_s
        if interval <= 0 or time.monotonic() < self._health_next:
            return
        self._health_next = time.monotonic() + interval
        self.faults.refresh()
        if self.health is None:
            return
        if self.record_check() not in (None, "ok"):  # confirm (or clear) it soon: the threshold counts checks in a row
            self._health_next = time.monotonic() + min(interval, self.config.health_recheck_s)

    @property
    def checks_compute(self) -> bool:
        """The deep-health compute check is on (known answers given, interval > 0)."""
        return self.health is not None and self.config.health_check_interval_s > 0

    def record_check(self) -> str | None:
        """One compute check, counted and kept as the verdict; its kind (None: inconclusive, out of memory). The
        worker calls it between batches; the loader once after warm-up, so a good process is ready at once."""
        if self.health is None:
            return None
        verdict = self.check_compute()
        if verdict is None:
            return None
        self._health_fails = 0 if verdict.kind == "ok" else self._health_fails + 1
        self.health_verdict = verdict
        self.health_passed = self.health_passed or verdict.kind == "ok"
        self._m_checks[verdict.kind].inc()
        return verdict.kind

    def check_compute(self) -> HealthVerdict | None:
        """One compute check now (on the calling thread); None when it ran out of memory (inconclusive:
        out-of-memory readiness is decided apart)."""
        assert self.health is not None
        logits: np.ndarray | None = None
        error: str | None = None
        try:
            logits = self._forward(self.health.inputs)
        except torch.cuda.OutOfMemoryError:
            return None
        except Exception as exc:  # the device cannot compute: a poisoned context, a driver error
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if error is not None or logits is None:
            return HealthVerdict("compute_error", error or "no output")
        return self.health.judge(logits)

    @property
    def compute_failing(self) -> str | None:
        """``compute_error`` or ``wrong_answers`` once that many checks in a row failed, else None."""
        v = self.health_verdict
        if v is None or v.kind == "ok" or self._health_fails < self.config.health_failure_threshold:
            return None
        return v.kind

    # -- out-of-memory readiness -------------------------------------------------------

    def _record_oom(self) -> None:
        # One event per batch that hit OOM (its retry's failures are counted in the metric
        # only), so the threshold reads as "batches that ran out of memory".
        self._m_cuda_oom.inc()
        now = time.monotonic()
        self._oom_times.append(now)
        while self._oom_times and self._oom_times[0] < now - self.config.oom_window_s:
            self._oom_times.popleft()
        if len(self._oom_times) >= self.config.oom_unready_threshold and not self._oom_unready:
            self._oom_unready = True
            self._next_recheck = now + self.config.oom_recheck_s

    def _recheck_memory(self) -> None:
        if not self._oom_unready or time.monotonic() < self._next_recheck:
            return
        need = self.config.max_batch_size * self.bytes_per_row
        try:
            free = self.device.can_allocate(need)
        except RuntimeError:  # a poisoned context fails the trial allocation itself: still unready
            free = False
        if free:
            self._oom_times.clear()
            self._oom_unready = False
        else:
            self._next_recheck = time.monotonic() + self.config.oom_recheck_s


def _failure(exc: Exception) -> EngineError:
    # One exception object per request: a shared one would collect every awaiter's frames.
    err = EngineError(f"inference failed: {exc!r}")
    err.__cause__ = exc
    return err


def _error_of(req: _Request) -> BaseException | None:
    """What a traced request ended with: its future's exception, or the one propagating (deadline, cancel)."""
    f = req.future
    if f.done() and not f.cancelled():
        return f.exception()
    return sys.exc_info()[1] or asyncio.CancelledError()


def _in_features(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    return 64


_Outcome = tuple[_Request, np.ndarray | BaseException]


def _deliver(items: list[_Outcome]) -> None:
    """Resolve futures on their event loop from the worker: one wake-up per loop and batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        # The loop may be closed by the time a late result arrives (shutdown).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, group)


def _settle(group: list[_Outcome]) -> None:
    for req, outcome in group:
        if req.future.done():
            continue  # the caller timed out or went away
        if isinstance(outcome, BaseException):
            req.future.set_exception(outcome)
        else:
            req.future.set_result(outcome)
