"""Time on the experiment's timeline: durations, moments and windows (typed, parsed from YAML).

Durations are ``500ms``, ``3s``, ``2m``, ``1h`` (or plain seconds). Moments are event
references: ``run.start``, ``steady.start``, ``<fault id>.start``, ``<fault id>.end``,
optionally with an offset (``hog.end+5s``, ``hog.start-2s``), or an absolute offset from the
run start (``30s``). :class:`Windowed` is the mixin for expectations judged over a span
(``during``, ``before``, ``after``, ``between``; see ``experiments.expect``).

Example::

    >>> parse_duration("1.5s"), str(Moment.model_validate("hog.end+5s"))
    (1.5, 'hog.end+5s')
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Duration", "Moment", "Window", "Windowed", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MOMENT = re.compile(
    r"^(?:(?P<ref>[A-Za-z0-9_-]+)\.(?P<edge>start|end))?\s*"
    r"(?:(?P<sign>[+-])?\s*(?P<off>\d+(?:\.\d+)?\s*(?:ms|s|m|h)))?$"
)


def parse_duration(value: object) -> float:
    """``500ms`` / ``3s`` / ``2m`` / ``1h`` (or a plain number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 30s or 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 500ms, 30s or 2m, got {value!r}")


class Duration(float):
    """Seconds, parsed from ``500ms``/``30s``/``2m``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            lambda v: cls(parse_duration(v)),
            json_schema_input_schema=core_schema.union_schema(
                [core_schema.str_schema(pattern=_DURATION.pattern), core_schema.float_schema(ge=0)]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(float),
        )


class Moment(BaseModel):
    """A point on the timeline: an event reference plus an offset, or an absolute offset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str | None = None
    """``run``, ``steady`` or a fault id; None = an absolute offset from the run start."""
    edge: Literal["start", "end"] = "start"
    offset_s: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"offset_s": float(value)}
        if not isinstance(value, str):
            return value
        m = _MOMENT.match(value.strip())
        if not m or not (m.group("ref") or m.group("off")):
            raise ValueError(f"expected an event like 'hog.start', 'hog.end+5s' or an offset like '30s', got {value!r}")
        offset = parse_duration(m.group("off")) if m.group("off") else 0.0
        if m.group("sign") == "-":
            offset = -offset
        return {"ref": m.group("ref"), "edge": m.group("edge") or "start", "offset_s": offset}

    def __str__(self) -> str:
        base = f"{self.ref}.{self.edge}" if self.ref else "run.start"
        return base if not self.offset_s else f"{base}{self.offset_s:+g}s"


class Window(BaseModel):
    """A span of the timeline, from the ``during``/``before``/``after``/``between`` keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Moment
    end: Moment | None = None
    """None = the end of the run."""
    label: str = ""


class Windowed(BaseModel):
    """Mixin: exactly one of ``during`` (fault id), ``before``, ``after``, ``between``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    during: str | None = None
    """A fault id: from its start to its end."""
    before: str | None = None
    """A fault id: from steady state to its start."""
    after: Moment | None = None
    """A moment (``hog.end``): from there to the end of the run."""
    between: tuple[Moment, Moment] | None = None

    def window(self) -> Window | None:
        if self.during:
            return Window(start=Moment(ref=self.during, edge="start"), end=Moment(ref=self.during, edge="end"),
                          label=f"during {self.during}")  # fmt: skip
        if self.before:
            return Window(start=Moment(ref="steady", edge="start"), end=Moment(ref=self.before, edge="start"),
                          label=f"before {self.before}")  # fmt: skip
        if self.after is not None:
            return Window(start=self.after, end=None, label=f"after {self.after}")
        if self.between:
            a, b = self.between
            return Window(start=a, end=b, label=f"between {a} and {b}")
        return None

    @model_validator(mode="after")
    def _one_window(self) -> Windowed:
        given = [k for k in ("during", "before", "after", "between") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one window, not {', '.join(given)}")
        return self
