"""The run's alerting settings (the spec's ``alerting`` section); the alert expectations' old import path.

The expectations themselves — ``{alert: NAME, fires: …, resolves: …}`` and ``{no_alerts: firing}`` — live
in ``experiments.expect.alert`` and ``experiments.expect.no_alerts``.

The ``alerting`` section of a spec::

    alerting:
      enabled: true         # false (or `faultdrill run --no-alerts`): no Prometheus/Alertmanager
      rules: default        # target_service/alerts/rules.yml, or a path relative to the spec
      speedup: 60           # production durations ÷ 60 (1 = production); see docs/alerts.md
      scrape_interval: 1s
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faultdrill.experiments.expect.alert import RECEIVERS, SEVERITIES, AlertExpectation, AlertWithin
from faultdrill.experiments.expect.no_alerts import NoAlerts
from faultdrill.experiments.timespec import Duration

__all__ = ["RECEIVERS", "SEVERITIES", "AlertExpectation", "AlertWithin", "AlertingSpec", "NoAlerts"]


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
