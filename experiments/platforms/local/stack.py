"""The described system on this machine: the bundled target's feature store, fault proxies, replicas.

``LocalStack`` starts exactly the services of a :class:`~experiments.spec.system.SystemDescription`
(``system``; without one, the bundled system its keywords describe: ``replicas``, ``with_proxy``,
``feature_store_netns``, ``cache_max_memory_bytes``, ``canary_replicas``) as real processes on loopback —
a feature store over TLS, a TCP fault proxy in front of each service the description puts one before (so
dependency latency, resets and black holes are injectable), and the replicas of the target, each inside
its own faultdrill-owned memory cgroup when the host has a memory controller — and describes them as a
:class:`~faults.topology.Topology` (one handle per described service, under its described name and role)
plus the :class:`~faults.base.Scope` faults may touch. How a role's process starts — the bundled
target's argv and ``FAULTDRILL_*`` env, the env a replica needs to reach a dependency — is the one
table ``_STARTERS`` below, keyed by role; the programs' fixed facts are ``experiments.spec.bundled``. It implements the
:class:`~faults.topology.Supervisor` protocol (stop, hold down, restart), so faults that
need a live platform work against it. It is the seed of the local platform: probes,
restart policies and the readiness-aware service endpoint build on it.

A description with a ``program`` (a service of the user's, ``target.service: {kind: process | url}``) has its
replicas and dependencies started by ``program.py`` instead: one process per replica, ports allocated and
templates filled per replica (or, for ``kind: url``, a server already running behind its fault proxy), and a
fault proxy in front of each declared dependency — same ledger records, cgroups, supervision and topology.

A service of role ``cache`` is the prediction cache: a real ``redis-server``
(``experiments/platforms/local/redis.py``: memory cap ``cache_max_memory_bytes``, LRU, no persistence, a
password in 0600 files), stoppable and restartable like the feature store; replicas reach it through its
fault proxy when the description has one and read the password from its file.

``up()`` starts everything; :meth:`LocalStack.close` stops it all (also a context manager).
With an ``owner`` (``faults.owned.Owner``: a run's) every process it starts — services, fault
proxies — and the feature store's namespace are ledger records while they exist (the namespace's
before it is made), so whatever a killed run left is undone like a fault.

Example::

    with LocalStack(workdir, replicas=2, memory_limit_bytes=600 * 2**20) as stack:
        ctx = FaultContext.create(state_dir, scope=stack.scope(), topology=stack.topology(),
                                  supervisor=stack)

    # another description: two replicas of other names, the store without a proxy
    system = SystemDescription(name="mine", services=(Service(name="a", role="replica"),
                               Service(name="b", role="replica"), Service(name="store", role="feature_store")))
    with LocalStack(workdir, system=system) as stack:
        sorted(stack.topology().services)   # ['a', 'b', 'store']
"""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from faultdrill.experiments.host.cache import shared_model_registry
from faultdrill.experiments.host.process import ServiceError, ServiceProcess, free_port
from faultdrill.experiments.platforms.local import program as user_program
from faultdrill.experiments.platforms.local.probes import ProbeSet
from faultdrill.experiments.spec.bundled import BundledProcess, process_of
from faultdrill.experiments.spec.experiment import ProbeSettings
from faultdrill.experiments.spec.system import Service, SystemDescription, bundled_system
from faultdrill.faults.base import Injection, Scope
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.netns import PREFIX, Namespace, create_namespace, delete_namespace, netns_exec
from faultdrill.faults.owned import Owner, chain
from faultdrill.faults.proxy_control import RunningProxy, spawn_proxy
from faultdrill.faults.topology import ServiceHandle, Topology, merge_env

