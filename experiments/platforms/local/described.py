"""A replica of a service of the user's (``target.service: {kind: process}``), made concrete for one start.

The spec says what to run in templates (``experiments.spec.templates``); this module fills them in for one
replica: the ports allocated for it, its name and index, the run's directory, the spec's folder, the
interpreter, the model, each dependency's address through its fault proxy. The result is everything the
local stack hands to :class:`~experiments.host.process.ServiceProcess` (argv, env, working directory)
and to the probe sampler (its rendered startup/readiness/liveness probes, Kubernetes thresholds from
``target.probes``). For ``kind: url`` the same probes are rendered against the URL, with no process.

Example::

    launch = replica_launch(program, name="web-0", index=0, ports={"http": 8123}, workdir=run,
                            spec_dir=Path("examples"), dependency_urls={})
    launch.argv, launch.env["FAULTDRILL_PORT"], launch.url     # [...], '8123', 'http://127.0.0.1:8123'
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from faultdrill.experiments.platforms.local.probes import ProbeConfig, ProbeSet
from faultdrill.experiments.spec.experiment import ProbeSettings
from faultdrill.experiments.spec.service import ExecProbe, HttpProbe, ProcessService, UrlService
from faultdrill.experiments.spec.templates import render

__all__ = ["ReplicaLaunch", "dependency_address", "probe_set", "replica_launch", "template_values"]

STARTUP_BUDGET_S = 60.0
"""How long a startup probe may fail before the replica is killed (the bundled target's: 30 s at 10 Hz)."""


@dataclass(frozen=True)
class ReplicaLaunch:
    """One replica's start, every template filled in."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    ports: dict[str, int]
    url: str
    """``http://127.0.0.1:<port.http>``: what the endpoint routes to and probes use."""
    metrics_url: str
    values: dict[str, str]
    """The template values it was rendered with (the probes are rendered with them too)."""


def template_values(program: ProcessService | UrlService, *, name: str, index: int, ports: Mapping[str, int],
                    workdir: Path, spec_dir: str | None) -> dict[str, str]:  # fmt: skip
    """``{port}``, ``{port.NAME}``, ``{replica}``, ``{index}``, ``{workdir}``, ``{spec_dir}``, ``{python}``,
    ``{model}`` for one replica (``{url}`` is a dependency's, added per argument)."""
    values = {f"port.{p}": str(n) for p, n in ports.items()}
    values |= {"port": values["port.http"], "replica": name, "index": str(index), "workdir": str(workdir),
               "spec_dir": str(Path(spec_dir or os.getcwd()).absolute()), "python": sys.executable}  # fmt: skip
    if program.model is not None:
        values["model"] = program.model.name
    return values


def replica_launch(program: ProcessService, *, name: str, index: int, ports: Mapping[str, int], workdir: Path,
                   spec_dir: str | None, dependency_urls: Mapping[str, str]) -> ReplicaLaunch:  # fmt: skip
    """The argv, env and working directory of replica ``name``; dependencies reach it through ``dependency_urls``
    (dependency name → its fault proxy's URL)."""
    values = template_values(program, name=name, index=index, ports=ports, workdir=workdir, spec_dir=spec_dir)
    argv = [render(a, values) for a in program.command]
    env = {k: render(v, values) for k, v in program.env.items()}
    for dep in program.dependencies:
        proxied = dependency_urls[dep.name]
        if dep.via.env is not None:
            env[dep.via.env] = proxied
        elif dep.via.arg is not None:
            argv.append(render(dep.via.arg, {**values, "url": proxied}))
    cwd = render(program.cwd, values) if program.cwd is not None else None
    url = f"http://127.0.0.1:{ports['http']}"
    metrics_port = ports[program.metrics.port] if isinstance(program.metrics.port, str) else program.metrics.port
    return ReplicaLaunch(argv=argv, env=env, cwd=cwd, ports=dict(ports), url=url, values=values,
                         metrics_url=f"http://127.0.0.1:{metrics_port}{render(program.metrics.path, values)}")


def rendered(program: ProcessService, text: str | None, values: Mapping[str, str]) -> Path | None:
    """A templated path of ``program`` (tls files, model repository) for one replica, absolute."""
    if text is None:
        return None
    path = Path(render(text, values))
    return path if path.is_absolute() else Path(values["spec_dir"]) / path


def model_artifact(program: ProcessService, values: Mapping[str, str]) -> Path | None:
    """``model.artifact`` rendered for one replica: absolute, or relative to the (rendered) repository."""
    model = program.model
    if model is None or model.artifact is None:
        return None
    path = Path(render(model.artifact, values))
    if path.is_absolute():
        return path
    repository = rendered(program, model.repository, values)
    return (repository or Path(values["spec_dir"])) / path


def probe_set(program: ProcessService | UrlService, settings: ProbeSettings, *, base_url: str,
              values: Mapping[str, str], env: Mapping[str, str] | None = None, cwd: str | None = None,
              port_url: Callable[[str | int], str] | None = None) -> ProbeSet:  # fmt: skip
    """The replica's rendered probes with Kubernetes thresholds from ``settings`` (``target.probes``): startup may
    fail for ``STARTUP_BUDGET_S``, liveness for at least 1 s (as the bundled target's), readiness as configured."""
    period, timeout = float(settings.period), float(settings.timeout)
    thresholds = {
        "startup": max(settings.failure_threshold, math.ceil(STARTUP_BUDGET_S / period)),
        "readiness": settings.failure_threshold,
        "liveness": max(settings.failure_threshold, round(1.0 / period)),
    }
    exec_env = {**os.environ, **(env or {})}

    def one(kind: str) -> ProbeConfig | None:
        probe = getattr(program.probes, kind)
        common = ProbeConfig("", period_s=period, timeout_s=timeout, failure_threshold=thresholds[kind],
                             success_threshold=settings.success_threshold if kind == "readiness" else 1)  # fmt: skip
        if isinstance(probe, ExecProbe):
            return replace(common, exec=tuple(render(a, values) for a in probe.exec), env=exec_env, cwd=cwd)
        if isinstance(probe, HttpProbe):
            path = render(probe.http, values)
            url = None if probe.port == "http" or port_url is None else port_url(probe.port) + path
            return replace(common, path=path, url=url)
        return None

    return ProbeSet(readiness=one("readiness") or ProbeConfig("/"), liveness=one("liveness"), startup=one("startup"))


def dependency_address(url: str) -> tuple[str, int]:
    """Where a dependency URL listens (``http``/``https`` default to 80/443)."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    if parts.hostname is None or port is None:
        raise ValueError(f"no host and port in {url!r}")
    return parts.hostname, port


def proxied_url(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the fault proxy's (scheme and path kept)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{port}").geturl()
