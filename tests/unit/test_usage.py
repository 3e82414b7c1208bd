"""Time budgets and temporary overrides: a parent's "60 minutes of games a day" gives exactly 60
minutes, counted per device and reset at local midnight (also on the 23- and 25-hour days), and
"allow youtube.com for 45 minutes" ends by itself; both survive a restart, and a damaged state
file is set aside with a warning instead of stopping the server or vanishing.

Every instant is written as a local date and time (or in UTC by hand, as the independent truth for
the day boundaries); nothing reads the clock. Time zones come from the system's tzdata: a missing
zone skips the test that needs it, naming the package; under CI=true it fails instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from guardian_dns.usage import (
    FORMAT,
    MAX_OVERRIDE_MINUTES,
    USAGE_FILE,
    VERSION,
    Budgets,
    BudgetUse,
    Override,
    Overrides,
    UsageState,
    check_domain,
    day_bounds,
)
from tests.support.timezones import local, utc, zone

LONDON = "Europe/London"
KOLKATA = "Asia/Kolkata"  # +05:30 all year: no DST, and a half-hour offset
SANTIAGO = "America/Santiago"  # its spring-forward skips midnight itself
GAMES = "service:games"
VIDEO = "service:youtube"


@pytest.fixture
def london() -> ZoneInfo:
    return zone(LONDON)


def kids_games(tz: ZoneInfo, minutes: int = 60) -> Budgets:
    return Budgets(tz, {("kids", GAMES): minutes})


# --- counting minutes ------------------------------------------------------------------------


def test_many_queries_in_one_minute_count_as_one_minute(london: ZoneInfo) -> None:
    budgets = kids_games(london)
    start = local(london, "2025-01-15 16:00:00")
    for offset in (0.0, 0.5, 1.0, 17.25, 30.0, 59.999):
        assert budgets.record("tablet", "kids", GAMES, start + offset) is False
    assert budgets.used("tablet", GAMES, start + 59.999) == 1
    budgets.record("tablet", "kids", GAMES, start + 60.0)
    assert budgets.used("tablet", GAMES, start + 60.0) == 2


def test_minutes_are_the_clock_minutes_not_sixty_seconds_from_the_first_query(
    london: ZoneInfo,
) -> None:
    budgets = kids_games(london)
    budgets.record("tablet", "kids", GAMES, local(london, "2025-01-15 16:00:59"))
    budgets.record("tablet", "kids", GAMES, local(london, "2025-01-15 16:01:00"))
    assert budgets.used("tablet", GAMES, local(london, "2025-01-15 16:01:00")) == 2


@pytest.mark.parametrize(
    "spacing_minutes", [1, 7], ids=["sixty-minutes-in-a-row", "spread-over-the-afternoon"]
)
def test_a_60_minute_budget_grants_60_whole_minutes_and_refuses_the_61st(
    london: ZoneInfo, spacing_minutes: int
) -> None:
    """Spent means used >= limit, outside the last granted minute: the 60th minute is granted
    whole (every query until it ends is allowed), the first query of the 61st is refused."""
    budgets = kids_games(london, 60)
    start = local(london, "2025-01-15 12:00:00")
    minutes = [start + i * spacing_minutes * 60 for i in range(61)]
    for n, minute in enumerate(minutes[:60], start=1):
        assert budgets.record("tablet", "kids", GAMES, minute + 5) is False, f"minute {n}"
        assert budgets.used("tablet", GAMES, minute + 5) == n
    sixtieth = minutes[59]
    assert budgets.record("tablet", "kids", GAMES, sixtieth + 59) is False
    assert budgets.spent("tablet", "kids", GAMES, sixtieth + 59) is False
    sixty_first = minutes[60]
    assert budgets.spent("tablet", "kids", GAMES, sixty_first) is True  # before any query in it
    assert budgets.record("tablet", "kids", GAMES, sixty_first) is True
    assert budgets.record("tablet", "kids", GAMES, sixty_first + 30) is True
    late = local(london, "2025-01-15 23:59:59")
    assert budgets.record("tablet", "kids", GAMES, late) is True
    assert budgets.used("tablet", GAMES, late) == 60  # refused minutes are not counted


def test_a_zero_minute_budget_refuses_the_first_query(london: ZoneInfo) -> None:
    budgets = kids_games(london, 0)
    t = local(london, "2025-01-15 08:00:00")
    assert budgets.spent("tablet", "kids", GAMES, t) is True
    assert budgets.record("tablet", "kids", GAMES, t) is True
    assert budgets.used("tablet", GAMES, t) == 0


def test_a_group_without_a_budget_is_counted_but_never_refused(london: ZoneInfo) -> None:
    budgets = kids_games(london, 1)
    start = local(london, "2025-01-15 08:00:00")
    for i in range(120):
        assert budgets.record("dad-laptop", "adults", GAMES, start + 60 * i) is False
    assert budgets.used("dad-laptop", GAMES, start + 7200) == 120
    assert budgets.spent("dad-laptop", "adults", GAMES, start + 7200) is False
    assert budgets.limit("adults", GAMES) is None


def test_each_client_has_its_own_minutes(london: ZoneInfo) -> None:
    budgets = kids_games(london, 2)
    start = local(london, "2025-01-15 17:00:00")
    for i in range(3):
        budgets.record("alice-tablet", "kids", GAMES, start + 60 * i)
    assert budgets.spent("alice-tablet", "kids", GAMES, start + 180) is True
    assert budgets.spent("bob-phone", "kids", GAMES, start + 180) is False
    assert budgets.record("bob-phone", "kids", GAMES, start + 180) is False
    assert budgets.used("bob-phone", GAMES, start + 180) == 1


def test_each_budget_key_has_its_own_minutes(london: ZoneInfo) -> None:
    budgets = Budgets(london, {("kids", GAMES): 1, ("kids", VIDEO): 1})
    t = local(london, "2025-01-15 17:00:00")
    budgets.record("tablet", "kids", GAMES, t)
    assert budgets.record("tablet", "kids", GAMES, t + 60) is True
    assert budgets.record("tablet", "kids", VIDEO, t + 60) is False


@pytest.mark.parametrize(
    ("group", "limit"), [("kids", 30), ("teens", 90)], ids=["kids-30", "teens-90"]
)
def test_the_limit_is_the_groups(london: ZoneInfo, group: str, limit: int) -> None:
    budgets = Budgets(london, {("kids", GAMES): 30, ("teens", GAMES): 90})
    start = local(london, "2025-01-15 14:00:00")
    refused = [budgets.record("phone", group, GAMES, start + 60 * i) for i in range(100)]
    assert refused.index(True) == limit  # the first refused minute is the (limit+1)th
    assert budgets.used("phone", GAMES, start + 6000) == limit


def test_a_client_moved_to_a_stricter_group_keeps_its_minutes_and_is_refused(
    london: ZoneInfo,
) -> None:
    budgets = Budgets(london, {("kids", GAMES): 30, ("teens", GAMES): 90})
    start = local(london, "2025-01-15 14:00:00")
    for i in range(40):
        budgets.record("phone", "teens", GAMES, start + 60 * i)
    later = start + 60 * 40
    assert budgets.spent("phone", "kids", GAMES, later) is True
    assert budgets.record("phone", "kids", GAMES, later) is True
    assert budgets.used("phone", GAMES, later) == 40


def test_a_reload_that_raises_the_limit_lets_a_refused_client_go_on_in_the_same_minute(
    london: ZoneInfo,
) -> None:
    budgets = kids_games(london, 2)
    t = local(london, "2025-01-15 14:00:00")
    budgets.record("tablet", "kids", GAMES, t)
    budgets.record("tablet", "kids", GAMES, t + 60)
    assert budgets.record("tablet", "kids", GAMES, t + 120) is True
    budgets.set_limits({("kids", GAMES): 3})
    assert budgets.record("tablet", "kids", GAMES, t + 150) is False
    assert budgets.used("tablet", GAMES, t + 150) == 3
    budgets.set_limits({("kids", GAMES): 1})  # lowered: the rest of the day is refused
    assert budgets.record("tablet", "kids", GAMES, t + 180) is True


@pytest.mark.parametrize(
    "limits",
    [
        {("kids", GAMES): -1},
        {("kids", GAMES): True},
        {("kids", GAMES): 1.5},
        {("kids", ""): 10},
        {"kids": 10},
    ],
    ids=["negative", "bool", "fraction", "empty-key", "not-a-pair"],
)
def test_bad_limits_are_refused_with_a_message(london: ZoneInfo, limits: Any) -> None:
    with pytest.raises(ValueError, match="budget"):
        Budgets(london, limits)


def test_time_running_backwards_counts_nothing_twice(london: ZoneInfo) -> None:
    budgets = kids_games(london)
    t = local(london, "2025-01-15 14:10:00")
    budgets.record("tablet", "kids", GAMES, t)
    budgets.record("tablet", "kids", GAMES, t - 300)  # an NTP step back: maybe counted already
    assert budgets.used("tablet", GAMES, t) == 1
    budgets.record("tablet", "kids", GAMES, t + 60)
    assert budgets.used("tablet", GAMES, t + 60) == 2


def test_a_clock_behind_the_tallys_day_cannot_give_a_fresh_day(london: ZoneInfo) -> None:
    budgets = kids_games(london, 1)
    today = local(london, "2025-01-15 14:00:00")
    budgets.record("tablet", "kids", GAMES, today)
    budgets.record("tablet", "kids", GAMES, today + 60)
    yesterday = local(london, "2025-01-14 14:00:00")  # a board booted with a stale clock
    assert budgets.record("tablet", "kids", GAMES, yesterday) is True
    assert budgets.used("tablet", GAMES, today + 120) == 1


def test_counting_inside_a_known_minute_allocates_nothing(london: ZoneInfo) -> None:
    budgets = kids_games(london)
    start = local(london, "2025-01-15 14:00:00")
    times = [start + i * 0.001 for i in range(5000)]  # made before measuring
    record = budgets.record
    record("tablet", "kids", GAMES, start)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for t in times:
            record("tablet", "kids", GAMES, t)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before <= 0
    assert peak - before < 512  # nothing per call, not even briefly (a call frame at most)


# --- days ------------------------------------------------------------------------------------

# (zone, a local instant, its day's first instant and the next day's, in UTC, written by hand)
DAYS = [
    pytest.param(LONDON, "2025-01-15 12:00", "2025-01-15 00:00", "2025-01-16 00:00", 24, id="gmt"),
    pytest.param(LONDON, "2025-07-15 12:00", "2025-07-14 23:00", "2025-07-15 23:00", 24, id="bst"),
    pytest.param(
        LONDON, "2025-03-30 12:00", "2025-03-30 00:00", "2025-03-30 23:00", 23, id="spring-23h"
    ),
    pytest.param(
        LONDON, "2025-10-26 12:00", "2025-10-25 23:00", "2025-10-27 00:00", 25, id="autumn-25h"
    ),
    pytest.param(
        KOLKATA, "2025-03-30 12:00", "2025-03-29 18:30", "2025-03-30 18:30", 24, id="no-dst"
    ),
    pytest.param(
        SANTIAGO,
        "2025-09-07 12:00",
        "2025-09-07 04:00",
        "2025-09-08 03:00",
        23,
        id="midnight-skipped",
    ),
    pytest.param(
        SANTIAGO, "2025-04-05 12:00", "2025-04-05 03:00", "2025-04-06 04:00", 25, id="santiago-25h"
    ),
]


@pytest.mark.parametrize(("zone_name", "instant", "first", "next_first", "hours"), DAYS)
def test_the_day_runs_from_local_midnight_to_local_midnight(
    zone_name: str, instant: str, first: str, next_first: str, hours: int
) -> None:
    tz = zone(zone_name)
    start, end = utc(first), utc(next_first)
    assert end - start == hours * 3600
    budgets = kids_games(tz)
    for t in (start, local(tz, instant), end - 0.001):
        assert day_bounds(tz, t) == (start, end)
        assert budgets.day_end(t) == end
    assert budgets.day_end(end) > end


@pytest.mark.parametrize(("zone_name", "instant", "first", "next_first", "hours"), DAYS)
def test_a_spent_budget_is_fresh_again_at_local_midnight(
    zone_name: str, instant: str, first: str, next_first: str, hours: int
) -> None:
    tz = zone(zone_name)
    start, end = utc(first), utc(next_first)
    budgets = kids_games(tz, 2)
    for t in (start, start + 60, end - 60):
        budgets.record("tablet", "kids", GAMES, t)
    assert budgets.spent("tablet", "kids", GAMES, end - 1) is True
    assert budgets.used("tablet", GAMES, end) == 0
    assert budgets.spent("tablet", "kids", GAMES, end) is False
    assert budgets.record("tablet", "kids", GAMES, end) is False
    assert budgets.used("tablet", GAMES, end) == 1
    assert budgets.record("tablet", "kids", GAMES, end + 60) is False
    assert budgets.record("tablet", "kids", GAMES, end + 120) is True


def test_both_runs_of_the_repeated_hour_count(london: ZoneInfo) -> None:
    """At fall-back 01:30 happens twice; they are two different minutes of the child's time."""
    budgets = kids_games(london)
    first = local(london, "2025-10-26 01:30", fold=0)
    second = local(london, "2025-10-26 01:30", fold=1)
    assert second - first == 3600
    budgets.record("tablet", "kids", GAMES, first)
    budgets.record("tablet", "kids", GAMES, second)
    assert budgets.used("tablet", GAMES, second) == 2


