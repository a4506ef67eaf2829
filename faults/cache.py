"""The prediction cache (role ``cache``: a real redis-server) down, partitioned, slow or flushed.

Three faults, each for real:

- ``cache_outage`` ``mode: down``: the supervisor stops redis-server and holds it down (the
  replicas' connections are refused); rollback starts it again, cold (no persistence).
  ``mode: partitioned``: the cache's own TCP fault proxy (``upstream_of`` = the cache)
  black-holes every connection (``how: blackhole``: connected, never answered — the
  replicas wait for their timeout) or resets them (``how: reset``); rollback: passthrough.
- ``cache_slow``: that proxy adds ``latency_ms`` (± ``jitter_ms``); rollback: passthrough.
- ``cache_flush``: ``FLUSHALL`` over the authenticated Redis protocol, a cold-cache stampede
  onto the model. A flush cannot be undone (the data is gone, as in production); its
  rollback is a no-op and says so in the plan.

Records hold pids with start ticks, ports, the proxy's control URL and the *paths* of the
password and token files (never their contents), so ``faultdrill rollback --pending`` in
another process can undo them. ``verify`` measures with real PINGs, directly and through
the proxy, and for a flush checks a sentinel key written just before it is gone.

Example::

    fault = CacheOutageFault()
    cfg = fault.parse_config({"target": "cache", "mode": "partitioned", "duration_s": 10})
    inj = fault.inject(cfg, ctx)
    assert fault.verify(inj, ctx).effective     # PING through the proxy times out
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import redis
from pydantic import Field, model_validator

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import ConfigError, FaultdrillError, InjectionError, RollbackError
from faultdrill.faults.network import set_proxy_mode
from faultdrill.faults.owned import supervisor_gone, supervisor_identity
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.proxy import ProxyMode
from faultdrill.faults.topology import ServiceHandle

__all__ = ["CacheFlushFault", "CacheOutageFault", "CacheSlowFault", "ping"]


def ping(host: str, port: int, password_file: str | None, timeout: float) -> tuple[str, float]:
    """An authenticated ``PING``: (``ok`` | ``timeout`` | ``refused`` | ``reset`` | ``error``, ms)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    started = time.perf_counter()
    password = Path(password_file).read_text().strip() if password_file else None
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=timeout,
                         socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))  # fmt: skip
    try:
        client.ping()
        outcome = "ok"
    except redis.TimeoutError:
        outcome = "timeout"
    except redis.ConnectionError as exc:
        text = str(exc).lower()
        outcome = "refused" if "refused" in text else "reset" if ("reset" in text or "closed" in text) else "error"
    except (redis.RedisError, OSError):
        outcome = "error"
    finally:
        client.close()
    return outcome, round((time.perf_counter() - started) * 1000, 2)


def _cache(ctx: FaultContext, name: str) -> ServiceHandle:
    handle = ctx.topology.get(name, role="cache")
    if handle.pid is None or handle.port is None:
        raise ConfigError(f"cache '{name}' has no pid or port", field="target")
    return handle


def _proxy(ctx: FaultContext, cache: ServiceHandle) -> ServiceHandle:
    proxies = [p for p in ctx.topology.by_role("proxy") if p.upstream_of == cache.name]
    if not proxies or not proxies[0].control_url or proxies[0].pid is None:
        raise ConfigError(f"this mode needs the fault proxy in front of '{cache.name}'", field="mode")
    return proxies[0]


def _check_scope(ctx: FaultContext, *handles: ServiceHandle) -> None:
    for h in handles:
        assert h.pid is not None and h.port is not None
        ctx.scope.check_pid(h.pid)
        ctx.scope.check_port(h.port)


def _record(cache: ServiceHandle, proxy: ServiceHandle | None) -> dict[str, Any]:
    assert cache.pid is not None
    undo: dict[str, Any] = {
        "name": cache.name, "pid": cache.pid, "start_ticks": process_start_ticks(cache.pid),
        "host": urlsplit(cache.url or "").hostname or "127.0.0.1", "port": cache.port,
        "password_file": str(cache.admin_token_file) if cache.admin_token_file else None,
    }  # fmt: skip
    if proxy is not None:
        assert proxy.pid is not None
        undo["proxy"] = {"control_url": proxy.control_url, "token_file": str(proxy.admin_token_file),
                         "pid": proxy.pid, "start_ticks": process_start_ticks(proxy.pid),
                         "listen": [urlsplit(proxy.url or "").hostname or "127.0.0.1", proxy.port]}  # fmt: skip
    return undo


def _problems(ctx: FaultContext, *handles: ServiceHandle) -> list[Problem]:
    try:
        _check_scope(ctx, *handles)
    except FaultdrillError as exc:
        return [Problem("blast_radius", str(exc))]
    return []


def _direct(undo: dict[str, Any], timeout: float = 0.5) -> tuple[str, float]:
    return ping(undo["host"], int(undo["port"]), undo["password_file"], timeout)


