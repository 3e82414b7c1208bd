"""Schedules: what a parent writes (``mon-fri 21:00-07:00``) is when the window is in force, across
midnight, week ends and daylight-saving changes, and ``next_change`` is the exact instant it flips.

Every instant is computed from a written date with zoneinfo (or written in UTC by hand, as the
independent truth for the DST cases); nothing reads the clock. The property tests compare with a
brute-force reference that works minute by minute on local wall-clock time.

The zones come from the system's time-zone database (Debian: tzdata). A missing zone skips the
tests that need it, naming the package; under CI=true it fails them instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardian_dns.schedule import (
    DAY_NAMES,
    WEEK_MINUTES,
    Schedule,
    Schedules,
    parse_spec,
)
from tests.support.timezones import local, utc, zone

LONDON = "Europe/London"
NEW_YORK = "America/New_York"
KOLKATA = "Asia/Kolkata"  # +05:30 all year: a half-hour offset and no DST
# Extra zones for the property test: a 30-minute DST shift, and changes at local midnight.
LORD_HOWE = "Australia/Lord_Howe"
SANTIAGO = "America/Santiago"
ALL_ZONES = ("UTC", LONDON, NEW_YORK, KOLKATA, LORD_HOWE, SANTIAGO)


def minute(day: str, hhmm: str) -> int:
    """Minutes since Monday 00:00 of ``day hh:mm``."""
    hours, minutes = hhmm.split(":")
    return DAY_NAMES.index(day) * 1440 + int(hours) * 60 + int(minutes)


def show(tz: ZoneInfo, t: float) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%a %Y-%m-%d %H:%M:%S %Z")


# --- parsing ---------------------------------------------------------------------------------


def _daily(start: str, end: str, days: Sequence[str] = DAY_NAMES) -> list[tuple[int, int]]:
    return [(minute(d, start), minute(d, end)) for d in days]


SAT_SUN_NIGHTS = [
    (0, minute("mon", "08:30")),
    (minute("sat", "22:00"), minute("sun", "08:30")),
    (minute("sun", "22:00"), WEEK_MINUTES),
]

GOOD_SPECS = [
    pytest.param("mon 00:00-24:00", [(0, 1440)], id="one-whole-day-with-24:00"),
    pytest.param(
        "mon-fri 21:00-07:00",
        [(minute(d, "21:00"), minute(d, "21:00") + 600) for d in DAY_NAMES[:5]],
        id="bedtime-crosses-midnight-into-the-next-day",
    ),
    pytest.param(
        "sat,sun 22:00-08:30",
        SAT_SUN_NIGHTS,
        id="sunday-night-wraps-to-monday-morning",
    ),
    pytest.param(
        "Sat, Sun 22:00 - 08:30",
        SAT_SUN_NIGHTS,
        id="case-and-spaces-do-not-matter",
    ),
    pytest.param("daily 12:00-13:00", _daily("12:00", "13:00"), id="daily"),
    pytest.param("weekdays 9:00-17:00", _daily("09:00", "17:00", DAY_NAMES[:5]), id="weekdays"),
    pytest.param(
        "weekends 00:00-24:00", [(minute("sat", "00:00"), WEEK_MINUTES)], id="weekends-merged"
    ),
    pytest.param("daily 00:00-24:00", [(0, WEEK_MINUTES)], id="always"),
    pytest.param("mon-sun 07:00-07:00", [(0, WEEK_MINUTES)], id="equal-ends-mean-24h"),
    pytest.param(
        "fri-mon 18:00-20:00",
        _daily("18:00", "20:00", ("mon", "fri", "sat", "sun")),
        id="day-range-wraps-round-the-week",
    ),
    pytest.param(
        "mon-fri 08:00-12:00, 13:00-15:00",
        sorted(_daily("08:00", "12:00", DAY_NAMES[:5]) + _daily("13:00", "15:00", DAY_NAMES[:5])),
        id="two-ranges",
    ),
    pytest.param(
        "tue 08:00-12:00 13:00-15:00",
        _daily("08:00", "12:00", ["tue"]) + _daily("13:00", "15:00", ["tue"]),
        id="ranges-separated-by-a-space",
    ),
    pytest.param(
        "mon 10:00-12:00, 11:00-13:00, 13:00-14:00",
        [(600, 840)],
        id="overlapping-and-touching-ranges-merge",
    ),
    pytest.param("mon,mon 01:00-02:00", [(60, 120)], id="repeated-day"),
    pytest.param("mon 12:00-24:00", [(720, 1440)], id="until-midnight"),
    pytest.param("mon 00:00-00:00", [(0, 1440)], id="midnight-to-midnight-is-the-whole-day"),
    pytest.param("sun 21:00-07:00", [(0, 420), (minute("sun", "21:00"), WEEK_MINUTES)], id="sun"),
]


@pytest.mark.parametrize(("spec", "expected"), GOOD_SPECS)
def test_spec_covers_the_minutes_a_parent_would_read(
    spec: str, expected: list[tuple[int, int]]
) -> None:
    assert list(parse_spec(spec)) == expected


BAD_SPECS = [
    pytest.param("", "empty window (expected days then times, such as 'mon-fri 21:00-07:00')"),
    pytest.param(" , ", "empty window", id="only-separators"),
    pytest.param(
        "mon-fry 21:00-07:00",
        "unknown day 'fry' in 'mon-fry 21:00-07:00' (did you mean 'fri'? expected mon, tue, wed, "
        "thu, fri, sat, sun, weekdays, weekends or daily)",
        id="typo-in-a-day",
    ),
    pytest.param(
        "monday 10:00-11:00",
        "unknown day 'monday' in 'monday 10:00-11:00' (did you mean 'mon'?",
        id="full-day-name",
    ),
    pytest.param(
        "21:00-07:00",
        "no days before '21:00-07:00' in '21:00-07:00' (expected days first, such as "
        "'mon-fri 21:00-07:00' or 'daily 21:00-07:00')",
        id="no-days",
    ),
    pytest.param(
        "mon-fri",
        "no time range after the days in 'mon-fri' (expected HH:MM-HH:MM, such as "
        "'mon-fri 21:00-07:00')",
        id="no-times",
    ),
    pytest.param(
        "mon 10:00", "time range '10:00' in 'mon 10:00' is not HH:MM-HH:MM", id="one-time"
    ),
    pytest.param(
        "mon 10:00-11:00-12:00",
        "time range '10:00-11:00-12:00' in 'mon 10:00-11:00-12:00' is not HH:MM-HH:MM",
        id="three-times",
    ),
    pytest.param(
        "mon 25:00-07:00",
        "'25:00' in 'mon 25:00-07:00' is not a time of day (expected HH:MM from 00:00 to 23:59, "
        "or 24:00 as an end)",
        id="hour-25",
    ),
    pytest.param("mon 10:60-11:00", "'10:60' in 'mon 10:60-11:00' is not a time", id="minute-60"),
    pytest.param("mon 20:00-24:30", "'24:30' in 'mon 20:00-24:30' is not a time", id="24:30"),
    pytest.param("mon 9am-5pm", "'9am' in 'mon 9am-5pm' is not a time of day", id="am-pm"),
    pytest.param("mon 10.00-11:00", "'10.00' in 'mon 10.00-11:00' is not a time", id="dot"),
    pytest.param(
        "mon 24:00-07:00",
        "'24:00' in 'mon 24:00-07:00' can only end a range (a range from midnight starts at 00:00)",
        id="24:00-as-a-start",
    ),
    pytest.param(
        "mon-mon 10:00-11:00",
        "day range 'mon-mon' in 'mon-mon 10:00-11:00' starts and ends on the same day "
        "(write 'mon' for one day, or 'daily')",
        id="same-day-range",
    ),
    pytest.param(
        "mon- 10:00-11:00",
        "day range 'mon-' in 'mon- 10:00-11:00' needs exactly one day on each side of '-'",
        id="half-a-day-range",
    ),
    pytest.param(
        "mon-wed-fri 10:00-11:00",
        "day range 'mon-wed-fri' in 'mon-wed-fri 10:00-11:00' needs exactly one day",
        id="chained-day-range",
    ),
    pytest.param(
        "weekdays-sun 10:00-11:00",
        "'weekdays' cannot be part of a day range ('weekdays-sun' in 'weekdays-sun 10:00-11:00'); "
        "use days such as 'mon-fri'",
        id="word-in-a-day-range",
    ),
    pytest.param(
        "mon 08:00-09:00, tue 10:00-11:00",
        "day 'tue' after the times in 'mon 08:00-09:00, tue 10:00-11:00' (a window is days then "
        "times; give other days a window of their own in a list)",
        id="days-after-times",
    ),
]


@pytest.mark.parametrize(("spec", "fragment"), BAD_SPECS)
def test_bad_spec_says_which_token_and_what_was_expected(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_spec(spec)
    assert fragment in str(caught.value)


def test_a_spec_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a window such as .*, got int 5"):
        parse_spec(5)  # type: ignore[arg-type]


def test_a_bad_spec_in_a_list_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown day 'sn' in 'sat,sn 10:00-11:00'"):
        Schedule.parse(["mon 10:00-11:00", "sat,sn 10:00-11:00"], ZoneInfo("UTC"))


# --- semantics on a zone without DST ---------------------------------------------------------
# The week of 2025-03-24 (Mon) to 2025-03-30 (Sun). In UTC no clock changes that weekend.


def test_friday_bedtime_runs_into_saturday_morning_and_sunday_night_is_free() -> None:
    tz = zone("UTC")
    bedtime = Schedule.parse("mon-fri 21:00-07:00", tz)
    assert not bedtime.active(local(tz, "2025-03-28 20:59:59"))
    assert bedtime.active(local(tz, "2025-03-28 21:00"))  # Friday: start is inclusive
    assert bedtime.active(local(tz, "2025-03-29 06:00"))  # Saturday morning, Friday's night
    assert bedtime.active(local(tz, "2025-03-29 06:59:59.5"))
    assert not bedtime.active(local(tz, "2025-03-29 07:00"))  # end is exclusive
    assert not bedtime.active(local(tz, "2025-03-29 22:00"))  # Saturday night: not mon-fri
    assert not bedtime.active(local(tz, "2025-03-31 06:00"))  # Monday 06:00 is Sunday's night
    assert bedtime.active(local(tz, "2025-03-31 21:30"))
    assert bedtime.next_change(local(tz, "2025-03-28 22:00")) == local(tz, "2025-03-29 07:00")
    # From Saturday morning the next flip is Monday evening, across the weekend and week end.
    assert bedtime.next_change(local(tz, "2025-03-29 07:00")) == local(tz, "2025-03-31 21:00")


def test_sunday_to_thursday_bedtime_covers_monday_morning_not_saturday() -> None:
    tz = zone("UTC")
    bedtime = Schedule.parse("sun-thu 21:00-07:00", tz)
    assert bedtime.active(local(tz, "2025-03-30 21:00"))  # Sunday
    assert bedtime.active(local(tz, "2025-03-31 06:00"))  # Monday, across the week boundary
    assert bedtime.active(local(tz, "2025-03-28 06:00"))  # Friday morning: Thursday's night
    assert not bedtime.active(local(tz, "2025-03-29 06:00"))  # Saturday: Friday is free
    assert not bedtime.active(local(tz, "2025-03-28 21:00"))
    assert bedtime.next_change(local(tz, "2025-03-30 22:00")) == local(tz, "2025-03-31 07:00")
    assert bedtime.next_change(local(tz, "2025-03-28 07:00")) == local(tz, "2025-03-30 21:00")


def test_daily_lunch_break_every_day() -> None:
    tz = zone("UTC")
    lunch = Schedule.parse("daily 12:00-13:00", tz)
    for day in range(24, 31):
        assert lunch.active(local(tz, f"2025-03-{day} 12:30"))
        assert not lunch.active(local(tz, f"2025-03-{day} 13:00"))
        assert lunch.next_change(local(tz, f"2025-03-{day} 13:00")) == local(
            tz, f"2025-03-{day + 1} 12:00"
        )


def test_weekends_all_day_flip_only_at_saturday_and_monday_midnight() -> None:
    tz = zone("UTC")
    weekend = Schedule.parse("weekends 00:00-24:00", tz)
    assert not weekend.active(local(tz, "2025-03-28 23:59:59"))
    assert weekend.active(local(tz, "2025-03-29 00:00"))
    assert weekend.active(local(tz, "2025-03-30 23:59:59"))
    assert not weekend.active(local(tz, "2025-03-31 00:00"))
    # No flip at Sunday 00:00 (two days merged) nor at the week's end.
    assert weekend.next_change(local(tz, "2025-03-29 10:00")) == local(tz, "2025-03-31 00:00")


def test_a_window_continuing_over_the_week_boundary_does_not_flip_there() -> None:
    tz = zone("UTC")
    long_weekend = Schedule.parse("sun-mon 00:00-24:00", tz)
    assert long_weekend.next_change(local(tz, "2025-03-30 10:00")) == local(tz, "2025-04-01 00:00")
    sunday_night = Schedule.parse("sun 21:00-07:00", tz)
    assert sunday_night.next_change(local(tz, "2025-03-30 22:00")) == local(tz, "2025-03-31 07:00")


def test_a_list_of_specs_is_active_when_any_is_and_touching_ones_do_not_flip() -> None:
    tz = zone("UTC")
    school = Schedule.parse(["mon-fri 08:00-15:00", "sat 09:00-12:00"], tz)
    assert school.active(local(tz, "2025-03-28 14:00"))
    assert school.active(local(tz, "2025-03-29 10:00"))
    assert not school.active(local(tz, "2025-03-30 10:00"))
    joined = Schedule.parse(["mon 08:00-10:00", "mon 10:00-12:00"], tz)
    assert joined.next_change(local(tz, "2025-03-24 08:30")) == local(tz, "2025-03-24 12:00")
    assert joined == Schedule.parse("mon 08:00-12:00", tz)


@pytest.mark.parametrize(
    "specs",
    [
        pytest.param((), id="no-windows"),
        pytest.param(("daily 00:00-24:00",), id="daily-all-day"),
        pytest.param(("mon-sun 21:00-21:00",), id="daily-24h-from-21:00"),
        pytest.param(("weekdays 00:00-24:00", "weekends 00:00-24:00"), id="union-is-everything"),
    ],
)
def test_a_schedule_that_never_flips_reports_no_next_change(specs: tuple[str, ...]) -> None:
    tz = zone(LONDON)  # DST changes must not create flips in a constant schedule
    schedule = Schedule(specs, tz)
    expected = bool(specs)
    assert schedule.constant is expected
    for text in ("2025-03-30 01:30", "2025-10-26 01:30", "2025-06-01 12:00"):
        assert schedule.active(local(tz, text)) is expected
        assert schedule.next_change(local(tz, text)) == math.inf


def test_schedules_covering_the_same_minutes_are_equal_and_hash_alike() -> None:
    tz = zone("UTC")
    daily = Schedule.parse("daily 12:00-13:00", tz)
    spelt_out = Schedule.parse("mon-sun 12:00-13:00", tz)
    assert daily == spelt_out and hash(daily) == hash(spelt_out)
    assert {daily: "lunch"}[spelt_out] == "lunch"
    assert daily != Schedule.parse("daily 12:00-13:00", zone(KOLKATA))
    assert daily != Schedule.parse("daily 12:00-13:30", tz)
    with pytest.raises(dataclasses.FrozenInstanceError):
        daily.tz = tz  # type: ignore[misc]


def test_answers_do_not_depend_on_the_order_of_questions() -> None:
    """The per-schedule week cache is invisible: far-apart instants, back and forth."""
    tz = zone(LONDON)
    bedtime = Schedule.parse("mon-fri 21:00-07:00", tz)
    fresh = Schedule.parse("mon-fri 21:00-07:00", tz)
    instants = [local(tz, "2025-03-28 22:00") + k * 86400 * 37.3 for k in range(-30, 30)]
    answers = [(bedtime.active(t), bedtime.next_change(t)) for t in instants[::-1]][::-1]
    for t, answer in zip(instants, answers, strict=True):
        assert (fresh.active(t), fresh.next_change(t)) == answer


# --- daylight-saving changes -----------------------------------------------------------------
# Europe/London 2025: 01:00 GMT -> 02:00 BST on 30 March (01:00Z); 02:00 BST -> 01:00 GMT on
# 26 October (01:00Z). America/New_York 2025: 02:00 EST -> 03:00 EDT on 9 March (07:00Z);
# 02:00 EDT -> 01:00 EST on 2 November (06:00Z). The expected instants are written in UTC by hand.

DST_WINDOWS = [
    # --- London, spring forward: 01:00-02:00 does not exist
    pytest.param(
        LONDON, "sat 21:00-07:00", "2025-03-29 21:00", "2025-03-30 06:00", (), (),
        id="london-spring-bedtime-still-ends-at-07:00-after-9-real-hours",
    ),
    pytest.param(
        LONDON, "sun 01:30-03:00", "2025-03-30 01:00", "2025-03-30 02:00", (), (),
        id="london-spring-start-in-the-gap-begins-at-the-change",
    ),
    pytest.param(
        LONDON, "sun 00:30-01:30", "2025-03-30 00:30", "2025-03-30 01:00", (), (),
        id="london-spring-end-in-the-gap-ends-at-the-change",
    ),
    pytest.param(
        LONDON, "sun 00:30-01:15, 01:45-03:00", "2025-03-30 00:30", "2025-03-30 02:00",
        ("2025-03-30 00:59:59", "2025-03-30 01:00"), (),
        id="london-spring-windows-meeting-across-the-gap-do-not-flip-at-it",
    ),
    # --- London, fall back: 01:00-02:00 happens twice (00:00Z-01:00Z BST, 01:00Z-02:00Z GMT)
    pytest.param(
        LONDON, "sat 21:00-07:00", "2025-10-25 20:00", "2025-10-26 07:00", (), (),
        id="london-autumn-bedtime-still-ends-at-07:00-after-11-real-hours",
    ),
    pytest.param(
        LONDON, "sun 01:30-04:00", "2025-10-26 00:30", "2025-10-26 04:00",
        ("2025-10-26 01:10", "2025-10-26 01:45"), (),
        id="london-autumn-start-in-the-repeat-starts-once-and-stays-on",
    ),
    pytest.param(
        LONDON, "sun 00:00-01:30", "2025-10-25 23:00", "2025-10-26 00:30",
        (), ("2025-10-26 01:15", "2025-10-26 01:45"),
        id="london-autumn-end-in-the-repeat-ends-once-and-stays-off",
    ),
    pytest.param(
        LONDON, "sun 01:15-01:45", "2025-10-26 00:15", "2025-10-26 00:45",
        (), ("2025-10-26 01:15", "2025-10-26 01:30"),
        id="london-autumn-window-inside-the-repeat-happens-once",
    ),
    pytest.param(
        LONDON, "sun 01:00-02:00", "2025-10-26 00:00", "2025-10-26 02:00",
        ("2025-10-26 01:00", "2025-10-26 01:59:59"), (),
        id="london-autumn-window-over-the-repeated-hour-lasts-two-real-hours",
    ),
    # --- New York, spring forward: 02:00-03:00 does not exist
    pytest.param(
        NEW_YORK, "sat 21:00-07:00", "2025-03-09 02:00", "2025-03-09 11:00", (), (),
        id="new-york-spring-bedtime-still-ends-at-07:00",
    ),
    pytest.param(
        NEW_YORK, "sun 02:30-04:00", "2025-03-09 07:00", "2025-03-09 08:00",
        ("2025-03-09 07:00",), ("2025-03-09 06:59:59",),
        id="new-york-spring-02:30-start-begins-at-03:00-EDT",
    ),
    pytest.param(
        NEW_YORK, "sun 01:00-02:30", "2025-03-09 06:00", "2025-03-09 07:00", (), (),
        id="new-york-spring-end-in-the-gap-ends-at-the-change",
    ),
    # --- New York, fall back: 01:00-02:00 twice (05:00Z-06:00Z EDT, 06:00Z-07:00Z EST)
    pytest.param(
        NEW_YORK, "sat 21:00-07:00", "2025-11-02 01:00", "2025-11-02 12:00", (), (),
        id="new-york-autumn-bedtime-still-ends-at-07:00",
    ),
    pytest.param(
        NEW_YORK, "sun 01:30-03:00", "2025-11-02 05:30", "2025-11-02 08:00",
        ("2025-11-02 06:10", "2025-11-02 06:45"), (),
        id="new-york-autumn-start-in-the-repeat-starts-once-and-stays-on",
    ),
    pytest.param(
        NEW_YORK, "sun 00:00-01:30", "2025-11-02 04:00", "2025-11-02 05:30",
        (), ("2025-11-02 06:15", "2025-11-02 06:45"),
        id="new-york-autumn-end-in-the-repeat-ends-once-and-stays-off",
    ),
    pytest.param(
        NEW_YORK, "sun 01:15-01:45", "2025-11-02 05:15", "2025-11-02 05:45",
        (), ("2025-11-02 06:20",),
        id="new-york-autumn-window-inside-the-repeat-happens-once",
    ),
    # --- no DST: the same weekends change nothing
    pytest.param(
        "UTC", "mon-fri 21:00-07:00", "2025-03-28 21:00", "2025-03-29 07:00", (), (),
        id="utc-friday-night",
    ),
    pytest.param(
        KOLKATA, "mon-fri 21:00-07:00", "2025-03-28 15:30", "2025-03-29 01:30", (), (),
        id="kolkata-friday-night-half-hour-offset",
    ),
    pytest.param(
        KOLKATA, "sun-thu 21:00-07:00", "2025-03-30 15:30", "2025-03-31 01:30", (), (),
        id="kolkata-sunday-night-into-monday",
    ),
    pytest.param(
        KOLKATA, "sun 22:00-02:00", "2025-10-26 16:30", "2025-10-26 20:30", (), (),
        id="kolkata-week-boundary-on-a-european-dst-night",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("zone_name", "spec", "on", "off", "also_active", "also_inactive"), DST_WINDOWS
)
def test_window_occurrence_is_one_exact_stretch_of_real_time(
    zone_name: str,
    spec: str,
    on: str,
    off: str,
    also_active: tuple[str, ...],
    also_inactive: tuple[str, ...],
) -> None:
    """Given in UTC: the instants the window starts and ends, and instants inside or outside."""
    tz = zone(zone_name)
    schedule = Schedule.parse(spec, tz)
    start, end = utc(on), utc(off)
    assert not schedule.active(start - 1), show(tz, start - 1)
    assert schedule.active(start), show(tz, start)
    assert schedule.active(end - 0.001), show(tz, end - 0.001)
    assert not schedule.active(end), show(tz, end)
    assert schedule.next_change(start - 3600) == start, show(tz, schedule.next_change(start - 3600))
    assert schedule.next_change(start - 0.5) == start
    assert schedule.next_change(start) == end, show(tz, schedule.next_change(start))
    assert schedule.next_change(end - 1) == end
    assert schedule.next_change(end) > end + 3600
    for text in also_active:
        assert schedule.active(utc(text)), show(tz, utc(text))
        assert schedule.next_change(utc(text)) == end
    for text in also_inactive:
        assert not schedule.active(utc(text)), show(tz, utc(text))


@pytest.mark.parametrize(
    ("zone_name", "saturday", "real_hours"),
    [
        pytest.param(LONDON, "2025-03-29", 9, id="london-spring"),
        pytest.param(LONDON, "2025-10-25", 11, id="london-autumn"),
        pytest.param(NEW_YORK, "2025-03-08", 9, id="new-york-spring"),
        pytest.param(NEW_YORK, "2025-11-01", 11, id="new-york-autumn"),
    ],
)
def test_bedtime_on_the_night_clocks_change_ends_at_seven_local(
    zone_name: str, saturday: str, real_hours: int
) -> None:
    tz = zone(zone_name)
    bedtime = Schedule.parse("daily 21:00-07:00", tz)
    start = local(tz, f"{saturday} 21:00")
    end = bedtime.next_change(start)
    assert datetime.fromtimestamp(end, tz).strftime("%a %H:%M") == "Sun 07:00"
    assert end - start == real_hours * 3600
    # And the next evening is 21:00 local again, in the new offset.
    following = bedtime.next_change(end)
    assert datetime.fromtimestamp(following, tz).strftime("%a %H:%M") == "Sun 21:00"


@pytest.mark.parametrize(
    ("zone_name", "spec", "day", "next_on"),
    [
        pytest.param(
            LONDON, "sun 01:00-02:00", "2025-03-30", "2025-04-06 00:00", id="london-the-whole-gap"
        ),
        pytest.param(
            LONDON, "sun 01:15-01:45", "2025-03-30", "2025-04-06 00:15", id="london-inside-gap"
        ),
        pytest.param(
            NEW_YORK, "sun 02:00-03:00", "2025-03-09", "2025-03-16 06:00", id="new-york-gap"
        ),
        pytest.param(
            NEW_YORK, "sun 02:10-02:50", "2025-03-09", "2025-03-16 06:10", id="new-york-inside-gap"
        ),
    ],
)
def test_window_wholly_inside_the_spring_gap_does_not_happen_that_day(
    zone_name: str, spec: str, day: str, next_on: str
) -> None:
    """Those wall-clock minutes never happen, so neither does the window; next week it does."""
    tz = zone(zone_name)
    schedule = Schedule.parse(spec, tz)
    saturday_noon = local(tz, f"{day} 12:00") - 86400
    for half_hour in range(24):  # the first 12 real hours of that Sunday
        assert not schedule.active(local(tz, f"{day} 00:00") + half_hour * 1800)
    assert schedule.next_change(saturday_noon) == utc(next_on)
    assert schedule.active(utc(next_on))


# --- properties against a brute-force reference ----------------------------------------------


def reference_minutes(windows: Sequence[tuple[frozenset[int], Sequence[tuple[int, int]]]]) -> bytes:
    """Which of the week's 10080 minutes are on, filled in one by one from the structure."""
    on = bytearray(WEEK_MINUTES)
    for days, ranges in windows:
        for day in days:
            for start, end in ranges:
                length = end - start if end > start else end + 1440 - start
                for k in range(length):
                    on[(day * 1440 + start + k) % WEEK_MINUTES] = 1
    return bytes(on)


