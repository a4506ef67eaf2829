"""How ``target.service`` is completed and checked: a profile's defaults merged in, every template checked.

Kept apart from the models (``experiments.spec.service``) because it is the part with rules in it: which
of a profile's facts become which of the spec's defaults (port names, probe paths, the metrics endpoint,
the protocol, the replicas' name), and where a template may name what. The spec always wins over the
profile, key by key. Problems are ``spec_problem`` errors carrying the path below the model (``where``),
what would fit and a did-you-mean, so the loader locates each at the very string it is about.

Example::

    data = apply_profile({"kind": "process", "profile": "triton", "command": ["tritonserver"]}, None, kind="process")
    data["ports"], data["probes"]["readiness"]     # ['http', 'grpc', 'metrics'], {'http': '/v2/health/ready', …}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticCustomError

from faultdrill.experiments.spec.profile import Endpoint, Profile, load_profile
from faultdrill.experiments.spec.templates import TemplateNames, check_template
from faultdrill.faults.errors import ConfigError

if TYPE_CHECKING:
    from faultdrill.experiments.spec.service import ProcessService, UrlService

__all__ = ["PROBE_KINDS", "apply_profile", "check_templates", "problem"]

PROBE_KINDS = ("startup", "readiness", "liveness")
_PORT_ORDER = ("http", "grpc", "metrics", "management")


def problem(message: str, *, expected: str | None = None, suggestion: str | None = None,
            where: tuple[str | int, ...] = ()) -> PydanticCustomError:  # fmt: skip
    """A located problem of the spec: the loader reads ``where`` (below the model), ``expected``, ``suggestion``."""
    ctx: dict[str, Any] = {"where": where}
    if expected:
        ctx["expected"] = expected
    if suggestion:
        ctx["suggestion"] = suggestion
    ctx["message"] = message  # last: pydantic fills the template's names in context order, and a message may
    return PydanticCustomError("spec_problem", "{message}", ctx)  # quote a template name such as {where}


def _load(value: str, context: Any) -> Profile:
    spec_dir = context.get("spec_dir") if isinstance(context, Mapping) else None
    pathlike = "/" in value or value.endswith((".yaml", ".yml"))
    target = str(Path(spec_dir) / value) if spec_dir and pathlike and not Path(value).is_absolute() else value
    try:
        return load_profile(target)
    except ConfigError as exc:
        located = exc.file is not None and exc.file != "profile"
        raise problem(str(exc) if located else exc.message, where=("profile",),
                      expected=None if located else exc.expected, suggestion=None if located else exc.suggestion,
                      ) from None  # fmt: skip


def apply_profile(data: Any, context: Any, *, kind: str) -> Any:
    """``data`` with the named profile's facts filled in where the spec leaves them out (a copy)."""
    if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
        return data
    profile = _load(data["profile"], context)
    out = dict(data)
    out.setdefault("name", profile.name.replace("_", "-"))
    out.setdefault("protocol", profile.protocol)
    if kind == "process":
        out.setdefault("ports", [p for p in _PORT_ORDER if getattr(profile.ports, p) is not None])
    if kind == "kubernetes":
        out.setdefault("port", profile.ports.http)

    def port(name: str) -> str | int:
        if kind == "process" or name == "http":
            return name
        number = getattr(profile.ports, name)  # a server already running listens on its defaults
        return int(number) if number is not None else name

    metrics = out.get("metrics")
    if metrics is None or isinstance(metrics, dict):
        defaults = {"path": profile.metrics.path, "port": port("metrics" if profile.ports.metrics else "http"),
                    "job": profile.metrics.job, "rules": str(profile.rules_file)}
        out["metrics"] = {**defaults, **(metrics or {})}
    probes = out.get("probes")
    if kind == "kubernetes":
        return out  # its probes are the kubelet's, from the pod spec
    if probes is None or isinstance(probes, dict):
        model = out.get("model")
        has_model = isinstance(model, dict) and isinstance(model.get("name"), str)
        ready = profile.health.model_ready if has_model and profile.health.model_ready is not None \
            and "{version}" not in profile.health.model_ready.path else profile.health.readiness  # fmt: skip
        found: dict[str, Endpoint | None] = {"startup": profile.health.liveness, "readiness": ready,
                                             "liveness": profile.health.liveness}  # fmt: skip
        filled = {k: {"http": e.path, "port": port(e.port)} for k, e in found.items() if e is not None}
        out["probes"] = {**filled, **(probes or {})}
    return out


