"""The ``target.canary`` section: a canary rollout of a model version, analysed like Flagger.

The platform runs the stable replicas *and* ``replicas`` canary replicas serving ``version``;
the service endpoint splits traffic between the ready pools by weight. The analysis starts at
``initial_weight``, and every ``analysis.interval`` judges the canary's SLIs over the last
``analysis.window``: healthy → the weight goes up by ``step_weight`` (up to ``max_weight``), one
more healthy interval at ``max_weight`` → *promoted*; ``analysis.threshold`` failed checks →
*rolled back* (weight 0, canary replicas stopped). The checks mirror Flagger's
``request-success-rate`` / ``request-duration`` metric checks plus model confidence and an SLO
burn rate (a Google SRE workbook multiwindow alert's short window).

Example (YAML)::

    target:
      replicas: 2
      canary:
        version: "2"
        replicas: 1
        initial_weight: 10
        step_weight: 20
        max_weight: 50
        analysis:
          interval: 2s
          window: 4s
          threshold: 2
          checks: {success_rate: 0.99, latency_p95: 250ms, confidence: 0.6, burn_rate: 10}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from faultdrill.experiments.timespec import Duration

__all__ = ["CanaryAnalysis", "CanaryChecks", "CanarySpec"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CanaryChecks(_Model):
    """What a healthy canary is, over the analysis window (each optional; at least one)."""

    success_rate: float | None = Field(default=0.99, gt=0, le=1)
    """Requests answered without a 5xx (and with finite outputs), at least this fraction."""
    latency_p95: Duration | None = None
    """p95 latency through the endpoint, at most this."""
    confidence: float | None = Field(default=None, gt=0, le=1)
    """Mean top-class probability of the canary's answers, at least this."""
    burn_rate: float | None = Field(default=None, gt=0)
    """Error-budget burn rate (error ratio ÷ (1 - slo)), at most this."""
    slo: float = Field(default=0.99, gt=0, lt=1)
    """The availability SLO the burn rate is measured against."""
    min_requests: int = Field(default=10, ge=1)
    """Fewer canary requests in the window: the check is inconclusive (neither pass nor fail)."""

    @model_validator(mode="after")
    def _one(self) -> CanaryChecks:
        if all(v is None for v in (self.success_rate, self.latency_p95, self.confidence, self.burn_rate)):
            raise ValueError("give at least one of success_rate, latency_p95, confidence, burn_rate")
        return self


class CanaryAnalysis(_Model):
    """How often and over what the canary is judged; ``threshold`` failed checks roll it back."""

    interval: Duration = Duration(2.0)
    window: Duration = Duration(4.0)
    threshold: int = Field(default=2, ge=1, le=100)
    progress_deadline: Duration = Duration(30.0)
    """A canary not ready this long after its rollout began counts as a failed check."""
    checks: CanaryChecks = Field(default_factory=CanaryChecks)

    @model_validator(mode="after")
    def _positive(self) -> CanaryAnalysis:
        if self.interval <= 0 or self.window <= 0:
            raise ValueError("interval and window must be greater than 0")
        return self


class CanarySpec(_Model):
    """``target.canary``: the version rolled out, its replicas and the progressive weights (percent)."""

    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "2"
    """Published in the run's registry if missing (``digits`` retrained with this seed, like a CI job would)."""
    replicas: int = Field(default=1, ge=1, le=4)
    initial_weight: int = Field(default=10, ge=1, le=100)
    """The canary's share (percent) once a revision's canary replica is ready (none before)."""
    step_weight: int = Field(default=20, ge=1, le=100)
    max_weight: int = Field(default=50, ge=1, le=100)
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)

    @model_validator(mode="after")
    def _weights(self) -> CanarySpec:
        if self.initial_weight > self.max_weight:
            raise ValueError(f"initial_weight {self.initial_weight} is above max_weight {self.max_weight}")
        return self
