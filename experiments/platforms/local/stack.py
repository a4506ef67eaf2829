"""The bundled system on this machine: feature store, fault proxy, N target replicas.

``LocalStack`` starts real processes on loopback — the feature store over TLS, a TCP fault
proxy in front of it (so dependency latency, resets and black holes are injectable), and
replicas of the target, each inside its own faultdrill-owned memory cgroup when the host
has a memory controller — and describes them as a :class:`~faults.topology.Topology`
plus the :class:`~faults.base.Scope` faults may touch. It implements the
:class:`~faults.topology.Supervisor` protocol (stop, hold down, restart), so faults that
need a live platform work against it. It is the seed of the local platform: probes,
restart policies and the readiness-aware service endpoint build on it.

With ``cache_max_memory_bytes`` it also starts the prediction cache: a real ``redis-server``
(``experiments/platforms/local/redis.py``: memory cap, LRU, no persistence, a password in 0600 files) as
service ``cache`` (role ``cache``, stoppable and restartable like the feature store) with its
own fault proxy ``cache-proxy``; replicas reach it through the proxy and read the password
from its file.

``up()`` starts everything; :meth:`LocalStack.close` stops it all (also a context manager).
With an ``owner`` (``faults.owned.Owner``: a run's) every process it starts — services, fault
proxies — and the feature store's namespace are ledger records while they exist (the namespace's
before it is made), so whatever a killed run left is undone like a fault.

Example::

    with LocalStack(workdir, replicas=2, memory_limit_bytes=600 * 2**20) as stack:
        ctx = FaultContext.create(state_dir, scope=stack.scope(), topology=stack.topology(),
                                  supervisor=stack)
"""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from faultdrill.experiments.host.process import ServiceError, ServiceProcess, free_port
from faultdrill.faults.base import Injection, Scope
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.netns import PREFIX, Namespace, create_namespace, delete_namespace, netns_exec
from faultdrill.faults.owned import Owner
from faultdrill.faults.proxy_control import RunningProxy, spawn_proxy
from faultdrill.faults.topology import ServiceHandle, Topology

__all__ = ["LocalStack"]


@dataclass
class _Service:
    process: ServiceProcess
    handle: ServiceHandle
    ready_url: str
    verify: ssl.SSLContext | bool = True
    cgroup: MemoryCgroup | None = None
    held: bool = False
    ready_check: Callable[[float], object] | None = None
    """Readiness when the service is not HTTP (the cache: an authenticated PING)."""


