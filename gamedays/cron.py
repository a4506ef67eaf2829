"""Cron for game days: a plan's cron expression parsed with located errors, its next occurrences, "due now".

The expression has the five classic fields (minute hour day-of-month month day-of-week),
with names (``JAN``, ``MON``), ranges, steps, lists and the macros ``@hourly`` … ``@yearly``;
day-of-month and day-of-week are ORed when both are restricted, as cron does. Three extensions
are read too, because game days are often "the first Monday" or "the last Friday" of a month:
``MON#1`` (n-th weekday), ``5L`` (last Friday), ``L`` / ``LW`` (last day / last weekday of the
month). Occurrences come from cronsim (DST handled as Debian's cron does); the expression is
parsed here first, so that a bad one is a located error naming the field, the token and what was
expected, and so that the installers can see which days it means.

>>> [d.isoformat() for d in next_runs("0 10 * * MON#1", "UTC", 2, datetime(2027, 1, 1, tzinfo=UTC))]
['2027-01-04T10:00:00+00:00', '2027-02-01T10:00:00+00:00']
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from faultdrill.faults.errors import ConfigError

__all__ = [
    "BOUNDS",
    "DAYS",
    "EXAMPLE",
    "FIELD",
    "FIELDS",
    "MACROS",
    "MONTHS",
    "CronExpr",
    "compact",
    "is_due",
    "next_runs",
    "or_days_hint",
    "parse_cron",
    "zone_info",
]

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}  # fmt: skip
FIELD = "schedule.cron"
EXAMPLE = "0 10 * * MON"


@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression: the value set of each field and the extensions it uses."""

    text: str
    """As written (macros included)."""
    canonical: str
    """Five fields every scheduler here reads alike: macros expanded, Sunday as 0."""
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    """Plain days of the month (without ``L``/``LW``)."""
    months: frozenset[int]
    weekdays: frozenset[int]
    """Plain weekdays, 0 = Sunday (7 is read as 0)."""
    last_day: bool = False
    last_weekday_of_month: bool = False
    nth_weekdays: tuple[tuple[int, int], ...] = ()
    """(weekday, n): the n-th such weekday of the month (``MON#1``)."""
    last_weekdays: tuple[int, ...] = ()
    """The last such weekday of the month (``5L``)."""
    dom_star: bool = True
    """Day-of-month starts with ``*``: cron then ANDs the day fields (else it ORs them)."""
    dow_star: bool = True

    @property
    def extended(self) -> bool:
        """Uses ``L``, ``LW``, ``#`` or ``nL``, which crontab and Kubernetes do not read."""
        return self.last_day or self.last_weekday_of_month or bool(self.nth_weekdays or self.last_weekdays)

    @property
    def fields(self) -> list[str]:
        return self.canonical.split()

    def superset(self) -> str:
        """A plain five-field expression that fires on every occurrence of this one (and maybe more)."""
        if not self.extended:
            return self.canonical
        f = self.fields
        days = set(self.days) | (set(range(28, 32)) if self.last_day else set()) \
            | (set(range(26, 32)) if self.last_weekday_of_month else set())  # fmt: skip
        if not self.dom_star:
            f[2] = compact(days, 1, 31, "-")
        weekdays = set(self.weekdays) | {d for d, _ in self.nth_weekdays} | set(self.last_weekdays)
        if not self.dow_star:
            f[4] = compact(weekdays, 0, 6, "-")
        return " ".join(f)


def compact(values: set[int] | frozenset[int], lo: int, hi: int, dash: str, fmt: str = "{}") -> str:
    """``{1,2,3,5}`` → ``1-3,5`` (``*`` for the full range)."""
    if set(range(lo, hi + 1)) <= values:
        return "*"
    out, run = [], list[int]()
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(fmt.format(run[0]) if len(run) == 1 else f"{fmt.format(run[0])}{dash}{fmt.format(run[-1])}")
        run = [v]
    if run:
        out.append(fmt.format(run[0]) if len(run) == 1 else f"{fmt.format(run[0])}{dash}{fmt.format(run[-1])}")
    return ",".join(out)


def _err(expr: str, i: int, token: str, why: str, *, expected: str | None = None,
         suggestion: str | None = None) -> ConfigError:  # fmt: skip
    return ConfigError(f"{FIELDS[i]} field {token!r} of {expr!r}: {why}", field=FIELD, expected=expected,
                       suggestion=suggestion)  # fmt: skip