@pytest.mark.parametrize(
    "zone_name", ["UTC", LONDON, KOLKATA, SANTIAGO, "America/New_York", "Australia/Lord_Howe"]
)
def test_every_day_of_three_years_starts_at_its_own_first_instant(zone_name: str) -> None:
    """The day holding each local noon begins at an instant that shows that date, one second
    earlier shows the date before, and it ends where the next day begins."""
    tz = zone(zone_name)
    day = date(2024, 1, 1)
    while day < date(2027, 1, 1):
        noon = local(tz, f"{day.isoformat()} 12:00")
        start, end = day_bounds(tz, noon)
        assert datetime.fromtimestamp(start, tz).date() == day
        assert datetime.fromtimestamp(start - 1, tz).date() == day - timedelta(days=1)
        assert day_bounds(tz, end)[0] == end
        assert 23 * 3600 <= end - start <= 25 * 3600
        day += timedelta(days=1)


def test_status_lists_todays_budgets_with_their_limits(london: ZoneInfo) -> None:
    budgets = Budgets(london, {("kids", GAMES): 60, ("teens", GAMES): 90, ("kids", VIDEO): 30})
    yesterday = local(london, "2025-01-14 18:00")
    today = local(london, "2025-01-15 18:00")
    budgets.record("old-phone", "kids", GAMES, yesterday)
    budgets.record("tablet", "kids", GAMES, today)
    budgets.record("tablet", "kids", GAMES, today + 60)
    budgets.record("tablet", "kids", VIDEO, today)
    budgets.record("laptop", "teens", GAMES, today)
    budgets.record("dad", "adults", GAMES, today)  # no limit: not on the status page
    assert budgets.status(today + 120) == [
        BudgetUse("tablet", "kids", GAMES, 2, 60),
        BudgetUse("tablet", "kids", VIDEO, 1, 30),
        BudgetUse("laptop", "teens", GAMES, 1, 90),
    ]
    assert budgets.prune(today) == 1  # yesterday's count is forgotten
    assert len(budgets) == 4


