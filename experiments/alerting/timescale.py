"""Time scaling: the production rules and Alertmanager config, mechanically sped up for CI.

A CI run cannot wait five production minutes for ``for: 5m``. It runs a copy of the
*same* rules in which every duration that means "how long" is divided by ``speedup``
(CI default 60: one production minute is one CI second), so the rules under test are the
shipped ones, not hand-written twins. What scales (and nothing else):

- Prometheus rules: every rule's ``for`` and ``keep_firing_for``, each group's ``interval``,
  and inside ``expr`` every range selector ``[5m]``, subquery range and resolution
  ``[1h:5m]`` and ``offset 5m``. String literals (label matchers such as ``{le="0.5"}`` or
  ``{path=~"a[0-9]+"}``) and ``#`` comments are never touched.
- Alertmanager: ``group_wait``, ``group_interval``, ``repeat_interval`` on every route (the
  root route's defaults, 30s/5m/4h, are written out first so they scale too) and
  ``global.resolve_timeout`` (default 5m).
- Not scaled: thresholds (also time-valued ones such as ``< 14 * 86400`` seconds of
  certificate life), label and annotation text, rule and record names.

Clamps: a scaled range is at least ``min_range_s`` (callers pass 4 × scrape interval: a
``rate`` needs two samples), a scaled ``for`` is at least 0 (0 stays 0), a scaled
``group_wait`` at least 0.5 s. ``speedup == 1`` returns an identical copy.

Everything here is pure: documents in, documents out, no I/O.

Example::

    >>> scale_duration("5m", 60)
    '5s'
    >>> scale_expr('histogram_quantile(0.95, rate(x_bucket{le=~"1[0-9]"}[5m])) offset 1h', 60, min_range_s=4)
    'histogram_quantile(0.95, rate(x_bucket{le=~"1[0-9]"}[5s])) offset 1m'
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

__all__ = [
    "ALERTMANAGER_DEFAULTS",
    "MIN_GROUP_WAIT_S",
    "describe_scaling",
    "format_duration",
    "parse_duration",
    "scale_alertmanager",
    "scale_duration",
    "scale_expr",
    "scale_rules",
]

MIN_GROUP_WAIT_S = 0.5
"""A scaled Alertmanager ``group_wait`` is never shorter than this."""

ALERTMANAGER_DEFAULTS: dict[str, str] = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
"""Alertmanager's root-route defaults (written out before scaling, so they scale too)."""

_UNITS_MS: dict[str, int] = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
                             "m": 60_000, "s": 1000, "ms": 1}  # fmt: skip
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DUR = r"(?:\d+(?:ms|[ywdhms]))+"
# Outside string literals and comments, '[' only opens a range or a subquery in PromQL.
_RANGE = re.compile(rf"\[(\s*)({_DUR})(\s*)(?::(\s*)({_DUR})?(\s*))?\]")
_OFFSET = re.compile(rf"\b(offset\s+)(-?)({_DUR})\b", re.IGNORECASE)
# A string literal (to its end, even unterminated) or a comment: copied verbatim.
_VERBATIM = re.compile(r"\"(?:[^\"\\]|\\.)*(?:\"|$)|'(?:[^'\\]|\\.)*(?:'|$)|`[^`]*(?:`|$)|#[^\n]*", re.DOTALL)


def parse_duration(text: str | int) -> float:
    """Seconds of a Prometheus duration (``1h30m``, ``90s``, ``500ms``, ``0``).

    >>> parse_duration("1h30m"), parse_duration("500ms")
    (5400.0, 0.5)
    """
    raw = str(text).strip()
    if raw == "0":
        return 0.0
    match = _DURATION.match(raw)
    if not raw or match is None:
        raise ValueError(f"not a Prometheus duration: {text!r} (expected e.g. 1h30m, 5m, 90s, 500ms)")
    ms = sum(int(n) * _UNITS_MS[u] for n, u in zip(match.groups(), ("y", "w", "d", "h", "m", "s", "ms"), strict=True)
             if n is not None)  # fmt: skip
    return ms / 1000.0


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (rounded to whole milliseconds).

    >>> format_duration(5400), format_duration(0.5), format_duration(0)
    ('1h30m', '500ms', '0s')
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite and >= 0, got {seconds}")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, _UNITS_MS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def _check_speedup(speedup: float) -> None:
    if not (speedup > 0 and math.isfinite(speedup)):
        raise ValueError(f"speedup must be a finite number > 0, got {speedup}")


def scale_duration(text: str, speedup: float, *, minimum_s: float = 0) -> str:
    """``text`` divided by ``speedup``, at least ``minimum_s`` (a non-zero one at least 1 ms).

    Speedup 1 keeps the text as written when it already meets the minimum.

    >>> scale_duration("1h30m", 60), scale_duration("30s", 60), scale_duration("5m", 600, minimum_s=4)
    ('1m30s', '500ms', '4s')
    """
    _check_speedup(speedup)
    seconds = parse_duration(text)
    if speedup == 1 and seconds >= minimum_s:
        return str(text)
    scaled = seconds / speedup
    if seconds > 0:
        scaled = max(scaled, 0.001)
    return format_duration(max(scaled, minimum_s))


