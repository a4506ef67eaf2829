"""Game-day scheduling: a plan's cron schedule, its next occurrences, and what a team installs.

A plan says when it runs::

    schedule: {cron: "0 10 * * MON#1", timezone: Europe/Berlin}     # 10:00 on the first Monday

The cron expression has the five classic fields (minute hour day-of-month month day-of-week),
with names (``JAN``, ``MON``), ranges, steps, lists and the macros ``@hourly`` … ``@yearly``;
day-of-month and day-of-week are ORed when both are restricted, as cron does. Three extensions
are read too, because game days are often "the first Monday" or "the last Friday" of a month:
``MON#1`` (n-th weekday), ``5L`` (last Friday), ``L`` / ``LW`` (last day / last weekday of the
month). Occurrences come from cronsim (DST handled as Debian's cron does).

The emitters return text to install: a crontab line, a systemd service + timer, a Kubernetes
CronJob. Where a scheduler cannot express the expression (crontab and Kubernetes read none of
the extensions; systemd's ``OnCalendar=`` has no "last weekday"), the emitted schedule fires on
a superset of the days and the game day is guarded by ``faultdrill gameday schedule PLAN --due``,
which succeeds only when the plan's own schedule is due; the text says so.

>>> [d.isoformat() for d in next_runs("0 10 * * MON#1", "UTC", 2, datetime(2027, 1, 1, tzinfo=UTC))]
['2027-01-04T10:00:00+00:00', '2027-02-01T10:00:00+00:00']
>>> oncalendar("0 10 * * MON#1", "UTC").lines
('Mon *-*-01..07 10:00:00 UTC',)
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from faultdrill.faults.errors import ConfigError

__all__ = [
    "CronExpr",
    "OnCalendar",
    "PlanSchedule",
    "ScheduleView",
    "crontab_line",
    "is_due",
    "kubernetes_cronjob",
    "load_plan_schedule",
    "next_runs",
    "oncalendar",
    "or_days_hint",
    "parse_cron",
    "schedule_command",
    "schedule_text",
    "schedule_view",
    "systemd_units",
]

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
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
            f[2] = _compact(days, 1, 31, "-")
        weekdays = set(self.weekdays) | {d for d, _ in self.nth_weekdays} | set(self.last_weekdays)
        if not self.dow_star:
            f[4] = _compact(weekdays, 0, 6, "-")
        return " ".join(f)


def _compact(values: set[int] | frozenset[int], lo: int, hi: int, dash: str, fmt: str = "{}") -> str:
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
        plain = _compact(sets[4], 0, 6, "-") if sets[4] else ""
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


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(tz, sorted(available_timezones()), n=1)
        raise ConfigError(f"unknown time zone {tz!r}", field="schedule.timezone", expected="an IANA name such as "
                          "UTC or Europe/Berlin", suggestion=close[0] if close else None) from None  # fmt: skip


def next_runs(cron: str, tz: str, count: int, now: datetime) -> list[datetime]:
    """The next ``count`` occurrences after ``now`` (naive means UTC), as aware datetimes in ``tz``."""
    from cronsim import CronSim

    expr, zone = parse_cron(cron), _zone(tz)
    start = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    it = CronSim(expr.canonical, start)
    return [next(it) for _ in range(max(0, count))]


def is_due(cron: str, tz: str, now: datetime, grace_s: float = 60.0) -> bool:
    """Whether an occurrence lies in ``(now - grace_s, now]``: the guard for schedulers that fire on a superset."""
    from cronsim import CronSim

    expr, zone = parse_cron(cron), _zone(tz)
    start = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    prev = next(CronSim(expr.canonical, start + timedelta(seconds=1), reverse=True))
    return (start - prev).total_seconds() < grace_s


# -- systemd -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnCalendar:
    """The ``OnCalendar=`` lines of a cron expression; ``exact`` False means a superset plus the --due guard."""

    lines: tuple[str, ...]
    exact: bool
    note: str = ""


def _sd(values: frozenset[int] | set[int], lo: int, hi: int) -> str:
    return _compact(values, lo, hi, "..", "{:02d}")


def _sd_days(weekdays: set[int] | frozenset[int]) -> str:
    if set(range(7)) <= weekdays:
        return ""
    order = [d for d in (1, 2, 3, 4, 5, 6, 0) if d in weekdays]  # systemd ranges run Mon..Sun
    out, run = [], list[int]()
    for d in order:
        if run and (d if d else 7) == (run[-1] if run[-1] else 7) + 1:
            run.append(d)
            continue
        if run:
            out.append(SYSTEMD_DAYS[run[0]] if len(run) == 1 else f"{SYSTEMD_DAYS[run[0]]}..{SYSTEMD_DAYS[run[-1]]}")
        run = [d]
    if run:
        out.append(SYSTEMD_DAYS[run[0]] if len(run) == 1 else f"{SYSTEMD_DAYS[run[0]]}..{SYSTEMD_DAYS[run[-1]]}")
    return ",".join(out) + " "


def _exact_lines(e: CronExpr, tz: str) -> list[str] | None:
    """OnCalendar lines with the same occurrences, or None when systemd cannot say it."""
    clock = f"{_sd(e.hours, 0, 23)}:{_sd(e.minutes, 0, 59)}:00 {tz}"
    month = _sd(e.months, 1, 12)
    all_days = frozenset(range(1, 32))

    def date(days: frozenset[int] | set[int]) -> str:
        return f"*-{month}-{_sd(days, 1, 31)}"

    def dom_lines(weekdays: frozenset[int] | set[int]) -> list[str] | None:
        if e.last_weekday_of_month:
            return None
        wd = _sd_days(weekdays)
        out = [f"{wd}{date(e.days)} {clock}"] if e.days else []
        return out + ([f"{wd}*-{month}~01 {clock}"] if e.last_day else [])

    def dow_lines(days: frozenset[int] | set[int]) -> list[str] | None:
        out = [f"{_sd_days(e.weekdays)}{date(days)} {clock}"] if e.weekdays else []
        for d, n in e.nth_weekdays:
            window = set(days) & set(range(7 * n - 6, 7 * n + 1))
            if window:
                out.append(f"{SYSTEMD_DAYS[d]} {date(window)} {clock}")
        for d in e.last_weekdays:
            if not all_days <= days:
                return None
            out.append(f"{SYSTEMD_DAYS[d]} *-{month}~07/1 {clock}")
        return out

    if e.dom_star and e.dow_star:
        return [f"{_sd_days(e.weekdays)}{date(e.days)} {clock}"]
    if e.dow_star:  # day-of-month restricted, ANDed with the weekdays
        return dom_lines(e.weekdays)
    if e.dom_star:
        return dow_lines(e.days)
    # Both restricted: cron ORs them, so one line per side (a timer fires when any line matches).
    a, b = dom_lines(frozenset(range(7))), dow_lines(all_days)
    return None if a is None or b is None else a + b


def oncalendar(cron: str, tz: str = "UTC") -> OnCalendar:
    """``OnCalendar=`` values for a cron expression in ``tz`` (several lines when cron ORs the day fields)."""
    e = parse_cron(cron)
    _zone(tz)
    lines = _exact_lines(e, tz)
    if lines is not None:
        note = "cron ORs day-of-month and day-of-week: one OnCalendar= line each" if not (e.dom_star or e.dow_star) \
            else ""  # fmt: skip
        return OnCalendar(tuple(dict.fromkeys(lines)), True, note)
    sup = _exact_lines(parse_cron(e.superset()), tz) or []
    why = "'LW' (last weekday of the month)" if e.last_weekday_of_month else "'nL' combined with a day-of-month list"
    return OnCalendar(tuple(dict.fromkeys(sup)), False,
                      f"cron {e.text!r} has no OnCalendar= equivalent ({why}): the timer fires on {e.superset()!r} "
                      "and ExecCondition= runs the game day only when the plan's schedule is due")  # fmt: skip


# -- what a team installs ----------------------------------------------------------------------
ENV = {"CI": "true", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}


def _slug(plan_path: Path) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", Path(plan_path).stem.lower()).strip("-") or "plan"


def _rel(plan_path: Path, workdir: Path) -> str:
    plan = Path(plan_path)
    try:
        return str(plan.resolve().relative_to(Path(workdir).resolve()))
    except ValueError:
        return str(plan.resolve()) if not plan.is_absolute() else str(plan)


def _guard(plan: str, grace_s: int) -> str:
    return f".venv/bin/faultdrill gameday schedule {shlex.quote(plan)} --due --grace {grace_s}"


def crontab_line(plan_path: Path, cron: str, workdir: Path, *, tz: str = "UTC") -> str:
    """A crontab entry (with its comments): ``cd WORKDIR && … flock -n LOCK faultdrill gameday run PLAN --plain``."""
    e = parse_cron(cron)
    _zone(tz)
    plan, wd, slug = _rel(plan_path, workdir), shlex.quote(str(Path(workdir).resolve())), _slug(plan_path)
    env = " ".join(f"{k}={v}" for k, v in ENV.items())
    run = (f"{env} flock -n .faultdrill/gameday-{slug}.lock .venv/bin/faultdrill gameday run {shlex.quote(plan)} "
           f"--plain >> .faultdrill/gameday-{slug}.log 2>&1")  # fmt: skip
    guard = f"{_guard(plan, 60)} && " if e.extended else ""
    command = f"cd {wd} && mkdir -p .faultdrill && {guard}{run}".replace("%", r"\%")  # cron turns % into newlines
    notes = [f"# faultdrill game day {plan}: cron {e.text!r} ({tz}); flock -n skips a run while the last one is "
             "still going"]  # fmt: skip
    if e.extended:
        notes.append(f"# crontab cannot read {e.text!r}: it fires on {e.superset()!r} and `--due` lets only the "
                     "plan's own occurrences through")  # fmt: skip
    if tz != "UTC":
        notes.append(f"# cron reads this in the machine's time zone; the plan says {tz} (cronie: put CRON_TZ={tz} "
                     "above this line)")  # fmt: skip
    return "\n".join([*notes, f"{e.superset()} {command}"]) + "\n"


def systemd_units(plan_path: Path, cron: str, workdir: Path, *, tz: str = "UTC") -> tuple[str, str]:
    """``(service, timer)`` unit files: ``faultdrill-gameday-SLUG.service`` and ``.timer``."""
    cal = oncalendar(cron, tz)
    plan, wd, slug = _rel(plan_path, workdir), str(Path(workdir).resolve()), _slug(plan_path)
    bin_ = f"{wd}/.venv/bin/faultdrill"
    condition = f"ExecCondition={bin_} gameday schedule {shlex.quote(plan)} --due --grace 60\n" if not cal.exact else ""
    service = (
        "[Unit]\n"
        f"Description=faultdrill game day {plan}\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={wd}\n"
        + "".join(f"Environment={k}={v}\n" for k, v in ENV.items())
        + f"ExecStartPre=/bin/mkdir -p {wd}/.faultdrill\n"
        + condition
        + f"ExecStart=/usr/bin/flock -n {wd}/.faultdrill/gameday-{slug}.lock {bin_} gameday run {shlex.quote(plan)} "
          "--plain\n"
        f"StandardOutput=append:{wd}/.faultdrill/gameday-{slug}.log\n"
        "StandardError=inherit\n"
        "TimeoutStartSec=4h\n"
    )  # fmt: skip
    comments = [f"# cron {parse_cron(cron).text!r} ({tz})"] + ([f"# {cal.note}"] if cal.note else [])
    timer = (
        "\n".join(comments) + "\n"
        "[Unit]\n"
        f"Description=Schedule of the faultdrill game day {plan}\n\n"
        "[Timer]\n"
        + "".join(f"OnCalendar={line}\n" for line in cal.lines)
        + "AccuracySec=1s\n"
        "# A game day missed while the machine was off is not run late: people plan around it.\n"
        "Persistent=false\n"
        f"Unit=faultdrill-gameday-{slug}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )  # fmt: skip
    return service, timer


def kubernetes_cronjob(plan_path: Path, cron: str, tz: str, image: str = "faultdrill:latest",
                       namespace: str = "faultdrill") -> str:  # fmt: skip
    """A ``batch/v1`` CronJob (concurrencyPolicy Forbid, timeZone, its ServiceAccount, restartPolicy Never)."""
    import yaml

    e = parse_cron(cron)
    _zone(tz)
    slug, plan = _slug(plan_path), _rel(plan_path, Path.cwd())
    run = ["faultdrill", "gameday", "run", plan, "--plain"]
    command = run if not e.extended else ["/bin/sh", "-c", f"faultdrill gameday schedule {shlex.quote(plan)} --due "
                                          f"--grace 900 || exit 0; exec {shlex.join(run)}"]  # fmt: skip
    labels = {"app.kubernetes.io/name": "faultdrill", "app.kubernetes.io/component": "gameday",
              "faultdrill/plan": slug[:63].rstrip("-")}  # fmt: skip
    doc: dict[str, Any] = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": f"faultdrill-gameday-{slug}"[:52].rstrip("-"), "namespace": namespace,
                     "labels": labels},
        "spec": {
            "schedule": e.superset(), "timeZone": tz, "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
            "jobTemplate": {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": 4 * 3600, "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": "faultdrill-gameday", "restartPolicy": "Never",
                    "containers": [{
                        "name": "gameday", "image": image, "imagePullPolicy": "IfNotPresent",
                        "workingDir": "/opt/faultdrill", "command": command,
                        "env": [{"name": k, "value": v} for k, v in {**ENV, "FAULTDRILL_HOME":
                                                                      "/var/lib/faultdrill"}.items()],
                        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/faultdrill"}],
                    }],
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            }}},
        },
    }  # fmt: skip
    head = [
        f"# faultdrill game day {plan}: cron {e.text!r} in {tz}",
        "# The image holds the project at /opt/faultdrill; the ServiceAccount faultdrill-gameday needs the RBAC",
        "# of the kubernetes platform. Swap the emptyDir for a PersistentVolumeClaim to keep the run history.",
    ]
    if e.extended:
        head.append(f"# Kubernetes cannot read {e.text!r}: the CronJob fires on {e.superset()!r} and `--due` lets only"
                    " the plan's own occurrences through.")  # fmt: skip
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120)


# -- the plan's schedule and the command's text ----------------------------------------------------
@dataclass(frozen=True)
class PlanSchedule:
    title: str
    cron: str
    timezone: str


def load_plan_schedule(plan_path: Path) -> PlanSchedule:
    """``title`` and ``schedule: {cron, timezone}`` (or ``schedule: "CRON"``) of a plan, checked."""
    import yaml

    from faultdrill.faults.inputlimits import read_text, yaml_error, yaml_loader

    where = str(plan_path)
    try:
        text = read_text(plan_path, what="game-day plan")  # at most MAX_TEXT_BYTES, UTF-8
    except OSError as exc:
        raise ConfigError(f"cannot read the plan: {exc.strerror}", file=where) from None
    loader = yaml_loader(text, where)  # bounded: depth and nodes (aliases expanded) refused while composing
    try:
        root = loader.get_single_node()
        doc = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, where, "not valid YAML", text) from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        raise ConfigError("a plan is a YAML mapping", file=where)
    line = next((k.start_mark.line + 1 for k, _ in getattr(root, "value", []) if getattr(k, "value", None)
                 == "schedule"), None)  # fmt: skip
    sched = doc.get("schedule")
    if sched is None:
        raise ConfigError("the plan has no schedule", file=where, field="schedule",
                          expected=f'e.g. schedule: {{cron: "{EXAMPLE}", timezone: UTC}}')  # fmt: skip
    if isinstance(sched, str):
        sched = {"cron": sched}
    if not isinstance(sched, dict) or not isinstance(sched.get("cron"), str):
        raise ConfigError("schedule needs a cron string", file=where, line=line, field="schedule.cron",
                          expected=f'e.g. schedule: {{cron: "{EXAMPLE}", timezone: UTC}}')  # fmt: skip
    unknown = sorted(set(sched) - {"cron", "timezone"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["cron", "timezone"], n=1)
        raise ConfigError(f"unknown key {unknown[0]!r}", file=where, line=line, field=f"schedule.{unknown[0]}",
                          suggestion=close[0] if close else None)  # fmt: skip
    tz = str(sched.get("timezone") or "UTC")
    try:
        parse_cron(sched["cron"])
        _zone(tz)
    except ConfigError as exc:
        exc.file, exc.line = where, line
        raise
    return PlanSchedule(str(doc.get("title") or Path(plan_path).stem), sched["cron"], tz)


@dataclass(frozen=True)
class ScheduleView:
    """What ``faultdrill gameday schedule PLAN`` shows, as data: its text and its ``--json`` are made from this."""

    title: str
    plan: str
    """The plan file as given."""
    cron: str
    """As written (macros included)."""
    timezone: str
    extended: bool
    """Uses ``L``, ``LW``, ``#`` or ``nL``: crontab and Kubernetes fire on ``fires_on`` and ``--due`` guards."""
    fires_on: str
    """The plain five-field expression the emitted schedulers use (the cron itself unless ``extended``)."""
    next_runs: tuple[datetime, ...]
    """The next occurrences, aware, in ``timezone``."""
    note: str | None
    """The day-of-month/day-of-week OR trap, when the expression falls into it."""
    crontab: str
    unit: str
    """Name of the systemd units (``UNIT.service``, ``UNIT.timer``)."""
    service: str
    timer: str
    cronjob: str

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "plan": self.plan, "cron": self.cron, "timezone": self.timezone,
                "extended": self.extended, "fires_on": self.fires_on,
                "next_runs": [r.isoformat() for r in self.next_runs],
                "next_runs_utc": [r.astimezone(UTC).isoformat().replace("+00:00", "Z") for r in self.next_runs],
                "note": self.note, "crontab": self.crontab,
                "systemd": {"service_file": f"/etc/systemd/system/{self.unit}.service", "service": self.service,
                            "timer_file": f"/etc/systemd/system/{self.unit}.timer", "timer": self.timer},
                "kubernetes_cronjob": self.cronjob}  # fmt: skip


