"""The observability stack of a run: a real Prometheus and Alertmanager on loopback.

:class:`ObservabilityStack` writes a time-scaled copy of the rules and of ``alertmanager.yml``
(``experiments.alerting.timescale``; webhook URLs re-pointed at the run's receiver, path = receiver
name), a ``prometheus.yml`` with the contract's jobs (``target``, ``feature-store``,
``fault-proxy``, ``kube-state-metrics``; tokens only as ``credentials_file``), checks them
with promtool/amtool, starts both on free 127.0.0.1 ports (storage and logs under
``workdir``) and waits for ``/-/ready``. Prometheus 2.42 is ready in ~0.1 s but scrapes
first ~5.5 s after start: :meth:`~ObservabilityStack.wait_first_samples` waits for ``up``.

Example::

    with ObservabilityStack(workdir, rules_file=RULES, alertmanager_config=AM, speedup=60,
                            webhook_url=receiver.base_url,
                            targets=scrape_targets(platform.topology(), exporter.url)) as stack:
        stack.wait_first_samples(30)
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from faultdrill.experiments.alerting.timescale import describe_scaling, format_duration, scale_alertmanager, scale_rules
from faultdrill.experiments.host.process import ServiceError, ServiceProcess, free_port
from faultdrill.faults.base import Problem
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.inputlimits import read_text
from faultdrill.faults.inputlimits import safe_load as bounded_safe_load
from faultdrill.faults.owned import Owner
from faultdrill.faults.topology import Topology

__all__ = ["Binaries", "ObservabilityStack", "ScrapeTarget", "StackUnavailable", "receiver_names", "scrape_targets"]

NAMESPACE = "faultdrill"


class StackUnavailable(PreflightError):
    """Prometheus or Alertmanager binaries are missing (a preflight problem: CLI exit code 2)."""

    def __init__(self, needed: Sequence[str], missing: Sequence[str]) -> None:
        text = (f"Prometheus/Alertmanager not found (need {', '.join(needed)}; missing {', '.join(missing)}): run "
                "`make setup` (apt-get install prometheus prometheus-alertmanager), or run with --no-alerts")
        super().__init__([Problem("observability_stack_missing", text)])
        self.message, self.args, self.missing = text, (text,), tuple(missing)


@dataclass(frozen=True)
class Binaries:
    """Where the four executables are: a bare name is looked up on PATH, a path used as is."""

    prometheus: str = "/usr/bin/prometheus"
    alertmanager: str = "/usr/bin/prometheus-alertmanager"
    promtool: str = "/usr/bin/promtool"
    amtool: str = "/usr/bin/amtool"

    def resolve(self) -> dict[str, str]:
        """``{role: executable}``; :class:`StackUnavailable` naming every missing one."""
        wanted = {k: str(getattr(self, k)) for k in ("prometheus", "alertmanager", "promtool", "amtool")}
        found = {role: shutil.which(path) for role, path in wanted.items()}
        missing = [wanted[role] for role, path in found.items() if path is None]
        if missing:
            raise StackUnavailable(list(wanted.values()), missing)
        return {role: str(path) for role, path in found.items()}


@dataclass(frozen=True)
class ScrapeTarget:
    """One target of one scrape job; job-level settings must agree within a job."""

    job: str
    address: str  # host:port, the `instance` label
    labels: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"
    metrics_path: str = "/metrics"
    insecure_skip_verify: bool = False
    credentials_file: Path | None = None  # a bearer token file: the token never enters prometheus.yml
    honor_labels: bool = False

    def job_settings(self) -> tuple[object, ...]:  # what targets of one job must share
        return self.scheme, self.metrics_path, self.insecure_skip_verify, self.credentials_file, self.honor_labels


def scrape_targets(topology: Topology, exporter_url: str | None = None, *,
                   replica_job: str = "target") -> list[ScrapeTarget]:  # fmt: skip
    """The contract's scrape jobs for ``topology`` (and the platform exporter, when given); the replicas' job is
    ``replica_job`` (a described server's: the job its profile's rules select)."""
    out: list[ScrapeTarget] = []
    for h in sorted(topology.by_role("replica"), key=lambda h: h.name):
        if h.url:
            labels = {"namespace": NAMESPACE, "pod": h.name, "container": replica_job, "service": replica_job}
            where = urlsplit(h.metrics_url or f"{h.url}/metrics")  # a described server's declared endpoint
            out.append(ScrapeTarget(replica_job, where.netloc, labels, metrics_path=where.path or "/metrics"))
    for h in topology.by_role("feature_store"):
        if h.url:
            labels = {"namespace": NAMESPACE, "pod": h.name, "container": h.name, "service": h.name}
            out.append(ScrapeTarget("feature-store", urlsplit(h.url).netloc, labels, scheme="https",
                                    insecure_skip_verify=True))  # fmt: skip
    for h in topology.by_role("proxy"):
        if h.control_url:
            labels = {"namespace": NAMESPACE, "pod": h.name}
            netloc = urlsplit(h.control_url).netloc
            # One job per token file: a job's targets share their credentials (the cache's proxy has its own).
            job = "fault-proxy" if h.upstream_of in (None, "feature-store") else f"fault-proxy-{h.upstream_of}"
            out.append(ScrapeTarget(job, netloc, labels, credentials_file=h.admin_token_file))
    if exporter_url:
        out.append(ScrapeTarget("kube-state-metrics", urlsplit(exporter_url).netloc, {"namespace": NAMESPACE},
                                honor_labels=True))  # fmt: skip
    return out


def receiver_names(alertmanager_doc: dict[str, Any]) -> tuple[str, ...]:
    """The receiver names of a parsed ``alertmanager.yml`` (what a WebhookReceiver serves)."""
    return tuple(str(r["name"]) for r in alertmanager_doc.get("receivers") or [] if isinstance(r, dict) and "name" in r)


def _scrape_configs(targets: Sequence[ScrapeTarget]) -> list[dict[str, Any]]:
    jobs: dict[str, list[ScrapeTarget]] = {}
    for t in targets:
        jobs.setdefault(t.job, []).append(t)
    configs = []
    for job, members in jobs.items():
        first = members[0]
        for t in members[1:]:
            if t.job_settings() != first.job_settings():
                raise ConfigError(f"scrape job {job!r}: target {t.address} differs from {first.address} in its "
                                  "scheme, path, TLS, credentials or honor_labels", field="targets")  # fmt: skip
        static = [{"targets": [t.address], "labels": dict(t.labels)} for t in members]
        cfg: dict[str, Any] = {"job_name": job, "scheme": first.scheme, "metrics_path": first.metrics_path,
                               "honor_labels": first.honor_labels, "static_configs": static}  # fmt: skip
        if first.insecure_skip_verify:  # on purpose: an expired certificate's expiry must still be read
            cfg["tls_config"] = {"insecure_skip_verify": True}
        if first.credentials_file is not None:
            cfg["authorization"] = {"type": "Bearer", "credentials_file": str(first.credentials_file)}
        configs.append(cfg)
    return configs


def _scaled_copy(path: Path, what: str, scale: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    try:  # bounded: size, nesting and nodes (faults.inputlimits), a ConfigError over them
        doc = bounded_safe_load(read_text(path, what=what), str(path))
        if not isinstance(doc, dict):
            raise ConfigError(f"the {what} must be a YAML mapping", file=str(path))
        return scale(doc)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror}", file=str(path)) from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a duration time scaling cannot read
        raise ConfigError(f"the {what} is not valid: {exc}", file=str(path)) from None


class ObservabilityStack:
    """Prometheus + Alertmanager for one run; see the module docstring. Always ``close()`` it."""

    def __init__(
        self, workdir: Path, *, rules_file: Path, alertmanager_config: Path, webhook_url: str,
        targets: Sequence[ScrapeTarget] = (), speedup: float = 1.0, scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0, binaries: Binaries | None = None, ready_timeout_s: float = 30.0,
        owner: Owner | None = None, extra_rules: Sequence[Path] = (),
    ) -> None:  # fmt: skip
        if scrape_interval_s <= 0 or evaluation_interval_s <= 0:
            raise ValueError(f"intervals must be > 0, got scrape {scrape_interval_s}, eval {evaluation_interval_s}")
        # Absolute: Prometheus resolves rule_files relative to prometheus.yml's directory, not the cwd.
        self.workdir = Path(workdir).absolute()
        self.rules_file, self.alertmanager_config = Path(rules_file).absolute(), Path(alertmanager_config).absolute()
        self.extra_rules = [Path(p).absolute() for p in extra_rules]
        """Rules files merged into the same scaled rules.yml (their group names must differ from the main file's)."""
        self.webhook_url = webhook_url.rstrip("/")
        self.targets, self.speedup, self.min_range_s = list(targets), speedup, 4 * scrape_interval_s  # rate: 2 samples
        self.scrape_interval_s, self.evaluation_interval_s = scrape_interval_s, evaluation_interval_s
        self.binaries, self.ready_timeout_s = binaries or Binaries(), ready_timeout_s
        self.owner = owner  # a run's: both processes are ledger records while they run (faults/owned.py)
        self.prometheus_yml, self.rules_yml = self.workdir / "prometheus.yml", self.workdir / "rules.yml"
        self.alertmanager_yml = self.workdir / "alertmanager.yml"
        self.scaling: list[str] = describe_scaling(speedup, min_range_s=self.min_range_s)  # for the journal
        self.prometheus: ServiceProcess | None = None  # started by start(), stopped by close()
        self.alertmanager: ServiceProcess | None = None
        self._prometheus_port = self._alertmanager_port = 0

    def __enter__(self) -> ObservabilityStack:
        self.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def start(self) -> None:
        """Check binaries, write and validate configs, start both, wait until both are ready."""
        exe = self.binaries.resolve()
        self.write_configs()  # picks the Alertmanager port prometheus.yml points at
        self._check([exe["promtool"], "check", "config", str(self.prometheus_yml)], self.rules_file)
        self._check([exe["amtool"], "check-config", str(self.alertmanager_yml)], self.alertmanager_config)
        self._prometheus_port = free_port()
        w, resend = self.workdir, format_duration(max(60 / self.speedup, self.evaluation_interval_s))  # prod: 1m
        self.alertmanager = ServiceProcess("alertmanager", [
            exe["alertmanager"], f"--config.file={self.alertmanager_yml}", f"--storage.path={w / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self._alertmanager_port}", "--cluster.listen-address=",
        ], log_path=w / "alertmanager.log", owner=self.owner)  # fmt: skip
        self.prometheus = ServiceProcess("prometheus", [
            exe["prometheus"], f"--config.file={self.prometheus_yml}", f"--storage.tsdb.path={w / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self._prometheus_port}", "--web.enable-lifecycle",
            f"--rules.alert.resend-delay={resend}",
        ], log_path=w / "prometheus.log", owner=self.owner)  # fmt: skip
        try:
            self.alertmanager.start()
            self.prometheus.start()
            self.alertmanager.wait_http(f"{self.alertmanager_url}/-/ready", self.ready_timeout_s)
            self.prometheus.wait_http(f"{self.prometheus_url}/-/ready", self.ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop both (SIGTERM, then SIGKILL after 10 s), each even if the other fails; safe twice."""
        try:
            if self.prometheus is not None:
                self.prometheus.stop(10)
        finally:
            if self.alertmanager is not None:
                self.alertmanager.stop(10)

    def write_configs(self) -> None:
        """Write the scaled rules, the re-pointed Alertmanager config and prometheus.yml."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        speedup, min_range_s = self.speedup, self.min_range_s
        rules = _scaled_copy(self.rules_file, "rules file", lambda d: scale_rules(d, speedup, min_range_s=min_range_s))
        for extra in self.extra_rules:
            more = _scaled_copy(extra, "rules file", lambda d: scale_rules(d, speedup, min_range_s=min_range_s))
            rules["groups"] = [*(rules.get("groups") or []), *(more.get("groups") or [])]
        am = _scaled_copy(self.alertmanager_config, "Alertmanager config", lambda d: scale_alertmanager(d, speedup))
        for receiver in am.get("receivers") or []:
            for hook in (receiver.get("webhook_configs") if isinstance(receiver, dict) else None) or []:
                path = urlsplit(str(hook.pop("url", ""))).path.strip("/") or str(receiver.get("name"))
                hook.pop("url_file", None)
                hook["url"] = f"{self.webhook_url}/{path}"
        if am.get("templates"):  # relative to the source file, which this copy is not next to
            am["templates"] = [str(self.alertmanager_config.parent / t) for t in am["templates"]]
        self.rules_yml.write_text(yaml.safe_dump(rules, sort_keys=False))
        self.alertmanager_yml.write_text(yaml.safe_dump(am, sort_keys=False))
        scrape, evaluation = format_duration(self.scrape_interval_s), format_duration(self.evaluation_interval_s)
        am_port = self._alertmanager_port = self._alertmanager_port or free_port()
        prometheus = {
            "global": {"scrape_interval": scrape, "scrape_timeout": scrape, "evaluation_interval": evaluation},
            "rule_files": [str(self.rules_yml)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": _scrape_configs(self.targets),
        }
        self.prometheus_yml.write_text(yaml.safe_dump(prometheus, sort_keys=False))

    @staticmethod
    def _check(argv: list[str], source: Path) -> None:
        tool = Path(argv[0]).name
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{tool} did not finish checking {argv[-1]} in 60s", file=str(source)) from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
            said = " ".join(ln for ln in lines if ln and not ln.startswith(("SUCCESS", "Checking /")))
            raise ConfigError(f"{tool} rejected {argv[-1]} (generated from this file): {said}", file=str(source))

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self._prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self._alertmanager_port}"

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the processes started (running or not)."""
        return {p.name: p.pid for p in (self.prometheus, self.alertmanager) if p is not None and p.proc is not None}

    def wait_first_samples(self, timeout_s: float = 30.0) -> float:
        """Wait until ``up`` has a sample for every target; seconds since Prometheus started."""
        if self.prometheus is None:
            raise ServiceError("the observability stack was never started")
        wanted, seen = {(t.job, t.address) for t in self.targets}, set[tuple[str, str]]()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            for _ in range(int(timeout_s / 0.1) + 2):  # bounded by count and by the deadline
                if not self.prometheus.running():
                    raise ServiceError(f"prometheus exited:\n{self.prometheus.log_tail()}")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    rows = client.get(f"{self.prometheus_url}/api/v1/query", params={"query": "up"}).json()["data"]
                    seen = {(r["metric"].get("job", ""), r["metric"].get("instance", "")) for r in rows["result"]}
                if wanted <= seen:
                    return time.monotonic() - self.prometheus.started_at
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        missing = ", ".join(f"{job}/{addr}" for job, addr in sorted(wanted - seen))
        raise ServiceError(f"no sample of `up` after {timeout_s:.0f}s for: {missing}\n{self.prometheus.log_tail()}")

    def versions(self) -> dict[str, str]:
        """``{"prometheus": "2.42.0", "alertmanager": "0.25.0"}`` from ``--version``."""
        exe, out = self.binaries.resolve(), {}
        for role in ("prometheus", "alertmanager"):
            done = subprocess.run([exe[role], "--version"], capture_output=True, text=True, timeout=30, check=False)
            found = re.search(r"version (\d+\.\d+\.\d+)", done.stdout + done.stderr)
            out[role] = found[1] if found else "unknown"
        return out
