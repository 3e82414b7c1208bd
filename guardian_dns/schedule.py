"""Schedules: whether a named weekly window (bedtime, school hours) is in force at an instant.

What it decides: for one Unix time, whether a schedule is active, and the exact instant that answer
next flips. The second is what lets the cache expire a decision at a window's edge, so a blocked
answer cannot outlive bedtime (nor an allowed one leak into it) by more than the block TTL.
What it reads: window specs such as ``mon-fri 21:00-07:00`` (the ``schedules:`` section), once,
and the time-zone rules the caller's :class:`zoneinfo.ZoneInfo` already holds.
What it must never do: read the clock (the caller passes the instant, so ``explain --at`` and the
server ask the very same question and tests need no fake clock), do I/O per query, or scan time
minute by minute. The wall-clock minutes are merged once, at construction; a week is mapped to
instants once and kept, so ``active`` is a range check and one bisect, and ``next_change`` looks at
the week it is in and the weeks after it until something flips (one or two in practice).

The spec language, all of it::

    mon-fri 21:00-07:00              days, then one or more time ranges
    sat,sun 22:00-08:30              days: mon tue wed thu fri sat sun, lists and ranges of them,
    fri-mon 18:00-20:00              ranges wrap around the week (fri, sat, sun, mon),
    daily 12:00-13:00                and the words daily, weekdays (mon-fri), weekends (sat, sun)
    mon-fri 08:00-12:00, 13:00-15:00 several ranges, separated by commas or spaces
    mon 00:00-24:00                  24:00 is allowed as an end only

Meaning, chosen so a parent's reading of the text is the right one:

* A range whose end is before or equal to its start crosses midnight and belongs to the day it
  starts on: ``mon-fri 21:00-07:00`` covers Friday night until Saturday 07:00, and does not cover
  Monday 06:00 (Sunday night is not in mon-fri). ``X-X`` is therefore 24 hours from X.
* A schedule may be a list of specs; it is active when any of them is (their union).
* Windows are local wall-clock time in the schedule's zone; ranges are half-open, so a window
  ``21:00-07:00`` is active at 21:00:00 and no longer at 07:00:00.

Daylight-saving changes. Each window occurrence is one contiguous stretch of real time, from its
start boundary to its end boundary, each boundary mapped from wall-clock time to an instant thus:

* A boundary that does not exist (the spring-forward gap: 01:00-02:00 in Europe/London, 02:00-03:00
  in America/New_York) takes effect at the first instant after the gap, i.e. at the change itself.
  That is exactly what a wall clock shows: at 02:30 New York time on that Sunday, a window that
  "starts at 02:30" has started. A window lying wholly inside the gap does not happen that day.
* A boundary that exists twice (the autumn fall-back hour) takes effect at its first occurrence,
  and the window does not re-open or re-close when the clock shows that time again. So
  ``sun 00:00-01:30`` ends at the first 01:30 and stays ended through the repeated hour, and
  ``sun 01:30-04:00`` starts at the first 01:30 and stays on through the repeat: a child's window
  flips once per boundary, never twice in one night.
* Boundaries outside the gap and the repeated hour mean what the clock says: ``21:00-07:00`` on
  the night the clocks change still ends at 07:00 local, after 10 or 11 real hours.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

DAY_NAMES: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_WORDS: Final[dict[str, tuple[int, ...]]] = {
    "daily": (0, 1, 2, 3, 4, 5, 6),
    "weekdays": (0, 1, 2, 3, 4),
    "weekends": (5, 6),
}
DAY_MINUTES: Final = 24 * 60
WEEK_MINUTES: Final = 7 * DAY_MINUTES

# A week-minute interval [start, end): minutes since Monday 00:00 local, 0 <= start < end <= 10080.
Interval = tuple[int, int]

# Schedule names are referenced from groups and may become metric labels, like categories.
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_TIME_RE: Final = re.compile(r"([0-9]{1,2}):([0-9]{2})\Z")
_EXAMPLE: Final = "such as 'mon-fri 21:00-07:00'"
_EXPECTED_DAYS: Final = "expected mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or daily"
# Weeks a schedule keeps mapped to instants: the one a query falls in and the next, plus slack for
# `explain --at` jumping about. Cleared when full; rebuilding a week costs tens of microseconds.
_WEEK_CACHE: Final = 16
# next_change gives up after this many weeks without a flip. Only a DST gap can swallow a window,
# gaps are at most a day long and a few a year, so a real schedule flips within two weeks; the
# bound only stops a broken tzinfo from looping forever.
_MAX_WEEKS: Final = 60


# --- parsing ---------------------------------------------------------------------------------


def parse_spec(spec: str) -> tuple[Interval, ...]:
    """The week-minute intervals one spec covers, sorted and merged; ValueError says what is wrong.

    Pure text to numbers, no time zone: the same spec means the same wall-clock minutes anywhere.
    Messages quote the offending token and the whole spec, because the config loader adds only
    ``file:line: field:`` and the administrator must see which of several windows is meant.
    """
    if not isinstance(spec, str):
        raise ValueError(f"expected a window {_EXAMPLE}, got {_kind(spec)}")
    # "sat, sun", "mon - fri" and "08:00 - 12:00" are "sat,sun", "mon-fri" and "08:00-12:00"; a
    # dash between a day and a time is left alone, so "mon- 10:00" is reported, not guessed at.
    joined = re.sub(r"(?<=[A-Za-z])\s*-\s*(?=[A-Za-z])|(?<=[0-9])\s*-\s*(?=[0-9])", "-", spec)
    items = [item for item in re.split(r"[\s,]+", joined) if item]
    if not items:
        raise ValueError(f"empty window (expected days then times, {_EXAMPLE})")
    if items[0][:1].isdigit():
        raise ValueError(
            f"no days before {items[0]!r} in {spec!r} "
            f"(expected days first, such as 'mon-fri {items[0]}' or 'daily {items[0]}')"
        )
    days: list[int] = []
    ranges: list[tuple[int, int]] = []
    for item in items:
        if item[:1].isdigit():
            ranges.append(_parse_range(item, spec))
        elif ranges:
            raise ValueError(
                f"day {item!r} after the times in {spec!r} (a window is days then times; "
                "give other days a window of their own in a list)"
            )
        else:
            days.extend(_parse_days(item, spec))
    if not ranges:
        raise ValueError(
            f"no time range after the days in {spec!r} (expected HH:MM-HH:MM, {_EXAMPLE})"
        )
    intervals: list[Interval] = []
    for day in days:
        for start, end in ranges:
            begin = day * DAY_MINUTES + start
            # End <= start crosses midnight: the range belongs to the day it starts on.
            finish = day * DAY_MINUTES + (end if end > start else end + DAY_MINUTES)
            if finish > WEEK_MINUTES:  # Sunday night into Monday: wrap to the week's start
                intervals.append((begin, WEEK_MINUTES))
                intervals.append((0, finish - WEEK_MINUTES))
            else:
                intervals.append((begin, finish))
    return _merge(intervals)


def _parse_days(item: str, spec: str) -> tuple[int, ...]:
    """One comma-separated day item: a day, a day word, or a range ``a-b`` that may wrap."""
    word = item.lower()
    if word in DAY_WORDS:
        return DAY_WORDS[word]
    if "-" not in word:
        return (_day(item, spec),)
    parts = item.split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"day range {item!r} in {spec!r} needs exactly one day on each side of '-' "
            "(such as 'mon-fri')"
        )
    for part in parts:
        if part.lower() in DAY_WORDS:
            raise ValueError(
                f"{part!r} cannot be part of a day range ({item!r} in {spec!r}); "
                "use days such as 'mon-fri'"
            )
    first, last = _day(parts[0], spec), _day(parts[1], spec)
    if first == last:
        raise ValueError(
            f"day range {item!r} in {spec!r} starts and ends on the same day "
            f"(write {parts[0]!r} for one day, or 'daily')"
        )
    return tuple((first + i) % 7 for i in range((last - first) % 7 + 1))


def _day(token: str, spec: str) -> int:
    try:
        return DAY_NAMES.index(token.lower())
    except ValueError:
        pass
    close = difflib.get_close_matches(token.lower(), [*DAY_NAMES, *DAY_WORDS], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown day {token!r} in {spec!r} ({hint}{_EXPECTED_DAYS})")


def _parse_range(item: str, spec: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` as minutes of the day; the end may be 1440 (24:00), the start may not."""
    parts = item.split("-")
    if len(parts) != 2:
        raise ValueError(f"time range {item!r} in {spec!r} is not HH:MM-HH:MM")
    start, end = (_minute(part, spec) for part in parts)
    if start == DAY_MINUTES:
        raise ValueError(
            f"'24:00' in {spec!r} can only end a range (a range from midnight starts at 00:00)"
        )
    return start, end