def scale_expr(expr: str, speedup: float, *, min_range_s: float = 0) -> str:
    """A PromQL expression with ranges, subquery resolutions and offsets scaled.

    Ranges (also a subquery's range) are at least ``min_range_s``; resolutions and offsets
    are not clamped. String literals and comments are copied verbatim.
    """
    _check_speedup(speedup)

    def ranged(m: re.Match[str]) -> str:
        out = f"[{m[1]}{scale_duration(m[2], speedup, minimum_s=min_range_s)}{m[3]}"
        if m[4] is not None:  # a subquery: [range:resolution] or [range:]
            out += f":{m[4]}{scale_duration(m[5], speedup) if m[5] else ''}{m[6] or ''}"
        return out + "]"

    def offset(m: re.Match[str]) -> str:
        return f"{m[1]}{m[2]}{scale_duration(m[3], speedup)}"

    out: list[str] = []
    pos = 0
    for lit in _VERBATIM.finditer(expr):
        code = expr[pos : lit.start()]
        out.append(_OFFSET.sub(offset, _RANGE.sub(ranged, code)))
        out.append(lit[0])
        pos = lit.end()
    out.append(_OFFSET.sub(offset, _RANGE.sub(ranged, expr[pos:])))
    return "".join(out)


def scale_rules(doc: dict[str, Any], speedup: float, *, min_range_s: float) -> dict[str, Any]:
    """A scaled deep copy of a parsed Prometheus rules file (``{"groups": [...]}``)."""
    _check_speedup(speedup)
    out = copy.deepcopy(doc)
    if speedup == 1:
        return out
    for gi, group in enumerate(out.get("groups") or []):
        where = f"groups[{gi}]"
        if not isinstance(group, dict):
            raise ValueError(f"{where}: a rule group must be a mapping")
        if "interval" in group:
            group["interval"] = _scaled(group["interval"], speedup, 0.0, f"{where}.interval")
        for ri, rule in enumerate(group.get("rules") or []):
            if not isinstance(rule, dict):
                raise ValueError(f"{where}.rules[{ri}]: a rule must be a mapping")
            if isinstance(rule.get("expr"), str):
                rule["expr"] = scale_expr(rule["expr"], speedup, min_range_s=min_range_s)
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = _scaled(rule[key], speedup, 0.0, f"{where}.rules[{ri}].{key}")
    return out


def scale_alertmanager(doc: dict[str, Any], speedup: float) -> dict[str, Any]:
    """A scaled deep copy of a parsed ``alertmanager.yml`` (see the module docstring)."""
    _check_speedup(speedup)
    out = copy.deepcopy(doc)
    if speedup == 1:
        return out
    glob = out.get("global")
    if glob is None:
        glob = out["global"] = {}
    if not isinstance(glob, dict):
        raise ValueError("global: must be a mapping")
    glob["resolve_timeout"] = _scaled(glob.get("resolve_timeout", "5m"), speedup, 0.0, "global.resolve_timeout")
    root = out.get("route")
    if isinstance(root, dict):
        for key, default in ALERTMANAGER_DEFAULTS.items():
            root.setdefault(key, default)
        _scale_route(root, speedup, "route")
    return out


def _scale_route(route: dict[str, Any], speedup: float, where: str) -> None:
    for key in ALERTMANAGER_DEFAULTS:
        if key in route:
            minimum = MIN_GROUP_WAIT_S if key == "group_wait" else 0.0
            route[key] = _scaled(route[key], speedup, minimum, f"{where}.{key}")
    for i, child in enumerate(route.get("routes") or []):
        if isinstance(child, dict):
            _scale_route(child, speedup, f"{where}.routes[{i}]")


def _scaled(value: Any, speedup: float, minimum_s: float, where: str) -> str:
    try:
        return scale_duration(str(value), speedup, minimum_s=minimum_s)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def describe_scaling(speedup: float, *, min_range_s: float | None = None) -> list[str]:
    """The human lines that say what scaled by what (for the journal and the docs).

    >>> describe_scaling(1)
    ['time scale: none (speedup 1: production durations)']
    """
    _check_speedup(speedup)
    if speedup == 1:
        return ["time scale: none (speedup 1: production durations)"]
    factor = f"{speedup:g}"
    minute = format_duration(60 / speedup)
    floor = f"at least {format_duration(min_range_s)}" if min_range_s is not None else "at least 4 × scrape interval"
    return [
        f"time scale: speedup {factor}× (one production minute = {minute} in this run)",
        f"Prometheus rules: for, keep_firing_for, group interval, range selectors [..], subquery ranges and "
        f"resolutions [..:..], offset — each divided by {factor}",
        f"Alertmanager: group_wait, group_interval, repeat_interval (every route; root defaults 30s/5m/4h), "
        f"global.resolve_timeout (default 5m) — each divided by {factor}",
        f"clamps: ranges {floor} (rate needs two samples), for at least 0, group_wait at least "
        f"{format_duration(MIN_GROUP_WAIT_S)}",
        "not scaled: thresholds (also time-valued ones such as 14 * 86400 seconds of certificate life), "
        "label and annotation text, rule and record names",
    ]
