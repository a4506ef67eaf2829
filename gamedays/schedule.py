"""A game-day plan's schedule, and what ``faultdrill gameday schedule`` prints about it.

A plan says when it runs::

    schedule: {cron: "0 10 * * MON#1", timezone: Europe/Berlin}     # 10:00 on the first Monday

The expression is read by ``gamedays.cron`` (five fields, macros, ``MON#1``, ``5L``, ``L``/``LW``);
what a team installs to run it — a crontab line, a systemd service + timer, a Kubernetes CronJob —
comes from ``gamedays.installers``. This module reads a plan's ``schedule`` (located errors), and
builds the view: the next occurrences in the plan's zone and the local one, and the install texts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays.cron import EXAMPLE, next_runs, or_days_hint, parse_cron, zone_info
from faultdrill.gamedays.installers import crontab_line, kubernetes_cronjob, plan_slug, systemd_units

__all__ = ["PlanSchedule", "ScheduleView", "load_plan_schedule", "schedule_command", "schedule_text", "schedule_view"]


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
        zone_info(tz)
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
        crontab=crontab_line(plan_path, plan_cron, wd, tz=tz), unit=f"faultdrill-gameday-{plan_slug(plan_path)}",
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
