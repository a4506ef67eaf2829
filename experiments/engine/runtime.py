"""The parts one run is made of — platform, load generator, fault context, watchdog — built
from the spec and always torn down in order. ``run.py`` only calls the stages.

Every process and namespace the run starts is a ledger record owned by this process (``owner``,
``faults/owned.py``), and the dead-man watchdog runs from the first record on: a run killed
before, during or after its faults still has its platform, alerting stack and load stopped.

Example::

    parts = RunParts(plan, timeline, out_dir)   # plan: experiments.engine.plan.build_plan(spec, registry, source=…)
    parts.platform_up(); parts.alerts_up(spec_file); parts.load_up(total_s=120)
    ...
    parts.close()          # load, alerting, then platform: every step even if one fails
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from faultdrill.experiments.alerting.session import RunAlerting
from faultdrill.experiments.engine.plan import Plan
from faultdrill.experiments.engine.runbook_hook import LaunchContext, RunbookLauncher, RunbookTriggers
from faultdrill.experiments.engine.schedule import FaultScheduler
from faultdrill.experiments.engine.stages import ResolvedStage
from faultdrill.experiments.expect.stats import request_stats
from faultdrill.experiments.journal import Environment, collect_environment
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator, LoadShape
from faultdrill.experiments.observe.scraper import MetricsScraper
from faultdrill.experiments.platforms.base import Load, Platform
from faultdrill.experiments.platforms.build import build_platform, check_platform
from faultdrill.experiments.spec.experiment import Experiment, LoadSpec, RateShare
from faultdrill.experiments.spec.rules import alertmanager_path, rules_path
from faultdrill.experiments.timespec import Duration
from faultdrill.faults.base import FaultContext
from faultdrill.faults.deadman import Keeper
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.owned import Owner
from faultdrill.faults.records import default_state_dir

__all__ = ["RunParts", "SharedSystem"]

log = logging.getLogger("faultdrill.run")


def _load_shape(spec: Experiment) -> LoadShape:
    shape = spec.load.shape
    if shape.type == "ramp":
        return LoadShape(kind="ramp", ramp=shape.over)
    if shape.type == "step":
        return LoadShape(kind="step", step_users=shape.step_users, step=shape.step_every)
    if shape.type == "spike":
        return LoadShape(kind="spike", spike_users=shape.spike_users, spike_at=shape.at,
                         spike_for=shape.hold)
    return LoadShape()


@dataclasses.dataclass
class SharedSystem:
    """A platform and alerting stack that outlive one run (a game day's scenarios share them).

    The scenario's run uses them and their timeline, and never stops them; the game day does.
    """

    platform: Platform
    timeline: Timeline
    alerting: RunAlerting | None = None


class RunParts:
    """Everything a run starts, in the order it starts them."""

    def __init__(self, plan: Plan, timeline: Timeline, out: Path, shared: SharedSystem | None = None,
                 run_dir: Path | None = None) -> None:  # fmt: skip
        self.plan = plan
        self.spec = spec = plan.spec
        self.timeline = timeline
        if shared is None:  # e.g. kubernetes without a cluster: one located line, exit 2
            check_platform(spec.target)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        # Absolute once, here: every configuration the run generates (Prometheus' rule_files, Locust,
        # redis, proxies, runbooks) names files under it, and some tools resolve a relative path against
        # the file that names it, not the working directory (a relative ``--out`` doubled the path).
        self.run_dir = (run_dir or out / f"{spec.metadata.name}-{stamp}").absolute()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = default_state_dir()
        self.platform: Platform | None = None
        self._watchdog = Keeper(self.state_dir, max_runtime_s=3600.0)
        # What this run starts is recorded as it starts; the watchdog comes up with the first record.
        self.owner = Owner.current(self.state_dir, on_record=self._watchdog.ensure)
        self.load: Load | None = None
        self.stages: tuple[ResolvedStage, ...] = ()
        """``load.rate_stages`` with their rates in requests per second (set by :meth:`load_up`)."""
        self.alerting: RunAlerting | None = None
        self.shared = shared
        if shared is not None:
            self.platform, self.alerting = shared.platform, shared.alerting
        self._load_summary: dict[str, Any] = {}

    # -- the platform ----------------------------------------------------------------------
    def platform_up(self) -> None:
        if self.shared is not None:
            return  # the game day's platform is up already
        # The plan's system: the services the spec describes, under their names (the platform spells none).
        self.platform = build_platform(self.spec.target, system=self.plan.system, timeline=self.timeline,
                                       workdir=self.run_dir / "platform", owner=self.owner,
                                       observers=(MetricsScraper(period_s=1.0),))  # fmt: skip
        self.platform.up()

    def environment_stub(self) -> Environment:
        return collect_environment(device=self.spec.target.device, emulated=True)

    def environment(self) -> Environment:
        """Ask the running platform what the target's device really is (real or emulated) and its notes."""
        assert self.platform is not None
        env = self.platform.environment(self.spec.target.device)
        return collect_environment(device=env.device, emulated=env.emulated, device_name=env.device_name,
                                   notes=list(env.notes))  # fmt: skip

    # -- alerting ------------------------------------------------------------------------
    def alerts_up(self, spec_file: Path | str | None) -> dict[str, Any]:
        """Prometheus + Alertmanager on the running platform (see ``runalerts``); the journal's ``alerting``."""
        assert self.platform is not None
        if self.shared is not None:
            if self.alerting is None:
                raise ConfigError("this scenario expects alerts, but the game day runs without alerting",
                                  field="alerting.enabled")  # fmt: skip
            return self.alerting.info
        if not self.platform.own_alerting:
            raise ConfigError(f"alerting in a run needs its own Prometheus scraping the replicas, which the "
                              f"{self.platform.name} platform does not wire yet: run with --no-alerts (the cluster's "
                              "Prometheus Operator evaluates the same rules: "
                              "target_service/deploy/base/prometheusrule.yaml)",
                              field="alerting.enabled")  # fmt: skip
        a = self.spec.alerting
        rules = rules_path(a.rules, spec_file=spec_file, service_rules=self.spec.service_rules())
        self.alerting = RunAlerting(a, rules, alertmanager_path(a.alertmanager, spec_file=spec_file),
                                    self.run_dir / "alerting", self.timeline, self.platform.topology, owner=self.owner,
                                    replica_job=self.spec.scrape_job(),
                                    extra_rules=tuple(p for p in [self.spec.platform_rules()] if p))  # fmt: skip
        return self.alerting.up()

    def runbook_triggers(self, spec_file: Path | str | None, launcher: RunbookLauncher | None, *,
                         guided: bool = False) -> RunbookTriggers | None:  # fmt: skip
        """Runbooks attached to faults, launched on their triggers (None when the spec attaches none)."""
        if not any(f.runbook is not None for f in self.spec.faults):
            return None
        assert self.platform is not None
        context = LaunchContext(self.timeline, self.platform.topology, self.platform, self.platform.service_url,
                                self.alerting.info.get("prometheus_url") if self.alerting else None)
        return RunbookTriggers(self.spec, spec_file, launcher, context, guided=guided)

    # -- faults ----------------------------------------------------------------------------
    def context(self) -> FaultContext:
        assert self.platform is not None
        return FaultContext.create(self.state_dir, scope=self.platform.scope(), topology=self.platform.topology(),
                                   supervisor=self.platform)  # fmt: skip

    def scheduler(self) -> FaultScheduler:
        return FaultScheduler(self.plan.faults, self.timeline, self.context, on_injected=self.ensure_watchdog)

    def ensure_watchdog(self) -> None:
        """The dead-man watchdog: undoes any injection past its deadline even if this run hangs, and
        whatever this run started once it died.

        It exits once the ledger is empty, so it is (re)started after each record (the owner's
        ``on_record``) and each injection; one per state directory (it takes a lock), so extra
        calls are cheap.
        """
        self._watchdog.ensure()

    def preflight(self, scheduler: FaultScheduler) -> None:
        """Every fault's capability checks against the running target, before any injection."""
        ctx = self.context()
        for f in scheduler.faults:
            if problems := f.fault.preflight(f.config, ctx):
                raise PreflightError(problems, fault=f.id)

    # -- load ------------------------------------------------------------------------------
    def load_up(self, total_s: float) -> str | None:
        """Start the load (after the capacity probe, for ``load.rate: N%``); what to tell the user, if anything."""
        assert self.platform is not None
        spec = self.spec.load.model_copy(update={"protocol": self.spec.load_protocol()})  # a service's default too
        said = None
        shares = [r for r in (spec.rate, *(st.rate for st in spec.rate_stages)) if isinstance(r, RateShare)]
        if shares:
            capacity = self.probe_capacity(spec)

            def rps(r: float | RateShare) -> float:
                return max(1.0, round(capacity * r.percent / 100.0, 1)) if isinstance(r, RateShare) else float(r)

            assert spec.rate is not None  # the spec's own check: stages shape a rate
            rate = rps(spec.rate)
            self.timeline.add("metric", "run", name="load_rate_rps", value=rate, labels={"share": str(spec.rate)})
            said = (f"capacity probe: {capacity:,.0f} req/s ok ({spec.capacity_probe.users} closed-loop users); "
                    f"load at {spec.rate} = {rate:,.0f} req/s, open model")  # fmt: skip
            self.stages = tuple(ResolvedStage(st.id, float(st.at), float(st.ramp), float(st.hold), rps(st.rate))
                                for st in spec.rate_stages)  # fmt: skip
            for st, resolved in zip(spec.rate_stages, self.stages, strict=True):
                self.timeline.add("metric", "run", name="load_rate_rps", value=resolved.rate_rps,
                                  labels={"share": str(st.rate), "stage": st.id})  # fmt: skip
                said += f"; stage {st.id}: {st.rate} = {resolved.rate_rps:,.0f} req/s"
            log.info(said)
            spec = spec.model_copy(update={"rate": rate})
        else:
            self.stages = tuple(ResolvedStage(st.id, float(st.at), float(st.ramp), float(st.hold), float(st.rate))
                                for st in spec.rate_stages if not isinstance(st.rate, RateShare))  # fmt: skip
        run_time = float(spec.duration) if spec.duration else total_s
        self.load = self.platform.load_generator(spec, shape=_load_shape(self.spec), run_time_s=run_time,
                                                 workdir=self.run_dir / "load", model=self.spec.target.model,
                                                 owner=self.owner)  # fmt: skip
        self.load.start()
        if not self.load.wait_first_request(90):
            log.warning("%s sent no request within 90 s", self.load.label)
        return said

    def probe_capacity(self, spec: LoadSpec) -> float:
        """Ok answers per second the service gives closed-loop users with no think time (``load.capacity_probe``),
        measured through the same endpoint, protocol and clients as the run's load, after the first second;
        recorded on the timeline (``load_capacity_rps``). The generator's own limit here is part of the figure."""
        assert self.platform is not None
        probe = spec.capacity_probe
        system = getattr(self.platform, "system", None)
        spec_dir = getattr(system, "spec_dir", None)
        closed = spec.model_copy(update={"rate": None, "users": probe.users, "spawn_rate": float(probe.users),
                                         "think_time": Duration(0.0)})  # the load's clients too: their limits apply
        seen = Timeline()  # the probe's requests stay off the run's timeline: no window judges them
        gen = LoadGenerator.of_spec(self.platform.service_url, seen, self.run_dir / "capacity", closed,
                                    shape=LoadShape(), run_time=float(probe.for_), model=self.spec.target.model,
                                    owner=self.owner, base_dir=Path(spec_dir) if spec_dir else None)  # fmt: skip
        with gen:
            gen.wait(timeout_s=float(probe.for_) + 90)
        reqs = seen.requests()
        if not reqs:
            raise ConfigError("the capacity probe got no answer: load.rate as a share of capacity cannot be set",
                              field="load.rate")  # fmt: skip
        start = reqs[0].t + 1.0
        counted = [e for e in reqs if e.t >= start]
        stats = request_stats(counted)
        span = max((e.t + float(e.attrs.get("span_s", 0.0)) for e in counted), default=start) - start
        if stats.ok == 0 or span <= 0:
            raise ConfigError(f"the capacity probe got no ok answer after its first second ({stats.total} requests, "
                              f"{stats.failed} failed): the service is not serving", field="load.rate")  # fmt: skip
        capacity = stats.ok / span
        self.timeline.add("metric", "run", name="load_capacity_rps", value=round(capacity, 1),
                          labels={"users": str(probe.users), "seconds": f"{span:.1f}",
                                  "p50_ms": f"{(stats.latency(0.5) or 0) * 1000:.1f}"})  # fmt: skip
        return capacity

    def load_summary(self) -> dict[str, Any]:
        return self._load_summary

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if self.load is not None:
                self._load_summary = dataclasses.asdict(self.load.stop())
        finally:
            if self.shared is None:  # a shared system is the game day's to stop
                try:
                    if self.alerting is not None:
                        self.alerting.close()
                finally:
                    try:
                        if self.platform is not None:
                            self.platform.close()
                    finally:
                        self._watchdog.settle()  # every record cleared: it exits within a poll
