"""``BadCanaryFault``: a bad model version is published and rolled out to the canary replicas.

The new version is built from the canary's current one (loaded from the run's registry, its
checksum verified) and published next to it as ``<model>/<bad_version>/``:

* ``slow``           — the same function in a much wider network (the trained hidden units padded
  with ``width`` zero units): identical predictions, ~``width``/64 times the compute per pass;
* ``low_confidence`` — the last layer scaled by ``logit_scale`` (< 1): the same argmax, real
  flatter softmax, so the mean top-class probability drops;
* ``erroring``       — the last layer's bias is NaN: every answer is non-finite (JSON ``null``),
  a silently broken model that only an output check catches.

Then every canary replica is restarted on it through the platform's supervisor (a canary
rollout of a new revision). The ledger record (fsynced before anything is written) holds the
registry path, the version directory, the canary replicas and their prior version; rollback
restarts them on the prior version (when a supervisor is there) and removes the bad version.
``verify`` measures the effect on a canary replica directly (bypassing the service endpoint):
served version, latency, mean confidence, non-finite answers — against a stable replica.

Example::

    fault = BadCanaryFault()
    cfg = fault.parse_config({"mode": "erroring"})
    inj = fault.inject(cfg, ctx)       # record, publish digits/bad-<id>, restart canary-0 on it
    fault.verify(inj, ctx).details     # {'canary-0': {'version': 'bad-…', 'nonfinite': 1.0, …}, …}
    fault.undo(inj, ctx)               # canary-0 back on its version, digits/bad-<id> removed
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import PreflightError, RollbackError
from faultdrill.faults.topology import ServiceHandle

__all__ = ["BadCanaryFault"]

Mode = Literal["slow", "low_confidence", "erroring"]


class BadCanaryFault(Fault):
    """Roll a slow, low-confidence or erroring model version out to the canary; see the module docstring."""

    class Config(FaultConfig):
        target: str | None = None
        """One canary replica (``canary-0``); default every ``canary-N`` of the platform."""
        mode: Mode = "erroring"
        width: int = Field(default=262_144, ge=1024, le=1_048_576)
        """``slow``: hidden units of the padded network (262144: ~15 ms per pass on one CPU thread)."""
        logit_scale: float = Field(default=0.15, gt=0, lt=1)
        """``low_confidence``: factor on the last layer (smaller: flatter softmax)."""
        wait_s: float = Field(default=60.0, gt=0, le=600)
        """How long verify waits for the canary to answer on the new version, and rollback for it to be ready."""

    name: ClassVar[str] = "bad_canary"
    writes_models: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("slow", "low_confidence", "erroring")
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    needs: ClassVar[tuple[str, ...]] = ("a canary rollout (target.canary)", "model registry in scope", "live platform")
    verifies: ClassVar[str] = "served version, latency, confidence and non-finite answers vs a stable replica"
    example: ClassVar[dict[str, Any]] = {"mode": "slow"}

    def _canaries(self, config: Config, ctx: FaultContext) -> list[ServiceHandle]:
        if config.target is not None:
            h = ctx.topology.get(config.target, role="replica")
            return [h] if h.name.startswith("canary-") else []
        return sorted((h for h in ctx.topology.by_role("replica") if h.name.startswith("canary-")),
                      key=lambda h: h.name)  # fmt: skip

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        canaries = self._canaries(config, ctx)
        if not canaries:
            what = f"'{config.target}' is not a canary replica" if config.target else "no canary-N replica"
            return [Problem("no_canary", f"{what}: set target.canary to run a canary rollout")]
        problems: list[Problem] = []
        h = canaries[0]
        if h.model_registry is None or h.model_name is None or h.model_version is None:
            return [Problem("no_model", f"'{h.name}' has no model_registry/model_name/model_version")]
        if ctx.supervisor is None:
            problems.append(Problem("no_supervisor", "rolling the canary out needs a live platform to restart it"))
        try:
            ctx.scope.check_path(h.model_registry)
        except Exception as exc:
            problems.append(Problem("blast_radius", str(exc)))
        if config.mode == "slow" and h.model_name != "digits":
            problems.append(Problem("mode", "mode 'slow' pads the digits network; this target serves "
                                    f"'{h.model_name}' (use low_confidence or erroring)"))  # fmt: skip
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        canaries = self._canaries(config, ctx)
        names = ", ".join(h.name for h in canaries) or "(no canary)"
        h = canaries[0] if canaries else None
        src = f"{h.model_registry}/{h.model_name}/{h.model_version}" if h else "?"
        change = {"slow": f"padded to {config.width} hidden units (same outputs, more compute)",
                  "low_confidence": f"last layer × {config.logit_scale}",
                  "erroring": "last-layer bias NaN (non-finite answers)"}[config.mode]  # fmt: skip
        return [f"publish a {config.mode} version built from {src}: {change}",
                f"restart {names} on it (FAULTDRILL_MODEL_VERSION)",
                f"rollback: restart {names} on version {h.model_version if h else '?'}, remove the bad version"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        if problems := self.local_preflight(config, ctx):
            raise PreflightError(problems, fault=self.name)
        canaries = self._canaries(config, ctx)
        h = canaries[0]
        assert h.model_registry is not None and h.model_name is not None and h.model_version is not None
        injection = self.new_injection(config, ctx, mode=config.mode, target=",".join(c.name for c in canaries),
                                       undo={})  # fmt: skip
        bad = f"bad-{injection.id}"
        services = [c.name for c in canaries]
        undo: dict[str, Any] = {"registry": str(h.model_registry), "model": h.model_name, "bad_version": bad,
                "version_dir": str(h.model_registry / h.model_name / bad), "prior_version": h.model_version,
                "services": services, "restarted": ctx.supervisor is not None,
                "wait_s": config.wait_s}  # fmt: skip
        injection = injection.model_copy(update={"undo": undo})

        def apply() -> None:
            from faultdrill.faults.canary_models import publish_bad_version

            publish_bad_version(Path(str(undo["registry"])), h.model_name or "digits", h.model_version or "1", bad,
                                config.mode, width=config.width, logit_scale=config.logit_scale)  # fmt: skip
            if ctx.supervisor is not None:
                for name in services:
                    ctx.supervisor.restart(name, env={"FAULTDRILL_MODEL_VERSION": bad}, wait=False)

        return self.apply_recorded(injection, ctx, apply)

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        u = injection.undo
        sup = ctx.supervisor
        if sup is not None and u.get("restarted"):
            deadline = time.monotonic() + float(u.get("wait_s", 60.0))
            for name in u["services"]:
                sup.restart(name, env={"FAULTDRILL_MODEL_VERSION": u["prior_version"]}, wait=False)
            for name in u["services"]:
                while _served_version(sup.handle(name).url) != u["prior_version"]:
                    if time.monotonic() > deadline:
                        raise RollbackError(f"{name} not serving version {u['prior_version']} after restart",
                                            fault=self.name)  # fmt: skip
                    time.sleep(0.05)
        version_dir = Path(u["version_dir"])
        if version_dir.name.startswith("bad-") and version_dir.parent == Path(u["registry"], u["model"]):
            shutil.rmtree(version_dir, ignore_errors=True)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        from faultdrill.faults.canary_models import measure_replica

        u = injection.undo
        details: dict[str, Any] = {"version_published": Path(u["version_dir"], "manifest.json").is_file()}
        stable = [h for h in ctx.topology.by_role("replica") if not h.name.startswith("canary-")]
        base = measure_replica(stable[0].url, u["model"]) if stable else {}
        details["stable"] = base
        effective = details["version_published"]
        deadline = time.monotonic() + float(u.get("wait_s", 60.0))
        for name in u["services"]:
            url = ctx.supervisor.handle(name).url if ctx.supervisor else ctx.topology.get(name).url
            while _served_version(url) != u["bad_version"] and time.monotonic() < deadline:
                if ctx.supervisor is not None and ctx.supervisor.exit_status(name) is not None:
                    break  # stopped (the analysis rolled it back already): measure what is there
                time.sleep(0.05)
            got = measure_replica(url, u["model"])
            details[name] = got
            effective = effective and got.get("version") == u["bad_version"] and _shows(injection.mode, got, base)
        return Verification(bool(effective), details, message=f"{injection.mode} canary: {details}")


def _shows(kind: str, got: dict[str, Any], base: dict[str, Any]) -> bool:
    """Does the measurement show the kind's effect (against the stable replica where it can)?"""
    if kind == "erroring":
        return float(got.get("nonfinite", 0.0)) > 0.5
    if kind == "low_confidence":
        return got.get("confidence") is not None and float(got["confidence"]) < float(base.get("confidence") or 1.0)
    return float(got.get("latency_p50_s") or 0.0) > 1.5 * float(base.get("latency_p50_s") or 0.0)


def _served_version(url: str | None) -> str | None:
    """The version a replica reports on ``/v2/models/<name>`` while ready (None: not answering)."""
    if url is None:
        return None
    try:
        with httpx.Client(timeout=0.5) as client:
            if client.get(f"{url}/v2/health/ready").status_code != 200:
                return None
            doc = client.get(f"{url}/v2").json()
    except (httpx.HTTPError, ValueError):
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return str(model.get("version")) if isinstance(model, dict) and model.get("version") is not None else None
