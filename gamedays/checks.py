"""Outcome checks: the lines of a runbook step's ``expect`` block, parsed and evaluated.

=====================================================================  ==========================================
``probe readiness|liveness <replica> is true|false [within T]``        GET ``<replica>/v2/health/ready|live``
                                                                       (200 = true; no answer = false)
``metric <PromQL> <op> <number> [within T]``                           every sample of the query compares true
                                                                       (``>`` ``>=`` ``<`` ``<=`` ``==`` ``!=``;
                                                                       no sample fails)
``alert <Name>[{matchers}] firing|resolved [within T]``                Prometheus' ``ALERTS`` series (resolved:
                                                                       neither pending nor firing)
``output contains|matches "<text>"``                                   the step's command output (``matches``:
                                                                       a Python regular expression, searched)
``http <METHOD> <url> status <code> [within T]``                       the answer's status code
=====================================================================  ==========================================

``<replica>`` is a name of the platform's topology or a base URL. A check with ``within T``
is polled until it passes or ``T`` is over (at most an hour); without, it is evaluated once.
Metric and alert checks need Prometheus (``$PROM``), queried through prometheus-api-client.

Example::

    >>> parse_check("probe readiness $REPLICA is true within 30s").within_s
    30.0
    >>> parse_check("metric max(up) < 1").op
    '<'
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from faultdrill.experiments.timespec import parse_duration
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.topology import Topology

__all__ = [
    "CHECK_KINDS",
    "AlertCheck",
    "Check",
    "CheckContext",
    "CheckOutcome",
    "CheckSyntaxError",
    "HttpCheck",
    "MetricCheck",
    "OutputCheck",
    "ProbeCheck",
    "UnboundVariable",
    "parse_check",
    "run_check",
    "substitute",
]

CHECK_KINDS = ("probe", "metric", "alert", "output", "http")
MAX_WITHIN_S = 3600.0
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}  # fmt: skip
_WITHIN = re.compile(r"^(?P<rest>.*?)\s+within(?:\s+(?P<dur>\S+))?\s*$")
_PROBE = re.compile(r"^(?P<probe>\S+)\s+(?P<replica>\S+)\s+is\s+(?P<value>\S+)$")
_METRIC = re.compile(r"^(?P<query>.+)\s+(?P<op>>=|<=|==|!=|>|<)\s+(?P<num>\S+)$")
_ALERT = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<matchers>\{.*\})?\s+(?P<state>\S+)$")
_OUTPUT = re.compile(r'^(?P<mode>\S+)\s+(?P<text>"(?:[^"\\]|\\.)*")$')
_HTTP = re.compile(r"^(?P<method>\S+)\s+(?P<url>\S+)\s+status\s+(?P<code>\S+)$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class CheckSyntaxError(ValueError):
    """A check line that does not parse; ``suggestion`` is a did-you-mean, if any."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.suggestion = suggestion


class UnboundVariable(FaultdrillError):
    """A runbook variable that the caller did not bind."""


@dataclass(frozen=True, kw_only=True)
class _Check:
    """What every check has: its text, where it stands, and how long it may poll."""

    text: str
    line: int = 0
    index: int = 0
    within_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ProbeCheck(_Check):
    """``probe readiness|liveness <replica> is true|false [within T]``; ``index``: its place in the block."""

    probe: Literal["readiness", "liveness"]
    replica: str
    expected: bool
    kind: Literal["probe"] = "probe"


@dataclass(frozen=True, kw_only=True)
class MetricCheck(_Check):
    """``metric <PromQL> <op> <number> [within T]``: every sample compares true."""

    query: str
    op: str
    threshold: float
    kind: Literal["metric"] = "metric"


@dataclass(frozen=True, kw_only=True)
class AlertCheck(_Check):
    """``alert <Name>[{matchers}] firing|resolved [within T]`` (Prometheus' ``ALERTS``)."""

    name: str
    matchers: str = ""
    """Extra label matchers without braces, e.g. ``pod="replica-0"``."""
    state: Literal["firing", "resolved"]
    kind: Literal["alert"] = "alert"


