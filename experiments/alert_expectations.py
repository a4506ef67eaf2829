"""Alert expectations and the run's alerting settings (typed; judged by ``alert_assertions``).

The central game-day questions — did we get paged, how fast, by the right alert, and did it
clear — as spec entries::

    expect:
      - {alert: InferenceGPUMemoryPressure, fires: {within: 30s, after: hog.start},
         severity: warning, notifies: chat}
      - {alert: InferenceGPUMemoryPressure, resolves: {within: 60s, after: hog.end}}
      - {no_alerts: firing, allow: [InferenceCUDAOOM]}     # false-positive check

``fires`` is judged on the alert state Prometheus reports (pending → firing); ``notifies``
on the webhook call Alertmanager made to that receiver, within the same ``within`` — the
page, not just the rule. ``labels`` narrows to one alert instance (``{pod: replica-0}``).
``no_alerts`` covers steady state by default: from ``steady.start`` to the first fault's start
(the whole run when there are no faults); ``during``/``before``/``after``/``between`` choose
another window; ``no_alerts: pending`` is stricter (not even pending).

The ``alerting`` section of a spec::

    alerting:
      enabled: true         # false (or `faultdrill run --no-alerts`): no Prometheus/Alertmanager
      rules: default        # target_service/alerts/rules.yml, or a path relative to the spec
      speedup: 60           # production durations ÷ 60 (1 = production); see docs/alerts.md
      scrape_interval: 1s
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.timespec import Duration, Moment, Windowed

__all__ = ["RECEIVERS", "SEVERITIES", "AlertExpectation", "AlertWithin", "AlertingSpec", "NoAlerts"]

SEVERITIES: tuple[str, ...] = ("critical", "warning", "ticket")
RECEIVERS: tuple[str, ...] = ("pager", "chat", "ticket")
"""The shipped Alertmanager config routes critical → pager, warning → chat, ticket → ticket."""

Severity = Literal["critical", "warning", "ticket"]
Receiver = Literal["pager", "chat", "ticket"]
AlertName = str


class AlertWithin(BaseModel):
    """``{within: 30s, after: hog.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    within: Duration
    after: Moment


class AlertExpectation(BaseModel):
    """``{alert: NAME, fires: {within, after}, resolves: {within, after}, severity, notifies, labels}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert: AlertName = Field(min_length=1)
    fires: AlertWithin | None = None
    resolves: AlertWithin | None = None
    severity: Severity | None = None
    """The ``severity`` label the firing alert must carry."""
    notifies: Receiver | None = None
    """The receiver Alertmanager must call with this alert firing, within ``fires.within``."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Only alert instances with these labels count (e.g. ``{pod: replica-0}``)."""

    @model_validator(mode="after")
    def _something(self) -> AlertExpectation:
        if self.fires is None and self.resolves is None:
            raise ValueError("give fires: {within, after} and/or resolves: {within, after}")
        if (self.notifies or self.severity) and self.fires is None:
            raise ValueError("notifies and severity are judged on the firing alert: give fires: {within, after}")
        return self


class NoAlerts(Windowed):
    """``{no_alerts: firing, allow: [NAME, …]}`` — steady state unless a window is given."""

    no_alerts: Literal["firing", "pending"]
    allow: list[AlertName] = Field(default_factory=list)


class AlertingSpec(BaseModel):
    """Real Prometheus + Alertmanager in the run (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    rules: str = "default"
    """``default`` (the shipped ``target_service/alerts/rules.yml``) or a rules file, relative to the spec."""
    alertmanager: str = "default"
    """``default`` (``target_service/alerts/alertmanager.yml``) or a config file, relative to the spec."""
    speedup: float = Field(default=60.0, ge=1.0, le=3600.0)
    """Production ``for:``/range durations and Alertmanager timers are divided by this (1 = production)."""
    scrape_interval: Duration = Duration(1.0)
    evaluation_interval: Duration = Duration(1.0)

    @model_validator(mode="after")
    def _intervals(self) -> AlertingSpec:
        for key in ("scrape_interval", "evaluation_interval"):
            if not 0.1 <= float(getattr(self, key)) <= 60.0:
                raise ValueError(f"{key} must be between 100ms and 60s")
        return self
