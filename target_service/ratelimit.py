"""Per-client rate limiting: token buckets keyed by client identity, checked before any work.

Why hand-written: the limit has to run inside the target's own event loop, before the body is
read, with the target's metrics and identity rules; the libraries that exist are either
middleware for other frameworks or global (one bucket per route), and a token bucket is a
dozen lines. The semantics follow Envoy's *local* rate limit filter: one bucket per client per
replica (``max_tokens`` = burst, refilled at ``rps``), so with N replicas behind a load balancer
the effective limit of a client is N × its per-replica limit. A global limit needs shared state
(Envoy's global rate limit service over Redis, or a quota service) — see ``docs/target.md``.

Identity, in order: ``X-API-Key`` (hashed with SHA-256 at once; the key itself is a secret and
never logged, stored or used as a metric label), ``X-Client-Id`` (trusted internal callers), else
``anonymous``. A configured client is matched by name (``X-Client-Id``) or by the SHA-256 of its
API key (``api_key_sha256``). Unconfigured clients get the default limit, each its own bucket.

Over the limit: 429 with ``Retry-After`` (whole seconds until one token, rounded up, at least 1)
and the IETF draft headers ``RateLimit-Limit`` (the burst), ``RateLimit-Remaining`` (whole tokens
left) and ``RateLimit-Reset`` (seconds until the bucket is full again). Memory is bounded: a
bucket idle long enough to be full again is dropped (losslessly: a fresh bucket is the same),
and past ``max_clients`` the least recently used buckets go.

Example::

    >>> t = [0.0]
    >>> limiter = RateLimiter(RateLimitTable(), default=Limit(rps=1, burst=2), clock=lambda: t[0])
    >>> [limiter.check([(b"x-client-id", b"a")]).allowed for _ in range(3)]
    [True, True, False]
    >>> limiter.check([(b"x-client-id", b"a")]).headers["retry-after"]
    '1'
    >>> limiter.check([(b"x-client-id", b"b")]).allowed
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from .metrics import TargetMetrics

__all__ = ["Decision", "Limit", "RateLimitTable", "RateLimiter", "TokenBucket",
           "client_identity", "hash_api_key", "limiter_for", "parse_rate_limits"]  # fmt: skip

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_HEADER_KEY, _HEADER_ID = b"x-api-key", b"x-client-id"
ANONYMOUS, OTHER = "anonymous", "other"


class Limit(BaseModel):
    """``{rps: 50, burst: 100}``: refill rate (tokens per second) and bucket size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=10_000_000)


class ClientLimit(Limit):
    """A configured client: its limit and, optionally, the SHA-256 (hex) of its API key."""

    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class RateLimitTable(BaseModel):
    """``FAULTDRILL_RATE_LIMITS``: ``{clients: {tenant-a: {rps: 50, burst: 100}}, default: {…}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Limit | None = None
    """Overrides ``rate_limit_rps``/``rate_limit_burst`` when given."""
    clients: dict[str, ClientLimit] = Field(default_factory=dict)

    def problems(self) -> list[str]:
        bad = [name for name in self.clients if not _CLIENT_ID.match(name) or name in (ANONYMOUS, OTHER)]
        return [f"clients.{n}: a client name is 1-64 of A-Z a-z 0-9 _ . : - and not '{ANONYMOUS}'/'{OTHER}'"
                for n in bad]  # fmt: skip


def hash_api_key(key: str | bytes) -> str:
    """SHA-256 hex of an API key (what configuration and bucket keys hold, never the key)."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def _line_of(text: str, path: tuple[str | int, ...]) -> int | None:
    """1-based line of ``path`` in a YAML/JSON document (JSON is YAML), or None."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            break
        found = next((v for k, v in node.value if k.value == str(key)), None)
        if found is None:
            break
        node = found
    return None if node is None else node.start_mark.line + 1


def parse_rate_limits(value: object, *, origin: str = "FAULTDRILL_RATE_LIMITS") -> RateLimitTable | None:
    """A table from a mapping, a JSON object, or the path of a YAML/JSON file; located ValueErrors."""
    if value is None or isinstance(value, RateLimitTable):
        return value
    text: str | None = None
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return None
        if stripped.startswith("{"):
            text = stripped
            try:
                value = json.loads(stripped)
            except ValueError as exc:
                raise ValueError(f"{origin}: not valid JSON ({exc})") from None
        else:
            import yaml

            path = Path(stripped)
            origin = str(path)
            try:
                text = path.read_text()
                value = yaml.safe_load(text)
            except OSError as exc:
                raise ValueError(f"{origin}: cannot read rate limits ({exc.strerror})") from None
            except yaml.YAMLError as exc:
                raise ValueError(f"{origin}: not valid YAML ({exc})") from None
    try:
        table = RateLimitTable.model_validate(value)
    except ValidationError as exc:
        errs = exc.errors()
        err = next((e for e in errs if e["type"] == "extra_forbidden"), errs[0])  # a typo explains the rest
        loc = tuple(err["loc"])
        line = _line_of(text, loc) if text is not None else None
        where = f"{origin}{f' line {line}' if line else ''}: {'.'.join(map(str, loc)) or '(top)'}"
        hint = ""
        if err["type"] == "extra_forbidden":
            fields = RateLimitTable.model_fields if len(loc) == 1 else ClientLimit.model_fields
            import difflib

            close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of {', '.join(fields)})"
        raise ValueError(f"{where}: {err['msg']}{hint}") from None
    if problems := table.problems():
        raise ValueError(f"{origin}: {problems[0]}")
    return table


def client_identity(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    """(bucket key, client id or key hash) from raw ASGI headers; the API key is hashed at once."""
    client_id = None
    for name, raw in headers:
        if name == _HEADER_KEY and raw:
            digest = hash_api_key(raw)
            return f"key:{digest}", digest
        if name == _HEADER_ID and raw:
            text = raw.decode("latin-1")
            client_id = text if _CLIENT_ID.match(text) else None
    return (f"id:{client_id}", client_id) if client_id else (ANONYMOUS, None)


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rps`` per second; ``take`` spends one if there is one."""

    rps: float
    burst: int
    tokens: float = -1.0
    last: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rps)
            self.last = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after_s(self) -> int:
        """Whole seconds until one token is back (rounded up, at least 1)."""
        return max(1, math.ceil((1.0 - self.tokens) / self.rps - 1e-9))

    def reset_s(self) -> int:
        """Whole seconds until the bucket is full again."""
        return max(0, math.ceil((self.burst - self.tokens) / self.rps - 1e-9))

    def full_at(self) -> float:
        return self.last + (self.burst - self.tokens) / self.rps


