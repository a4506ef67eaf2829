"""Prometheus metrics of the target, on an explicit registry (no global state).

Names follow Prometheus conventions (base units, ``_total`` counters, no colons) and borrow
their shapes from Triton (``nv_inference_*``), vLLM (waiting/running requests, latency
histograms) and the DCGM exporter (GPU utilisation, framebuffer used/total).

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> m = TargetMetrics(CollectorRegistry(), model="digits")
    >>> m.requests.labels(model="digits", code="200").inc()
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)

__all__ = ["BREAKER_STATES", "FAILURE_REASONS", "TargetMetrics"]

# Latency buckets: 0.5 ms .. 30 s, dense where CPU inference lives (1-100 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SERVED_CODES = ("200", "400", "404", "413", "429", "500", "503", "504", "507")
"""Every status the inference endpoint answers (api.py); their counters exist before the first one."""
FAILURE_REASONS = ("oom", "shed", "timeout", "dependency", "internal", "bad_request", "unready")
BREAKER_STATES = {"closed": 0, "open": 1, "half-open": 2}


class TargetMetrics:
    """All metric families of one target process, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.registry = registry
        self.model = model
        r = registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends
        self.request_duration = Histogram(
            "inference_request_duration_seconds",
            "End-to-end latency of inference requests, from arrival to response.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_duration = Histogram(
            "inference_queue_duration_seconds",
            "Time requests wait in the batching queue before compute.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.compute_duration = Histogram(
            "inference_compute_duration_seconds",
            "Forward-pass time of one batch on the device.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "inference_requests_total", "Inference requests by HTTP status code.",
            ["model", "code"], registry=r,
        )  # fmt: skip
        self.failures = Counter(
            "inference_failures_total",
            "Failed inference requests by reason (oom, shed, timeout, dependency, internal, "
            "bad_request, unready).",
            ["model", "reason"], registry=r,
        )  # fmt: skip
        for reason in FAILURE_REASONS:
            self.failures.labels(model=model, reason=reason)
        # Exported at 0 from the start, so rate()/increase() see the very first error too: a series
        # born at its first increment has no earlier sample to count from.
        for code in SERVED_CODES:
            self.requests.labels(model=model, code=code)
        self.pending = Gauge(
            "inference_pending_requests", "Requests waiting in the batching queue.",
            ["model"], registry=r,
        )  # fmt: skip
        self.compute_checks = Counter(
            "inference_compute_checks", "Deep-health compute checks by result (ok, compute_error, wrong_answers): a "
            "fixed batch through the forward pass, judged against the model's known answers.",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self.running = Gauge(
            "inference_running_requests", "Requests in the batch being computed.",
            ["model"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inference_batch_size", "Rows per executed batch.",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.cuda_oom = Counter(
            "inference_cuda_oom_total",
            "CUDA out-of-memory errors during a batch (emulated or real).",
            ["model"], registry=r,
        )  # fmt: skip
        self.oom_retries = Counter(
            "inference_oom_retries_total", "Half-batch retries after an out-of-memory error.",
            ["model"], registry=r,
        )  # fmt: skip
        self.confidence = Histogram(
            "inference_prediction_confidence",
            "Top-class probability of each prediction (model quality).",
            ["model"], buckets=CONFIDENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.ready = Gauge(
            "inference_ready", "1 when the replica reports ready, else 0.", registry=r
        )
        self.live = Gauge("inference_live", "1 when the replica reports live, else 0.", registry=r)
        self.model_info = Info(
            "inference_model", "The model being served.", registry=r
        )
        self.device_info = Info(
            "inference_device", "Device the model runs on, and whether it is emulated.",
            registry=r,
        )  # fmt: skip
        self.emulated_device = Gauge(
            "inference_device_emulated", "1 when the device memory is emulated (no GPU).",
            registry=r,
        )  # fmt: skip
        # GPU / device memory (NVML on a real GPU; the emulated budget otherwise).
        self.gpu_utilization = Gauge(
            "gpu_utilization_ratio", "GPU utilisation, 0..1: NVML's on a GPU (DCGM_FI_DEV_GPU_UTIL / 100); on the "
            "emulated device, the share of time the inference worker spends in forward passes.",
            ["gpu"], registry=r,
        )  # fmt: skip
        self.gpu_memory_used = Gauge(
            "gpu_memory_used_bytes", "Device memory in use (NVML, or the emulated accounting).",
            ["gpu"], registry=r,
        )  # fmt: skip
        self.gpu_memory_total = Gauge(
            "gpu_memory_total_bytes", "Device memory in total (NVML, or the emulated budget).",
            ["gpu"], registry=r,
        )  # fmt: skip
        self.torch_allocated = Gauge(
            "torch_memory_allocated_bytes", "Memory held by torch tensors on the device.",
            registry=r,
        )  # fmt: skip
        self.torch_reserved = Gauge(
            "torch_memory_reserved_bytes", "Memory reserved by torch's caching allocator.",
            registry=r,
        )  # fmt: skip
        self.admin_held = Gauge(
            "chaos_device_memory_held_bytes", "Device memory held through the chaos admin API.",
            registry=r,
        )  # fmt: skip
        self.admin_leaked = Gauge(
            "chaos_host_memory_leaked_bytes", "Host memory leaked through the chaos admin API.",
            registry=r,
        )  # fmt: skip
        # The dependency (feature store) and its circuit breaker.
        self.breaker_state = Gauge(
            "circuit_breaker_state", "Breaker state: 0 closed, 1 open, 2 half-open.",
            ["dependency"], registry=r,
        )  # fmt: skip
        self.breaker_transitions = Counter(
            "circuit_breaker_transitions_total", "Breaker state changes.",
            ["dependency", "from_state", "to_state"], registry=r,
        )  # fmt: skip
        self.dependency_requests = Counter(
            "dependency_requests_total",
            "Calls to a dependency by outcome (ok, error, timeout, rejected by the breaker).",
            ["dependency", "outcome"], registry=r,
        )  # fmt: skip
        self.dependency_duration = Histogram(
            "dependency_request_duration_seconds", "Latency of dependency calls.",
            ["dependency"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "inference_fallback_responses_total",
            "Responses served with fallback features (source: stale cache or defaults).",
            ["model", "source"], registry=r,
        )  # fmt: skip
        for source in ("stale_cache", "default"):  # the degraded sources (features.FeatureSource)
            self.fallbacks.labels(model=model, source=source)
        self.cert_expiry = Gauge(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate in use, Unix seconds.",
            ["role", "path", "subject"], registry=r,
        )  # fmt: skip
        self.misconfiguration = Gauge(
            "inference_misconfiguration", "1 for each misconfiguration profile switched on.",
            ["profile"], registry=r,
        )  # fmt: skip
        # Per-client rate limiting (ratelimit.py); client = a configured client name, anonymous or other.
        self.ratelimit_requests = Counter(
            "ratelimit_requests_total",
            "Inference requests by client class (a configured client name, anonymous or other) and "
            "rate-limit decision (allowed, limited).",
            ["client", "decision"], registry=r,
        )  # fmt: skip
        self.ratelimit_tracked = Gauge(
            "ratelimit_tracked_clients", "Token buckets held in memory (one per recently active client).",
            registry=r,
        )  # fmt: skip
        self.ratelimit_evictions = Counter(
            "ratelimit_evictions_total",
            "Token buckets dropped before they were full again because rate_limit_max_clients was reached.",
            registry=r,
        )  # fmt: skip
        # The prediction cache (cache.py): hit ratio = hit / all results; its own breaker.
        self.cache_requests = Counter(
            "prediction_cache_requests_total",
            "Prediction-cache lookups by result: hit, miss, error (tried and failed; the model "
            "answered), bypass (breaker open: Redis skipped, the model answered).",
            ["result"], registry=r,
        )  # fmt: skip
        self.cache_duration = Histogram(
            "prediction_cache_duration_seconds", "Latency of prediction-cache calls (get, set).",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache_writes = Counter(
            "prediction_cache_writes_total",
            "Background cache writes by outcome (ok, error, skipped while the breaker is open, "
            "dropped when too many are pending).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.cache_breaker_state = Gauge(
            "prediction_cache_breaker_state", "Cache breaker state: 0 closed, 1 open, 2 half-open.",
            registry=r,
        )  # fmt: skip
        self.cache_breaker_transitions = Counter(
            "prediction_cache_breaker_transitions_total", "Cache breaker state changes.",
            ["from_state", "to_state"], registry=r,
        )  # fmt: skip
