"""Cron schedules of game-day plans: next occurrences, the extensions, and mistakes said clearly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays.cron import is_due, next_runs, or_days_hint, parse_cron

NOW = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)  # a Friday


def _iso(cron: str, tz: str = "UTC", count: int = 3, now: datetime = NOW) -> list[str]:
    return [d.isoformat() for d in next_runs(cron, tz, count, now)]


@pytest.mark.parametrize(("cron", "expected"), [
    ("0 10 * * 1", ["2027-01-04T10:00:00+00:00", "2027-01-11T10:00:00+00:00", "2027-01-18T10:00:00+00:00"]),
    ("0 10 * * MON", ["2027-01-04T10:00:00+00:00", "2027-01-11T10:00:00+00:00", "2027-01-18T10:00:00+00:00"]),
    ("30 6 * * mon-fri", ["2027-01-04T06:30:00+00:00", "2027-01-05T06:30:00+00:00", "2027-01-06T06:30:00+00:00"]),
    ("*/20 13 * * *", ["2027-01-01T13:00:00+00:00", "2027-01-01T13:20:00+00:00", "2027-01-01T13:40:00+00:00"]),
    ("0 0 1 JAN,JUL *", ["2027-07-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00", "2028-07-01T00:00:00+00:00"]),
    ("0 10 * * SUN", ["2027-01-03T10:00:00+00:00", "2027-01-10T10:00:00+00:00", "2027-01-17T10:00:00+00:00"]),
    ("0 10 * * 7", ["2027-01-03T10:00:00+00:00", "2027-01-10T10:00:00+00:00", "2027-01-17T10:00:00+00:00"]),
    ("@weekly", ["2027-01-03T00:00:00+00:00", "2027-01-10T00:00:00+00:00", "2027-01-17T00:00:00+00:00"]),
    ("@monthly", ["2027-02-01T00:00:00+00:00", "2027-03-01T00:00:00+00:00", "2027-04-01T00:00:00+00:00"]),
    # cron ORs restricted day fields: the 13th, and every Friday
    ("0 9 13 * FRI", ["2027-01-08T09:00:00+00:00", "2027-01-13T09:00:00+00:00", "2027-01-15T09:00:00+00:00"]),
    # the extensions game days want
    ("0 14 * * TUE#1", ["2027-01-05T14:00:00+00:00", "2027-02-02T14:00:00+00:00", "2027-03-02T14:00:00+00:00"]),
    ("0 16 * * 5L", ["2027-01-29T16:00:00+00:00", "2027-02-26T16:00:00+00:00", "2027-03-26T16:00:00+00:00"]),
    ("0 8 L * *", ["2027-01-31T08:00:00+00:00", "2027-02-28T08:00:00+00:00", "2027-03-31T08:00:00+00:00"]),
    ("0 8 LW * *", ["2027-01-29T08:00:00+00:00", "2027-02-26T08:00:00+00:00", "2027-03-31T08:00:00+00:00"]),
])  # fmt: skip
def test_gd_sched_next_runs(cron: str, expected: list[str]) -> None:
    assert _iso(cron) == expected


def test_gd_sched_utc_ignores_dst_and_a_zone_follows_it() -> None:
    # Europe moves its clocks on 2027-03-28 (last Sunday of March): 10:00 UTC stays 10:00 UTC …
    utc = next_runs("0 10 * * *", "UTC", 3, datetime(2027, 3, 27, 11, 0, tzinfo=UTC))
    assert [d.astimezone(UTC).hour for d in utc] == [10, 10, 10]
    # … while 10:00 Berlin time is 09:00 UTC in winter and 08:00 UTC in summer.
    berlin = next_runs("0 10 * * *", "Europe/Berlin", 3, datetime(2027, 3, 26, 12, 0, tzinfo=UTC))
    assert [d.hour for d in berlin] == [10, 10, 10]
    assert [d.astimezone(UTC).hour for d in berlin] == [9, 8, 8]
    assert str(berlin[0].tzinfo) == "Europe/Berlin"
    # 02:30 does not exist that night: it runs once, at 03:00 (as Debian's cron does), not twice or never.
    night = next_runs("30 2 * * *", "Europe/Berlin", 3, datetime(2027, 3, 26, 12, 0, tzinfo=UTC))
    assert [d.strftime("%d %H:%M") for d in night] == ["27 02:30", "28 03:00", "29 02:30"]


def test_gd_sched_naive_now_is_utc_and_count_zero_is_empty() -> None:
    assert next_runs("0 10 * * 1", "UTC", 1, NOW.replace(tzinfo=None)) == next_runs("0 10 * * 1", "UTC", 1, NOW)
    assert next_runs("0 10 * * 1", "UTC", 0, NOW) == []


@pytest.mark.parametrize(("cron", "message", "suggestion"), [
    ("0 10 * *", "cron '0 10 * *' has 4 field(s), not 5 (a field is missing)", "0 10 * * *"),
    ("0 0 10 * * 1", "has 6 field(s), not 5 (faultdrill schedules to the minute", "0 10 * * 1"),
    ("61 * * * *", "minute field '61' of '61 * * * *': 61 is out of range (expected 0–59)", None),
    ("0 24 * * *", "hour field '24' of '0 24 * * *': 24 is out of range (expected 0–23)", "0"),
    ("0 10 * * MONDAY", "day-of-week field 'MONDAY' of '0 10 * * MONDAY': 'MONDAY' is not a number or a name "
                        "(expected 0–7 or SUN–SAT)", "MON"),
    ("0 10 * JUNE *", "month field 'JUNE'", "JUN"),
    ("0 10 ? * 1", "day-of-month field '?'", "*"),
    ("0 10 5-1 * *", "range '5-1' runs backwards", "1-5"),
    ("*/0 * * * *", "minute field '*/0' of '*/0 * * * *': step '0' must be a whole number of at least 1", None),
    ("0 10 * * MON#6", "the n in 'weekday#n' must be 1–5", None),
    ("0 10 15W * *", "'W' (nearest weekday) is not supported", None),
    ("0 L * * *", "hour field 'L' of '0 L * * *': 'L' is read only in day-of-month", None),
    ("0 10 5L * *", "'nL' (last weekday n) is read only in day-of-week", "L"),
    ("0 0 31 2 *", "no month among '2' has day 31", "L"),
    ("0 10 1,,2 * *", "empty list item", "1,2"),
    ("@reboot", "'@reboot' is not a schedule", "@weekly"),
    ("@wekly", "unknown cron macro '@wekly'", "@weekly"),
])  # fmt: skip
def test_gd_sched_invalid_cron_says_which_field_and_what_would_fit(cron: str, message: str,
                                                                   suggestion: str | None) -> None:  # fmt: skip
    with pytest.raises(ConfigError) as info:
        next_runs(cron, "UTC", 1, NOW)
    err = info.value
    assert err.field == "schedule.cron" and message in str(err), str(err)
    assert err.suggestion == suggestion
    if suggestion:
        assert str(err).endswith(f"(did you mean '{suggestion}'?)")


def test_gd_sched_unknown_time_zone_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"schedule.timezone: unknown time zone 'Europe/Berlinn'") as info:
        next_runs("0 10 * * 1", "Europe/Berlinn", 1, NOW)
    assert info.value.suggestion == "Europe/Berlin"


def test_gd_sched_canonical_form_is_what_every_scheduler_reads_alike() -> None:
    assert parse_cron("@daily").canonical == "0 0 * * *"
    assert parse_cron("0 10 * * 7").canonical == "0 10 * * 0"  # Kubernetes reads 0–6 only
    assert parse_cron("0 10 1 * 1-7").canonical == "0 10 1 * 0-6"  # still restricted: still ORed with the 1st
    assert parse_cron("0  10 * *   MON").canonical == "0 10 * * MON"
    e = parse_cron("0 10 * * MON#1,5L")
    assert e.extended and e.nth_weekdays == ((1, 1),) and e.last_weekdays == (5,)
    assert e.superset() == "0 10 * * 1,5"
    assert parse_cron("0 10 L * MON").superset() == "0 10 28-31 * 1"
    assert not parse_cron("0 10 * * 1").extended


def test_gd_sched_or_days_hint_catches_the_first_weekday_trap() -> None:
    hint = or_days_hint(parse_cron("0 14 1-7 * 2"))
    assert "runs on days 1-7 and on every TUE" in hint
    assert hint.endswith("for the first TUE of the month write '0 14 * * TUE#1'")
    assert next_runs("0 14 * * TUE#1", "UTC", 1, NOW) != next_runs("0 14 1-7 * 2", "UTC", 1, NOW)


def test_gd_sched_is_due_within_the_grace_only() -> None:
    at = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)  # the first Monday of 2027, 10:00
    assert is_due("0 10 * * MON#1", "UTC", at)
    assert is_due("0 10 * * MON#1", "UTC", at.replace(second=59))
    assert not is_due("0 10 * * MON#1", "UTC", at.replace(minute=1, second=1))
    assert is_due("0 10 * * MON#1", "UTC", at.replace(minute=14), grace_s=900)
    assert not is_due("0 10 * * MON#1", "UTC", at.replace(day=11))  # the second Monday
    assert not is_due("0 10 * * MON#1", "UTC", at.replace(minute=0, hour=9, second=59))
    assert is_due("0 11 * * MON#1", "Europe/Berlin", at)  # 11:00 in Berlin is 10:00 UTC in January