def _via_proxy(undo: dict[str, Any], timeout: float = 0.5) -> tuple[str, float]:
    host, port = undo["proxy"]["listen"]
    return ping(str(host), int(port), undo["password_file"], timeout)


def _passthrough(fault: Fault, injection: Injection) -> None:
    proxy = injection.undo["proxy"]
    if not pid_alive(int(proxy["pid"]), proxy["start_ticks"]):
        return  # the proxy is gone, and its fault mode died with it
    try:
        set_proxy_mode(proxy, ProxyMode())
    except (OSError, httpx.HTTPError) as exc:
        raise RollbackError(f"cache proxy still in {injection.mode}: control API failed: {exc}",
                            fault=fault.name, injection_id=injection.id) from exc  # fmt: skip


class CacheOutageFault(Fault):
    """The cache unavailable: ``down`` (stopped, held) or ``partitioned`` (its proxy black-holes/resets)."""

    class Config(FaultConfig):
        target: str = "cache"
        mode: Literal["down", "partitioned"]
        how: Literal["blackhole", "reset"] = "blackhole"
        """partitioned: connections accepted and never answered, or reset."""

    name: ClassVar[str] = "cache_outage"
    target_roles: ClassVar[tuple[str, ...] | None] = ("cache",)
    modes: ClassVar[tuple[str, ...]] = ("down", "partitioned")
    needs: ClassVar[tuple[str, ...]] = ("live platform to hold the cache down (down)",
                                        "cache fault proxy (partitioned)")
    verifies: ClassVar[str] = "authenticated PINGs, directly and through the cache's proxy"
    example: ClassVar[dict[str, Any]] = {"target": "cache", "mode": "down"}

    def _targets(self, config: Config, ctx: FaultContext) -> tuple[ServiceHandle, ServiceHandle | None]:
        cache = _cache(ctx, config.target)
        return cache, _proxy(ctx, cache) if config.mode == "partitioned" else None

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        cache, proxy = self._targets(config, ctx)
        problems = _problems(ctx, *(h for h in (cache, proxy) if h is not None))
        if config.mode == "down" and ctx.supervisor is None:
            problems.append(Problem("no_supervisor", "mode 'down' needs a supervisor to hold the cache down "
                                    "and start it again", "run it on a platform"))  # fmt: skip
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        cache, proxy = self._targets(config, ctx)
        if config.mode == "down":
            return [f"stop redis-server pid {cache.pid} ('{cache.name}') and hold it down; rollback: start it (cold)"]
        assert proxy is not None
        return [f"PUT {proxy.control_url}/mode {{\"mode\": \"{config.how}\"}} (proxy '{proxy.name}' in front of "
                f"'{cache.name}'); rollback: mode passthrough"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        cache, proxy = self._targets(config, ctx)
        _check_scope(ctx, *(h for h in (cache, proxy) if h is not None))
        undo = {**_record(cache, proxy), "supervisor": supervisor_identity(ctx.supervisor)}
        injection = self.new_injection(config, ctx, mode=config.mode, target=cache.name, undo=undo,
                                       emulated=config.mode == "partitioned")  # fmt: skip

        def apply() -> None:
            if config.mode == "partitioned":
                set_proxy_mode(undo["proxy"], ProxyMode(mode=config.how))
            elif ctx.supervisor is None:
                raise FaultdrillError("mode 'down' needs a supervisor")
            else:
                ctx.supervisor.stop(cache.name, hold=True)

        return self.apply_recorded(injection, ctx, apply)

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if injection.mode == "partitioned":
            _passthrough(self, injection)
        elif ctx.supervisor is not None:
            ctx.supervisor.start(undo["name"])  # a no-op when it runs already
        elif supervisor_gone(undo):  # its platform died with its supervisor: nothing to start it into
            self.undo_note = f"'{undo['name']}' stays down: the platform that held it died"
        elif _direct(undo, 1.0)[0] != "ok":
            raise RollbackError(f"'{undo['name']}' was stopped and no supervisor is here to start it: "
                                "start it again, then rerun the rollback", fault=self.name,
                                injection_id=injection.id)  # fmt: skip

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        direct, direct_ms = _direct(undo)
        details: dict[str, Any] = {"direct": direct, "direct_ms": direct_ms}
        if injection.mode == "down":
            gone = not pid_alive(int(undo["pid"]), undo["start_ticks"])
            details["process_gone"] = gone
            return Verification(gone and direct == "refused", details,
                                message=f"down: process gone and PING refused expected; PING {direct}")  # fmt: skip
        via, via_ms = _via_proxy(undo)
        details.update(via_proxy=via, via_proxy_ms=via_ms)
        want = "timeout" if injection.config.get("how") == "blackhole" else "reset"
        effective = direct == "ok" and (via == want or (want == "reset" and via == "refused"))
        return Verification(effective, details, emulated=True,
                            message=f"partitioned: cache answers directly ({direct}), PING through its proxy "
                                    f"{via} in {via_ms} ms ({want} expected)")  # fmt: skip


class CacheSlowFault(Fault):
    """Every exchange with the cache delayed by its proxy."""

    class Config(FaultConfig):
        target: str = "cache"
        latency_ms: float = Field(default=200.0, gt=0, le=60_000)
        jitter_ms: float = Field(default=0.0, ge=0)

        @model_validator(mode="after")
        def _jitter(self) -> CacheSlowFault.Config:
            if self.jitter_ms > self.latency_ms:
                raise ValueError("jitter_ms must not exceed latency_ms")
            return self

    name: ClassVar[str] = "cache_slow"
    target_roles: ClassVar[tuple[str, ...] | None] = ("cache",)
    modes: ClassVar[tuple[str, ...]] = ("latency",)
    needs: ClassVar[tuple[str, ...]] = ("cache fault proxy",)
    verifies: ClassVar[str] = "a timed authenticated PING through the cache's proxy"
    example: ClassVar[dict[str, Any]] = {"target": "cache", "latency_ms": 200}

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        cache = _cache(ctx, config.target)
        return _problems(ctx, cache, _proxy(ctx, cache))

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        proxy = _proxy(ctx, _cache(ctx, config.target))
        return [f"PUT {proxy.control_url}/mode {{\"mode\": \"latency\", \"latency_ms\": {config.latency_ms}, "
                f"\"jitter_ms\": {config.jitter_ms}}} (proxy '{proxy.name}'); rollback: mode passthrough"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        cache = _cache(ctx, config.target)
        proxy = _proxy(ctx, cache)
        _check_scope(ctx, cache, proxy)
        undo = _record(cache, proxy)
        injection = self.new_injection(config, ctx, mode="latency", target=cache.name, undo=undo, emulated=True)
        mode = ProxyMode(mode="latency", latency_ms=config.latency_ms, jitter_ms=config.jitter_ms)
        return self.apply_recorded(injection, ctx, lambda: set_proxy_mode(undo["proxy"], mode))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        _passthrough(self, injection)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        cfg = injection.config
        floor = cfg["latency_ms"] - cfg["jitter_ms"]
        via, ms = _via_proxy(injection.undo, timeout=1.0 + 4 * (cfg["latency_ms"] + cfg["jitter_ms"]) / 1000)
        return Verification(via == "ok" and ms >= floor, {"via_proxy": via, "ms": ms}, emulated=True,
                            message=f"PING through the proxy {via} in {ms} ms (>= {floor} ms expected)")  # fmt: skip


class CacheFlushFault(Fault):
    """``FLUSHALL``: every cached prediction gone at once (cold-cache stampede); cannot be undone."""

    class Config(FaultConfig):
        target: str = "cache"

    name: ClassVar[str] = "cache_flush"
    target_roles: ClassVar[tuple[str, ...] | None] = ("cache",)
    modes: ClassVar[tuple[str, ...]] = ("flushall",)
    needs: ClassVar[tuple[str, ...]] = ("the cache's password file",)
    verifies: ClassVar[str] = "a sentinel key written before the flush is gone; DBSIZE before/after"
    example: ClassVar[dict[str, Any]] = {"target": "cache"}

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        cache = _cache(ctx, config.target)
        problems = _problems(ctx, cache)
        if cache.admin_token_file is None:
            problems.append(Problem("no_password", f"'{cache.name}' has no password file", "start it on a platform"))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        cache = _cache(ctx, config.target)
        return [f"FLUSHALL on {cache.url} ('{cache.name}', authenticated); rollback: none possible "
                "(the cache refills from the model)"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        cache = _cache(ctx, config.target)
        _check_scope(ctx, cache)
        undo = _record(cache, None)
        client = _client(undo)
        try:
            try:
                undo["dbsize_before"] = int(client.dbsize())
            except redis.RedisError as exc:
                raise InjectionError(f"cache '{cache.name}' did not answer: {exc}", fault=self.name) from exc
            injection = self.new_injection(config, ctx, mode="flushall", target=cache.name, undo=undo)
            sentinel = f"fd:flush-sentinel:{injection.id}"

            def apply() -> None:
                client.set(sentinel, b"1")
                client.flushall()

            return self.apply_recorded(injection, ctx, apply)
        finally:
            client.close()

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        return  # flushed data cannot come back; there is nothing left to restore

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        client = _client(injection.undo)
        try:
            gone = client.exists(f"fd:flush-sentinel:{injection.id}") == 0
            size = int(client.dbsize())
        except redis.RedisError as exc:
            return Verification(False, {"error": str(exc)}, message=f"cache unreachable: {exc}")
        finally:
            client.close()
        before = injection.undo.get("dbsize_before")
        return Verification(gone, {"sentinel_gone": gone, "dbsize_before": before, "dbsize_now": size},
                            message=f"flushed: {before} keys before, {size} now (refilled by traffic)")  # fmt: skip


def _client(undo: dict[str, Any]) -> redis.Redis:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pw_file = undo.get("password_file")
    password = Path(pw_file).read_text().strip() if pw_file else None
    return redis.Redis(host=undo["host"], port=int(undo["port"]), password=password, socket_timeout=2.0,
                       socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))  # fmt: skip