def reference_active(minutes: bytes, tz: ZoneInfo, t: float) -> bool:
    """The documented semantics, stated on wall-clock time instead of instants.

    The wall clock shown at ``t`` decides. A spring gap needs nothing more: the clock jumps past
    it, so a boundary inside it is behind the clock at the first instant after it. During the
    second pass through a repeated hour every boundary in that hour has already taken effect
    (first occurrence), so the state is the one the clock had at the hour's last minute.
    """
    shown = datetime.fromtimestamp(t, tz)
    wall = shown.replace(tzinfo=None, second=0, microsecond=0, fold=0)
    if shown.fold:

        def repeated(w: datetime) -> bool:
            first = w.replace(tzinfo=tz).timestamp()
            return first < w.replace(tzinfo=tz, fold=1).timestamp()

        while repeated(wall + timedelta(minutes=1)):
            wall += timedelta(minutes=1)
    return bool(minutes[wall.weekday() * 1440 + wall.hour * 60 + wall.minute])


@cache
def transitions(name: str) -> tuple[float, ...]:
    """The instants the zone's offset changes in 2024-2026, found by scanning (to the minute)."""
    tz = ZoneInfo(name)
    found: list[float] = []
    t, stop = utc("2024-01-01 00:00"), utc("2027-01-01 00:00")
    offset = datetime.fromtimestamp(t, tz).utcoffset()
    while t < stop:
        step = datetime.fromtimestamp(t + 3600, tz).utcoffset()
        if step != offset:
            m = t
            while datetime.fromtimestamp(m, tz).utcoffset() == offset:
                m += 60
            found.append(m)
            offset = step
        t += 3600
    return tuple(found)


