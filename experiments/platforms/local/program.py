"""The local stack's starters for a service of the user's: its replicas, a server already running, its dependencies.

:class:`~experiments.platforms.local.stack.LocalStack` starts services by role, from one table; for a
description with a ``program`` (``target.service: {kind: process | url}``) the ``replica`` and ``dependency``
entries are these functions:

* :func:`start_process_replica` — one process per replica, its ports allocated (``host.ports.free_port``)
  and its command, env and working directory rendered for it (``described.py``), inside its own memory
  cgroup with a memory limit, a ledger record while it runs (``ServiceProcess``); its rendered probes are
  kept for the platform's probe sampler;
* :func:`attach_url_replica` — a server already running: nothing started; a fault proxy in front of it is
  what the service endpoint routes to (so edge faults and the load go through it), its probes sampled
  on its own address; its pid and cgroup, where ``allow`` lists them, are what process-level faults may touch;
* :func:`dependency_address` / :func:`dependency_client` — a declared dependency is the user's: its fault proxy
  is started, and the replicas learn the proxy's address (``via.env`` / ``via.arg``); with a ``command`` it is
  started too (before the replicas, a ledger record while it runs, awaited until its port accepts connections,
  stopped after the replicas), otherwise it must already listen.

Example::

    with LocalStack(workdir, system=described_system(program, replicas=2)) as stack:
        stack.client_url("server-0"), stack.probe_sets()["server-0"].readiness
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from faultdrill.experiments.host.process import ServiceError, free_port
from faultdrill.experiments.platforms.local import described
from faultdrill.experiments.platforms.local.probes import ProbeSet, wait_probe
from faultdrill.experiments.spec.service import ProcessService, UrlService
from faultdrill.experiments.spec.system import Service
from faultdrill.experiments.spec.templates import render
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.topology import ServiceHandle

if TYPE_CHECKING:
    from faultdrill.experiments.platforms.local.stack import LocalStack

__all__ = ["attach_url_replica", "dependency_address", "dependency_client", "start_process_replica"]


def _program(stack: LocalStack, kind: type[ProcessService] | type[UrlService]) -> ProcessService | UrlService:
    program = stack.described.program
    if not isinstance(program, kind):
        raise ServiceError(f"system {stack.described.name!r} has no {kind.__name__} to start")
    return program


def start_process_replica(stack: LocalStack, service: Service) -> None:
    """Start replica ``service`` of the described process service (not waiting for it to be ready)."""
    program = _program(stack, ProcessService)
    assert isinstance(program, ProcessService)
    index = stack.described.replicas().index(service.name)
    ports = {p: free_port() for p in program.ports}
    launch = described.replica_launch(program, name=service.name, index=index, ports=ports, workdir=stack.workdir,
                                      spec_dir=stack.described.spec_dir, dependency_urls=stack.dependency_urls)
    _check_runnable(launch)
    values = launch.values
    model = program.model
    handle = ServiceHandle(
        name=service.name, role=service.role, url=launch.url, port=ports["http"], metrics_url=launch.metrics_url,
        cert_file=described.rendered(program, program.tls.cert if program.tls else None, values),
        key_file=described.rendered(program, program.tls.key if program.tls else None, values),
        ca_file=described.rendered(program, program.tls.ca if program.tls else None, values),
        model_registry=described.rendered(program, model.repository if model else None, values),
        model_name=model.name if model else None, model_artifact=described.model_artifact(program, values),
    )  # fmt: skip
    probes = described.probe_set(program, stack.probe_settings, base_url=launch.url, values=values, env=launch.env,
                                 cwd=launch.cwd, port_url=lambda p: f"http://127.0.0.1:{ports[str(p)]}")
    if probes.readiness.exec is None:
        handle = handle.model_copy(update={"ready_url": probes.readiness.url or launch.url + probes.readiness.path})
    stack.rendered_probes[service.name] = probes
    cgroup = stack.memory_cgroup(service.name, contain=True)
    if cgroup is not None:
        handle = handle.model_copy(update={"cgroup": str(cgroup.path)})
    stack.launch(handle, launch.env, launch.argv, cgroup=cgroup, cwd=launch.cwd,
                 ready_check=_ready_check(stack, service.name, probes, launch.url))  # fmt: skip


def _check_runnable(launch: described.ReplicaLaunch) -> None:
    """A command that cannot start is the spec's error, said before anything runs."""
    if launch.cwd is not None and not Path(launch.cwd).is_dir():
        raise ConfigError(f"working directory {launch.cwd} does not exist", field="target.service.cwd")
    program = launch.argv[0]
    where = Path(launch.cwd or ".") / program if "/" in program else None
    found = (where.is_file() and os.access(where, os.X_OK)) if where is not None else \
        shutil.which(program, path=launch.env.get("PATH", os.environ.get("PATH")))  # fmt: skip
    if not found:
        raise ConfigError(f"command not found: {program}", field="target.service.command[0]",
                          expected="an executable on PATH, or a path to one (relative to target.service.cwd)")