# --- overrides -------------------------------------------------------------------------------

T0 = utc("2025-11-24 18:00")


@pytest.mark.parametrize(
    ("target_kind", "target", "group", "client", "matches"),
    [
        ("group", "kids", "kids", "tablet", True),
        ("group", "kids", "teens", "tablet", False),
        ("client", "tablet", "kids", "tablet", True),
        ("client", "tablet", "kids", "phone", False),
        ("client", "kids", "teens", "phone", False),  # a client named like a group is a client
    ],
    ids=["group-hit", "group-miss", "client-hit", "client-miss", "kinds-apart"],
)
def test_an_override_matches_its_group_or_its_client(
    target_kind: Any, target: str, group: str, client: str, matches: bool
) -> None:
    overrides = Overrides()
    o = overrides.add("allow", target_kind, target, "youtube.com", T0, 45)
    assert overrides.matching(group, client, T0 + 60) == ((o,) if matches else ())


def test_an_allow_for_the_kids_lasts_45_minutes_and_then_ends_by_itself() -> None:
    overrides = Overrides()
    o = overrides.add("allow", "group", "kids", "youtube.com", T0, 45, who="mum")
    assert (o.kind, o.target_kind, o.target, o.domain, o.who) == (
        "allow",
        "group",
        "kids",
        "youtube.com",
        "mum",
    )
    assert (o.created, o.expires) == (T0, T0 + 45 * 60)
    assert overrides.matching("kids", "tablet", T0 + 45 * 60 - 0.001) == (o,)
    assert overrides.matching("kids", "tablet", T0 + 45 * 60) == ()
    assert overrides.active(T0 + 44 * 60) == [o]
    assert overrides.active(T0 + 45 * 60) == []
    assert len(overrides) == 0