@dataclass
class LocalStack:
    """Feature store + proxy + replicas, started on loopback under ``workdir``."""

    workdir: Path
    replicas: int = 1
    model_registry: Path | None = None
    memory_limit_bytes: int | None = None
    """Per-replica cgroup limit; None = no cgroup even where the host has one."""
    with_proxy: bool = True
    replica_env: dict[str, str] = field(default_factory=dict)
    feature_store_netns: bool = False
    """Run the feature store in its own faultdrill namespace (kernel-level partitions)."""
    ready_timeout_s: float = 60.0
    cert_reload_interval_s: float = 0.05
    """How often services check their certificate files (a stat call: ~6 µs)."""
    cache_max_memory_bytes: int | None = None
    """Start the prediction cache (a real redis-server with this ``maxmemory``); None = no cache."""
    cache_ttl_s: float = 30.0
    canary_replicas: int = 0
    """Extra replicas ``canary-N`` started with ``canary_env`` on top of ``replica_env`` (a canary rollout)."""
    canary_env: dict[str, str] = field(default_factory=dict)
    traces: bool = True
    """Replicas and the feature store write their spans to ``workdir/traces/<name>.jsonl``."""
    trace_sample_ratio: float = 0.2
    """Share of requests traced. Not 1.0: the OTel Python SDK costs ~0.5-0.7 ms of event-loop time per
    traced request here (``benchmarks/trace_bench.py``), enough to move a run's p95; a spec can set
    ``target.env.FAULTDRILL_TRACE_SAMPLE_RATIO``."""
    owner: Owner | None = None
    """Records every process and namespace in the ledger while it exists; None: not recorded."""
    _services: dict[str, _Service] = field(default_factory=dict, init=False)
    _records: dict[str, Injection | None] = field(default_factory=dict, init=False)
    """The proxies' and the namespace's ledger records (services keep theirs in ``ServiceProcess``)."""
    _proxy: RunningProxy | None = field(default=None, init=False)
    _fs_netns: Namespace | None = field(default=None, init=False)
    _cache_proxy: RunningProxy | None = field(default=None, init=False)
    _cache_env: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # Every path handed to a service (certificates, tokens, registry, traces) is absolute: a
        # service may resolve a relative one against another directory than this process's cwd.
        self.workdir = Path(self.workdir).absolute()
        if self.model_registry is not None:
            self.model_registry = Path(self.model_registry).absolute()

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def up(self) -> None:
        """Start everything and wait until each service answers (or stop all and raise)."""
        from faultdrill.target_service.pki import ensure_dev_pki
        from faultdrill.target_service.registry import ModelRegistry

        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = ensure_dev_pki(self.workdir / "pki")
            registry = self.model_registry or self.workdir / "models"
            ModelRegistry(registry).ensure_defaults()
            self.model_registry = registry
            self._start_feature_store()
            fs = self._services["feature-store"].handle
            upstream_port = fs.port
            assert upstream_port is not None
            upstream_host = self._fs_netns.ns_addr if self._fs_netns else "127.0.0.1"
            if self.with_proxy:
                self._proxy = self._spawn_proxy("feature-store-proxy", (upstream_host, upstream_port), "proxy")
                upstream_host, upstream_port = "127.0.0.1", self._proxy.listen[1]
            if self.cache_max_memory_bytes:
                self._start_cache()
            names = [f"replica-{i}" for i in range(self.replicas)]
            for name in names:  # start all, then wait: replicas load their models in parallel
                self._start_replica(name, upstream_port, upstream_host)
            for i in range(self.canary_replicas):
                names.append(f"canary-{i}")
                self._start_replica(names[-1], upstream_port, upstream_host, extra_env=self.canary_env)
            for name in names:
                svc = self._services[name]
                svc.process.wait_http(svc.ready_url, self.ready_timeout_s, verify=svc.verify)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for svc in reversed(list(self._services.values())):
            svc.process.stop(10)
            if svc.cgroup is not None:
                svc.cgroup.remove()
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
            self._release("feature-store-proxy")
        if self._cache_proxy is not None:
            self._cache_proxy.stop()
            self._cache_proxy = None
            self._release("cache-proxy")
        if self._fs_netns is not None:  # after its process stopped: the veth pair goes too
            delete_namespace(self._fs_netns.name)
            self._fs_netns = None
        self._release("netns")  # also when its creation failed (the record was written first)

    def _release(self, key: str) -> None:
        if self.owner is not None:
            self.owner.release(self._records.pop(key, None))

    def _spawn_proxy(self, name: str, upstream: tuple[str, int], token: str) -> RunningProxy:
        proxy = spawn_proxy(upstream, token_file=self._token_file(token))
        if self.owner is not None:
            try:
                self._records[name] = self.owner.record_process(name, proxy.process.pid, proxy.argv)
            except BaseException:
                proxy.stop()  # unrecorded, it could outlive a crash of this run
                raise
        return proxy

    # -- building blocks ---------------------------------------------------------------
    @property
    def trace_dir(self) -> Path:
        """Where the services' span files are (one JSON-lines file each; see ``experiments.observe.traces``)."""
        return self.workdir / "traces"

    def _token_file(self, name: str) -> Path:
        path = self.workdir / f"{name}.token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path

    def _start_feature_store(self) -> None:
        port = free_port()
        token_file = self._token_file("feature-store-admin")
        host, cert = "127.0.0.1", self.pki.feature_store
        argv = [sys.executable, "-m", "faultdrill.target_service", "feature-store"]
        if self.feature_store_netns:
            from faultdrill.target_service.pki import issue_cert

            suffix = "fs" + secrets.token_hex(4)
            if self.owner is not None:  # recorded before it exists: deleting one never made is a no-op
                self._records["netns"] = self.owner.record_netns(PREFIX + suffix)
            self._fs_netns = create_namespace(suffix)
            host = self._fs_netns.ns_addr
            # The namespace address must be a SAN, or TLS clients reaching it directly fail.
            (self.workdir / "pki-netns").mkdir(mode=0o700, exist_ok=True)
            cert = issue_cert(self.pki.ca, self.workdir / "pki-netns", "feature-store",
                              hosts=(host, "127.0.0.1", "localhost"))  # fmt: skip
            argv = netns_exec(self._fs_netns.name, argv)  # ip netns exec execs: same pid
        env = {
            "FAULTDRILL_FS_PORT": str(port), "FAULTDRILL_FS_HOST": host,
            "FAULTDRILL_FS_TLS_CERT_FILE": str(cert.cert),
            "FAULTDRILL_FS_TLS_KEY_FILE": str(cert.key),
            "FAULTDRILL_FS_CERT_RELOAD_INTERVAL_S": str(self.cert_reload_interval_s),
            "FAULTDRILL_FS_ADMIN_TOKEN": token_file.read_text().strip(),
        }
        if self.traces:
            env["FAULTDRILL_FS_TRACE_FILE"] = str(self.trace_dir / "feature-store.jsonl")
        url = f"https://{host}:{port}"
        handle = ServiceHandle(
            name="feature-store", role="feature_store", url=url, admin_url=url,
            admin_token_file=token_file, cert_file=cert.cert, key_file=cert.key,
            ca_file=self.pki.ca.cert, port=port, netns=self._fs_netns.name if self._fs_netns else None,
        )  # fmt: skip
        verify = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        self._launch(handle, env, f"{url}/healthz", verify, argv)

    def _start_cache(self) -> None:
        """redis-server (password in 0600 files only) and its own fault proxy; replicas use the proxy."""
        from faultdrill.experiments.platforms.local.redis import RedisServerConfig, wait_redis

        assert self.cache_max_memory_bytes is not None
        server = RedisServerConfig(self.workdir / "cache", max_memory_bytes=self.cache_max_memory_bytes)
        argv = server.write()
        handle = ServiceHandle(name="cache", role="cache", url=f"redis://{server.host}:{server.port}/0",
                               admin_token_file=server.password_file, port=server.port)  # fmt: skip
        self._launch(handle, {}, "", True, argv, wait=False)
        svc = self._services["cache"]
        svc.ready_check = lambda timeout: wait_redis(server.host, server.port, server.password_file, timeout,
                                                     alive=svc.process.running)  # fmt: skip
        svc.ready_check(self.ready_timeout_s)
        self._cache_proxy = self._spawn_proxy("cache-proxy", (server.host, server.port), "cache-proxy")
        host, port = self._cache_proxy.listen
        self._cache_env = {"FAULTDRILL_CACHE_URL": f"redis://{host}:{port}/0",
                           "FAULTDRILL_CACHE_PASSWORD_FILE": str(server.password_file),
                           "FAULTDRILL_CACHE_TTL_S": str(self.cache_ttl_s)}  # fmt: skip

    def _start_replica(self, name: str, upstream_port: int, upstream_host: str = "127.0.0.1",
                       extra_env: dict[str, str] | None = None) -> None:  # fmt: skip
        port, admin_port = free_port(), free_port()
        token_file = self._token_file(f"{name}-admin")
        cgroup = None
        controller = detect_memory_controller() if self.memory_limit_bytes else None
        if controller is not None and self.memory_limit_bytes:
            cgroup = MemoryCgroup.create(controller, f"{self.workdir.name}-{name}-{os.getpid()}")
            cgroup.set_limit(self.memory_limit_bytes)
        env = {
            "FAULTDRILL_PORT": str(port), "FAULTDRILL_ADMIN_PORT": str(admin_port),
            "FAULTDRILL_ADMIN_TOKEN": token_file.read_text().strip(),
            "FAULTDRILL_MODEL_REGISTRY": str(self.model_registry),
            "FAULTDRILL_FEATURE_STORE_URL": f"https://{upstream_host}:{upstream_port}",
            "FAULTDRILL_CA_FILE": str(self.pki.ca.cert),
            "FAULTDRILL_CERT_RELOAD_INTERVAL_S": str(self.cert_reload_interval_s),
            "FAULTDRILL_BREAKER_RESET_TIMEOUT_S": "1", **self._cache_env, **self.replica_env, **(extra_env or {}),
        }  # fmt: skip
        if self.traces:  # first, so a spec's env can still change them (e.g. the sample ratio)
            env = {"FAULTDRILL_TRACE_FILE": str(self.trace_dir / f"{name}.jsonl"), "FAULTDRILL_SERVICE_INSTANCE": name,
                   "FAULTDRILL_TRACE_SAMPLE_RATIO": str(self.trace_sample_ratio), **env}  # fmt: skip
        handle = ServiceHandle(
            name=name, role="replica", url=f"http://127.0.0.1:{port}",
            admin_url=f"http://127.0.0.1:{admin_port}", admin_token_file=token_file,
            cgroup=str(cgroup.path) if cgroup else None, ca_file=self.pki.ca.cert,
            model_registry=self.model_registry, model_name=env.get("FAULTDRILL_MODEL", "digits"),
            model_version=env.get("FAULTDRILL_MODEL_VERSION", "1"), port=port,
        )  # fmt: skip
        url = f"{handle.url}/v2/models/{handle.model_name}"
        argv = [sys.executable, "-m", "faultdrill.target_service", "serve"]
        self._launch(handle, env, url, True, argv, cgroup, wait=False)

    def _launch(
        self, handle: ServiceHandle, env: dict[str, str], ready_url: str, verify: ssl.SSLContext | bool,
        argv: list[str], cgroup: MemoryCgroup | None = None, wait: bool = True,
    ) -> None:  # fmt: skip
        log_path = self.workdir / f"{handle.name}.log"
        handle = handle.model_copy(update={"log_file": log_path})
        process = ServiceProcess(handle.name, argv, env=env, log_path=log_path,
                                 preexec=cgroup.preexec() if cgroup else None, owner=self.owner)  # fmt: skip
        svc = _Service(process, handle, ready_url, verify, cgroup)
        self._services[handle.name] = svc
        self._spawn(svc, wait=wait)

    def _spawn(self, svc: _Service, extra_env: dict[str, str] | None = None, wait: bool = True) -> None:
        base_env = dict(svc.process.env)
        if extra_env:
            svc.process.env = {**base_env, **extra_env}
        svc.process.start()
        svc.process.env = base_env
        svc.handle = svc.handle.model_copy(update={"pid": svc.process.pid})
        svc.held = False
        if wait and svc.ready_check is not None:
            svc.ready_check(self.ready_timeout_s)
        elif wait:
            svc.process.wait_http(svc.ready_url, self.ready_timeout_s, verify=svc.verify)

    # -- what faults see -----------------------------------------------------------------
    def topology(self) -> Topology:
        services = {name: svc.handle for name, svc in self._services.items()}
        if self._proxy is not None:
            host, port = self._proxy.listen
            chost, cport = self._proxy.control_address
            services["feature-store-proxy"] = ServiceHandle(
                name="feature-store-proxy", role="proxy", pid=self._proxy.process.pid,
                url=f"tcp://{host}:{port}", port=port, upstream_of="feature-store",
                control_url=f"http://{chost}:{cport}", admin_token_file=self.workdir / "proxy.token",
            )  # fmt: skip
        if self._cache_proxy is not None:
            host, port = self._cache_proxy.listen
            chost, cport = self._cache_proxy.control_address
            services["cache-proxy"] = ServiceHandle(
                name="cache-proxy", role="proxy", pid=self._cache_proxy.process.pid, url=f"tcp://{host}:{port}",
                port=port, upstream_of="cache", control_url=f"http://{chost}:{cport}",
                admin_token_file=self.workdir / "cache-proxy.token",
            )  # fmt: skip
        return Topology(services=services)

    def scope(self) -> Scope:
        topo = self.topology()
        pids = [s.pid for s in topo.services.values() if s.pid]
        cgroups = [s.cgroup for s in topo.services.values() if s.cgroup]
        ports = [s.port for s in topo.services.values() if s.port]
        netns = [s.netns for s in topo.services.values() if s.netns]
        return (Scope().with_pids(*pids).with_cgroups(*cgroups).with_ports(*ports)
                .with_paths(self.workdir).with_netns(*netns))  # fmt: skip

    # -- Supervisor protocol -------------------------------------------------------------
    @property
    def supervisor_pid(self) -> int:
        """This process: the platform lives and dies with it (``faults.owned.supervisor_identity``)."""
        return os.getpid()

    def _svc(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise ServiceError(f"unknown service {name!r}") from None

    def handle(self, name: str) -> ServiceHandle:
        return self.topology().get(name)

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        svc = self._svc(name)
        svc.held = hold
        return svc.process.stop(10)

    def kill(self, name: str, sig: int) -> None:
        self._svc(name).process.signal(sig)

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        svc = self._svc(name)
        if svc.process.running():
            return
        self._spawn(svc, env, wait)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        svc = self._svc(name)
        svc.process.stop(10)
        self._spawn(svc, env, wait)

    def exit_status(self, name: str) -> int | None:
        proc = self._svc(name).process.proc
        return None if proc is None else proc.poll()

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        proc = self._svc(name).process.proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout_s)
        except Exception:
            return None

    def send(self, name: str, sig: signal.Signals) -> None:
        self.kill(name, int(sig))