def schedule_view(plan_cron: str, plan_name: str, plan_path: Path, count: int, *, tz: str = "UTC",
                  workdir: Path | None = None, now: datetime | None = None, image: str = "faultdrill:latest",
                  namespace: str = "faultdrill") -> ScheduleView:  # fmt: skip
    """The next ``count`` occurrences and every scheduler's text for a plan's schedule."""
    wd = workdir or Path.cwd()
    e = parse_cron(plan_cron)
    runs = next_runs(plan_cron, tz, count, now or datetime.now(UTC))
    service, timer = systemd_units(plan_path, plan_cron, wd, tz=tz)
    return ScheduleView(
        title=plan_name, plan=str(plan_path), cron=e.text, timezone=tz, extended=e.extended, fires_on=e.superset(),
        next_runs=tuple(runs), note=None if e.dom_star or e.dow_star else or_days_hint(e),
        crontab=crontab_line(plan_path, plan_cron, wd, tz=tz), unit=f"faultdrill-gameday-{_slug(plan_path)}",
        service=service, timer=timer, cronjob=kubernetes_cronjob(plan_path, plan_cron, tz, image=image,
                                                                 namespace=namespace),
    )  # fmt: skip


def schedule_command(plan_cron: str, plan_name: str, plan_path: Path, count: int, *, tz: str = "UTC",
                     workdir: Path | None = None, now: datetime | None = None, image: str = "faultdrill:latest",
                     namespace: str = "faultdrill") -> str:  # fmt: skip
    """The text of ``faultdrill gameday schedule PLAN``: next occurrences, crontab, systemd units, CronJob."""
    when = now or datetime.now(UTC)
    view = schedule_view(plan_cron, plan_name, plan_path, count, tz=tz, workdir=workdir, now=when, image=image,
                         namespace=namespace)  # fmt: skip
    return schedule_text(view, local=when.astimezone().tzinfo)