def _minute(token: str, spec: str) -> int:
    match = _TIME_RE.match(token)
    if match:
        hours, minutes = int(match.group(1)), int(match.group(2))
        if (hours < 24 and minutes < 60) or (hours == 24 and minutes == 0):
            return hours * 60 + minutes
    raise ValueError(
        f"{token!r} in {spec!r} is not a time of day (expected HH:MM from 00:00 to 23:59, "
        "or 24:00 as an end)"
    )


def _merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, overlapping and touching intervals joined: each boundary left is a real flip
    within the week (the week's own start and end excepted, see ``Schedule.next_change``)."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


# --- evaluation ------------------------------------------------------------------------------


class _Week(NamedTuple):
    """One local week (Monday 00:00 to the next Monday 00:00) mapped to real time.

    ``flips`` holds the instants the schedule turns on and off, alternately and strictly
    increasing, starting with an "on": ``bisect_right(flips, t)`` is odd exactly when active.
    An "on" equal to ``lo`` or an "off" equal to ``hi`` may just continue the neighbouring week.
    """

    monday: int  # proleptic Gregorian ordinal of the Monday
    lo: float  # the instant this week starts
    hi: float  # the instant the next week starts
    flips: tuple[float, ...]


# Matches no instant, so the first call maps a real week.
_NO_WEEK: Final = _Week(0, math.inf, -math.inf, ())


@dataclass(frozen=True)
class Schedule:
    """A union of weekly wall-clock windows in one time zone; immutable and hashable.

    Built from specs (see the module docstring), validated here so a Schedule that exists is
    usable. Two schedules are equal when they cover the same minutes in the same zone, however
    spelt (``daily`` equals ``mon-sun``), so the policy code may share decisions between them.
    """

    specs: tuple[str, ...] = field(compare=False)
    tz: ZoneInfo
    intervals: tuple[Interval, ...] = field(init=False)
    # Weeks already mapped to instants, and the last one used: the hot path's whole state. Kept
    # out of equality and the hash (two equal schedules may have mapped different weeks). Each
    # update is one dict store or one list-slot store, so a second thread sees old or new, both
    # correct.
    _weeks: dict[int, _Week] = field(init=False, repr=False, compare=False, hash=False)
    _last: list[_Week] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        specs = (self.specs,) if isinstance(self.specs, str) else tuple(self.specs)
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "intervals", _merge(i for s in specs for i in parse_spec(s)))
        object.__setattr__(self, "_weeks", {})
        object.__setattr__(self, "_last", [_NO_WEEK])

    @classmethod
    def parse(cls, specs: str | Sequence[str], tz: ZoneInfo) -> Schedule:
        """One spec or a list of them (their union), in ``tz``; ValueError names the bad token."""
        return cls((specs,) if isinstance(specs, str) else tuple(specs), tz)

    @property
    def constant(self) -> bool | None:
        """True if always active, False if never, None if it ever flips (then it always will)."""
        if not self.intervals:
            return False
        if self.intervals == ((0, WEEK_MINUTES),):
            return True
        return None

    def active(self, t: float) -> bool:
        """Whether the schedule is in force at Unix time ``t``.

        Called once per cache miss: a range check and one bisect once ``t``'s week is mapped.
        """
        week = self._last[0]
        if not week.lo <= t < week.hi:
            week = self._week_at(t)
        return bisect.bisect_right(week.flips, t) % 2 == 1

    def next_change(self, t: float) -> float:
        """The first instant after ``t`` at which ``active`` differs from ``active(t)``.

        ``active`` is constant on ``[t, next_change(t))`` and different at the returned instant,
        which is an exact boundary (whole seconds), so a cached decision may live until it and not
        a moment longer. ``math.inf`` when the schedule never flips (empty or always on).
        """
        if self.constant is not None:
            return math.inf
        week = self._last[0]
        if not week.lo <= t < week.hi:
            week = self._week_at(t)
        index = bisect.bisect_right(week.flips, t)
        state = index % 2
        for _ in range(_MAX_WEEKS):
            # Inside the week every listed instant after t flips; one at the week's end may not,
            # because the next week can start with the same state (sun 21:00-07:00 into Monday).
            if index < len(week.flips) and week.flips[index] < week.hi:
                return week.flips[index]
            week = self._week(week.monday + 7)
            index = bisect.bisect_right(week.flips, week.lo)
            if index % 2 != state:
                return week.lo
        raise RuntimeError(
            f"schedule {', '.join(self.specs)!r} in {self.tz.key} did not flip in {_MAX_WEEKS} "
            "weeks; the time-zone data is broken"
        )

    def _week_at(self, t: float) -> _Week:
        """The mapped week containing ``t``, remembered for the next call."""
        local = datetime.fromtimestamp(t, self.tz)
        week = self._week(local.toordinal() - local.weekday())
        # The displayed date and the week boundaries in real time can disagree by the repeated
        # hour when a zone falls back across Monday 00:00; the instants are the truth.
        while t < week.lo:
            week = self._week(week.monday - 7)
        while t >= week.hi:
            week = self._week(week.monday + 7)
        self._last[0] = week
        return week

    def _week(self, monday: int) -> _Week:
        week = self._weeks.get(monday)
        if week is None:
            if len(self._weeks) >= _WEEK_CACHE:
                self._weeks.clear()
            week = self._weeks[monday] = _map_week(self.intervals, self.tz, monday)
        return week