@pytest.fixture(scope="module")
def zones() -> dict[str, ZoneInfo]:
    return {name: zone(name) for name in ALL_ZONES}


# Boundaries near the changes (00:00-03:00 and 21:00/07:00) are drawn often; any minute is possible.
_TIMES = st.one_of(
    st.integers(0, 1439),
    st.sampled_from([0, 30, 59, 60, 75, 90, 105, 119, 120, 150, 179, 180, 420, 1260, 1410]),
)
_WINDOW = st.tuples(
    st.frozensets(st.integers(0, 6), min_size=1),
    st.lists(
        st.tuples(_TIMES, st.one_of(_TIMES, st.just(1440))).filter(lambda r: r[0] != 1440),
        min_size=1,
        max_size=2,
    ),
)
_WINDOWS = st.lists(_WINDOW, min_size=1, max_size=3)


def render(windows: Sequence[tuple[frozenset[int], Sequence[tuple[int, int]]]]) -> list[str]:
    return [
        ",".join(DAY_NAMES[d] for d in sorted(days))
        + " "
        + ", ".join(f"{s // 60:02}:{s % 60:02}-{e // 60:02}:{e % 60:02}" for s, e in ranges)
        for days, ranges in windows
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    windows=_WINDOWS,
    zone_name=st.sampled_from(ALL_ZONES),
    near=st.integers(0, 99),
    offset=st.one_of(st.integers(-2 * 86400, 2 * 86400), st.integers(-3, 3).map(lambda k: k * 60)),
    fraction=st.sampled_from([0.0, 0.0, 0.25, 0.999]),
)
def test_next_change_is_the_first_flip_of_the_reference(
    zones: dict[str, ZoneInfo],
    windows: list[tuple[frozenset[int], list[tuple[int, int]]]],
    zone_name: str,
    near: int,
    offset: int,
    fraction: float,
) -> None:
    """``active`` agrees with the reference at t, and ``next_change(t)`` is the first instant the
    reference flips: different at it, the same a moment before and at every minute in between.
    Instants cluster around the zone's DST changes (or a few ordinary dates without DST)."""
    tz = zones[zone_name]
    anchors = transitions(zone_name) or (utc("2025-03-30 01:00"), utc("2025-10-26 01:00"))
    t = anchors[near % len(anchors)] + offset + fraction
    schedule = Schedule.parse(render(windows), tz)
    minutes = reference_minutes(windows)
    state = reference_active(minutes, tz, t)
    assert schedule.active(t) is state, show(tz, t)
    change = schedule.next_change(t)
    if all(minutes) or not any(minutes):
        assert change == math.inf
        return
    assert t < change < t + 3 * 7 * 86400
    assert change == int(change)  # boundaries are whole seconds, so a TTL can hit them exactly
    assert reference_active(minutes, tz, change) is not state, show(tz, change)
    assert schedule.active(change) is not state
    assert reference_active(minutes, tz, max(t, change - 0.001)) is state
    # The reference can only flip on a whole UTC minute (every offset here is whole minutes).
    m = math.floor(t / 60) * 60 + 60
    while m < change:
        assert reference_active(minutes, tz, m) is state, show(tz, m)
        m += 60