def schedule_text(view: ScheduleView, *, local: tzinfo | None = None) -> str:
    """``view`` as the command prints it; ``local`` (this machine's zone) adds a column where it differs."""
    tz = view.timezone
    out = [f"# {view.title} — {view.plan}", "",
           f"## Next {len(view.next_runs)} occurrence(s) of {view.cron!r} ({tz})", ""]  # fmt: skip
    for r in view.next_runs:
        cols = [r.astimezone(UTC).strftime("%a %Y-%m-%d %H:%M UTC")]
        if tz != "UTC":
            cols.append(r.strftime(f"%a %Y-%m-%d %H:%M {tz}"))
        here = r.astimezone(local)
        if here.utcoffset() not in (timedelta(0), r.utcoffset()):
            cols.append(here.strftime("%a %Y-%m-%d %H:%M %Z (this machine)"))
        out.append("  " + "   ".join(cols))
    if view.note:
        out += ["", f"note: {view.note}"]
    out += ["", "## crontab (crontab -e)", "", view.crontab.rstrip(),
            "", f"## systemd: /etc/systemd/system/{view.unit}.service", "", view.service.rstrip(),
            "", f"## systemd: /etc/systemd/system/{view.unit}.timer "
            f"(systemctl enable --now {view.unit}.timer)", "", view.timer.rstrip(),
            "", "## Kubernetes CronJob (kubectl apply -f -)", "", view.cronjob.rstrip(), ""]  # fmt: skip
    return "\n".join(out)
