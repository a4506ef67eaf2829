"""The Plan: what a run of one experiment will do, decided before anything starts.

``build_plan(spec, registry, source=path)`` parses each fault's params once into its plugin's
``Config`` and binds it to one plugin instance (the scheduler injects through that same instance),
resolves the system under test (``experiments.spec.system``) and a placeholder topology of it, and
says what the run will do (``Plan.lines()``: what ``--dry-run`` prints). ``faultdrill run``, game-day
scenarios, the pytest plugin's experiment items and the Chaos Toolkit target all execute a Plan
(``experiments.engine.run.run_plan``). A bad param is a ``ConfigError`` located in ``source``.

Example::

    plan = build_plan(load_experiment(path, registry), registry, source=path)
    plan.fault("kill").config.mode, plan.system.replicas()   # 'sigkill', ['replica-0', 'replica-1']
    print("\\n".join(plan.lines()))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultdrill.experiments.expect.judge import describe
from faultdrill.experiments.expect.stats import SteadyCriteria
from faultdrill.experiments.spec.experiment import Experiment, FaultSpec, RateShare, TargetSpec
from faultdrill.experiments.spec.load import LoadProtocol
from faultdrill.experiments.spec.needs import needs_problems
from faultdrill.experiments.spec.service import KubernetesWorkload, UrlService
from faultdrill.experiments.spec.system import Service, SystemDescription
from faultdrill.faults.base import Fault, FaultContext
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import KubeRef, ServiceHandle, Topology

__all__ = ["Plan", "PlannedFault", "build_plan", "planned_topology"]


@dataclass(frozen=True)
class PlannedFault:
    """One fault of the plan: its spec, its plugin instance and its parsed config."""

    spec: FaultSpec
    fault: Fault
    config: Any

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def mode(self) -> str:
        return self.fault.mode_of(self.config)


@dataclass(frozen=True)
class Plan:
    """An experiment ready to run: see the module docstring."""

    spec: Experiment
    source: Path
    system: SystemDescription
    faults: tuple[PlannedFault, ...]

    def fault(self, fault_id: str) -> PlannedFault:
        return next(f for f in self.faults if f.id == fault_id)

    def topology(self) -> Topology:
        """The services the run will start, with placeholders for what only a live run knows."""
        return planned_topology(self.system, self.spec)

    def lines(self) -> list[str]:
        """What the run would do, fault by fault (``--dry-run``): nothing is started or changed."""
        spec, t = self.spec, self.spec.target
        lines = [
            _system_line(self.system, t) if self.system.program is not None else
            f"platform {t.platform}: feature store (TLS{', own network namespace' if t.feature_store_netns else ''}), "
            f"fault proxy on the replica→store edge, {t.replicas} replica(s) of '{t.model}' on device {t.device}"
            + (f", memory limit {t.memory_limit} bytes each" if t.memory_limit else "")
            + (f", misconfigured: {', '.join(t.misconfigurations)}" if t.misconfigurations else ""),
            f"load: Locust, {spec.load.users} users at {spec.load.spawn_rate:g}/s, shape {spec.load.shape.type}, "
            f"{spec.load.workers or 'no'} workers" + _protocol_text(spec.load_protocol()),
            f"steady state: {SteadyCriteria.of(spec.steady_state).describe()}",
        ]
        if spec.load.rate is not None:
            lines.append(f"open-model rate: {spec.load.rate}" + (" (a share of a probed capacity)" if any(
                isinstance(r, RateShare) for r in (spec.load.rate, *(st.rate for st in spec.load.rate_stages)))
                else " req/s"))  # fmt: skip
        for st in spec.load.rate_stages:
            how = f"ramps over {float(st.ramp):g}s to" if float(st.ramp) else "steps to"
            lines.append(f"load stage {st.id}: at steady+{float(st.at):g}s {how} {st.rate}, held {float(st.hold):g}s, "
                         f"then back to {spec.load.rate}")  # fmt: skip
        topology = self.topology()
        for f in self.faults:
            s = f.spec
            when = f"at steady+{float(s.at or 0):g}s" if s.after is None else f"after {s.after}"
            lines.append(f"fault {s.id}: {s.type} on {s.target} {when} for {float(s.duration):g}s")
            ctx = FaultContext.create(Path("<state dir>"), dry_run=True, topology=topology)
            try:
                changes = f.fault.plan(f.config, ctx)
            except Exception as exc:  # a plan needs the live topology for some faults: say so
                changes = [f"(exact changes resolved against the running target: {exc})"]
            lines += [f"    {c}" for c in changes]
        lines += [f"expect: {describe(e)}" for e in spec.expect]
        return lines


def build_plan(spec: Experiment, registry: FaultRegistry, *, source: Path | str) -> Plan:
    """Parse each fault's params once and bind it to its plugin; a bad param is a located ConfigError, and so is a
    fault aimed at a service of the user's that lacks what it needs (``experiments.spec.needs``)."""
    faults = []
    for f in spec.faults:
        plugin = registry.get(f.type)()
        faults.append(PlannedFault(f, plugin, plugin.parse_config(f.config_input(), file=str(source))))
    for problem in needs_problems(spec, [(i, f.fault, f.config) for i, f in enumerate(faults)]):
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.path).lstrip(".")
        raise ConfigError(problem.message, file=str(source), field=field)
    # The spec file's folder: {spec_dir} in a program's templates, and where load.protocol's payload files are read
    # (the bundled target's too).
    system = spec.system().model_copy(update={"spec_dir": str(Path(source).absolute().parent)})
    if system.program is None:  # a private model registry only when something writes it: lean run folders otherwise
        writes = spec.target.canary is not None or any(f.fault.writes_models_for(f.config) for f in faults)
        system = system.model_copy(update={"private_models": writes})
    return Plan(spec=spec, source=Path(source), system=system, faults=tuple(faults))