@dataclass(frozen=True, kw_only=True)
class OutputCheck(_Check):
    """``output contains|matches "<text>"``: the step's command output."""

    mode: Literal["contains", "matches"]
    needle: str
    kind: Literal["output"] = "output"


@dataclass(frozen=True, kw_only=True)
class HttpCheck(_Check):
    """``http <METHOD> <url> status <code> [within T]``."""

    method: str
    url: str
    status: int
    kind: Literal["http"] = "http"


Check = ProbeCheck | MetricCheck | AlertCheck | OutputCheck | HttpCheck


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value in allowed:
        return value
    close = difflib.get_close_matches(value, allowed, n=1)
    raise CheckSyntaxError(f"{what} must be one of {', '.join(allowed)}, got '{value}'", close[0] if close else None)


def parse_check(text: str, *, line: int = 0, index: int = 0) -> Check:
    """One ``expect`` line → a typed check; CheckSyntaxError says what is wrong."""
    text = text.strip()
    kind, _, rest = text.partition(" ")
    if kind not in CHECK_KINDS:
        close = difflib.get_close_matches(kind, CHECK_KINDS, n=1)
        raise CheckSyntaxError(f"unknown check '{kind}' (known: {', '.join(CHECK_KINDS)})", close[0] if close else None)
    rest, within = rest.strip(), 0.0
    if kind != "output" and (w := _WITHIN.match(rest)):
        if not w.group("dur"):
            raise CheckSyntaxError("'within' needs a duration, e.g. 'within 30s'")
        try:
            within = parse_duration(w.group("dur"))
        except ValueError:
            raise CheckSyntaxError(f"bad duration '{w.group('dur')}' (expected a duration like 500ms, 30s or 2m)") \
                from None  # fmt: skip
        if within > MAX_WITHIN_S:
            raise CheckSyntaxError(f"bad duration '{w.group('dur')}': 'within' is at most 1h")
        rest = w.group("rest").strip()
    base: dict[str, Any] = {"text": text, "line": line, "index": index, "within_s": within}
    if kind == "probe":
        if not (m := _PROBE.match(rest)):
            raise CheckSyntaxError("expected 'probe readiness|liveness <replica> is true|false [within T]'")
        probe = _one_of(m.group("probe"), ("readiness", "liveness"), "the probe")
        value = _one_of(m.group("value"), ("true", "false"), "the probe's value")
        return ProbeCheck(**base, probe=probe, replica=m.group("replica"), expected=value == "true")  # type: ignore[arg-type]
    if kind == "metric":
        if not (m := _METRIC.match(rest)):
            raise CheckSyntaxError("expected 'metric <PromQL> <op> <number> [within T]' (op: > >= < <= == !=)")
        try:
            threshold = float(m.group("num"))
        except ValueError:
            raise CheckSyntaxError(f"'{m.group('num')}' is not a number") from None
        return MetricCheck(**base, query=m.group("query").strip(), op=m.group("op"), threshold=threshold)
    if kind == "alert":
        if not (m := _ALERT.match(rest)):
            raise CheckSyntaxError("expected 'alert <Name>[{label=\"value\"}] firing|resolved [within T]'")
        state = _one_of(m.group("state"), ("firing", "resolved"), "the alert state")
        matchers = (m.group("matchers") or "{}")[1:-1].strip()
        return AlertCheck(**base, name=m.group("name"), matchers=matchers, state=state)  # type: ignore[arg-type]
    if kind == "output":
        if not (m := _OUTPUT.match(rest)):
            raise CheckSyntaxError('expected \'output contains|matches "<text>"\' (the text in double quotes)')
        mode = _one_of(m.group("mode"), ("contains", "matches"), "the output test")
        try:
            needle = json.loads(m.group("text"))
        except json.JSONDecodeError as exc:
            raise CheckSyntaxError(f"the text is a JSON string ({exc.msg}): write a backslash as \\\\, "
                                   'e.g. output matches "ready \\\\d+"') from None
        if mode == "matches":
            try:
                re.compile(needle)
            except re.error as exc:
                raise CheckSyntaxError(f"bad regular expression {needle!r}: {exc}") from None
        return OutputCheck(**base, mode=mode, needle=needle)  # type: ignore[arg-type]
    if not (m := _HTTP.match(rest)):
        raise CheckSyntaxError("expected 'http <METHOD> <url> status <code> [within T]'")
    method = _one_of(m.group("method").upper(), _METHODS, "the HTTP method")
    code = m.group("code")
    if not code.isdigit() or not 100 <= int(code) <= 599:
        raise CheckSyntaxError(f"status must be an HTTP status code (100-599), got '{code}'")
    return HttpCheck(**base, method=method, url=m.group("url"), status=int(code))


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace ``$NAME`` / ``${NAME}``; an unbound name raises UnboundVariable."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise UnboundVariable(f"variable ${name} is not bound (pass --var {name}=… or let the engine bind it)")
        return variables[name]

    return _VAR.sub(one, text)


