"""``target.service``: bring your own inference service — a command faultdrill starts, or a URL it observes.

The bundled target (``service: bundled``, the default) is one program faultdrill knows inside out. A team
drilling its own server describes it instead, and faultdrill gives it the same Kubernetes semantics:

* ``{kind: process, command: […], …}`` — faultdrill starts the command once per replica (ports allocated
  per replica and handed over through ``{port.NAME}`` templates in ``command``/``env``), in its own memory
  cgroup with ``target.memory_limit``, probes it on the declared paths, restarts it with back-off, routes to
  the ready replicas and puts a fault proxy in front of every declared dependency;
* ``{kind: url, url: http://…}`` — a server already running: probed and fronted by a fault proxy, never
  started or restarted; process-level faults only on what ``allow`` lists;
* ``{kind: kubernetes, app: triton, container: server, port: 8000}`` (``target.platform: kubernetes``) — a
  workload already deployed: the pods labelled ``app.kubernetes.io/name=<app>`` in the allow-listed namespace
  that carry the chaos opt-in label, observed through the watch API (the kubelet's probes and restarts),
  reached through the API's port-forward, and faulted through the Kubernetes API.

``profile:`` (a shipped profile such as ``mlserver``, or a path; ``experiments.spec.profile``) fills what the
spec leaves out: port names, probe paths, the metrics path and port, the protocol. The spec overrides it.
Every check happens at load time, located at the offending string: an unknown template name, a port a
template names but ``ports`` does not declare, a probe without a path. The models are plain data; the
platform (``experiments/platforms/local/described.py``) turns them into processes.

Example::

    service = ProcessService.model_validate({"kind": "process", "profile": "mlserver",
                                             "command": ["mlserver", "start", "{spec_dir}/models"],
                                             "env": {"MLSERVER_HTTP_PORT": "{port}"}})
    service.ports, service.probes.readiness        # ['http', 'grpc', 'metrics'], HttpProbe(http='/v2/health/ready')
    service.replica_prefix                          # 'mlserver': replicas mlserver-0, mlserver-1 …
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationInfo, model_validator

from faultdrill.experiments.spec.profile import Protocol
from faultdrill.experiments.spec.service_defaults import apply_profile, check_templates, problem
from faultdrill.faults.inputlimits import one_line

__all__ = [
    "Dependency", "ExecProbe", "HttpProbe", "KubernetesWorkload", "MetricsEndpoint", "ModelRef", "ProcessService",
    "ServiceAllow", "ServiceProbes", "ServiceSpec", "TlsFiles", "UrlService", "Via", "service_shape",
]  # fmt: skip

_NAME = r"^[a-z][a-z0-9-]{0,40}$"
ServiceName = Annotated[str, Field(pattern=_NAME)]
PortName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
HttpPath = Annotated[str, Field(pattern=r"^/\S*$", max_length=500)]
Text = Annotated[str, Field(min_length=1, max_length=4096)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpProbe(_Model):
    """``{http: /v2/health/ready}``: GET that path; any 2xx/3xx answer in time is a success."""

    http: HttpPath
    port: PortName | Annotated[int, Field(ge=1, le=65535)] = "http"
    """A port name of ``ports`` (kind ``url``: ``http`` is the URL's port, a number another port of its host)."""


class ExecProbe(_Model):
    """``{exec: [cmd, arg, …]}``: run it (templates filled per replica); exit status 0 is a success."""

    exec: Annotated[list[Text], Field(min_length=1, max_length=64)]


def _probe_shape(value: Any) -> Any:  # ``readiness: /ready`` is short for ``readiness: {http: /ready}``
    return {"http": value} if isinstance(value, str) else value


def _probe_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "exec" if "exec" in value and "http" not in value else "http"
    return "exec" if isinstance(value, ExecProbe) else "http"


Probe = Annotated[
    Annotated[HttpProbe, Tag("http")] | Annotated[ExecProbe, Tag("exec")], Discriminator(_probe_kind),
    BeforeValidator(_probe_shape),
]  # fmt: skip


class ServiceProbes(_Model):
    """The three Kubernetes probes; their thresholds and period are ``target.probes``'s."""

    startup: Probe | None = None
    readiness: Probe | None = None
    """Required (here or from the profile): the service endpoint routes only to ready replicas."""
    liveness: Probe | None = None


class ModelRef(_Model):
    """``{name: digits, repository: "{spec_dir}/models"}``: the model probes and load name; the files
    ``model_load_failure`` may corrupt (restored byte for byte)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    repository: Text | None = None
    artifact: Text | None = None
    """The file ``model_load_failure`` corrupts or moves aside: a path (templated), relative to ``repository`` when
    not absolute. Default: the largest file under ``<repository>/<name>/`` (else under ``repository``)."""


class UrlModel(_Model):
    """``{name: digits}``: the model a server already running serves."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class MetricsEndpoint(_Model):
    """Where the service's Prometheus metrics are: ``path`` on the port named ``port``."""

    path: HttpPath = "/metrics"
    port: PortName | Annotated[int, Field(ge=1, le=65535)] = "http"
    job: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")] = "target"
    """The scrape job of the replicas in a run's Prometheus (a profile's: the ``job`` its rules select)."""
    rules: Text | None = None
    """The server's Prometheus rules, what ``alerting.rules: default`` loads (relative to the spec); default: the
    profile's ``rules.yml``, else the bundled target's rules."""


class Via(_Model):
    """How the service learns a dependency's proxied address: an env var, or an argument with ``{url}``."""

    env: EnvVarName | None = None
    arg: Text | None = None

    @model_validator(mode="after")
    def _one(self) -> Via:
        if (self.env is None) == (self.arg is None):
            raise problem("give exactly one of env or arg", expected="{env: FEATURES_URL} or {arg: \"--x={url}\"}")
        if self.arg is not None and "{url}" not in self.arg:
            raise problem(f"via.arg {self.arg!r} does not name {{url}}", expected="an argument containing {url}",
                          where=("arg",))  # fmt: skip
        return self


class Dependency(_Model):
    """A service yours calls; faultdrill puts a fault proxy in front of it and hands over the proxy's address."""

    name: ServiceName
    url: Annotated[str, Field(pattern=r"^[a-z][a-z0-9+.-]*://[^\s/:]+(:\d{1,5})?(/\S*)?$", max_length=500)]
    """Where the real dependency listens: ``scheme://host:port[/path]`` (``http``/``https`` may leave the port out)."""
    via: Via
    command: Annotated[list[Text], Field(min_length=1, max_length=256)] | None = None
    """Optional: a command faultdrill starts before the replicas (in ``{workdir}``; templates ``{spec_dir}``,
    ``{workdir}``, ``{python}``) and stops after them; it must listen where ``url`` says (127.0.0.1 only), and is
    waited for (TCP) before the replicas start. Without it the dependency must already listen: it is yours."""

    @model_validator(mode="after")
    def _local_when_started(self) -> Dependency:
        from urllib.parse import urlsplit

        if self.command is not None and urlsplit(self.url).hostname not in ("127.0.0.1", "localhost"):
            raise problem("a dependency faultdrill starts listens on loopback", where=("url",),
                          expected="url: http://127.0.0.1:PORT (the port its command listens on)")  # fmt: skip
        return self


class TlsFiles(_Model):
    """The certificate the service serves (what ``cert_expiry`` swaps), its key and optionally the issuing CA."""

    cert: Text
    key: Text
    ca: Text | None = None


class ServiceAllow(_Model):
    """What process-level faults may touch on a server faultdrill did not start."""

    pids: list[Annotated[int, Field(ge=2)]] = Field(default_factory=list, max_length=64)
    cgroups: list[Annotated[str, Field(pattern=r"^/sys/fs/cgroup/\S+$")]] = Field(default_factory=list, max_length=64)
    systemd_units: list[Text] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _units(self) -> ServiceAllow:
        if self.systemd_units:
            raise problem("systemd units are not supported yet: faultdrill signals pids, not units",
                          expected="the unit's main pid in allow.pids (systemctl show -p MainPID UNIT)",
                          where=("systemd_units",))  # fmt: skip
        return self


class _Profiled(_Model):
    """A service kind a ``profile:`` fills in (``apply_profile``, before validation, for the kind named here)."""

    profile_kind: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        return apply_profile(data, info.context, kind=cls.profile_kind)


class ProcessService(_Profiled):
    """``kind: process`` — see the module docstring."""

    profile_kind: ClassVar[str] = "process"

    kind: Literal["process"]
    name: ServiceName | None = None
    """Replicas are ``<name>-0`` … (default: the profile's name, else ``server``)."""
    profile: Text | None = None
    command: Annotated[list[Text], Field(min_length=1, max_length=256)]
    env: dict[EnvVarName, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict)
    cwd: Text | None = None
    ports: Annotated[list[PortName], Field(min_length=1, max_length=16)] = ["http"]
    """Names faultdrill allocates a port for, per replica; ``http`` first (the one clients and probes use)."""
    model: ModelRef | None = None
    probes: ServiceProbes = Field(default_factory=ServiceProbes)
    metrics: MetricsEndpoint = Field(default_factory=MetricsEndpoint)
    dependencies: list[Dependency] = Field(default_factory=list, max_length=16)
    tls: TlsFiles | None = None
    protocol: Protocol | None = None
    """The API clients speak to it (``oip_v2``, ``openai`` …); default: the profile's."""

    @model_validator(mode="after")
    def _consistent(self) -> ProcessService:
        if self.ports[0] != "http":
            where = ("ports", self.ports.index("http")) if "http" in self.ports else ("ports",)
            raise problem("the first port must be 'http' (clients, probes and {port} use it)",
                          expected="ports: [http, …]", where=where)  # fmt: skip
        if dupes := sorted({p for p in self.ports if self.ports.count(p) > 1}):
            raise problem(f"port '{dupes[0]}' is listed twice", where=("ports",))
        names = [d.name for d in self.dependencies]
        for i, dep in enumerate(self.dependencies):
            clash = dep.name in names[:i] or dep.name.endswith("-proxy") or re.fullmatch(
                re.escape(self.replica_prefix) + r"-\d+", dep.name)  # fmt: skip
            if clash:
                raise problem(f"dependency name '{dep.name}' is taken (by another dependency, a replica or a proxy)",
                              expected="a unique name, not ending in -proxy", where=("dependencies", i, "name"))
        check_templates(self)
        return self

    @property
    def replica_prefix(self) -> str:
        return self.name or "server"

    def template_ports(self) -> tuple[str, ...]:
        return tuple(self.ports)


class UrlService(_Profiled):
    """``kind: url`` — see the module docstring."""

    profile_kind: ClassVar[str] = "url"

    kind: Literal["url"]
    url: Annotated[str, Field(pattern=r"^http://[^\s/:?#]+:\d{1,5}(/[^\s?#]*)?$", max_length=500)]
    """``http://host:port[/prefix]`` (https is not supported yet: the fault proxy in front is TCP-level, and a
    client checking the certificate's host name would refuse the proxy's address)."""
    name: ServiceName | None = None
    profile: Text | None = None
    model: UrlModel | None = None
    probes: ServiceProbes = Field(default_factory=ServiceProbes)
    metrics: MetricsEndpoint = Field(default_factory=MetricsEndpoint)
    allow: ServiceAllow = Field(default_factory=ServiceAllow)
    protocol: Protocol | None = None

    @model_validator(mode="after")
    def _consistent(self) -> UrlService:
        check_templates(self)
        return self

    @property
    def replica_prefix(self) -> str:
        return self.name or "server"

    def template_ports(self) -> tuple[str, ...]:
        return ("http",)


class KubernetesWorkload(_Profiled):
    """``kind: kubernetes`` — see the module docstring."""

    profile_kind: ClassVar[str] = "kubernetes"

    kind: Literal["kubernetes"]
    app: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")]
    """The ``app.kubernetes.io/name`` label of its pods (with ``target.kubernetes.selector``, the chaos opt-in)."""
    container: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    """The server's container in those pods."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """The container port clients use (default: the profile's ``http`` port)."""
    name: ServiceName | None = None
    profile: Text | None = None
    model: UrlModel | None = None
    metrics: MetricsEndpoint = Field(default_factory=MetricsEndpoint)
    protocol: Protocol | None = None

    @property
    def replica_prefix(self) -> str:
        return self.name or self.app


def service_shape(value: Any) -> Any:
    """``target.service`` is ``bundled`` or a mapping with ``kind``; anything else is one clear error."""
    kinds = "'bundled', or a mapping {kind: process, …} (a command faultdrill starts), {kind: url, …} (a server " \
            "already running) or {kind: kubernetes, …} (a workload on the cluster): docs/systems.md"  # fmt: skip
    if isinstance(value, str) and value != "bundled":
        raise problem(f"unknown value {one_line(repr(value), 80)}", expected=kinds,
                      suggestion="bundled" if value.lower().strip() == "bundled" else None)  # fmt: skip
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind is None:
            raise problem("missing required key kind", expected="kind: process, url or kubernetes")
        if kind not in ("process", "url", "kubernetes"):
            import difflib

            close = difflib.get_close_matches(str(kind), ["process", "url", "kubernetes"], n=1)
            raise problem(f"unknown kind {one_line(repr(kind), 80)}", expected="process, url or kubernetes",
                          where=("kind",), suggestion=close[0] if close else None)  # fmt: skip
    elif not isinstance(value, str | ProcessService | UrlService | KubernetesWorkload):
        raise problem("expected 'bundled' or a mapping", expected=kinds)
    return value


def _service_tag(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind"))
    return value.kind if isinstance(value, ProcessService | UrlService | KubernetesWorkload) else "bundled"


ServiceSpec = Annotated[
    Annotated[Literal["bundled"], Tag("bundled")] | Annotated[ProcessService, Tag("process")]
    | Annotated[UrlService, Tag("url")] | Annotated[KubernetesWorkload, Tag("kubernetes")],
    Discriminator(_service_tag), BeforeValidator(service_shape),
]  # fmt: skip
"""What ``TargetSpec.service`` holds: ``"bundled"``, a :class:`ProcessService`, a :class:`UrlService` or a
:class:`KubernetesWorkload`."""