def _system_line(system: SystemDescription, t: TargetSpec) -> str:
    """What ``--dry-run`` says a service of the user's will be."""
    program = system.program
    assert program is not None
    if isinstance(program, KubernetesWorkload):
        ns = t.kubernetes.namespace if t.kubernetes else "faultdrill"
        return (f"platform kubernetes: {t.replicas} pod(s) labelled app.kubernetes.io/name={program.app} in namespace "
                f"{ns} (container {program.container}, port {program.port}) as {', '.join(system.replicas())}, "
                "observed through the watch API; faults through the Kubernetes API")  # fmt: skip
    if isinstance(program, UrlService):
        allowed = ", ".join(f"{k} {v}" for k, v in program.allow.model_dump().items() if v) or "nothing"
        return (f"platform {t.platform}: the server at {program.url} as {system.replicas()[0]} (not started), behind a "
                f"fault proxy; process-level faults allowed on: {allowed}")  # fmt: skip
    deps = ", ".join(f"{d.name} ({d.url}) via its fault proxy" for d in program.dependencies)
    return (f"platform {t.platform}: {t.replicas} replica(s) of `{' '.join(program.command)}` "
            f"({', '.join(system.replicas())}), ports {', '.join(program.ports)} each"
            + (f", memory limit {t.memory_limit} bytes each" if t.memory_limit else "")
            + (f"; dependencies: {deps}" if deps else ""))  # fmt: skip


def planned_topology(system: SystemDescription, spec: Experiment) -> Topology:
    """Placeholder handles for ``system``'s services (``<run>``, ``<… port>``): enough for a fault's
    ``plan`` to name what it would change."""
    return Topology(services={s.name: _placeholder(s, spec) for s in system.services})


def _placeholder(s: Service, spec: Experiment) -> ServiceHandle:
    name = s.name
    program = spec.target.service
    if s.role == "replica" and isinstance(program, KubernetesWorkload):  # a pod: faults act through the API
        k = spec.target.kubernetes
        ref = KubeRef(namespace=k.namespace if k else "faultdrill", context=k.context if k else None,
                      deployment=program.app, pod=f"<{name} pod>", container=program.container)  # fmt: skip
        return ServiceHandle(name=name, role="replica", kube=ref, port=program.port)
    if s.role == "replica" and not isinstance(program, str):  # a service of the user's: no admin API
        model = program.model
        repository = getattr(model, "repository", None)
        return ServiceHandle(
            name=name, role="replica", pid=None, url=f"http://127.0.0.1:<{name} port>",
            cgroup=f"/sys/fs/cgroup/memory/faultdrill/<run>-{name}" if "memory_cgroup" in s.capabilities else None,
            model_registry=Path(repository) if repository else None, model_name=model.name if model else None,
        )  # fmt: skip
    if s.role == "dependency":
        return ServiceHandle(name=name, role="dependency", url=f"<{name} url>")
    if s.role == "replica":
        return ServiceHandle(
            name=name, role="replica", pid=None, url=f"http://127.0.0.1:<{name} port>",
            admin_url=f"http://127.0.0.1:<{name} admin port>", admin_token_file=Path(f"<run>/{name}-admin.token"),
            cgroup=f"/sys/fs/cgroup/memory/faultdrill/<run>-{name}" if "memory_cgroup" in s.capabilities else None,
            model_registry=Path("<run>/models"), model_name=spec.target.model, model_version="1",
        )  # fmt: skip
    if s.role == "proxy":
        return ServiceHandle(
            name=name, role="proxy", url="tcp://127.0.0.1:<proxy port>", upstream_of=s.upstream_of,
            control_url="http://127.0.0.1:<proxy control port>", admin_token_file=Path("<run>/proxy.token"),
        )  # fmt: skip
    if s.role == "cache":
        return ServiceHandle(name=name, role="cache", url=f"redis://127.0.0.1:<{name} port>/0",
                             admin_token_file=Path(f"<run>/{name}/cache.password"))  # fmt: skip
    return ServiceHandle(
        name=name, role=s.role, url=f"https://<{name} address>",
        cert_file=Path(f"<run>/pki/{name}.crt") if "tls" in s.capabilities else None,
        key_file=Path(f"<run>/pki/{name}.key") if "tls" in s.capabilities else None,
        ca_file=Path("<run>/pki/ca.crt") if "tls" in s.capabilities else None,
        admin_token_file=Path(f"<run>/{name}-admin.token") if "admin_api" in s.capabilities else None,
        netns="fd-<run>" if "own_netns" in s.capabilities else None,
    )  # fmt: skip


def _protocol_text(protocol: LoadProtocol | None) -> str:
    """The request the load sends, for the dry-run line (nothing for the bundled target's own request)."""
    if protocol is None:
        return ""
    what = getattr(protocol, "model", None) or getattr(protocol, "path", "")
    extra = " binary" if getattr(protocol, "binary", False) else ""
    extra = " streaming" if getattr(protocol, "stream", False) else extra
    return f", {protocol.kind}{extra} requests to {what}"
