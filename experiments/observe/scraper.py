"""The metrics scraper: each replica's Prometheus ``/metrics``, sampled onto the timeline.

:class:`MetricsScraper` is an :class:`~experiments.observe.observers.Observer` built on
:class:`~experiments.observe.observers.Poller`: every ``period_s`` it GETs ``<url>/metrics`` of each
replica of the *current* topology (role ``replica``), parses the exposition with
``prometheus_client.parser.text_string_to_metric_families`` and appends one ``metric`` event
per selected sample (source = replica name; attrs ``name`` = sample name, e.g.
``inference_requests_total``, ``value`` float, ``labels`` dict). Samples are selected by
their *sample* name, so a counter is named with its ``_total`` suffix and its ``_created``
companion is left out unless asked for.

A replica that does not answer (connection refused, timeout, non-200, unparsable body) is
skipped for that tick without an event: its probes already record that it is down.

Example::

    scraper = MetricsScraper(period_s=1.0)
    scraper.start(ObserverContext(timeline, topology=platform.topology))
    ...
    scraper.stop()
    [e.attrs["value"] for e in timeline.select("metric", source="replica-0")
     if e.attrs["name"] == "inference_pending_requests"]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext, Poller

__all__ = ["DEFAULT_METRICS", "MetricsScraper", "parse_samples"]

log = logging.getLogger("faultdrill.scraper")

DEFAULT_METRICS: tuple[str, ...] = (
    "inference_pending_requests",
    "inference_running_requests",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpu_utilization_ratio",
    "circuit_breaker_state",
    "inference_cuda_oom_total",
    "inference_failures_total",
    "inference_requests_total",
    "process_resident_memory_bytes",
    "inference_ready",
    "tls_certificate_expiry_timestamp_seconds",
    "prediction_cache_requests_total",
    "prediction_cache_breaker_state",
)


def parse_samples(text: str, names: Iterable[str]) -> list[tuple[str, float, dict[str, str]]]:
    """The samples of a Prometheus text exposition whose sample name is in ``names``.

    Returns ``(name, value, labels)`` in exposition order; raises ``ValueError`` on a body
    that is not the text format.
    """
    wanted = frozenset(names)
    out: list[tuple[str, float, dict[str, str]]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out.append((sample.name, float(sample.value), dict(sample.labels)))
    return out


class MetricsScraper:
    """Scrape every replica's ``/metrics`` each ``period_s``; see the module docstring."""

    def __init__(
        self, period_s: float = 1.0, metrics: Iterable[str] = DEFAULT_METRICS, timeout_s: float = 0.5
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.name = "metrics"
        self.period_s = period_s
        self.metrics: tuple[str, ...] = tuple(metrics)
        self.timeout_s = timeout_s
        self._poller = Poller(self.name, period_s, self._tick)
        self._client: httpx.Client | None = None
        self.scrapes = 0
        """Successful scrapes so far (one per replica that answered, per tick)."""

    def start(self, ctx: ObserverContext) -> None:
        self._client = httpx.Client(timeout=self.timeout_s)
        try:
            self._poller.start(ctx)
        except BaseException:
            self._client.close()
            self._client = None
            raise

    def stop(self) -> None:
        self._poller.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def scrape_once(self, ctx: ObserverContext) -> int:
        """One tick now (what the poller runs each period); returns the events it added."""
        client = self._client
        if client is None:
            return 0
        added = 0
        for handle in ctx.topology().by_role("replica"):
            if handle.url is None:
                continue
            try:
                response = client.get(handle.metrics_url or f"{handle.url}/metrics")  # a described server may say
                if response.status_code != 200:
                    continue
                samples = parse_samples(response.text, self.metrics)
            except (httpx.HTTPError, ValueError):
                continue  # down or answering garbage: the probes say so, not the scraper
            self.scrapes += 1
            added += _record(ctx.timeline, handle.name, samples)
        return added

    def _tick(self, ctx: ObserverContext) -> None:
        self.scrape_once(ctx)


def _record(timeline: Timeline, source: str, samples: list[tuple[str, float, dict[str, str]]]) -> int:
    t = timeline.now()  # one scrape, one instant: every sample of it shares the time
    for name, value, labels in samples:
        timeline.add("metric", source, t=t, name=name, value=value, labels=labels)
    return len(samples)