def test_a_pause_for_one_device_covers_every_name_and_only_that_device() -> None:
    overrides = Overrides()
    pause = overrides.add("pause", "client", "aa:bb:cc:dd:ee:ff", None, T0, 15)
    assert pause.domain is None
    assert pause.covers("anything.example")
    assert overrides.matching("kids", "aa:bb:cc:dd:ee:ff", T0) == (pause,)
    assert overrides.matching("kids", "11:22:33:44:55:66", T0) == ()


def test_group_and_client_overrides_both_match_group_first() -> None:
    overrides = Overrides()
    mine = overrides.add("pause", "client", "tablet", None, T0, 15)
    ours = overrides.add("allow", "group", "kids", "khanacademy.org", T0 + 1, 60)
    assert overrides.matching("kids", "tablet", T0 + 2) == (ours, mine)


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("youtube.com", True),
        ("www.youtube.com", True),
        ("a.b.youtube.com", True),
        ("notyoutube.com", False),
        ("youtube.com.evil.example", False),
        ("com", False),
    ],
)
def test_an_allow_covers_its_domain_and_the_names_below_it(name: str, covered: bool) -> None:
    o = Overrides().add("allow", "group", "kids", "youtube.com", T0, 45)
    assert o.covers(name) is covered


def test_matching_is_a_pure_question_about_any_instant() -> None:
    """``explain --at`` tomorrow must not end tonight's overrides, nor see one before it began."""
    overrides = Overrides()
    o = overrides.add("allow", "group", "kids", "youtube.com", T0, 45)
    version = overrides.version
    assert overrides.matching("kids", "tablet", T0 + 86400) == ()
    assert overrides.matching("kids", "tablet", T0 - 1) == ()
    assert overrides.next_expiry(T0 + 86400) == math.inf
    assert overrides.matching("kids", "tablet", T0 + 60) == (o,)
    assert overrides.version == version and len(overrides) == 1


