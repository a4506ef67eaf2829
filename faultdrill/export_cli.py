"""``faultdrill export chaostoolkit FILE``: the nearest Chaos Toolkit experiment to a faultdrill one.

What maps: the target (a control of ``experiments.chaostoolkit.target`` with the spec's replicas,
misconfigurations, network namespace, memory limit; alerting when an alert is expected); the
steady state (hypothesis probes ``slo_availability`` / ``slo_latency_p95_ms`` over the
spec's window, with range tolerances); the fault schedule (the method: each fault's inject
action and, at its end, its rollback action, spaced by ``pauses``; every rollback again in
``rollbacks``); point-in-time expectations (readiness/liveness ``becomes``, breaker sequences,
alerts that fire) as method probes at their deadline — recorded in the journal, not judged.

What cannot be expressed is printed to stderr, one line each, by name: Chaos Toolkit judges
only its hypothesis, before and after the method, so every temporal expectation (within,
during, between, sequences, counts over a window) is lost or weakened; ``recovers`` becomes
the after-method hypothesis (after a pause of its ``within``); ``halt_if`` and the Locust load
have no counterpart (the SLO probes sample with a short load of their own).

Example::

    faultdrill export chaostoolkit experiments/catalog/gpu_memory_exhaustion.yaml -o gpu.json
    chaos run gpu.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["export_app", "to_chaostoolkit"]

export_app = typer.Typer(help="Turn a faultdrill experiment into another tool's format.", no_args_is_help=True)

_FAULTS = "faultdrill.faults.chaostoolkit"
_PROBES, _TARGET = "faultdrill.experiments.chaostoolkit.probes", "faultdrill.experiments.chaostoolkit.target"
_JUDGED_ONLY = "recorded in the journal, not judged: Chaos Toolkit judges only its steady-state hypothesis"


@export_app.command("chaostoolkit")
def export_chaostoolkit(
    file: Annotated[Path, typer.Argument(help="A faultdrill experiment YAML.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the JSON here (default stdout).")] = None,
) -> None:
    """The nearest Chaos Toolkit experiment (JSON); what cannot be expressed goes to stderr."""
    from faultdrill.experiments.spec.loader import load_experiment
    from faultdrill.faults.registry import FaultRegistry

    spec = load_experiment(file, FaultRegistry.installed())  # a bad spec: main() prints it, exit 2
    doc, notes = to_chaostoolkit(spec)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
    for note in notes:
        typer.echo(f"faultdrill export: {note}", err=True)
    if output is not None:
        typer.echo(f"faultdrill export: wrote {output} ({len(notes)} thing(s) not expressible, listed above)",
                   err=True)  # fmt: skip


def _python(module: str, func: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "python", "module": module, "func": func, "arguments": arguments}


def _schedule(spec: Any) -> dict[str, tuple[float, float]]:
    """Fault id → (start, end) in seconds after steady state; ``after`` chains resolved."""
    times: dict[str, tuple[float, float]] = {}
    pending = list(spec.faults)
    while pending:
        progressed = False
        for f in list(pending):
            start: float | None = float(f.at or 0.0)
            if f.after is not None:
                ref = f.after.ref
                if ref in (None, "run", "steady"):
                    start = f.after.offset_s
                elif ref in times:
                    start = times[ref][0 if f.after.edge == "start" else 1] + f.after.offset_s
                else:
                    start = None
            if start is not None:
                times[f.id] = (max(0.0, start), max(0.0, start) + float(f.duration))
                pending.remove(f)
                progressed = True
        if not progressed:  # the loader refuses cycles; this is only a guard
            raise ValueError("unresolvable 'after' references: " + ", ".join(f.id for f in pending))
    return times


def _at(moment: Any, times: dict[str, tuple[float, float]]) -> float | None:
    if moment.ref in (None, "run", "steady"):
        return float(moment.offset_s)
    if moment.ref not in times:
        return None
    return times[moment.ref][0 if moment.edge == "start" else 1] + float(moment.offset_s)


def _observation(x: Any, times: dict[str, tuple[float, float]]) -> tuple[float, dict[str, Any]] | None:
    """A method probe for a point-in-time expectation: (when, activity), or None."""
    from faultdrill.experiments import expect as ex

    args: dict[str, Any]
    if isinstance(x, ex.ProbeBecomes) and x.probe in ("readiness", "liveness"):
        func, args, when = ("replica_ready" if x.probe == "readiness" else "replica_live"), {"replica": x.replica}, \
            _at(x.after, times)  # fmt: skip
        name, within = f"{x.probe}-of-{x.replica}-{x.within:g}s-after-{x.after}", float(x.within)
    elif isinstance(x, ex.BreakerSequence):
        func, args, when = "breaker_state", {"replica": x.breaker}, _at(x.after, times)
        name, within = f"breaker-of-{x.breaker}-{x.within:g}s-after-{x.after}", float(x.within)
    elif isinstance(x, ex.AlertExpectation) and x.fires is not None:
        args = {"alert": x.alert, **({"labels": x.labels} if x.labels else {})}
        func, when = "alert_firing", _at(x.fires.after, times)
        name, within = f"alert-{x.alert}-{x.fires.within:g}s-after-{x.fires.after}", float(x.fires.within)
    else:
        return None
    if when is None:
        return None
    return when + within, {"type": "probe", "name": name, "provider": _python(_PROBES, func, args)}


def _hypothesis(spec: Any) -> dict[str, Any]:
    from faultdrill.experiments.expect.stats import SteadyCriteria

    criteria = SteadyCriteria.of(spec.steady_state)
    window = round(criteria.window_s, 3)
    probes = [{"type": "probe", "name": "service-availability", "tolerance": {"type": "range",
               "range": [criteria.availability, 1.0]}, "provider": _python(_PROBES, "slo_availability",
               {"window_s": window})}]  # fmt: skip
    if criteria.latency_p95_s is not None:
        probes.append({"type": "probe", "name": "service-latency-p95-ms", "tolerance": {"type": "range",
                       "range": [0.0, round(criteria.latency_p95_s * 1000, 3)]},
                       "provider": _python(_PROBES, "slo_latency_p95_ms", {"window_s": window})})  # fmt: skip
    return {"title": f"steady state: {criteria.describe()}", "probes": probes}


def to_chaostoolkit(spec: Any) -> tuple[dict[str, Any], list[str]]:
    """``(experiment, notes)``: the nearest Chaos Toolkit experiment and what it cannot express."""
    from faultdrill.experiments import expect as ex
    from faultdrill.experiments.expect.judge import describe

    times = _schedule(spec)
    notes: list[str] = []
    events: list[tuple[float, int, dict[str, Any]]] = []  # (when, order, activity): injects before probes
    rollbacks = []
    for f in spec.faults:
        start, end = times[f.id]
        args = {**f.params, **({"target": f.target} if f.target else {}), "duration_s": float(f.duration)}
        events.append((start, 0, {"type": "action", "name": f"inject-{f.id}",
                                  "provider": _python(_FAULTS, f"inject_{f.type}", args)}))  # fmt: skip
        where = {"target": f.target} if f.target else {}
        undo = {"type": "action", "name": f"rollback-{f.id}",
                "provider": _python(_FAULTS, f"rollback_{f.type}", where)}  # fmt: skip
        events.append((end, 2, undo))
        rollbacks.append(undo)
    recover_s = 0.0
    for i, x in enumerate(spec.expect):
        name = describe(x)
        if isinstance(x, ex.Recovers):
            recover_s = max(recover_s, float(x.within))
            notes.append(f"expect[{i}] '{name}': approximated by the after-method hypothesis, run after a pause of "
                         f"{x.within:g} s (not 'as soon as', and not timed from {x.after})")  # fmt: skip
            continue
        observed = _observation(x, times)
        if observed is not None:
            when, probe = observed
            events.append((when, 1, probe))
            lost = " (its 'resolves' part is not expressed)" if getattr(x, "resolves", None) is not None else ""
            notes.append(f"expect[{i}] '{name}': temporal; observed by method probe '{probe['name']}' at its "
                         f"deadline ({_JUDGED_ONLY}){lost}")  # fmt: skip
        else:
            notes.append(f"expect[{i}] '{name}': not expressible (temporal: {type(x).__name__} over the timeline)")
    for i, h in enumerate(spec.halt_if):
        notes.append(f"halt_if[{i}] ({h.slo}): not expressible (Chaos Toolkit has no halt condition)")
    notes.append(f"load: Locust ({spec.load.users} users) is not started; the SLO probes measure with a short "
                 "sampling load of their own")  # fmt: skip
    if spec.faults:
        notes.append("schedule: pauses are relative, so each injection's verification delays what follows it "
                     "(Chaos Toolkit has no absolute schedule)")  # fmt: skip
    method, now = [], 0.0
    for when, _, activity in sorted(events, key=lambda e: (e[0], e[1])):
        if when > now:
            activity = {**activity, "pauses": {"before": round(when - now, 3)}}
            now = when
        method.append(activity)
    if recover_s and method:
        method[-1] = {**method[-1], "pauses": {**method[-1].get("pauses", {}), "after": recover_s}}
    t = spec.target
    alerting = bool(spec.alert_expectations()) and spec.alerting.enabled
    control_args = {"replicas": t.replicas, "misconfigurations": "${misconfigurations}", "alerting": alerting,
                    "feature_store_netns": t.feature_store_netns,
                    "memory_limit_mib": (t.memory_limit or 0) // 2**20}  # fmt: skip
    if t.env or t.model != "digits" or t.device != "auto":
        notes.append("target: env, model and device settings are not passed to the Chaos Toolkit target")
    doc = {
        "version": "1.0.0",
        "title": spec.metadata.name,
        "description": spec.metadata.description or f"Exported from faultdrill experiment {spec.metadata.name}",
        "tags": [*spec.metadata.tags, "faultdrill"],
        "configuration": {"misconfigurations": ",".join(t.misconfigurations)},
        "controls": [{"name": "faultdrill-target", "provider": {"type": "python", "module": _TARGET,
                                                                "arguments": control_args}}],
        "steady-state-hypothesis": _hypothesis(spec),
        "method": method or [{"type": "probe", "name": "service-availability-during-method",
                              "provider": _python(_PROBES, "slo_availability", {})}],
        "rollbacks": rollbacks,
    }  # fmt: skip
    return doc, notes