def _ready_check(stack: LocalStack, name: str, probes: ProbeSet, url: str) -> Callable[[float], object]:
    def check(timeout_s: float) -> object:
        svc = stack.service(name)
        if not wait_probe(probes.readiness, url, timeout_s, alive=svc.process.running):
            state = "exited" if not svc.process.running() else f"not ready after {timeout_s:.0f}s"
            raise ServiceError(f"{name} {state} (readiness probe):\n{svc.process.log_tail()}")
        return True

    return check


def attach_url_replica(stack: LocalStack, service: Service) -> None:
    """The server at the described URL as replica ``service``: a fault proxy in front, its readiness awaited."""
    program = _program(stack, UrlService)
    assert isinstance(program, UrlService)
    host, port = described.dependency_address(program.url)
    base = program.url.rstrip("/")
    metrics_port = program.metrics.port if isinstance(program.metrics.port, int) else port
    handle = ServiceHandle(
        name=service.name, role=service.role, url=base, pid=next(iter(program.allow.pids), None),
        cgroup=next(iter(program.allow.cgroups), None), model_name=program.model.name if program.model else None,
        metrics_url=f"http://{host}:{metrics_port}{program.metrics.path}",
    )  # fmt: skip
    values = described.template_values(program, name=service.name, index=0, ports={"http": port},
                                       workdir=stack.workdir, spec_dir=stack.described.spec_dir)  # fmt: skip
    probes = described.probe_set(program, stack.probe_settings, base_url=base, values=values,
                                 port_url=lambda p: f"http://{host}:{p}")  # fmt: skip
    stack.rendered_probes[service.name] = probes
    stack.attached[service.name] = handle
    proxy = stack.described.proxy_of(service.name)
    if proxy is not None:
        running = stack.spawn_proxy(proxy, (host, port))
        stack.client_urls[service.name] = described.proxied_url(base, running.listen[1])
    if not wait_probe(probes.readiness, base, stack.ready_timeout_s, alive=lambda: True):
        raise ServiceError(f"{service.name}: the server at {program.url} is not ready after "
                           f"{stack.ready_timeout_s:.0f}s (its readiness probe never passed)")  # fmt: skip


def dependency_address(stack: LocalStack, service: Service) -> tuple[str, int]:
    """A declared dependency: started when it has a ``command``; where it listens (for its fault proxy)."""
    program = _program(stack, ProcessService)
    assert isinstance(program, ProcessService)
    dep = next(d for d in program.dependencies if d.name == service.name)
    host, port = described.dependency_address(dep.url)
    handle = ServiceHandle(name=service.name, role=service.role, url=dep.url, port=port)
    if dep.command is None:
        stack.attached[service.name] = handle
        return host, port
    if _accepts(host, port):
        raise ServiceError(f"dependency {service.name}: {host}:{port} is already taken by another process; its "
                           "command must listen there (stop that process, or change the url's port)")  # fmt: skip
    values = {"workdir": str(stack.workdir), "python": sys.executable,
              "spec_dir": str(Path(stack.described.spec_dir or os.getcwd()).absolute())}  # fmt: skip
    argv = [render(a, values) for a in dep.command]

    def ready(timeout_s: float) -> object:
        svc = stack.service(service.name)
        deadline = time.monotonic() + timeout_s
        while not _accepts(host, port):
            if not svc.process.running():
                raise ServiceError(f"dependency {service.name} exited before listening:\n{svc.process.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"dependency {service.name} does not listen on {host}:{port} after "
                                   f"{timeout_s:.0f}s:\n{svc.process.log_tail()}")  # fmt: skip
            time.sleep(0.05)
        return True

    stack.launch(handle, {}, argv, cgroup=None, cwd=str(stack.workdir), ready_check=ready)
    ready(stack.ready_timeout_s)
    return host, port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def dependency_client(stack: LocalStack, service: Service, host: str, port: int) -> dict[str, str]:
    """Record the address the replicas reach ``service`` at (its fault proxy's); they get it per ``via``."""
    handle = stack.attached.get(service.name) or stack.service(service.name).handle
    assert handle.url is not None
    stack.dependency_urls[service.name] = described.proxied_url(handle.url, port) if (host, port) != \
        described.dependency_address(handle.url) else handle.url  # fmt: skip
    return {}
