"""Configuration of the bundled target, from environment variables.

Every setting is an environment variable ``FAULTDRILL_<NAME>`` (upper case); the CLI's
options override them. The table in ``docs/target.md`` is generated from this model
(``faultdrill target config``), so it cannot drift.

Example::

    >>> s = TargetSettings(max_batch_size=8)
    >>> s.max_batch_size
    8
"""

from __future__ import annotations

import os
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .ratelimit import RateLimitTable, parse_rate_limits

__all__ = [
    "DeviceChoice",
    "FeatureStoreSettings",
    "Misconfiguration",
    "ShedStatus",
    "TargetSettings",
    "default_model_registry",
]


def default_model_registry() -> Path:
    """``$XDG_CACHE_HOME/faultdrill/models`` (``~/.cache/faultdrill/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faultdrill" / "models"


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ShedStatus(int, Enum):
    service_unavailable = 503
    too_many_requests = 429


class Misconfiguration(StrEnum):
    """Classic production mistakes the target can reproduce (off by default, logged loudly)."""

    readiness_ignores_model = "readiness_ignores_model"
    """Readiness is always true: during model load, warm-up and OOM cool-down too."""
    no_circuit_breaker = "no_circuit_breaker"
    """No breaker on the feature store: while it is down every refresh waits its full timeout (no fail-fast)."""
    unbounded_queue = "unbounded_queue"
    """No admission control: every request is queued. Past capacity the queue grows without bound, but each request
    waits at most its deadline (``request_timeout_s``): the harm is accepted requests as slow as the deadline, most
    answers a 504 after waiting all of it instead of a prompt 503 with ``Retry-After``, goodput falling as the
    worker computes requests whose clients are about to give up, and memory growing with the queue (measured by
    ``experiments/catalog/overload.yaml``; docs/target.md)."""
    shed_as_server_error = "shed_as_server_error"
    """Shedding is broken: a full queue's refusal falls through to the generic error handler, so shed requests are
    answered 500 without ``Retry-After`` (and logged as internal errors): clients see a server fault, not
    back-pressure, and neither back off nor retry elsewhere."""
    liveness_checks_dependency = "liveness_checks_dependency"
    """Liveness fails while the feature store is unreachable (an outage becomes restarts)."""
    no_rate_limit = "no_rate_limit"
    """Per-client rate limits are off: one flooding client takes the capacity of all the others."""
    no_cache_bypass = "no_cache_bypass"
    """A prediction-cache failure fails the request (503) after waiting its timeout: no breaker, no bypass."""
    shallow_health = "shallow_health"
    """The probes check only that the process answers: liveness reads the worker's heartbeat, readiness that the
    model loaded. The compute check still runs (its metric stays) but is ignored, so a replica whose GPU cannot
    compute (a poisoned CUDA context: every request fails) or computes wrong answers stays in rotation and is
    never restarted — the zombie (measured by ``experiments/catalog/gpu_sticky_error.yaml`` and
    ``gpu_wrong_output.yaml``)."""


class TargetSettings(BaseSettings):
    """Settings of ``faultdrill target serve``; every field is ``FAULTDRILL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FAULTDRILL_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the inference API binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the inference API.")
    admin_port: int = Field(
        0, ge=0, le=65535, description="Port of the chaos admin API (127.0.0.1 only); 0 = off."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the chaos admin API; the API is off without one."
    )
    model: str = Field("digits", description="Model served: `digits` or `heavy`.")
    model_version: str = Field(
        "1", description="Version of the model to load from the registry (`latest` allowed)."
    )
    model_registry: Path = Field(
        default_factory=default_model_registry, description="Model registry directory."
    )
    device: DeviceChoice = Field(DeviceChoice.auto, description="`auto` (cuda if present), `cpu`, `cuda`.")
    emulated_device_memory_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="Device-memory budget of the emulated device when no GPU is used.",
    )
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads of the inference worker.")
    max_batch_size: int = Field(32, ge=1, description="Rows per batch (dynamic batching).")
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0,
        description="Longest wait for a batch to fill after its first request; 0 = greedy "
        "(a batch takes whatever queued while the previous one computed; Triton's default).",
    )
    max_queue_size: int = Field(
        256, ge=1, description="Requests waiting before new ones are shed."
    )
    shed_status: ShedStatus = Field(
        ShedStatus.service_unavailable, description="Status of shed requests: 503 or 429."
    )
    retry_after_s: int = Field(1, ge=0, description="`Retry-After` of shed requests, seconds.")
    request_timeout_s: float = Field(
        5.0, gt=0, description="Per-request deadline (override: header `X-Request-Timeout-Ms`)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies get 413.")
    max_rows_per_request: int = Field(256, ge=1, description="Rows one request may carry.")
    oom_window_s: float = Field(10.0, gt=0, description="Window in which OOMs are counted.")
    oom_unready_threshold: int = Field(
        3, ge=1, description="OOMs within the window that make readiness false."
    )
    oom_recheck_s: float = Field(
        0.5, gt=0, description="How often an unready replica checks whether memory is back."
    )
    liveness_stall_s: float = Field(
        3.0, gt=0, description="Liveness fails when the inference worker is stuck this long."
    )
    gpu_state_file: Path | None = Field(
        None, description="The GPU's own state (DCGM fields, Xid events, reset required), which outlives this "
        "process: the emulated device's hardware (target_service/gpu_state.py); unset: kept in memory."
    )
    health_check_interval_s: float = Field(
        0.5, ge=0, description="How often the worker runs the deep-health compute check (a fixed batch judged "
        "against the model's known answers; docs/target.md); 0 = off. A failed batch or a failed check brings "
        "the next one forward (0.1 s)."
    )
    health_failure_threshold: int = Field(
        2, ge=1, description="Compute checks failed in a row that make readiness false (and liveness false when "
        "the device cannot compute)."
    )
    drain_timeout_s: float = Field(10.0, ge=0, description="Longest drain on SIGTERM.")
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, keep serving this long with readiness false (like a "
        "preStop sleep) so load balancers stop routing before the port closes.",
    )
    feature_store_url: str | None = Field(
        None, description="Base URL of the feature store, e.g. `https://127.0.0.1:8443`."
    )
    ca_file: Path | None = Field(None, description="CA bundle that verifies the feature store.")
    tls_cert_file: Path | None = Field(
        None, description="Certificate of the inference API (TLS off when unset)."
    )
    tls_key_file: Path | None = Field(None, description="Key of `tls_cert_file`.")
    cert_reload_interval_s: float = Field(
        0.5, gt=0, description="How often certificate files are checked for changes."
    )
    dependency_timeout_s: float = Field(0.25, gt=0, description="Feature-store call timeout.")
    feature_ttl_s: float = Field(
        1.0, ge=0, description="Fresh features are reused this long before a refresh."
    )
    breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive dependency failures that open the breaker."
    )
    breaker_reset_timeout_s: float = Field(
        2.0, gt=0, description="Time the breaker stays open before a half-open trial."
    )
    cache_url: str | None = Field(
        None, description="Prediction cache, e.g. `redis://127.0.0.1:6379/0` (cache off when unset; no "
        "password in the URL: see `cache_password_file`)."
    )
    cache_password_file: Path | None = Field(
        None, description="File (mode 0600) holding the cache's password (Redis `requirepass`)."
    )
    cache_ttl_s: float = Field(30.0, gt=0, description="Cached predictions expire after this long.")
    cache_timeout_s: float = Field(
        0.05, gt=0, description="Bound on each cache call (connect, read, overall); then the model answers."
    )
    cache_breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive cache failures that open the cache's breaker (bypass)."
    )
    cache_breaker_reset_timeout_s: float = Field(
        2.0, gt=0, description="Time the cache's breaker stays open before a half-open trial."
    )
    rate_limit_rps: float = Field(
        1000.0, gt=0, description="Per-client rate limit of inference requests, per replica (token refill "
        "rate); clients without an entry in `rate_limits` each get this one. No limit is enforced unless "
        "this, `rate_limit_burst` or `rate_limits` is set."
    )
    rate_limit_burst: int = Field(2000, ge=1, description="Per-client burst (token bucket size), per replica.")
    rate_limits: Annotated[RateLimitTable | None, NoDecode] = Field(
        None, description="Per-client limits: JSON (`{\"clients\": {\"tenant-a\": {\"rps\": 50, \"burst\": "
        "100}}}`) or the path of a YAML/JSON file of that shape (see docs/target.md)."
    )
    rate_limit_max_clients: int = Field(
        10_000, ge=1, description="Token buckets kept in memory; idle (full) buckets are dropped first."
    )
    misconfigurations: Annotated[list[Misconfiguration], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated misconfiguration profiles (see docs/target.md).",
    )
    echo_endpoint: bool = Field(
        False, description="Serve `/v2/models/{name}/echo` (HTTP/JSON path alone, benchmarks)."
    )
    trace_file: Path | None = Field(
        None, description="JSON-lines file the replica's spans are written to (traces off when neither "
        "this nor `otlp_endpoint` is set)."
    )
    trace_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded (parent-based: a sampled caller's "
        "decision is kept)."
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint for spans, e.g. `http://127.0.0.1:4318/v1/traces` (needs the "
        "`otlp` extra)."
    )
    service_instance: str | None = Field(
        None, description="This replica's name in traces (`service.instance.id`); default `host:pid`."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits(cls, value: object) -> object:
        return parse_rate_limits(value)

    @field_validator("trace_file", "otlp_endpoint", "service_instance", "gpu_state_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value  # FAULTDRILL_TRACE_FILE= : off

    @field_validator("misconfigurations", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def misconfigured(self, profile: Misconfiguration) -> bool:
        return profile in self.misconfigurations


class FeatureStoreSettings(BaseSettings):
    """Settings of ``faultdrill target feature-store``; every field is ``FAULTDRILL_FS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FAULTDRILL_FS_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the feature store binds to.")
    port: int = Field(8443, ge=0, le=65535, description="Port of the feature store.")
    tls_cert_file: Path | None = Field(None, description="Server certificate (TLS off when unset).")
    tls_key_file: Path | None = Field(None, description="Key of the server certificate.")
    cert_reload_interval_s: float = Field(0.5, gt=0, description="Certificate reload check period.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of its chaos admin endpoints (off without one)."
    )
    trace_file: Path | None = Field(
        None, description="JSON-lines file of the store's spans (traces off when neither this nor "
        "`otlp_endpoint` is set)."
    )
    trace_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded (a caller's `traceparent` decision is kept)."
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP endpoint for spans (needs the `otlp` extra).")
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("trace_file", "otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
