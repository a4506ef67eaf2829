"""The alerting half of a run: exporter, webhook receiver, Prometheus + Alertmanager, alert watcher.

Started after the platform is up (Prometheus needs the replicas' addresses) and before the
load; stopped before the platform, so that tearing the target down never shows up as an
alert. Order up: platform exporter (kube-state-metrics/cAdvisor names for the local platform)
→ webhook receiver (its URL goes into the Alertmanager config) → Prometheus + Alertmanager
with the time-scaled rules → wait for the first sample of every target → alert watcher.
Down: the reverse, every step even when one fails.

Example::

    alerts = RunAlerting(spec.alerting, rules, am_config, run_dir / "alerting", timeline, platform.topology)
    info = alerts.up()          # journal["alerting"]
    ...
    alerts.close()
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext, ObserverGroup
from faultdrill.experiments.spec.alerting import AlertingSpec
from faultdrill.faults.owned import Owner
from faultdrill.faults.topology import Topology

__all__ = ["FIRST_SAMPLE_TIMEOUT_S", "RunAlerting"]

log = logging.getLogger("faultdrill.run")

FIRST_SAMPLE_TIMEOUT_S = 45.0


class RunAlerting:
    """Everything a run needs to prove its alerts; see the module docstring."""

    def __init__(self, spec: AlertingSpec, rules_file: Path, alertmanager_file: Path, workdir: Path,
                 timeline: Timeline, topology: Callable[[], Topology], owner: Owner | None = None,
                 replica_job: str = "target", extra_rules: tuple[Path, ...] = ()) -> None:  # fmt: skip
        self.spec = spec
        self.replica_job = replica_job
        self.extra_rules = extra_rules
        """Loaded beside ``rules_file`` (a described server's: the Kubernetes-level platform rules)."""
        """The replicas' scrape job: the one the rules select (a described server's profile names it)."""
        self.owner = owner  # Prometheus and Alertmanager are ledger records while they run (faults/owned.py)
        self.rules_file, self.alertmanager_file = rules_file, alertmanager_file
        self.workdir = workdir
        self.timeline = timeline
        self.topology = topology
        self._group = ObserverGroup()
        self._watchers = ObserverGroup()
        self._stack: Any = None
        self.info: dict[str, Any] = {"enabled": True}

    def up(self) -> dict[str, Any]:
        from faultdrill.experiments.alerting.stack import ObservabilityStack, scrape_targets
        from faultdrill.experiments.alerting.watch import AlertWatcher, WebhookReceiver
        from faultdrill.experiments.platforms.local.dcgm import XID_WINDOW_S
        from faultdrill.experiments.platforms.local.exporter import PlatformExporter

        self.workdir.mkdir(parents=True, exist_ok=True)
        ctx = ObserverContext(self.timeline, topology=self.topology)
        speedup = float(self.spec.speedup)
        exporter, receiver = PlatformExporter(xid_window_s=XID_WINDOW_S / speedup), WebhookReceiver()
        self._group = ObserverGroup([exporter, receiver])
        self._group.start(ctx)
        targets = scrape_targets(self.topology(), exporter.url, replica_job=self.replica_job)
        self._stack = ObservabilityStack(
            self.workdir, rules_file=self.rules_file, alertmanager_config=self.alertmanager_file,
            webhook_url=receiver.base_url, targets=targets, speedup=speedup, extra_rules=self.extra_rules,
            scrape_interval_s=float(self.spec.scrape_interval),
            evaluation_interval_s=float(self.spec.evaluation_interval), owner=self.owner,
        )  # fmt: skip
        self._stack.start()
        first_sample_s = self._stack.wait_first_samples(FIRST_SAMPLE_TIMEOUT_S)
        self._watchers = ObserverGroup([AlertWatcher(self._stack.prometheus_url, period_s=0.5)])
        self._watchers.start(ctx)
        self.info = {
            "enabled": True,
            "rules_file": str(self.rules_file),
            "rules_sha256": hashlib.sha256(self.rules_file.read_bytes()).hexdigest(),
            **({"extra_rules_files": [str(p) for p in self.extra_rules]} if self.extra_rules else {}),
            "alertmanager_file": str(self.alertmanager_file),
            "speedup": speedup,
            "time_scale": 1.0 / speedup,
            "scaling": list(self._stack.scaling),
            "scrape_interval_s": float(self.spec.scrape_interval),
            "evaluation_interval_s": float(self.spec.evaluation_interval),
            "versions": self._stack.versions(),
            "first_sample_s": round(first_sample_s, 3),
            "prometheus_url": self._stack.prometheus_url,
            "alertmanager_url": self._stack.alertmanager_url,
        }
        return self.info

    def close(self) -> None:
        """Watcher, then Prometheus and Alertmanager, then receiver and exporter; each even if one fails."""
        try:
            self._watchers.stop()
        finally:
            try:
                if self._stack is not None:
                    self._stack.close()
            finally:
                self._group.stop()