@dataclass
class CheckContext:
    """What a check may look at; ``output`` is the step's command output (None: not run here)."""

    variables: Mapping[str, str]
    topology: Callable[[], Topology] | None = None
    prometheus_url: str | None = None
    output: str | None = None
    stop: threading.Event | None = None
    request_timeout_s: float = 2.0


@dataclass(frozen=True)
class CheckOutcome:
    """Whether a check passed, and what it saw (``detail`` is shown to people and in results)."""

    passed: bool
    detail: str
    attempts: int = 1
    elapsed_s: float = 0.0


def run_check(check: Check, ctx: CheckContext) -> CheckOutcome:
    """Evaluate ``check``, polling until it passes or its ``within`` is over (bounded, stoppable)."""
    try:
        fields = {f: substitute(getattr(check, f), ctx.variables)
                  for f in ("replica", "query", "matchers", "url") if hasattr(check, f)}  # fmt: skip
    except UnboundVariable as exc:
        return CheckOutcome(False, str(exc))
    bound: Check = replace(check, **fields)  # type: ignore[arg-type]
    start = time.monotonic()
    deadline = start + check.within_s
    period = min(1.0, max(0.1, check.within_s / 20))
    attempts = 0
    passed, detail = False, ""
    for _ in range(int(check.within_s / period) + 2):  # bounded in count as well as in time
        attempts += 1
        passed, detail = _evaluate(bound, ctx)
        if passed or time.monotonic() >= deadline:
            break
        if ctx.stop is not None and ctx.stop.wait(period):
            detail += " (stopped)"
            break
        if ctx.stop is None:
            time.sleep(period)
    elapsed = time.monotonic() - start
    if not passed and check.within_s:
        detail += f" (still so after {elapsed:.1f}s, {attempts} tries)"
    return CheckOutcome(passed, detail, attempts, round(elapsed, 3))


def _evaluate(check: Check, ctx: CheckContext) -> tuple[bool, str]:
    if isinstance(check, ProbeCheck):
        return _probe(check, ctx)
    if isinstance(check, MetricCheck):
        return _metric(check, ctx)
    if isinstance(check, AlertCheck):
        return _alert(check, ctx)
    if isinstance(check, OutputCheck):
        if ctx.output is None:
            return False, "the step's command was not run through faultdrill: no output to look at"
        hit = check.needle in ctx.output if check.mode == "contains" else bool(re.search(check.needle, ctx.output,
                                                                                         re.MULTILINE))  # fmt: skip
        return hit, f"output {'has' if hit else 'lacks'} {check.needle!r}"
    return _http(check, ctx)


def _verify(url: str, ctx: CheckContext) -> ssl.SSLContext | bool:
    ca = ctx.variables.get("CA")
    return ssl.create_default_context(cafile=ca) if url.startswith("https:") and ca else True