def _strings(service: ProcessService | UrlService) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """(where, text, may name {url}) of every templated string of ``service``."""
    from faultdrill.experiments.spec.service import ExecProbe, HttpProbe, ProcessService

    for kind in PROBE_KINDS:
        probe = getattr(service.probes, kind)
        if isinstance(probe, HttpProbe):
            yield ("probes", kind, "http"), probe.http, False
        elif isinstance(probe, ExecProbe):
            yield from ((("probes", kind, "exec", i), a, False) for i, a in enumerate(probe.exec))
    if not isinstance(service, ProcessService):
        return
    yield from ((("command", i), a, False) for i, a in enumerate(service.command))
    yield from ((("env", k), v, False) for k, v in service.env.items())
    if service.cwd is not None:
        yield ("cwd",), service.cwd, False
    if service.model is not None and service.model.repository is not None:
        yield ("model", "repository"), service.model.repository, False
    if service.tls is not None:
        yield from ((("tls", k), v, False) for k, v in service.tls.model_dump().items() if v is not None)
    for i, dep in enumerate(service.dependencies):
        if dep.via.arg is not None:
            yield ("dependencies", i, "via", "arg"), dep.via.arg, True


def check_templates(service: ProcessService | UrlService) -> None:
    """Every template names what it may, every port a probe or the metrics use is declared, a readiness probe
    exists; the first problem is raised, located."""
    from faultdrill.experiments.spec.service import HttpProbe

    ports = service.template_ports()
    for where, text, url in _strings(service):
        found = check_template(text, TemplateNames(ports=ports, model=service.model is not None, url=url))
        if found is not None:
            raise problem(found.message, expected=found.expected, suggestion=found.suggestion, where=where)
    for i, dep in enumerate(getattr(service, "dependencies", [])):  # what a dependency's command may name
        for j, text in enumerate(dep.command or []):
            found = check_template(text, TemplateNames(ports=(), fixed=("workdir", "spec_dir", "python")))
            if found is not None:
                raise problem(found.message, expected=found.expected, suggestion=found.suggestion,
                              where=("dependencies", i, "command", j))  # fmt: skip
    what = "target.service.ports does not declare it" if service.kind == "process" else "a url service has one port"
    fits = "one of " + ", ".join(ports) + (" or a port number" if service.kind == "url" else " (or add it to ports)")
    for kind in PROBE_KINDS:
        probe = getattr(service.probes, kind)
        if isinstance(probe, HttpProbe) and isinstance(probe.port, str) and probe.port not in ports:
            raise problem(f"the {kind} probe is on port '{probe.port}', but {what}", where=("probes", kind, "port"),
                          expected=fits)
    if isinstance(service.metrics.port, str) and service.metrics.port not in ports:
        raise problem(f"the metrics are on port '{service.metrics.port}', but {what}", where=("metrics", "port"),
                      expected=fits)
    if isinstance(service.metrics.port, int) and service.kind == "process":
        raise problem("a process service's metrics port is a name of target.service.ports", where=("metrics", "port"),
                      expected="one of " + ", ".join(ports))  # fmt: skip
    for kind in PROBE_KINDS:
        probe = getattr(service.probes, kind)
        if isinstance(probe, HttpProbe) and isinstance(probe.port, int) and service.kind == "process":
            raise problem("a process service's probe port is a name of target.service.ports",
                          where=("probes", kind, "port"), expected="one of " + ", ".join(ports))  # fmt: skip
    if service.probes.readiness is None:
        raise problem("no readiness probe: the service endpoint routes only to ready replicas", where=("probes",),
                      expected="probes.readiness: {http: PATH} or {exec: [argv]} (or a profile that has one)")