@settings(max_examples=200, deadline=None)
@given(
    windows=_WINDOWS,
    zone_name=st.sampled_from(ALL_ZONES),
    near=st.integers(0, 99),
    steps=st.lists(st.integers(-90, 90), min_size=1, max_size=40),
)
def test_active_agrees_with_the_reference_minute_by_minute_near_dst_changes(
    zones: dict[str, ZoneInfo],
    windows: list[tuple[frozenset[int], list[tuple[int, int]]]],
    zone_name: str,
    near: int,
    steps: list[int],
) -> None:
    tz = zones[zone_name]
    anchors = transitions(zone_name) or (utc("2025-03-30 01:00"), utc("2025-10-26 01:00"))
    schedule = Schedule.parse(render(windows), tz)
    minutes = reference_minutes(windows)
    t = anchors[near % len(anchors)]
    for step in steps:
        t += step * 60
        assert schedule.active(t) is reference_active(minutes, tz, t), show(tz, t)


def test_the_zones_have_the_dst_changes_the_tests_rely_on(zones: dict[str, ZoneInfo]) -> None:
    """Guards the property tests: clustering around changes is only useful if there are some."""
    assert utc("2025-03-30 01:00") in transitions(LONDON)
    assert utc("2025-11-02 06:00") in transitions(NEW_YORK)
    assert len(transitions(LORD_HOWE)) >= 4 and len(transitions(SANTIAGO)) >= 4
    assert transitions("UTC") == () and transitions(KOLKATA) == ()


