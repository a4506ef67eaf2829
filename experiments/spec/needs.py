"""What a fault needs of the service it aims at, checked against what the spec says that service can do.

Each fault declares what it needs of its target (``Fault.target_needs``, per mode ``target_needs_by_mode``:
``admin_api``, ``model_repository``, ``tls``, ``memory_cgroup``, ``process``, ``supervised``); each described
service says what it offers (``Service.capabilities``, ``experiments.spec.system``). A fault aimed at a
service of your own (``target.service: {kind: process | url}``) that lacks one is refused before anything
starts — by the loader (``faultdrill validate``, ``faultdrill run``: a located error at the fault's
``target``) and by ``build_plan`` — with the line of the spec that would grant it::

    exp.yaml:21:13: faults[0].target: model_load_failure needs `model.repository` on service mlserver-0:
      declare target.service.model.repository

The bundled target keeps its faults' own run-time preflight checks (what it offers depends on the platform
it runs on, e.g. a Kubernetes pod's memory limit), so the check applies to described services only.

Example::

    problems = needs_problems(exp, [(0, plugin, config)])    # [SpecProblem(('faults', 0, 'target'), '…')]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faultdrill.experiments.spec.experiment import Experiment, SpecProblem
from faultdrill.faults.base import Fault

__all__ = ["HINTS", "needs_problems"]

HINTS: dict[str, dict[str, tuple[str, str]]] = {
    "process": {
        "admin_api": ("an admin API", "only the bundled target has one (target.service: bundled)"),
        "model_repository": ("`model.repository`", "declare target.service.model.repository"),
        "tls": ("`tls`", "declare target.service.tls: {cert: …, key: …}"),
        "memory_cgroup": ("a memory cgroup", "set target.memory_limit"),
    },
    "url": {
        "admin_api": ("an admin API", "only the bundled target has one (target.service: bundled)"),
        "model_repository": ("a model repository", "faultdrill restarts only a service it starts (kind: process)"),
        "tls": ("`tls`", "faultdrill swaps certificates only of a service it starts (kind: process)"),
        "memory_cgroup": ("a memory cgroup", "allow-list it in target.service.allow.cgroups"),
        "process": ("a process it may signal", "allow-list its pid in target.service.allow.pids"),
        "supervised": ("a service faultdrill starts and restarts", "use target.service.kind: process"),
    },
    "kubernetes": {
        "admin_api": ("an admin API", "only the bundled target has one (target.service: bundled)"),
        "model_repository": ("a model repository", "on a cluster, the model lives in the image or a volume faultdrill "
                             "does not touch"),
        "tls": ("`tls`", "certificates of a workload of your own are not swapped on a cluster yet"),
        "memory_cgroup": ("a memory cgroup faultdrill controls", "on a cluster the kubelet owns the pod's cgroup"),
        "supervised": ("a service faultdrill starts and restarts", "use target.service.kind: process"),
    },
}
"""Kind → capability → (what it is called, how the spec grants it)."""


def needs_problems(spec: Experiment, faults: Iterable[tuple[int, Fault, Any]]) -> list[SpecProblem]:
    """``(index in spec.faults, plugin, parsed config)`` → a problem for each fault whose target lacks a need."""
    system = spec.system()
    program = system.program
    if program is None:
        return []
    problems: list[SpecProblem] = []
    for index, fault, config in faults:
        target = spec.faults[index].target
        service = system.get(target or "")
        if service is None:
            continue  # an unknown or absent target is the reference checks' to report
        missing = sorted(n for n in fault.target_needs_of(config) if not service.offers(n))
        if not missing:
            continue
        what, how = HINTS[program.kind].get(missing[0], (f"`{missing[0]}`", "a service that offers it"))
        mode = fault.mode_of(config)
        fits = [m for m in fault.modes if m != mode and all(service.offers(n) for n in fault.target_needs_for(m))]
        mode_text = f" (mode {mode})" if mode and len(fault.modes) > 1 else ""
        also = f"; or a mode that does not need it: {', '.join(fits)}" if fits else ""
        problems.append(SpecProblem(("faults", index, "target"),
                                    f"{fault.name}{mode_text} needs {what} on service {service.name}: {how}{also}"))
    return problems