def _value(expr: str, i: int, token: str) -> int:
    lo, hi = BOUNDS[i]
    names = MONTHS if i == 3 else DAYS if i == 4 else ()
    up = token.upper()
    if up in names:
        return names.index(up) + (1 if i == 3 else 0)
    expected = f"{lo}–{hi}" + (f" or {names[0]}–{names[-1]}" if names else "")
    if not token.isdigit():
        close = difflib.get_close_matches(up, names, n=1, cutoff=0.5) or ([up[:3]] if up[:3] in names else [])
        if token == "?":
            close = ["*"]
        if i == 2 and up[:-1].isdigit() and up.endswith("W"):
            raise _err(expr, i, token, "'W' (nearest weekday) is not supported", expected=expected)
        if i == 2 and up[:-1].isdigit() and up.endswith("L"):
            raise _err(expr, i, token, "'nL' (last weekday n) is read only in day-of-week; day-of-month takes 'L'",
                       suggestion="L")  # fmt: skip
        if i in (0, 1, 3) and "L" in up and not close:
            raise _err(expr, i, token, "'L' is read only in day-of-month (L, LW) and day-of-week (5L)",
                       expected=expected)  # fmt: skip
        raise _err(expr, i, token, f"{token!r} is not a number" + (" or a name" if names else ""),
                   expected=expected, suggestion=close[0] if close else None)  # fmt: skip
    value = int(token)
    if not lo <= value <= hi:
        hint = {1: "0" if value == 24 else None, 3: "1" if value == 0 else None}.get(i)
        raise _err(expr, i, token, f"{value} is out of range", expected=expected, suggestion=hint)
    return value


def _field(expr: str, i: int, text: str) -> tuple[set[int], list[tuple[str, int, int]]]:
    """Values of one field, and its extension items: ('L',0,0), ('LW',0,0), ('#',dow,n), ('DL',dow,0)."""
    lo, hi = BOUNDS[i]
    values: set[int] = set()
    ext: list[tuple[str, int, int]] = []
    for item in text.split(","):
        up = item.upper()
        if item == "":
            raise _err(expr, i, text, "empty list item", suggestion=text.strip(",").replace(",,", ","))
        if i == 2 and up in ("L", "LW"):
            ext.append((up, 0, 0))
            continue
        if i == 4 and "#" in item:
            day, _, nth = item.partition("#")
            if not nth.isdigit() or not 1 <= int(nth) <= 5:
                raise _err(expr, i, item, "the n in 'weekday#n' must be 1–5", expected="e.g. MON#1")
            ext.append(("#", _value(expr, i, day) % 7, int(nth)))
            continue
        if i == 4 and up.endswith("L") and len(up) > 1:
            ext.append(("DL", _value(expr, i, item[:-1]) % 7, 0))
            continue
        body, _, step_s = item.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise _err(expr, i, item, f"step {step_s!r} must be a whole number of at least 1", expected="e.g. */15")
            step = int(step_s)
        if body == "*":
            start, end = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(expr, i, a), _value(expr, i, b)
            if end < start:
                raise _err(expr, i, item, f"range {body!r} runs backwards", suggestion=f"{b}-{a}")
        else:
            start = _value(expr, i, body)
            end = hi if step_s else start
        values.update(range(start, end + 1, step))
    return ({v % 7 for v in values} if i == 4 else values), ext