@dataclass(frozen=True)
class Decision:
    allowed: bool
    client: str
    """The metric label: a configured client name, ``anonymous`` or ``other``."""
    headers: dict[str, str] = field(default_factory=dict)


def _init_labels(metrics: TargetMetrics, clients: Iterable[str]) -> None:
    """Every client class exported at 0 from the start (rate() sees the first throttled request)."""
    for name in (*clients, ANONYMOUS, OTHER):
        for decision in ("allowed", "limited"):
            metrics.ratelimit_requests.labels(client=name, decision=decision)


class RateLimiter:
    """Buckets per client identity; :meth:`check` decides one request (single event loop: no lock)."""

    def __init__(
        self, table: RateLimitTable, *, default: Limit, max_clients: int = 10_000,
        metrics: TargetMetrics | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.default, self.max_clients, self.metrics, self.clock = table.default or default, max_clients, metrics, clock
        self.by_name: dict[str, ClientLimit] = dict(table.clients)
        self.by_key = {c.api_key_sha256: n for n, c in table.clients.items() if c.api_key_sha256}
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._children: dict[tuple[str, bool], Any] = {}

    def _configured(self, key: str, ident: str | None) -> str | None:
        if ident is None:
            return None
        return self.by_key.get(ident) if key.startswith("key:") else (ident if ident in self.by_name else None)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> Decision:
        now = self.clock()
        key, ident = client_identity(headers)
        name = self._configured(key, ident)
        label = name or (ANONYMOUS if key == ANONYMOUS else OTHER)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self._evict(now, room=1)
            limit = self.by_name[name] if name else self.default
            bucket = self.buckets[key] = TokenBucket(limit.rps, limit.burst, last=now)
            if self.metrics is not None:
                self.metrics.ratelimit_tracked.set(len(self.buckets))
        else:
            self.buckets.move_to_end(key)
        allowed = bucket.take(now)
        headers_out = {"ratelimit-limit": str(bucket.burst), "ratelimit-remaining": str(int(bucket.tokens)),
                       "ratelimit-reset": str(bucket.reset_s())}  # fmt: skip
        if not allowed:
            headers_out["retry-after"] = str(bucket.retry_after_s())
        self._count(label, allowed)
        return Decision(allowed, label, headers_out)

    def _count(self, label: str, allowed: bool) -> None:
        if self.metrics is None:
            return
        child = self._children.get((label, allowed))
        if child is None:
            child = self._children[(label, allowed)] = self.metrics.ratelimit_requests.labels(
                client=label, decision="allowed" if allowed else "limited")
        child.inc()

    def _evict(self, now: float, room: int = 0) -> None:
        """Drop full (idle) buckets; then, while there is no ``room``, the least recently used."""
        for key in [k for k, b in self.buckets.items() if b.full_at() <= now]:
            del self.buckets[key]
        while self.buckets and len(self.buckets) + room > self.max_clients:
            self.buckets.popitem(last=False)
            if self.metrics is not None:
                self.metrics.ratelimit_evictions.inc()
        if self.metrics is not None:
            self.metrics.ratelimit_tracked.set(len(self.buckets))

    def sweep(self) -> None:
        """Evict idle buckets now (``/metrics`` calls it, so the gauge is fresh)."""
        self._evict(self.clock())


def limiter_for(settings: Any, metrics: TargetMetrics | None) -> RateLimiter | None:
    """The limiter of a target's settings; None when no limit is configured (like nginx without
    ``limit_req``: a server knows nothing of its clients' rates until told) or under the
    ``no_rate_limit`` misconfiguration (configured limits dropped)."""
    if "no_rate_limit" in settings.misconfigurations:
        return None
    explicit = settings.model_fields_set & {"rate_limit_rps", "rate_limit_burst"}
    if settings.rate_limits is None and not explicit:
        return None
    table: RateLimitTable = settings.rate_limits or RateLimitTable()
    if metrics is not None:
        _init_labels(metrics, table.clients)
    return RateLimiter(table, default=Limit(rps=settings.rate_limit_rps, burst=settings.rate_limit_burst),
                       max_clients=settings.rate_limit_max_clients, metrics=metrics)  # fmt: skip