def _map_week(intervals: tuple[Interval, ...], tz: ZoneInfo, monday: int) -> _Week:
    """Map one local week's windows to instants, with the DST rules of the module docstring.

    Wall-clock to instant is monotone (never backwards) under those rules, so merged wall-clock
    intervals stay ordered; only a DST gap can make one empty or make two touch, and both cases
    are folded here so that every listed instant is a real flip.
    """
    start = datetime.fromordinal(monday)

    def at(minute: int) -> float:
        return _instant(start + timedelta(minutes=minute), tz)

    flips: list[float] = []
    for begin, end in intervals:
        on, off = at(begin), at(end)
        if on >= off:  # wholly inside a spring-forward gap: those minutes never happen this week
            continue
        if flips and on <= flips[-1]:  # touching across a gap: one stretch, no flip between
            flips[-1] = off
        else:
            flips += (on, off)
    return _Week(monday, at(0), at(WEEK_MINUTES), tuple(flips))


def _instant(wall: datetime, tz: ZoneInfo) -> float:
    """The instant a naive local wall-clock time takes effect (module docstring, DST).

    PEP 495 gives two readings: ``fold=0`` is the first occurrence of a repeated time and, in a
    gap, uses the offset from before the change (a later instant than ``fold=1``).
    """
    first = wall.replace(tzinfo=tz).timestamp()
    second = wall.replace(tzinfo=tz, fold=1).timestamp()
    if first <= second:  # exists once, or twice and we take the first
        return first
    # In the gap the change itself lies in (second, first]: find it to the second. zoneinfo has
    # no public list of transitions; this runs only when a week with a change is first mapped.
    lo, hi = int(second), int(first)
    before = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return float(hi)


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedules:
    """The named schedules of one configuration, all in its one time zone.

    Groups refer to schedules by name, so a bedtime is written once and reused; a name that is
    not here is an error at load time, never a schedule that silently never applies.
    """

    tz: ZoneInfo
    schedules: tuple[tuple[str, Schedule], ...] = ()
    _by_name: dict[str, Schedule] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Schedule] = {}
        for name, schedule in self.schedules:
            if name in by_name:
                raise ValueError(f"schedule {name!r} is defined twice")
            by_name[name] = schedule
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], tz: ZoneInfo) -> Schedules:
        """Parse a ``schedules:`` section: ``{name: spec or [specs]}``.

        Raises ValueError for the first bad entry, naming it. A config loader that wants every
        problem at once with its line calls :meth:`Schedule.parse` per entry and builds
        ``Schedules(tz, pairs)`` itself; this is the same checks in one call.
        """
        pairs: list[tuple[str, Schedule]] = []
        for name, value in mapping.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(
                    f"invalid schedule name {name!r} (use up to 32 lowercase letters, digits, "
                    "'-' and '_')"
                )
            if isinstance(value, str):
                specs: tuple[str, ...] = (value,)
            elif isinstance(value, list | tuple):
                if not value:
                    raise ValueError(
                        f"schedule {name!r} has no windows (an empty list would never apply; "
                        f"give at least one, {_EXAMPLE})"
                    )
                for i, item in enumerate(value):
                    if not isinstance(item, str):
                        raise ValueError(
                            f"schedule {name!r}, window {i + 1}: expected a window {_EXAMPLE}, "
                            f"got {_kind(item)}"
                        )
                specs = tuple(value)
            else:
                raise ValueError(
                    f"schedule {name!r}: expected a window {_EXAMPLE} or a list of them, "
                    f"got {_kind(value)}"
                )
            try:
                pairs.append((name, Schedule(specs, tz)))
            except ValueError as exc:
                raise ValueError(f"schedule {name!r}: {exc}") from None
        return cls(tz, tuple(pairs))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.schedules)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.schedules)

    def get(self, name: str) -> Schedule:
        """The schedule called ``name``; ValueError naming it, a close match and the known ones."""
        schedule = self._by_name.get(name)
        if schedule is not None:
            return schedule
        known = sorted(self._by_name)
        if not known:
            raise ValueError(f"unknown schedule {name!r} (no schedules are defined)")
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown schedule {name!r} ({hint}known: {', '.join(known)})")
