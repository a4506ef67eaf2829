"""What a team installs to run a game day on schedule: a crontab line, a systemd service + timer, a CronJob.

Where a scheduler cannot express the plan's expression (crontab and Kubernetes read none of the
cron extensions of ``gamedays.cron``; systemd's ``OnCalendar=`` has no "last weekday"), the emitted
schedule fires on a superset of the days and the game day is guarded by
``faultdrill gameday schedule PLAN --due``, which succeeds only when the plan's own schedule is due;
the text says so.

>>> oncalendar("0 10 * * MON#1", "UTC").lines
('Mon *-*-01..07 10:00:00 UTC',)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultdrill.gamedays.cron import CronExpr, compact, parse_cron, zone_info

__all__ = ["ENV", "OnCalendar", "crontab_line", "kubernetes_cronjob", "oncalendar", "plan_slug", "systemd_units"]

SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@dataclass(frozen=True)
class OnCalendar:
    """The ``OnCalendar=`` lines of a cron expression; ``exact`` False means a superset plus the --due guard."""

    lines: tuple[str, ...]
    exact: bool
    note: str = ""


def _sd(values: frozenset[int] | set[int], lo: int, hi: int) -> str:
    return compact(values, lo, hi, "..", "{:02d}")


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
    zone_info(tz)
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


def plan_slug(plan_path: Path) -> str:
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
    zone_info(tz)
    plan, wd, slug = _rel(plan_path, workdir), shlex.quote(str(Path(workdir).resolve())), plan_slug(plan_path)
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
    plan, wd, slug = _rel(plan_path, workdir), str(Path(workdir).resolve()), plan_slug(plan_path)
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
    zone_info(tz)
    slug, plan = plan_slug(plan_path), _rel(plan_path, Path.cwd())
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