def test_next_expiry_is_the_first_end_after_the_instant() -> None:
    overrides = Overrides()
    assert overrides.next_expiry(T0) == math.inf
    overrides.add("allow", "group", "kids", "youtube.com", T0, 45)
    overrides.add("pause", "client", "tablet", None, T0, 15)
    assert overrides.next_expiry(T0) == T0 + 15 * 60
    assert overrides.next_expiry(T0 + 15 * 60) == T0 + 45 * 60  # an instant is not "after" itself
    assert overrides.next_expiry(T0 + 45 * 60) == math.inf


def test_the_version_changes_on_add_remove_and_expiry_only() -> None:
    overrides = Overrides()
    versions = [overrides.version]
    short = overrides.add("pause", "client", "tablet", None, T0, 15)
    versions.append(overrides.version)
    long = overrides.add("allow", "group", "kids", "youtube.com", T0, 45)
    versions.append(overrides.version)
    overrides.matching("kids", "tablet", T0)
    overrides.next_expiry(T0)
    overrides.active(T0 + 60)  # nothing ended yet
    assert overrides.version == versions[-1]
    assert overrides.remove("nosuchid") is False
    assert overrides.version == versions[-1]
    overrides.active(T0 + 15 * 60)  # the pause ends
    versions.append(overrides.version)
    assert overrides.get(short.id) is None
    assert overrides.remove(long.id) is True
    versions.append(overrides.version)
    assert overrides.remove(long.id) is False
    assert len(set(versions)) == len(versions)


def test_ids_are_short_unique_and_stay_with_the_override() -> None:
    overrides = Overrides()
    made = [overrides.add("pause", "client", f"device-{i}", None, T0, 15) for i in range(200)]
    ids = {o.id for o in made}
    assert len(ids) == 200
    assert all(len(i) <= 8 and i.isalnum() for i in ids)
    assert overrides.get(made[7].id) == made[7]


@pytest.mark.parametrize(
    "domain",
    ["youtube.com", "xn--bcher-kva.de", "a-b.co.uk", "1password.com", "x." + "a" * 63 + ".com"],
)
def test_good_domains_are_accepted(domain: str) -> None:
    assert check_domain(domain) == domain


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("YouTube.com", "write 'youtube.com'"),
        ("youtube.com.", "write 'youtube.com'"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("*.youtube.com", "no wildcard needed"),
        ("https://youtube.com/watch", "not a domain name"),
        ("-bad.com", "starts or ends with '-'"),
        ("bad-.com", "starts or ends with '-'"),
        ("a..com", "empty label"),
        ("exa_mple.com", "'_' is not allowed"),
        ("a b.com", "' ' is not allowed"),
        ("com", "single label"),
        ("10.0.0.1", "IP address"),
        ("x" * 64 + ".com", "label of 64 characters"),
        (("a" * 60 + ".") * 5 + "com", "the limit is 253"),
        ("", "empty domain"),
        (42, "got int"),
    ],
    ids=[
        "upper-case",
        "trailing-dot",
        "unicode",
        "wildcard",
        "url",
        "leading-hyphen",
        "trailing-hyphen",
        "empty-label",
        "underscore",
        "space",
        "top-level-domain",
        "ip-address",
        "long-label",
        "long-name",
        "empty",
        "not-text",
    ],
)
def test_bad_domains_are_refused_saying_what_to_write(domain: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace(".", r"\.")):
        check_domain(domain)
    with pytest.raises(ValueError):
        Overrides().add("allow", "group", "kids", domain, T0, 45)