def _probe(check: ProbeCheck, ctx: CheckContext) -> tuple[bool, str]:
    base = check.replica
    if not base.startswith(("http://", "https://")):
        if ctx.topology is None:
            return False, f"unknown replica '{base}': no platform topology (give its URL)"
        try:
            base = ctx.topology().get(base).url or ""
        except FaultdrillError as exc:
            return False, str(exc)
    url = f"{base.rstrip('/')}/v2/health/{'ready' if check.probe == 'readiness' else 'live'}"
    try:
        response = httpx.get(url, timeout=ctx.request_timeout_s, verify=_verify(url, ctx))
        value, seen = response.status_code == 200, f"{response.status_code} {response.text[:120].strip()}"
    except (httpx.HTTPError, OSError) as exc:
        value, seen = False, f"no answer: {type(exc).__name__}"
    ok = value == check.expected
    return ok, f"{check.probe} of {check.replica} is {str(value).lower()} ({seen})"


def _query(ctx: CheckContext, query: str) -> list[tuple[dict[str, str], float]]:
    """Instant query; [(labels, value)]. Raises RuntimeError with a readable reason."""
    import requests
    from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
    from urllib3.util.retry import Retry

    url = ctx.prometheus_url or ctx.variables.get("PROM")
    if not url:
        raise RuntimeError("needs Prometheus: bind $PROM (--prometheus URL)")
    client = PrometheusConnect(url.rstrip("/"), retry=Retry(total=0, raise_on_status=False),
                               timeout=ctx.request_timeout_s)  # fmt: skip
    try:
        rows = client.custom_query(query)
    except (requests.RequestException, PrometheusApiClientException) as exc:
        raise RuntimeError(f"Prometheus query failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        client.close()
    if rows and not isinstance(rows[0], dict):  # a scalar: [time, "value"]
        return [({}, float(rows[1]))]
    return [({k: str(v) for k, v in r.get("metric", {}).items()}, float(r["value"][1])) for r in rows or []]


def _metric(check: MetricCheck, ctx: CheckContext) -> tuple[bool, str]:
    try:
        samples = _query(ctx, check.query)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        return False, str(exc)
    if not samples:
        return False, f"{check.query} returned no sample (expected {check.op} {check.threshold:g})"
    compare = _OPS[check.op]
    bad = [(labels, v) for labels, v in samples if math.isnan(v) or not compare(v, check.threshold)]
    shown = ", ".join(f"{_labels(lb)}{v:g}" for lb, v in (bad or samples)[:3])
    if bad:
        return False, f"{check.query} = {shown} (expected {check.op} {check.threshold:g})"
    return True, f"{check.query} = {shown} ({check.op} {check.threshold:g})"


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{{{inner}}} " if inner else ""


def _alert(check: AlertCheck, ctx: CheckContext) -> tuple[bool, str]:
    selector = f'alertname="{check.name}"' + (f",{check.matchers}" if check.matchers else "")
    try:
        samples = _query(ctx, f"ALERTS{{{selector}}}")
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        return False, str(exc)
    states = sorted({labels.get("alertstate", "?") for labels, _ in samples})
    now = "firing" if "firing" in states else ("pending" if states else "inactive")
    ok = now == "firing" if check.state == "firing" else not states
    return ok, f"alert {check.name} is {now}"


def _http(check: HttpCheck, ctx: CheckContext) -> tuple[bool, str]:
    try:
        response = httpx.request(check.method, check.url, timeout=ctx.request_timeout_s,
                                 verify=_verify(check.url, ctx))  # fmt: skip
    except (httpx.HTTPError, OSError) as exc:
        return False, f"{check.method} {check.url}: no answer ({type(exc).__name__}: {str(exc)[:120]})"
    ok = response.status_code == check.status
    return ok, f"{check.method} {check.url} answered {response.status_code}"