def parse_cron(expr: str) -> CronExpr:
    """Parse and check a cron expression; every mistake is a ConfigError naming the field, with a suggestion."""
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise ConfigError("'@reboot' is not a schedule: a game day needs times", field=FIELD,
                              expected="five cron fields or @hourly, @daily, @weekly, @monthly, @yearly",
                              suggestion="@weekly")  # fmt: skip
        if text.lower() not in MACROS:
            close = difflib.get_close_matches(text.lower(), list(MACROS), n=1)
            raise ConfigError(f"unknown cron macro {text!r}", field=FIELD, expected=", ".join(MACROS),
                              suggestion=close[0] if close else None)  # fmt: skip
        parts = MACROS[text.lower()].split()
    else:
        parts = text.split()
    if len(parts) != 5:
        hint = " ".join(parts[1:6]) if len(parts) in (6, 7) else " ".join([*parts, *["*"] * (5 - len(parts))]) \
            if 0 < len(parts) < 5 else EXAMPLE  # fmt: skip
        why = "faultdrill schedules to the minute: drop the seconds (and year) field" if len(parts) > 5 else \
            "a field is missing"  # fmt: skip
        raise ConfigError(f"cron {text!r} has {len(parts)} field(s), not 5 ({why})", field=FIELD,
                          expected=" ".join(FIELDS), suggestion=hint)  # fmt: skip
    sets, exts = zip(*(_field(text, i, p) for i, p in enumerate(parts)), strict=True)
    dom_ext, dow_ext = exts[2], exts[4]
    canon = list(parts)
    if re.search(r"(?<![0-9#])7(?![0-9])", parts[4]) and not parts[4].startswith("*"):
        plain = compact(sets[4], 0, 6, "-") if sets[4] else ""
        items = [f"{d}#{n}" if k == "#" else f"{d}L" for k, d, n in dow_ext]
        canon[4] = ",".join(x for x in (plain, *items) if x)
        if canon[4] == "*":  # still restricted, so cron keeps ORing it with day-of-month
            canon[4] = "0-6"
    days = sets[2]
    if days and min(days) > 29 and not dom_ext and (parts[2].startswith("*") or parts[4].startswith("*")):
        longest = max((0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m] for m in sets[3]) \
            if sets[3] else 31  # fmt: skip
        if min(days) > longest:
            raise _err(text, 2, parts[2], f"no month among {parts[3]!r} has day {min(days)}", suggestion="L")
    return CronExpr(
        text=text, canonical=" ".join(canon), minutes=frozenset(sets[0]), hours=frozenset(sets[1]),
        days=frozenset(days), months=frozenset(sets[3]), weekdays=frozenset(sets[4]),
        last_day=any(k == "L" for k, _, _ in dom_ext), last_weekday_of_month=any(k == "LW" for k, _, _ in dom_ext),
        nth_weekdays=tuple((d, n) for k, d, n in dow_ext if k == "#"),
        last_weekdays=tuple(d for k, d, _ in dow_ext if k == "DL"),
        dom_star=parts[2].startswith("*"), dow_star=parts[4].startswith("*"),
    )  # fmt: skip


def or_days_hint(e: CronExpr) -> str:
    """The classic trap: ``1-7 * MON`` is "days 1–7 or any Monday", not "the first Monday"."""
    f = e.fields
    names = ", ".join(DAYS[d] for d in sorted(e.weekdays))
    text = f"cron ORs day-of-month {f[2]!r} and day-of-week {f[4]!r}: it runs on days {f[2]} and on every {names}"
    week = next((n for n in range(1, 6) if e.days == frozenset(range(7 * n - 6, min(7 * n, 31) + 1))), None)
    if week and len(e.weekdays) == 1 and not e.extended:
        day = DAYS[next(iter(e.weekdays))]
        text += f"; for the {('first', 'second', 'third', 'fourth', 'fifth')[week - 1]} {day} of the month write "
        text += f"'{f[0]} {f[1]} * {f[3]} {day}#{week}'"
    return text


def zone_info(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(tz, sorted(available_timezones()), n=1)
        raise ConfigError(f"unknown time zone {tz!r}", field="schedule.timezone", expected="an IANA name such as "
                          "UTC or Europe/Berlin", suggestion=close[0] if close else None) from None  # fmt: skip


def next_runs(cron: str, tz: str, count: int, now: datetime) -> list[datetime]:
    """The next ``count`` occurrences after ``now`` (naive means UTC), as aware datetimes in ``tz``."""
    from cronsim import CronSim

    expr, zone = parse_cron(cron), zone_info(tz)
    start = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    it = CronSim(expr.canonical, start)
    return [next(it) for _ in range(max(0, count))]


def is_due(cron: str, tz: str, now: datetime, grace_s: float = 60.0) -> bool:
    """Whether an occurrence lies in ``(now - grace_s, now]``: the guard for schedulers that fire on a superset."""
    from cronsim import CronSim

    expr, zone = parse_cron(cron), zone_info(tz)
    start = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    prev = next(CronSim(expr.canonical, start + timedelta(seconds=1), reverse=True))
    return (start - prev).total_seconds() < grace_s