@pytest.mark.parametrize(
    ("minutes", "ok"),
    [
        (0.5, True),
        (MAX_OVERRIDE_MINUTES, True),
        (0, False),
        (-5, False),
        (MAX_OVERRIDE_MINUTES + 1, False),
        (math.nan, False),
        (math.inf, False),
        (True, False),
        ("15", False),
    ],
    ids=["half-minute", "seven-days", "zero", "negative", "over-seven-days", "nan", "inf", "bool",
         "text"],
)  # fmt: skip
def test_an_override_lasts_more_than_zero_and_at_most_seven_days(minutes: Any, ok: bool) -> None:
    overrides = Overrides()
    if ok:
        o = overrides.add("pause", "group", "kids", None, T0, minutes)
        assert o.expires == T0 + minutes * 60
    else:
        with pytest.raises(ValueError, match="at most 10080 minutes"):
            overrides.add("pause", "group", "kids", None, T0, minutes)
        assert overrides.version == 0 and len(overrides) == 0


@pytest.mark.parametrize(
    ("kind", "target_kind", "target", "domain", "message"),
    [
        ("allow", "group", "kids", None, "needs a domain"),
        ("pause", "group", "kids", "youtube.com", "takes no domain"),
        ("snooze", "group", "kids", "youtube.com", "expected 'allow', 'block' or 'pause'"),
        ("allow", "device", "kids", "youtube.com", "expected 'group' or 'client'"),
        ("allow", "group", "", "youtube.com", "without spaces"),
        ("allow", "group", "the kids", "youtube.com", "without spaces"),
    ],
    ids=["allow-without-domain", "pause-with-domain", "bad-kind", "bad-target-kind",
         "empty-target", "target-with-space"],
)  # fmt: skip
def test_a_malformed_override_is_refused(
    kind: Any, target_kind: Any, target: str, domain: Any, message: str
) -> None:
    overrides = Overrides()
    with pytest.raises(ValueError, match=message):
        overrides.add(kind, target_kind, target, domain, T0, 15)
    assert len(overrides) == 0


def test_who_is_bounded_free_text() -> None:
    assert Overrides().add("pause", "group", "kids", None, T0, 5, who="Mum (app)").who
    with pytest.raises(ValueError, match="who"):
        Overrides().add("pause", "group", "kids", None, T0, 5, who="x" * 201)


# --- the file --------------------------------------------------------------------------------

NOW = utc("2025-11-24 18:30")  # a Monday evening in London (GMT)


def fresh(directory: Path, tz: ZoneInfo, limit: int = 2) -> UsageState:
    """New objects over the file in ``directory``, as a restarted server makes them."""
    return UsageState.in_directory(str(directory), kids_games(tz, limit), Overrides())


def busy_state(directory: Path, tz: ZoneInfo) -> tuple[UsageState, Override, Override]:
    """A state with a spent budget, a half-used one, an allow and a pause, saved at NOW."""
    state = fresh(directory, tz)
    for t in (NOW - 120, NOW - 60):
        state.budgets.record("alice-tablet", "kids", GAMES, t)
    state.budgets.record("bob-phone", "kids", GAMES, NOW)
    allow = state.overrides.add("allow", "group", "kids", "youtube.com", NOW, 45, who="mum")
    pause = state.overrides.add("pause", "client", "bob-phone", None, NOW, 15)
    assert state.save(NOW) is True
    return state, allow, pause


def test_the_file_is_versioned_json_with_unix_times(tmp_path: Path, london: ZoneInfo) -> None:
    _, allow, _ = busy_state(tmp_path, london)
    doc = json.loads((tmp_path / USAGE_FILE).read_text())
    assert (doc["format"], doc["version"], doc["saved"]) == (FORMAT, VERSION, NOW)
    rows = {(b["client"], b["key"]): b for b in doc["budgets"]}
    assert rows[("alice-tablet", GAMES)] == {
        "client": "alice-tablet",
        "key": GAMES,
        "group": "kids",
        "minute": NOW - 60,
        "granted": True,
        "used": 2,
    }
    assert allow.as_json() in doc["overrides"]
    assert sorted(os.listdir(tmp_path)) == [USAGE_FILE]  # no temporary file left behind