# --- the registry ----------------------------------------------------------------------------


def test_named_schedules_are_parsed_once_and_looked_up_by_name() -> None:
    tz = zone(LONDON)
    schedules = Schedules.from_mapping(
        {
            "bedtime": "mon-fri 21:00-07:00",
            "school": ["mon-fri 08:00-12:00", "mon-fri 13:00-15:00"],
        },
        tz,
    )
    assert schedules.names == ("bedtime", "school") and len(schedules) == 2
    assert "bedtime" in schedules and "nap" not in schedules
    assert schedules.get("bedtime") == Schedule.parse("mon-fri 21:00-07:00", tz)
    assert schedules.get("school").specs == ("mon-fri 08:00-12:00", "mon-fri 13:00-15:00")
    assert schedules.get("school").tz is tz
    assert not schedules.get("school").active(local(tz, "2025-03-28 12:30"))


def test_unknown_schedule_names_it_a_close_match_and_the_known_ones() -> None:
    schedules = Schedules.from_mapping(
        {"bedtime": "daily 21:00-07:00", "school": "weekdays 08:00-15:00"}, ZoneInfo("UTC")
    )
    with pytest.raises(ValueError) as caught:
        schedules.get("bedtme")
    assert str(caught.value) == (
        "unknown schedule 'bedtme' (did you mean 'bedtime'? known: bedtime, school)"
    )
    with pytest.raises(ValueError, match=r"^unknown schedule 'xyz' \(known: bedtime, school\)$"):
        schedules.get("xyz")
    with pytest.raises(ValueError, match=r"unknown schedule 'bedtime' \(no schedules are defined"):
        Schedules(ZoneInfo("UTC")).get("bedtime")


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        pytest.param(
            {"bedtime": "mon-fry 21:00-07:00"},
            "schedule 'bedtime': unknown day 'fry' in 'mon-fry 21:00-07:00' (did you mean 'fri'?",
            id="bad-spec",
        ),
        pytest.param(
            {"school": ["mon-fri 08:00-12:00", "mon-fri 13:00"]},
            "schedule 'school': time range '13:00' in 'mon-fri 13:00' is not HH:MM-HH:MM",
            id="bad-spec-in-a-list",
        ),
        pytest.param(
            {"bedtime": []},
            "schedule 'bedtime' has no windows (an empty list would never apply; give at least "
            "one, such as 'mon-fri 21:00-07:00')",
            id="empty-list",
        ),
        pytest.param(
            {"bedtime": ["daily 21:00-07:00", 5]},
            "schedule 'bedtime', window 2: expected a window such as 'mon-fri 21:00-07:00', "
            "got int 5",
            id="not-text-in-a-list",
        ),
        pytest.param(
            {"bedtime": None},
            "schedule 'bedtime': expected a window such as 'mon-fri 21:00-07:00' or a list of "
            "them, got nothing",
            id="no-value",
        ),
        pytest.param(
            {"Bed Time": "daily 21:00-07:00"},
            "invalid schedule name 'Bed Time' (use up to 32 lowercase letters, digits, '-' and "
            "'_')",
            id="bad-name",
        ),
    ],
)
def test_bad_schedules_section_names_the_schedule(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Schedules.from_mapping(mapping, ZoneInfo("UTC"))
    assert message in str(caught.value)


def test_a_name_defined_twice_is_refused() -> None:
    tz = ZoneInfo("UTC")
    one = Schedule.parse("daily 21:00-07:00", tz)
    with pytest.raises(ValueError, match="schedule 'bedtime' is defined twice"):
        Schedules(tz, (("bedtime", one), ("bedtime", one)))