_VERSION_ENV = "FAULTDRILL_MODEL_VERSION"
_DEFAULT_VERSION = "1"  # what the bundled target loads when no version is set

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
    """The described services, started on loopback under ``workdir``; see the module docstring."""

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
    """The prediction cache's ``maxmemory`` (a real redis-server); without ``system``, None = no cache."""
    cache_ttl_s: float = 30.0
    canary_replicas: int = 0
    """Extra replicas ``canary-N`` (a canary rollout), without ``system``."""
    canary_env: dict[str, str] = field(default_factory=dict)
    """Started on top of ``replica_env`` for the description's canary replicas."""
    traces: bool = True
    """Replicas and the feature store write their spans to ``workdir/traces/<name>.jsonl``."""
    trace_sample_ratio: float = 0.2
    """Share of requests traced. Not 1.0: the OTel Python SDK costs ~0.5-0.7 ms of event-loop time per
    traced request here (``benchmarks/trace_bench.py``), enough to move a run's p95; a spec can set
    ``target.env.FAULTDRILL_TRACE_SAMPLE_RATIO``."""
    owner: Owner | None = None
    """Records every process and namespace in the ledger while it exists; None: not recorded."""
    system: SystemDescription | None = None
    """The services to start; None: the bundled system of ``replicas``, ``with_proxy``,
    ``feature_store_netns``, ``cache_max_memory_bytes`` and ``canary_replicas``. Given, it alone says which
    services run (those keywords are then not read)."""
    probe_settings: ProbeSettings = field(default_factory=ProbeSettings)
    """Probe thresholds of a described program's replicas (``target.probes``); their paths are the program's."""
    described: SystemDescription = field(init=False)
    """What runs: ``system``, or the bundled system the keywords describe."""
    attached: dict[str, ServiceHandle] = field(default_factory=dict, init=False)
    """Services in the topology that this stack did not start: a url server, declared dependencies."""
    dependency_urls: dict[str, str] = field(default_factory=dict, init=False)
    """A declared dependency → the address replicas reach it at (its fault proxy's)."""
    client_urls: dict[str, str] = field(default_factory=dict, init=False)
    """A replica → where clients reach it when not at its own URL (a url server: through its fault proxy)."""
    rendered_probes: dict[str, ProbeSet] = field(default_factory=dict, init=False)
    """A described program's replica → its probes, rendered for it (the platform's probe sampler reads them)."""
    _services: dict[str, _Service] = field(default_factory=dict, init=False)
    _records: dict[str, Injection | None] = field(default_factory=dict, init=False)
    """The proxies' and the namespace's ledger records (services keep theirs in ``ServiceProcess``)."""
    _proxies: dict[str, RunningProxy] = field(default_factory=dict, init=False)
    """Fault proxy name → the running proxy (in front of its description's ``upstream_of``)."""
    _netns: Namespace | None = field(default=None, init=False)
    _client_env: dict[str, str] = field(default_factory=dict, init=False)
    """What a replica needs to reach the dependencies started before it (``_STARTERS``' client env)."""

    def __post_init__(self) -> None:
        # Every path handed to a service (certificates, tokens, registry, traces) is absolute: a
        # service may resolve a relative one against another directory than this process's cwd.
        self.workdir = Path(self.workdir).absolute()
        if self.model_registry is not None:
            self.model_registry = Path(self.model_registry).absolute()
        self.described = self.system or bundled_system(
            replicas=self.replicas, cache=bool(self.cache_max_memory_bytes), canary_replicas=self.canary_replicas,
            feature_store_netns=self.feature_store_netns, memory_limit=self.memory_limit_bytes is not None,
            store_proxy=self.with_proxy,
        )  # fmt: skip
        _check_startable(self.described)

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def up(self) -> None:
        """Start everything and wait until each service answers (or stop all and raise).

        Order: each dependency (feature store, cache) in the description's order, then its fault proxy;
        then every replica (all at once: they load their models in parallel), then wait for them."""
        from faultdrill.target_service.pki import ensure_dev_pki
        from faultdrill.target_service.registry import ModelRegistry

        self.workdir.mkdir(parents=True, exist_ok=True)
        system = self.described
        try:
            if system.program is None:  # the bundled target's: its CA and its model registry
                self.pki = ensure_dev_pki(self.workdir / "pki")
                private = self.workdir / "models" if system.private_models else shared_model_registry()
                registry = self.model_registry or private
                ModelRegistry(registry).ensure_defaults()
                self.model_registry = registry
            for service in system.services:
                if service.role in _DEPENDENCY_STARTERS:
                    host, port = _DEPENDENCY_STARTERS[service.role].start(self, service)
                    if (proxy := system.proxy_of(service.name)) is not None:
                        running = self._spawn_proxy(proxy, (host, port))
                        host, port = "127.0.0.1", running.listen[1]
                    self._client_env.update(_DEPENDENCY_STARTERS[service.role].client_env(self, service, host, port))
            replicas = [s for s in system.services if s.role == "replica"]
            for service in replicas:  # start all, then wait: replicas load their models in parallel
                if system.program is not None:
                    _PROGRAM_REPLICAS[system.program.kind](self, service)
                else:
                    self._start_replica(service, extra_env=self.canary_env if service.canary else None)
            for service in replicas:
                if (svc := self._services.get(service.name)) is None:
                    continue  # not started here (a url server: awaited when attached)
                if svc.ready_check is not None:
                    svc.ready_check(self.ready_timeout_s)
                else:
                    svc.process.wait_http(svc.ready_url, self.ready_timeout_s, verify=svc.verify)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for svc in reversed(list(self._services.values())):
            svc.process.stop(10)
            if svc.cgroup is not None:
                svc.cgroup.remove()
        for name, proxy in list(self._proxies.items()):
            proxy.stop()
            del self._proxies[name]
            self._release(name)
        if self._netns is not None:  # after its process stopped: the veth pair goes too
            delete_namespace(self._netns.name)
            self._netns = None
        self._release("netns")  # also when its creation failed (the record was written first)

    def _release(self, key: str) -> None:
        if self.owner is not None:
            self.owner.release(self._records.pop(key, None))

    def spawn_proxy(self, name: str, upstream: tuple[str, int]) -> RunningProxy:
        """A fault proxy ``name`` in front of ``upstream``, a ledger record while it runs."""
        return self._spawn_proxy(name, upstream)

    def _spawn_proxy(self, name: str, upstream: tuple[str, int]) -> RunningProxy:
        proxy = spawn_proxy(upstream, token_file=self._token_file(name))
        if self.owner is not None:
            try:
                self._records[name] = self.owner.record_process(name, proxy.process.pid, proxy.argv)
            except BaseException:
                proxy.stop()  # unrecorded, it could outlive a crash of this run
                raise
        self._proxies[name] = proxy
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

    # -- the bundled target's processes, by role (``_STARTERS`` at the end of this module) ------------------
    def _start_feature_store(self, service: Service) -> tuple[str, int]:
        """The bundled feature store over TLS (in its own namespace with ``own_netns``); where it listens."""
        program = _program(service)
        port = free_port()
        token_file = self._token_file(f"{service.name}-admin")
        host, cert = "127.0.0.1", self.pki.feature_store
        argv = [sys.executable, "-m", "faultdrill.target_service", program.command]
        if "own_netns" in service.capabilities:
            from faultdrill.target_service.pki import issue_cert

            suffix = "fs" + secrets.token_hex(4)
            if self.owner is not None:  # recorded before it exists: deleting one never made is a no-op
                self._records["netns"] = self.owner.record_netns(PREFIX + suffix)
            self._netns = create_namespace(suffix)
            host = self._netns.ns_addr
            # The namespace address must be a SAN, or TLS clients reaching it directly fail.
            (self.workdir / "pki-netns").mkdir(mode=0o700, exist_ok=True)
            cert = issue_cert(self.pki.ca, self.workdir / "pki-netns", service.name,
                              hosts=(host, "127.0.0.1", "localhost"))  # fmt: skip
            argv = netns_exec(self._netns.name, argv)  # ip netns exec execs: same pid
        env = {
            "FAULTDRILL_FS_PORT": str(port), "FAULTDRILL_FS_HOST": host,
            "FAULTDRILL_FS_TLS_CERT_FILE": str(cert.cert),
            "FAULTDRILL_FS_TLS_KEY_FILE": str(cert.key),
            "FAULTDRILL_FS_CERT_RELOAD_INTERVAL_S": str(self.cert_reload_interval_s),
            program.admin_token_env: token_file.read_text().strip(),
        }
        if self.traces:
            env["FAULTDRILL_FS_TRACE_FILE"] = str(self.trace_dir / f"{service.name}.jsonl")
        url = f"https://{host}:{port}"
        handle = ServiceHandle(
            name=service.name, role=service.role, url=url, admin_url=url,
            admin_token_file=token_file, cert_file=cert.cert, key_file=cert.key,
            ca_file=self.pki.ca.cert, port=port, netns=self._netns.name if self._netns else None,
        )  # fmt: skip
        verify = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        self._launch(handle, env, f"{url}{program.health_path}", verify, argv)
        return host, port

    def _feature_store_client(self, service: Service, host: str, port: int) -> dict[str, str]:
        return {"FAULTDRILL_FEATURE_STORE_URL": f"https://{host}:{port}"}

    def _start_cache(self, service: Service) -> tuple[str, int]:
        """redis-server (password in 0600 files only); where it listens."""
        from faultdrill.experiments.platforms.local.redis import RedisServerConfig, wait_redis

        if not self.cache_max_memory_bytes:
            raise ConfigError(f"service {service.name!r} is a cache: the local platform needs its maxmemory "
                              "(cache_max_memory_bytes)", field="target.cache.max_memory")  # fmt: skip
        server = RedisServerConfig(self.workdir / service.name, max_memory_bytes=self.cache_max_memory_bytes)
        argv = server.write()
        handle = ServiceHandle(name=service.name, role=service.role, url=f"redis://{server.host}:{server.port}/0",
                               admin_token_file=server.password_file, port=server.port)  # fmt: skip
        self._launch(handle, {}, "", True, argv, wait=False)
        svc = self._services[service.name]
        svc.ready_check = lambda timeout: wait_redis(server.host, server.port, server.password_file, timeout,
                                                     alive=svc.process.running)  # fmt: skip
        svc.ready_check(self.ready_timeout_s)
        return server.host, server.port

    def _cache_client(self, service: Service, host: str, port: int) -> dict[str, str]:
        password_file = self._services[service.name].handle.admin_token_file
        return {"FAULTDRILL_CACHE_URL": f"redis://{host}:{port}/0",
                "FAULTDRILL_CACHE_PASSWORD_FILE": str(password_file),
                "FAULTDRILL_CACHE_TTL_S": str(self.cache_ttl_s)}  # fmt: skip

    def memory_cgroup(self, name: str, *, contain: bool = False) -> MemoryCgroup | None:
        """A new memory cgroup for replica ``name`` at the replica limit (None: no controller here, or no limit and
        not ``contain``). ``contain``: one without a limit too — a server of the user's may start processes of its
        own, and the cgroup is how they are found and stopped with it (``ServiceProcess.sweep``)."""
        controller = detect_memory_controller() if self.memory_limit_bytes or contain else None
        if controller is None:
            return None
        cgroup = MemoryCgroup.create(controller, f"{self.workdir.name}-{name}-{os.getpid()}")
        if self.memory_limit_bytes:
            cgroup.set_limit(self.memory_limit_bytes)
        return cgroup

    def _start_replica(self, service: Service, extra_env: dict[str, str] | None = None) -> None:
        name, program = service.name, _program(service)
        port, admin_port = free_port(), free_port()
        token_file = self._token_file(f"{name}-admin")
        cgroup = self.memory_cgroup(name)
        gpu_state = self.workdir / "gpus" / f"{name}.json"  # the replica's emulated GPU: outlives its process
        env = {
            "FAULTDRILL_GPU_STATE_FILE": str(gpu_state),
            "FAULTDRILL_PORT": str(port), "FAULTDRILL_ADMIN_PORT": str(admin_port),
            program.admin_token_env: token_file.read_text().strip(),
            "FAULTDRILL_MODEL_REGISTRY": str(self.model_registry),
            "FAULTDRILL_CA_FILE": str(self.pki.ca.cert),
            "FAULTDRILL_CERT_RELOAD_INTERVAL_S": str(self.cert_reload_interval_s),
            "FAULTDRILL_BREAKER_RESET_TIMEOUT_S": "1", **self._client_env, **self.replica_env, **(extra_env or {}),
        }  # fmt: skip
        if self.traces:  # first, so a spec's env can still change them (e.g. the sample ratio)
            env = {"FAULTDRILL_TRACE_FILE": str(self.trace_dir / f"{name}.jsonl"), "FAULTDRILL_SERVICE_INSTANCE": name,
                   "FAULTDRILL_TRACE_SAMPLE_RATIO": str(self.trace_sample_ratio), **env}  # fmt: skip
        handle = ServiceHandle(
            name=name, role=service.role, url=f"http://127.0.0.1:{port}",
            admin_url=f"http://127.0.0.1:{admin_port}", admin_token_file=token_file,
            cgroup=str(cgroup.path) if cgroup else None, ca_file=self.pki.ca.cert,
            model_registry=self.model_registry, model_name=env.get("FAULTDRILL_MODEL", "digits"),
            model_version=env.get(_VERSION_ENV, _DEFAULT_VERSION), port=port, gpu_state_file=gpu_state,
        )  # fmt: skip
        url = f"{handle.url}/v2/models/{handle.model_name}"
        argv = [sys.executable, "-m", "faultdrill.target_service", program.command]
        self._launch(handle, env, url, True, argv, cgroup, wait=False)

    def launch(self, handle: ServiceHandle, env: dict[str, str], argv: list[str], *, cgroup: MemoryCgroup | None,
               cwd: str | None, ready_check: Callable[[float], object]) -> None:  # fmt: skip
        """Start a described program's process (not waiting): supervised, recorded, stopped like every other."""
        self._launch(handle, env, "", True, argv, cgroup, wait=False, cwd=cwd, ready_check=ready_check)

    def _launch(
        self, handle: ServiceHandle, env: dict[str, str], ready_url: str, verify: ssl.SSLContext | bool,
        argv: list[str], cgroup: MemoryCgroup | None = None, wait: bool = True, cwd: str | None = None,
        ready_check: Callable[[float], object] | None = None,
    ) -> None:  # fmt: skip
        log_path = self.workdir / f"{handle.name}.log"
        handle = handle.model_copy(update={"log_file": log_path})
        enter = (lambda: os.chdir(cwd)) if cwd is not None else None  # in the child, after it joined its cgroup
        process = ServiceProcess(handle.name, argv, env=env, log_path=log_path, container=cgroup,
                                 preexec=chain(cgroup.preexec() if cgroup else None, enter), owner=self.owner)
        svc = _Service(process, handle, ready_url, verify, cgroup, ready_check=ready_check)
        self._services[handle.name] = svc
        self._spawn(svc, wait=wait)

    def _spawn(self, svc: _Service, extra_env: dict[str, str] | None = None, wait: bool = True) -> None:
        base_env = dict(svc.process.env)  # the spec (``set_env`` changes it); ``extra_env`` is this start's only
        started_env = {**base_env, **(extra_env or {})}
        svc.process.env = started_env
        svc.process.start()
        svc.process.env = base_env
        update: dict[str, object] = {"pid": svc.process.pid}
        if svc.handle.model_version is not None:  # the bundled target: the version this process was started on
            update["model_version"] = started_env.get(_VERSION_ENV, _DEFAULT_VERSION)
        svc.handle = svc.handle.model_copy(update=update)
        svc.held = False
        if wait and svc.ready_check is not None:
            svc.ready_check(self.ready_timeout_s)
        elif wait:
            svc.process.wait_http(svc.ready_url, self.ready_timeout_s, verify=svc.verify)

    # -- what faults see -----------------------------------------------------------------
    def topology(self) -> Topology:
        """A handle per described service: the services, those it did not start, then the fault proxies."""
        services = {name: svc.handle for name, svc in self._services.items()} | self.attached
        for name, proxy in self._proxies.items():
            host, port = proxy.listen
            chost, cport = proxy.control_address
            described = self.described.get(name)
            services[name] = ServiceHandle(
                name=name, role="proxy", pid=proxy.process.pid, url=f"tcp://{host}:{port}", port=port,
                upstream_of=described.upstream_of if described else None, control_url=f"http://{chost}:{cport}",
                admin_token_file=self.workdir / f"{name}.token",
            )  # fmt: skip
        return Topology(services=services)

    def client_url(self, name: str) -> str | None:
        """Where clients (the service endpoint) reach replica ``name``: its URL, or its fault proxy's."""
        return self.client_urls.get(name) or self.topology().get(name).url

    def probe_sets(self) -> dict[str, ProbeSet]:
        """A described program's replicas' own probes (empty for the bundled target: the platform's apply)."""
        return dict(self.rendered_probes)

    def service(self, name: str) -> _Service:
        """The started service ``name`` (a ServiceError when this stack did not start it)."""
        return self._svc(name)

    def scope(self) -> Scope:
        topo = self.topology()
        pids = [s.pid for s in topo.services.values() if s.pid]
        cgroups = [s.cgroup for s in topo.services.values() if s.cgroup]
        ports = [s.port for s in topo.services.values() if s.port]
        netns = [s.netns for s in topo.services.values() if s.netns]
        scope = (Scope().with_pids(*pids).with_cgroups(*cgroups).with_ports(*ports)
                 .with_paths(self.workdir).with_netns(*netns))  # fmt: skip
        program = self.described.program
        if program is not None and program.kind == "url":  # what the spec allow-lists on a server it runs itself
            scope = scope.with_pids(*program.allow.pids).with_cgroups(*program.allow.cgroups)
        if program is not None:  # what the spec declares faults may change: its model repository, its certificate
            declared = [p for s in topo.services.values() for p in (s.model_registry, s.cert_file, s.key_file) if p]
            scope = scope.with_paths(*declared)
        return scope

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

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        """Change ``name``'s spec: the environment of every later start (restarts included), not of the running
        process; None removes a variable. Returns the previous values of the variables given (None: not set)."""
        svc = self._svc(name)
        spec = dict(svc.process.env)
        previous = merge_env(spec, env)
        svc.process.env = spec
        return previous

    def sweep(self, name: str) -> list[int]:
        """``name`` has exited: kill what it left running (``ServiceProcess.sweep``); the pids from its cgroup."""
        return self._svc(name).process.sweep()

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