def test_a_restart_keeps_spent_budgets_and_active_overrides(
    tmp_path: Path, london: ZoneInfo
) -> None:
    before, allow, pause = busy_state(tmp_path, london)
    after = fresh(tmp_path, london)
    assert after.load(NOW + 30) is True
    assert after.budgets.status(NOW + 30) == before.budgets.status(NOW + 30)
    assert after.budgets.spent("alice-tablet", "kids", GAMES, NOW + 60) is True
    assert after.budgets.record("alice-tablet", "kids", GAMES, NOW + 60) is True
    assert after.budgets.record("bob-phone", "kids", GAMES, NOW + 30) is False  # same minute
    assert after.budgets.record("bob-phone", "kids", GAMES, NOW + 60) is False  # its 2nd minute
    assert after.budgets.record("bob-phone", "kids", GAMES, NOW + 120) is True
    assert after.overrides.active(NOW + 30) == [pause, allow]  # same ids, soonest end first
    assert after.overrides.matching("kids", "bob-phone", NOW + 30) == (allow, pause)


def test_a_restart_the_next_day_starts_budgets_afresh_and_drops_ended_overrides(
    tmp_path: Path, london: ZoneInfo
) -> None:
    busy_state(tmp_path, london)
    state = fresh(tmp_path, london)
    allow_still_on = NOW + 20 * 60
    assert state.load(allow_still_on) is True
    assert [o.kind for o in state.overrides.active(allow_still_on)] == ["allow"]
    tomorrow = local(london, "2025-11-25 07:00")
    state = fresh(tmp_path, london)
    assert state.load(tomorrow) is True
    assert len(state.budgets) == 0 and len(state.overrides) == 0
    assert state.budgets.spent("alice-tablet", "kids", GAMES, tomorrow) is False
    state.save(tomorrow)
    doc = json.loads((tmp_path / USAGE_FILE).read_text())
    assert (doc["budgets"], doc["overrides"]) == ([], [])


def test_a_missing_file_is_an_empty_state(
    tmp_path: Path, london: ZoneInfo, caplog: pytest.LogCaptureFixture
) -> None:
    state = fresh(tmp_path / "not-yet", london)
    with caplog.at_level(logging.WARNING, logger="guardian_dns.usage"):
        assert state.load(NOW) is False
    assert caplog.records == []
    assert state.budgets.status(NOW) == [] and state.overrides.active(NOW) == []
    assert state.save(NOW) is True  # creates the directory
    assert (tmp_path / "not-yet" / USAGE_FILE).exists()


_DELETE = object()


