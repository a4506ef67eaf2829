"""Small number formatters shared by every renderer, so all formats print the same figures.

>>> seconds(1.234), seconds(None), ms(0.1204), percent(0.98765), clock(0.0)
('1.23 s', '–', '120 ms', '98.77 %', '1970-01-01 00:00:00 UTC')
"""

from __future__ import annotations

import math
import time

__all__ = ["clock", "ms", "number", "percent", "seconds", "spec_yaml"]

DASH = "–"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def seconds(value: float | None, digits: int = 2) -> str:
    """``1.23 s``; a dash when the moment never came (``never`` for infinity)."""
    if _missing(value):
        return DASH
    return "never" if math.isinf(value) else f"{value:.{digits}f} s"  # type: ignore[arg-type]


def ms(value_s: float | None) -> str:
    """Seconds shown as milliseconds: ``120 ms``."""
    return DASH if _missing(value_s) else f"{value_s * 1000:.0f} ms"  # type: ignore[operator]


def percent(ratio: float | None, digits: int = 2) -> str:
    if _missing(ratio):
        return DASH
    if math.isinf(ratio):  # type: ignore[arg-type]
        return "∞ %"
    return f"{ratio * 100:.{digits}f} %"  # type: ignore[operator]


def number(value: float | None) -> str:
    """``6,502``; a dash when missing."""
    return DASH if _missing(value) else f"{value:,.0f}"


def clock(wall: float | None) -> str:
    """A wall-clock time in UTC, to the second."""
    if _missing(wall):
        return DASH
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _moment(node: dict[str, object]) -> str:
    offset = float(node.get("offset_s") or 0.0)  # type: ignore[arg-type]
    text = f"{node.get('ref')}.{node.get('edge')}" if node.get("ref") not in (None, "run") else "run.start"
    return text + (f"{offset:+g}s" if offset else "")


def _tidy(node: object) -> object:
    """Moments back to their spec form (``hog.end+5s``); unset (None) keys dropped."""
    if isinstance(node, dict):
        if set(node) == {"ref", "edge", "offset_s"}:
            return _moment(node)
        return {k: _tidy(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def spec_yaml(spec: dict[str, object]) -> str:
    """The spec that ran, as YAML (normalised: durations in seconds, defaults filled in)."""
    import yaml

    if not spec:
        return "# no spec recorded\n"
    return str(yaml.safe_dump(_tidy(spec), sort_keys=False, allow_unicode=True, width=110, default_flow_style=None))