# -- which roles this stack starts, and how --------------------------------------------------------------
def _program(service: Service) -> BundledProcess:
    program = process_of(service.role)
    if program is None:
        raise ServiceError(f"service {service.name!r}: the bundled target has no program of role {service.role!r}")
    return program


@dataclass(frozen=True)
class _Dependency:
    """A service replicas call: how it starts (returns where it listens) and the env a replica needs to reach it
    at an address (its own, or its fault proxy's)."""

    start: Callable[[LocalStack, Service], tuple[str, int]]
    client_env: Callable[[LocalStack, Service, str, int], dict[str, str]]


_DEPENDENCY_STARTERS: dict[str, _Dependency] = {
    "feature_store": _Dependency(LocalStack._start_feature_store, LocalStack._feature_store_client),
    "cache": _Dependency(LocalStack._start_cache, LocalStack._cache_client),
    "dependency": _Dependency(user_program.dependency_address, user_program.dependency_client),
}
"""Role → how a dependency of the replicas starts; replicas (``LocalStack._start_replica``) start after them.
With the fault proxies these are the roles this stack starts: ``_STARTERS``. A ``dependency`` (a service of the
user's) is not started: only its fault proxy is, and the replicas are told its address."""

_PROGRAM_REPLICAS: dict[str, Callable[[LocalStack, Service], None]] = {
    "process": user_program.start_process_replica,
    "url": user_program.attach_url_replica,
}
"""``target.service.kind`` → how a replica of a described program starts (the bundled target's: ``_start_replica``)."""

_STARTERS = (*_DEPENDENCY_STARTERS, "replica", "proxy")


def _check_startable(system: SystemDescription) -> None:
    """Every described service is one this stack can start (a proxy: in front of a described dependency)."""
    for s in system.services:
        if s.role not in _STARTERS:
            raise ConfigError(f"service {s.name!r}: the local platform starts no service of role {s.role!r} "
                              f"(it starts {', '.join(_STARTERS)})", field="system")  # fmt: skip
        upstream = system.get(s.upstream_of) if s.upstream_of else None
        fronts_a_url = upstream is not None and upstream.role == "replica" and system.program is not None \
            and system.program.kind == "url"  # fmt: skip
        if s.role == "proxy" and (upstream is None or upstream.role not in _DEPENDENCY_STARTERS) and not fronts_a_url:
            raise ConfigError(f"fault proxy {s.name!r} must stand in front of a described "
                              f"{' or '.join(_DEPENDENCY_STARTERS)} (upstream_of: {s.upstream_of!r})",
                              field="system")  # fmt: skip
        if s.role == "dependency" and (system.program is None or system.program.kind != "process"):
            raise ConfigError(f"service {s.name!r}: a dependency is declared by a process service "
                              "(target.service.dependencies)", field="system")  # fmt: skip