def _edit(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def _duplicate_id(good: bytes) -> bytes:
    doc = json.loads(good)
    doc["overrides"][1]["id"] = doc["overrides"][0]["id"]
    return json.dumps(doc).encode()


CORRUPT = [
    pytest.param(lambda good: good[: len(good) // 2], None, "not JSON", id="truncated"),
    pytest.param(lambda good: b"", None, "not JSON", id="empty"),
    pytest.param(lambda good: b"\xff\xfe garbage", None, "not JSON", id="binary"),
    pytest.param(lambda good: b"[]", None, "expected a JSON object", id="a-list"),
    pytest.param(("version",), 2, "format version 2", id="newer-version"),
    pytest.param(("version",), True, "format version True", id="version-true"),
    pytest.param(("format",), "something else", "format 'something else'", id="foreign"),
    pytest.param(("budgets",), {}, "budgets: expected a list", id="budgets-not-a-list"),
    pytest.param(("budgets", 0, "used"), "12", "budgets[0].used", id="used-as-text"),
    pytest.param(("budgets", 0, "used"), -1, "budgets[0].used", id="used-negative"),
    pytest.param(("budgets", 0, "minute"), "today", "budgets[0].minute", id="minute-as-text"),
    pytest.param(("budgets", 0, "granted"), 1, "budgets[0].granted", id="granted-as-number"),
    pytest.param(("budgets", 0, "client"), None, "budgets[0].client", id="client-null"),
    pytest.param(("budgets", 0, "extra"), 1, "unknown ['extra']", id="unknown-field"),
    pytest.param(("overrides", 0, "id"), _DELETE, "missing ['id']", id="override-without-id"),
    pytest.param(("overrides", 0, "expires"), "soon", "finite numbers", id="expires-as-text"),
    pytest.param(("overrides", 0, "domain"), "YouTube.com", "upper-case", id="bad-domain"),
    pytest.param(("overrides", 0, "kind"), "snooze", "override kind", id="bad-kind"),
    pytest.param(("overrides", 1, "id"), "SAME", "override id", id="bad-id"),
    pytest.param(_duplicate_id, None, "twice", id="duplicate-id"),
]


def _damaged(good: bytes, change: Any, value: Any) -> bytes:
    if callable(change):
        data: bytes = change(good)
        return data
    return json.dumps(_edit(json.loads(good), change, value)).encode()


@pytest.mark.parametrize(("change", "value", "reason"), CORRUPT)
def test_a_damaged_file_is_kept_as_bad_with_a_warning_and_the_state_starts_empty(
    tmp_path: Path,
    london: ZoneInfo,
    caplog: pytest.LogCaptureFixture,
    change: Any,
    value: Any,
    reason: str,
) -> None:
    busy_state(tmp_path, london)
    path = tmp_path / USAGE_FILE
    damaged = _damaged(path.read_bytes(), change, value)
    path.write_bytes(damaged)
    state = fresh(tmp_path, london)
    with caplog.at_level(logging.WARNING, logger="guardian_dns.usage"):
        assert state.load(NOW + 30) is False
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning and reason in warning
    assert "start empty" in warning
    assert (tmp_path / (USAGE_FILE + ".bad")).read_bytes() == damaged  # nothing silently lost
    assert not path.exists()
    assert len(state.budgets) == 0 and len(state.overrides) == 0
    assert state.budgets.spent("alice-tablet", "kids", GAMES, NOW + 60) is False
    assert state.save(NOW + 30) is True  # a good file again, the bad one kept beside it
    assert fresh(tmp_path, london).load(NOW + 30) is True
    assert (tmp_path / (USAGE_FILE + ".bad")).exists()


def test_a_save_with_nothing_changed_writes_nothing(tmp_path: Path, london: ZoneInfo) -> None:
    state, _, pause = busy_state(tmp_path, london)
    path = tmp_path / USAGE_FILE
    inode = path.stat().st_ino
    assert state.save(NOW + 5) is False
    state.budgets.record("bob-phone", "kids", GAMES, NOW + 10)  # same minute: nothing new
    assert state.prepare(NOW + 10) is None
    assert path.stat().st_ino == inode
    assert state.save(NOW + 10, force=True) is True  # on SIGTERM
    assert state.save(pause.expires) is True  # the pause ended: written without it
    assert [o["kind"] for o in json.loads(path.read_text())["overrides"]] == ["allow"]
    loaded = fresh(tmp_path, london)
    loaded.load(pause.expires)
    assert loaded.save(pause.expires + 1) is False  # just loaded: the file already holds it


def test_a_prepared_save_can_be_written_later_from_another_thread(
    tmp_path: Path, london: ZoneInfo
) -> None:
    state = fresh(tmp_path, london)
    state.overrides.add("pause", "group", "kids", None, NOW, 15)
    pending = state.prepare(NOW)
    assert pending is not None
    state.overrides.add("pause", "group", "teens", None, NOW, 15)  # after encoding: not in it
    thread = threading.Thread(target=pending.write)
    thread.start()
    thread.join()
    doc = json.loads((tmp_path / USAGE_FILE).read_text())
    assert [o["target"] for o in doc["overrides"]] == ["kids"]
    assert state.save(NOW) is True  # the teens pause is still to be written


def test_temporary_files_left_by_a_crash_are_removed_on_load(
    tmp_path: Path, london: ZoneInfo
) -> None:
    busy_state(tmp_path, london)
    (tmp_path / f".{USAGE_FILE}-abc123.tmp").write_bytes(b'{"format": "half')
    (tmp_path / "domains.table").write_bytes(b"not ours")
    assert fresh(tmp_path, london).load(NOW) is True
    assert sorted(os.listdir(tmp_path)) == ["domains.table", USAGE_FILE]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: root ignores directory permissions, so a read-only directory "
            "cannot make the write fail (run the tests as an ordinary user to check this)"
        )
    yield tmp_path
    tmp_path.chmod(stat.S_IRWXU)


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(
    read_only: Path, london: ZoneInfo
) -> None:
    state, _, _ = busy_state(read_only, london)
    path = read_only / USAGE_FILE
    old = path.read_bytes()
    state.overrides.add("pause", "group", "kids", None, NOW, 30)
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(PermissionError):
        state.save(NOW + 1)
    assert path.read_bytes() == old
    assert sorted(os.listdir(read_only)) == [USAGE_FILE]
    read_only.chmod(stat.S_IRWXU)
    assert state.save(NOW + 2) is True  # still pending: written once the directory is writable


def test_a_write_that_cannot_replace_the_file_removes_its_temporary_file(
    tmp_path: Path, london: ZoneInfo
) -> None:
    """Works as root too: the target is a directory, so the final rename fails."""
    (tmp_path / USAGE_FILE).mkdir()
    state = fresh(tmp_path, london)
    state.overrides.add("pause", "group", "kids", None, NOW, 30)
    with pytest.raises(OSError):
        state.save(NOW)
    assert sorted(os.listdir(tmp_path)) == [USAGE_FILE]
    assert os.listdir(tmp_path / USAGE_FILE) == []
