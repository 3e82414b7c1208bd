"""Time budgets and temporary overrides: the state a parent changes by the minute, kept on disk.

What it decides: how many minutes of a budgeted category or service a client has used today, and
whether a query now is inside or beyond its group's daily budget (:class:`Budgets`); which
temporary allows and pauses are in force for a group or a client at an instant, and when the next
one ends (:class:`Overrides`). Both survive a restart through one JSON file in the state
directory (:class:`UsageState`).
What it reads: the instants its callers pass, the limits and the time zone of the configuration,
and its own ``usage.json``. It never reads the clock: ``explain --at`` and the server ask the
very same questions, and tests need no fake clock.
What it must never do: allocate or do I/O on the query path (``Budgets.record`` in a minute it
has already decided is two dictionary look-ups and three comparisons); lose state silently (a file
it cannot use is logged with the reason and moved aside to ``usage.json.bad``); write the file in
place (a power cut mid-write must leave the previous file whole); or decide policy: which rule
wins over which is the policy code's business, this module only answers its questions.

Budgets, precisely (a parent reads "60 minutes of games a day" and this is what they get):

* Use is counted in minutes of real time (hh:mm:00 to hh:mm:59): a minute with at least one query
  for the budget key from the client counts once, however many queries it holds. A client's use
  is its own, whatever group it is in; the group only sets the limit.
* A day runs from local midnight to local midnight in the configured zone, so it is 23 hours on
  the spring-forward day and 25 at fall-back (the two 01:30s of the repeated hour are different
  minutes of time and both count). Each day starts from zero.
* A limit of N grants the first N minutes of use in the day, each minute whole: every query until
  the end of a granted minute is allowed. The first query in minute N+1, and every query after it
  that day, is refused, and refused minutes are not counted, so ``used`` stops at the limit.
  ``record`` returns True exactly for refused queries; ``spent(t)`` is True when a query at ``t``
  would be refused: used >= limit and ``t`` is not inside the last granted minute. A limit of 0
  refuses from the first query; a group with no limit for a key is counted but never refused.
* Only the last minute is kept per client and key, so time that runs backwards (an NTP step)
  counts nothing until it passes the last counted minute again, and a tally never moves back to
  an earlier day: an instant before the tally's day sees the tally as it stands. A board that
  boots with a wrong clock therefore cannot hand a child a fresh day.

Overrides: ``allow`` (a domain and every name below it, for a group or a client) and ``pause`` (no
filtering at all for the target), each in force on ``[created, expires)``. ``matching`` and
``next_expiry`` are pure functions of the instant, so an ``explain --at`` tomorrow cannot drop
tonight's overrides; ``expire(now)`` (also run by ``active``, ``save`` and ``load``) removes the
ones that have ended and bumps ``version``.

Threads: both classes are meant to be changed on the event loop's thread only. The file is
written by :meth:`PendingSave.write`, which touches no shared state and may run in an executor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

USAGE_FILE: Final = "usage.json"
FORMAT: Final = "guardian-dns usage"
VERSION: Final = 1  # bump when the meaning of a field changes; an older server then rejects it
MAX_OVERRIDE_MINUTES: Final = 7 * 24 * 60
# Real state is a few hundred bytes per client; a file this big is not ours, and reading it whole
# on a small board would cost more than starting empty.
MAX_FILE_BYTES: Final = 16 << 20
MAX_WHO: Final = 200  # free text shown in status; bounded so the file stays small

Kind = Literal["allow", "pause", "block"]
TargetKind = Literal["group", "client"]
KINDS: Final[tuple[Kind, ...]] = ("allow", "pause", "block")
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("group", "client")

_ID_RE: Final = re.compile(r"[0-9a-z]{4,32}\Z")
_TARGET_RE: Final = re.compile(r"\S{1,255}\Z")
_LABEL_RE: Final = re.compile(r"[a-z0-9-]{1,63}\Z")
_MAX_NAME: Final = 253
# Floating-point slack when a file's created/expires are checked against the longest override.
_DURATION_SLACK: Final = 0.001
_NO_LIMITS: Final[Mapping[str, int]] = {}


# --- days ------------------------------------------------------------------------------------


def _midnight(tz: ZoneInfo, day: date) -> float:
    # fold=0 maps a skipped 00:00 (a spring-forward at midnight, as in America/Santiago) to the
    # instant of the change, which is the first instant of that day. Checked against every zone
    # in tzdata from 1970 to 2037: this is each day's first instant, except on the few days a
    # zone skipped whole (dateline moves), which have no instants, so no ``t`` ever falls in one.
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def day_bounds(tz: ZoneInfo, t: float) -> tuple[float, float]:
    """The local day containing ``t`` as Unix times: its first instant and the next day's."""
    today = datetime.fromtimestamp(t, tz).date()
    return _midnight(tz, today), _midnight(tz, today + timedelta(days=1))


# --- budgets ---------------------------------------------------------------------------------


class BudgetUse(NamedTuple):
    """One line of the status page: a client's use of one budget today, against its limit."""

    client: str
    group: str
    key: str
    used: int
    limit: int


class _Tally:
    """One client's use of one budget key on one day.

    Mutable and reused from minute to minute and day to day, so that ``record`` allocates nothing
    once a client has been seen. ``limit`` is the limit of ``group`` (``math.inf`` for none),
    cached so that the query path does not look it up.
    """

    __slots__ = (
        "client",
        "day_end",
        "day_start",
        "granted",
        "group",
        "key",
        "limit",
        "minute_end",
        "minute_start",
        "used",
    )

    def __init__(self, client: str, key: str, group: str, limit: float) -> None:
        self.client = client
        self.key = key
        self.group = group
        self.limit = limit
        # No day yet: the first count starts one (every instant is >= -inf).
        self.day_start = -math.inf
        self.day_end = -math.inf
        self.minute_start = -math.inf
        self.minute_end = -math.inf
        self.granted = False
        self.used = 0


def _check_limits(limits: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for pair, minutes in limits.items():
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and all(isinstance(part, str) and part for part in pair)
        ):
            raise ValueError(f"budget key {pair!r}: expected (group, category or service)")
        group, key = pair
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
            raise ValueError(
                f"budget {key!r} for group {group!r}: expected whole minutes >= 0, got {minutes!r}"
            )
        nested.setdefault(group, {})[key] = minutes
    return nested


class Budgets:
    """Minutes of use per client and budget key today, against per-group daily limits.

    ``limits`` maps (group, budget key) to minutes a day; a budget key is whatever the policy
    code counts under (a category, ``service:games``): this class never interprets it.
    """

    def __init__(self, tz: ZoneInfo, limits: Mapping[tuple[str, str], int]) -> None:
        self.tz = tz
        self._limits = _check_limits(limits)
        self._tallies: dict[str, dict[str, _Tally]] = {}
        # The day of the latest slow-path count, so that a new tally rarely needs zoneinfo.
        self._day: tuple[float, float] = (math.inf, -math.inf)
        # Bumped whenever something a save would write changes (a minute counted, a group moved,
        # a load); the saver compares it, so an idle timer tick writes nothing (SD-card wear).
        self.version = 0

    def set_limits(self, limits: Mapping[tuple[str, str], int]) -> None:
        """New limits from a reloaded config; today's counts are kept. ValueError if invalid."""
        self._limits = _check_limits(limits)
        for keys in self._tallies.values():
            for tally in keys.values():
                tally.limit = self._limit(tally.group, tally.key)
                if not tally.granted:
                    # A minute refused under the old limit may be granted under the new one:
                    # let the next query take the slow path and decide again.
                    tally.minute_end = tally.minute_start

    def limit(self, group: str, key: str) -> int | None:
        """The group's daily minutes for ``key``, or None when it has no budget for it."""
        return self._limits.get(group, _NO_LIMITS).get(key)

    def _limit(self, group: str, key: str) -> float:
        return self._limits.get(group, _NO_LIMITS).get(key, math.inf)

    def _day_of(self, t: float) -> tuple[float, float]:
        start, end = self._day
        if not start <= t < end:
            self._day = day_bounds(self.tz, t)
        return self._day

    def day_end(self, t: float) -> float:
        """The next local midnight after ``t``: when today's counts stop counting."""
        return self._day_of(t)[1]

    def record(self, client: str, group: str, key: str, t: float) -> bool:
        """Count a query from ``client`` for ``key`` at ``t``; True when it must be refused.

        True exactly when ``spent(client, group, key, t)`` is, after counting this query. The
        query path: inside a minute already decided this is two dictionary look-ups and three
        comparisons, and allocates nothing.
        """
        keys = self._tallies.get(client)
        if keys is None:
            keys = self._tallies[client] = {}
        tally = keys.get(key)
        if tally is None:
            tally = keys[key] = _Tally(client, key, group, self._limit(group, key))
        elif tally.minute_start <= t < tally.minute_end and tally.group == group:
            return not tally.granted
        return self._count(tally, group, t)

    def _count(self, tally: _Tally, group: str, t: float) -> bool:
        """The slow path: a new minute, a new day, a new group, or time that ran backwards."""
        if tally.group != group:
            tally.group = group
            tally.limit = self._limit(group, tally.key)
            self.version += 1
        if t >= tally.day_end:
            tally.day_start, tally.day_end = self._day_of(t)
            tally.used = 0
            tally.granted = False
            tally.minute_start = tally.minute_end = -math.inf
        elif t < tally.day_start:
            return tally.used >= tally.limit  # the clock is behind the tally: count nothing
        # Local midnight falls on a whole UTC minute in every zone in use, so a minute never
        # straddles two days; the max and min only keep that invariant if one ever did.
        minute = max(t - t % 60.0, tally.day_start)
        if minute < tally.minute_start:
            # Time ran backwards inside the day: this minute may have been counted already, and
            # counting it again could refuse a child minutes it never used.
            return tally.used >= tally.limit
        if minute == tally.minute_start and tally.granted:
            return False
        tally.minute_start = minute
        tally.minute_end = min(minute + 60.0, tally.day_end)
        if tally.used < tally.limit:
            tally.used += 1
            tally.granted = True
            self.version += 1
        else:
            tally.granted = False
        return not tally.granted

    def _tally_at(self, client: str, key: str, t: float) -> _Tally | None:
        """The tally that ``t`` sees: its day, or any instant before it; None for a later day."""
        tally = self._tallies.get(client, {}).get(key)
        if tally is None or t >= tally.day_end:
            return None
        return tally

    def used(self, client: str, key: str, t: float) -> int:
        """Minutes of ``key`` the client has used on the day of ``t``."""
        tally = self._tally_at(client, key, t)
        return 0 if tally is None else tally.used

    def spent(self, client: str, group: str, key: str, t: float) -> bool:
        """Whether a query at ``t`` would be refused (without counting it): what ``explain`` says.

        used >= limit, unless ``t`` is inside the last granted minute, which was granted whole.
        """
        limit = self._limit(group, key)
        tally = self._tally_at(client, key, t)
        if tally is None:
            return limit <= 0
        if tally.granted and tally.minute_start <= t < tally.minute_end:
            return False
        return tally.used >= limit

    def status(self, t: float) -> list[BudgetUse]:
        """Every budget in use on the day of ``t``, for the status page, sorted by group and client.

        Only keys the client's group has a limit for; a client that sent nothing for a budgeted
        key today is not listed (it has used 0 of it).
        """
        start, end = day_bounds(self.tz, t)
        rows: list[BudgetUse] = []
        for keys in self._tallies.values():
            for tally in keys.values():
                limit = self.limit(tally.group, tally.key)
                if limit is not None and start <= tally.day_start < end:
                    rows.append(BudgetUse(tally.client, tally.group, tally.key, tally.used, limit))
        rows.sort(key=lambda row: (row.group, row.client, row.key))
        return rows

    def prune(self, t: float) -> int:
        """Forget counts of days that ended at or before ``t``; how many were forgotten."""
        dropped = 0
        for client in list(self._tallies):
            keys = self._tallies[client]
            for key in [k for k, tally in keys.items() if tally.day_end <= t]:
                del keys[key]
                dropped += 1
            if not keys:
                del self._tallies[client]
        return dropped

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._tallies.values())

    def _export(self) -> list[dict[str, Any]]:
        return [
            {
                "client": tally.client,
                "key": tally.key,
                "group": tally.group,
                "minute": tally.minute_start,
                "granted": tally.granted,
                "used": tally.used,
            }
            for keys in self._tallies.values()
            for tally in keys.values()
            if math.isfinite(tally.minute_start)
        ]

    def _install(self, items: Iterable[_SavedTally], t: float) -> None:
        """Replace every count with ``items``, keeping those whose day has not ended at ``t``."""
        self._tallies = {}
        for item in items:
            day_start, day_end = day_bounds(self.tz, item.minute)
            if day_end <= t:
                continue
            tally = _Tally(item.client, item.key, item.group, self._limit(item.group, item.key))
            tally.day_start, tally.day_end = day_start, day_end
            tally.minute_start = item.minute
            tally.minute_end = min(item.minute + 60.0, day_end)
            tally.granted = item.granted
            tally.used = item.used
            self._tallies.setdefault(item.client, {})[item.key] = tally
        self.version += 1


class _SavedTally(NamedTuple):
    client: str
    key: str
    group: str
    minute: float
    granted: bool
    used: int


# --- overrides -------------------------------------------------------------------------------


def check_domain(domain: object) -> str:
    """``domain`` if it is a domain name an allow may name; ValueError says what to write instead.

    Strict rather than forgiving: the override is stored as written and compared with query
    names, which the listener has already folded to lower case without a trailing dot, so
    anything else would silently never match. The message gives the form to write.
    """
    if not isinstance(domain, str):
        raise ValueError(
            f"expected a domain name such as 'youtube.com', got {type(domain).__name__}"
        )
    if not domain:
        raise ValueError("empty domain name (expected a name such as 'youtube.com')")
    if "/" in domain or ":" in domain:
        raise ValueError(f"{domain!r} is not a domain name (write just the name, 'youtube.com')")
    if domain.startswith("*."):
        raise ValueError(
            f"{domain!r}: no wildcard needed, {domain[2:]!r} already covers the names below it"
        )
    if not domain.isascii():
        try:
            ascii_form = domain.lower().rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{domain!r} is not a valid internationalised domain name") from None
        raise ValueError(f"{domain!r} is not ASCII (write its punycode form {ascii_form!r})")
    if domain != domain.lower():
        raise ValueError(f"{domain!r} has upper-case letters (write {domain.lower()!r})")
    if domain.endswith("."):
        raise ValueError(f"{domain!r} ends with a dot (write {domain.rstrip('.')!r})")
    if len(domain) > _MAX_NAME:
        raise ValueError(f"domain name of {len(domain)} characters (the limit is {_MAX_NAME})")
    labels = domain.split(".")
    for label in labels:
        if not label:
            raise ValueError(f"{domain!r} has an empty label (two dots in a row, or a leading dot)")
        if not _LABEL_RE.match(label):
            if len(label) > 63:
                raise ValueError(f"{domain!r}: label of {len(label)} characters (the limit is 63)")
            bad = min(set(label) - set("abcdefghijklmnopqrstuvwxyz0123456789-"))
            raise ValueError(f"{domain!r}: {bad!r} is not allowed (letters, digits and '-' only)")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError(f"{domain!r}: label {label!r} starts or ends with '-'")
    if len(labels) == 1:
        raise ValueError(
            f"{domain!r} is a single label, which would allow a whole top-level domain "
            "(name a domain such as 'youtube.com')"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{domain!r} looks like an IP address, not a domain name")
    return domain


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Override:
    """One temporary allow or pause, in force on ``[created, expires)`` (Unix times).

    Validated here, so an override made by ``Overrides.add`` and one read back from the file obey
    the same rules. ``domain`` is set for an allow (it covers the names below it too) and None
    for a pause, which means no filtering at all for the target. ``who`` is the admin user, as
    free text, for the status page.
    """

    id: str
    kind: Kind
    target_kind: TargetKind
    target: str
    domain: str | None
    created: float
    expires: float
    who: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise ValueError(f"override id {self.id!r}: expected 4 to 32 of a-z and 0-9")
        if self.kind not in KINDS:
            raise ValueError(f"override kind {self.kind!r}: expected 'allow', 'block' or 'pause'")
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(
                f"override target kind {self.target_kind!r}: expected 'group' or 'client'"
            )
        if not isinstance(self.target, str) or not _TARGET_RE.match(self.target):
            raise ValueError(
                f"override {self.target_kind} {self.target!r}: expected a name or address "
                "without spaces"
            )
        if self.kind in ("allow", "block"):
            if self.domain is None:
                raise ValueError(f"an {self.kind} needs a domain (such as 'youtube.com')")
            check_domain(self.domain)
        elif self.domain is not None:
            raise ValueError(
                f"a pause stops all filtering and takes no domain (got {self.domain!r}); "
                "to let one domain through, add an allow"
            )
        if not _finite(self.created) or not _finite(self.expires):
            raise ValueError(
                f"override times must be finite numbers (got {self.created!r}, {self.expires!r})"
            )
        duration = self.expires - self.created
        if not 0 < duration <= MAX_OVERRIDE_MINUTES * 60 + _DURATION_SLACK:
            raise ValueError(
                f"override lasts {duration / 60:g} minutes; it must last more than 0 and at most "
                f"{MAX_OVERRIDE_MINUTES} minutes (7 days)"
            )
        if self.who is not None and (not isinstance(self.who, str) or len(self.who) > MAX_WHO):
            raise ValueError(f"override 'who': expected text of at most {MAX_WHO} characters")

    def in_force(self, t: float) -> bool:
        return self.created <= t < self.expires

    def covers(self, name: str) -> bool:
        """Whether this override applies to query name ``name`` (lower case, no trailing dot).

        A pause covers every name; an allow covers its domain and every name below it, but not
        a name that merely ends with the same letters (``notyoutube.com``).
        """
        domain = self.domain
        if domain is None:
            return True
        return name.endswith(domain) and (len(name) == len(domain) or name[-len(domain) - 1] == ".")

    def as_json(self) -> dict[str, Any]:
        """The override as the file and the status API show it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "target_kind": self.target_kind,
            "target": self.target,
            "domain": self.domain,
            "created": self.created,
            "expires": self.expires,
            "who": self.who,
        }


class Overrides:
    """The temporary allows and pauses, indexed by target for the policy code.

    ``version`` changes on every add, remove, expiry and load, so the server can drop memoised
    decisions when it differs from the one they were made under.
    """

    def __init__(self) -> None:
        self._items: dict[str, Override] = {}
        self._by_group: dict[str, tuple[Override, ...]] = {}
        self._by_client: dict[str, tuple[Override, ...]] = {}
        self._expiries: list[float] = []  # sorted, for next_expiry
        self.version = 0

    def add(
        self,
        kind: Kind,
        target_kind: TargetKind,
        target: str,
        domain: str | None,
        t: float,
        minutes: float,
        who: str | None = None,
    ) -> Override:
        """A new override from ``t`` for ``minutes``; ValueError says what is wrong with it."""
        if not _finite(minutes) or not 0 < minutes <= MAX_OVERRIDE_MINUTES:
            raise ValueError(
                f"an override lasts more than 0 and at most {MAX_OVERRIDE_MINUTES} minutes "
                f"(7 days), got {minutes!r}"
            )
        if not _finite(t):
            raise ValueError(f"override start must be a finite Unix time, got {t!r}")
        override = Override(
            self._new_id(), kind, target_kind, target, domain, t, t + minutes * 60.0, who
        )
        self._items[override.id] = override
        self._changed()
        return override

    def _new_id(self) -> str:
        # Random rather than a counter: a counter would restart after a lost file and could give
        # a new override the id an admin still has on screen for an old one.
        while True:
            candidate = secrets.token_hex(4)
            if candidate not in self._items:
                return candidate

    def remove(self, override_id: str) -> bool:
        """End an override now; False when there is none with that id (gone or expired)."""
        if self._items.pop(override_id, None) is None:
            return False
        self._changed()
        return True

    def expire(self, t: float) -> int:
        """Drop the overrides that have ended by ``t`` (the current time); how many."""
        if not self._expiries or self._expiries[0] > t:
            return 0
        ended = [key for key, o in self._items.items() if o.expires <= t]
        for key in ended:
            del self._items[key]
        self._changed()
        return len(ended)

    def active(self, t: float) -> list[Override]:
        """The overrides in force now (``t`` is the current time), soonest to end first."""
        self.expire(t)
        return sorted(
            (o for o in self._items.values() if o.in_force(t)),
            key=lambda o: (o.expires, o.id),
        )

    def matching(self, group: str, client: str, t: float) -> tuple[Override, ...]:
        """The overrides in force at ``t`` for this group or this client (pure: any ``t``).

        Group overrides first, then the client's, each in the order they were added. Which one
        wins for a name is the policy code's decision. Two dictionary look-ups and nothing else
        when neither the group nor the client has an override, which is nearly always.
        """
        by_group = self._by_group.get(group)
        by_client = self._by_client.get(client)
        if by_group is None:
            if by_client is None:
                return ()
            candidates = by_client
        else:
            candidates = by_group if by_client is None else by_group + by_client
        return tuple(o for o in candidates if o.created <= t < o.expires)

    def next_expiry(self, t: float) -> float:
        """The first instant after ``t`` at which an override ends; ``math.inf`` if none will.

        A cached answer must not outlive it, or an allow would keep working after its end.
        """
        index = bisect_right(self._expiries, t)
        return self._expiries[index] if index < len(self._expiries) else math.inf

    def has_client_overrides(self) -> bool:
        """Whether any override names a client (the listener then looks clients up)."""
        return bool(self._by_client)

    def names_client(self, client: str) -> bool:
        """Whether an override (in force or not yet ended) names ``client``."""
        return client in self._by_client

    def get(self, override_id: str) -> Override | None:
        return self._items.get(override_id)

    def __len__(self) -> int:
        return len(self._items)

    def _changed(self) -> None:
        """Rebuild the indexes (a handful of overrides: cheaper than keeping them incrementally)."""
        by_group: dict[str, list[Override]] = {}
        by_client: dict[str, list[Override]] = {}
        for o in self._items.values():
            index = by_group if o.target_kind == "group" else by_client
            index.setdefault(o.target, []).append(o)
        self._by_group = {target: tuple(items) for target, items in by_group.items()}
        self._by_client = {target: tuple(items) for target, items in by_client.items()}
        self._expiries = sorted(o.expires for o in self._items.values())
        self.version += 1

    def _export(self) -> list[dict[str, Any]]:
        return [o.as_json() for o in self._items.values()]

    def _install(self, items: Iterable[Override], t: float) -> None:
        """Replace every override with ``items``, keeping those that have not ended at ``t``."""
        self._items = {o.id: o for o in items if o.expires > t}
        self._changed()


# --- the file --------------------------------------------------------------------------------


class PendingSave:
    """The file's new content, encoded on the loop's thread; ``write`` may run in an executor."""

    def __init__(self, state: UsageState, data: bytes, mark: tuple[int, int]) -> None:
        self._state = state
        self.data = data
        self._mark = mark

    def write(self) -> None:
        """Write the file atomically; raises OSError (the previous file is then left whole)."""
        write_atomically(self._state.path, self.data)
        self._state._saved = self._mark


class UsageState:
    """Budgets and overrides in one JSON file, ``usage.json`` in the state directory.

    The file (Unix times throughout)::

        {"format": "guardian-dns usage", "version": 1, "saved": 1764010800.0,
         "budgets": [{"client": "aa:bb:cc:dd:ee:ff", "key": "service:games", "group": "kids",
                      "minute": 1764010740.0, "granted": true, "used": 42}],
         "overrides": [{"id": "3f9a1c2e", "kind": "allow", "target_kind": "group",
                        "target": "kids", "domain": "youtube.com", "created": 1764010000.0,
                        "expires": 1764012700.0, "who": "mum"}]}

    ``minute`` is the start of the client's last counted (or refused) minute; the day it belongs
    to is worked out again from the configured zone on load. Save every few seconds from a timer
    and on SIGTERM: a save when nothing changed writes nothing.
    """

    def __init__(
        self, path: str | os.PathLike[str], budgets: Budgets, overrides: Overrides
    ) -> None:
        self.path = os.fspath(path)
        self.budgets = budgets
        self.overrides = overrides
        self._saved: tuple[int, int] | None = None  # the versions the file on disk holds

    @classmethod
    def in_directory(cls, directory: str, budgets: Budgets, overrides: Overrides) -> UsageState:
        """The state file in ``directory`` (``compile.state_dir()``)."""
        return cls(os.path.join(directory, USAGE_FILE), budgets, overrides)

    def _mark(self) -> tuple[int, int]:
        return (self.budgets.version, self.overrides.version)

    def load(self, t: float) -> bool:
        """Replace the state with the file's, as of ``t``; True when the file was used.

        A missing file gives empty state. A file that cannot be used (corrupt, another format,
        another version) is logged with the reason, moved aside to ``<file>.bad`` and the state
        starts empty; filtering does not depend on it. Past days and ended overrides are dropped,
        and so are temporary files a crash left beside the file (never the state of record).
        """
        self.budgets._install((), t)
        self.overrides._install((), t)
        self._saved = None
        _remove_stale_temporaries(self.path)
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning(
                "usage state %s unreadable (%s): budgets and overrides start empty",
                self.path,
                exc.strerror,
            )
            return False
        try:
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            tallies, overrides = _parse(data)
            self.budgets._install(tallies, t)
            self.overrides._install(overrides, t)
        except ValueError as exc:
            self.budgets._install((), t)
            self.overrides._install((), t)
            self._reject(str(exc))
            return False
        # The file holds this state unless load dropped something from it (a past day, an ended
        # override): then the next save rewrites it, so it does not carry them forever.
        pruned = len(tallies) + len(overrides) - len(self.budgets) - len(self.overrides)
        self._saved = None if pruned else self._mark()
        log.info(
            "usage state loaded from %s: %d budget counts, %d overrides in force",
            self.path,
            len(self.budgets),
            len(self.overrides),
        )
        return True

    def _reject(self, reason: str) -> None:
        bad = self.path + ".bad"
        try:
            os.replace(self.path, bad)
        except OSError as exc:
            log.warning(
                "usage state %s rejected (%s) and could not be moved aside (%s): budgets and "
                "overrides start empty, and the next save replaces it",
                self.path,
                reason,
                exc.strerror,
            )
            return
        log.warning(
            "usage state %s rejected (%s); kept as %s, budgets and overrides start empty",
            self.path,
            reason,
            bad,
        )

    def encode(self, t: float) -> bytes:
        """The file's content as of ``t`` (drops ended overrides and past days first)."""
        self.overrides.expire(t)
        self.budgets.prune(t)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "saved": t,
            "budgets": self.budgets._export(),
            "overrides": self.overrides._export(),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode() + b"\n"

    def prepare(self, t: float, *, force: bool = False) -> PendingSave | None:
        """What to write, or None when the file already holds this state (and not ``force``)."""
        self.overrides.expire(t)  # an expiry changes the version, so it is written
        if not force and self._saved == self._mark():
            return None
        mark = self._mark()
        return PendingSave(self, self.encode(t), mark)

    def save(self, t: float, *, force: bool = False) -> bool:
        """Write the file now if the state changed (always with ``force``); True if written.

        Raises OSError when the file cannot be written; the previous file is left whole.
        """
        pending = self.prepare(t, force=force)
        if pending is None:
            return False
        pending.write()
        return True


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file beside it, fsync, rename, fsync the directory.

    A crash at any point leaves either the old file or the new one, never a mixture; the
    directory fsync makes the rename itself survive a power cut. Raises OSError, after removing
    the temporary file.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)  # the file is in place; a failure only weakens the rename's durability


def fsync_dir(directory: str | os.PathLike[str], *, strict: bool = False) -> None:
    """fsync a directory, so the renames and creations in it survive a power cut.

    The one implementation every durable write in the package uses. Best effort by default (a
    file system that cannot fsync a directory still has the file in place); ``strict`` raises
    OSError instead, for writers that must not report success on a directory they could not
    make durable (the feed's sets, the audit log).
    """
    try:
        fd = os.open(os.fspath(directory) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if strict:
            raise
        return
    try:
        if strict:
            os.fsync(fd)
        else:
            with contextlib.suppress(OSError):
                os.fsync(fd)
    finally:
        os.close(fd)


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}-"


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files a crash left mid-write (they are never the state of record)."""
    directory = os.path.dirname(path) or "."
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


# --- reading the file: every check names the entry and field ----------------------------------


def _parse(data: bytes) -> tuple[list[_SavedTally], list[Override]]:
    try:
        doc = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {_json_kind(doc)}")
    if doc.get("format") != FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise ValueError(f"format version {version!r}, this Guardian DNS reads version {VERSION}")
    unknown = set(doc) - {"format", "version", "saved", "budgets", "overrides"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    tallies = [_tally_of(i, item) for i, item in enumerate(_list(doc, "budgets"))]
    seen: set[tuple[str, str]] = set()
    for i, tally in enumerate(tallies):
        if (tally.client, tally.key) in seen:
            raise ValueError(f"budgets[{i}]: client {tally.client!r} and {tally.key!r} twice")
        seen.add((tally.client, tally.key))
    overrides = [_override_of(i, item) for i, item in enumerate(_list(doc, "overrides"))]
    ids: set[str] = set()
    for i, o in enumerate(overrides):
        if o.id in ids:
            raise ValueError(f"overrides[{i}]: id {o.id!r} twice")
        ids.add(o.id)
    return tallies, overrides


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "text", bool: "true or false"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number" if _finite(value) else repr(value))


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list):
        raise ValueError(f"{name}: expected a list, got {_json_kind(value)}")
    return value


_TALLY_KEYS: Final = frozenset(_SavedTally._fields)
_OVERRIDE_KEYS: Final = frozenset(
    ("id", "kind", "target_kind", "target", "domain", "created", "expires", "who")
)


def _fields(where: str, item: object, expected: frozenset[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {_json_kind(item)}")
    if set(item) != expected:
        missing, extra = sorted(expected - set(item)), sorted(set(item) - expected)
        raise ValueError(f"{where}: missing {missing}, unknown {extra}")
    return item


def _tally_of(i: int, item: object) -> _SavedTally:
    where = f"budgets[{i}]"
    d = _fields(where, item, _TALLY_KEYS)
    for name in ("client", "key", "group"):
        if not isinstance(d[name], str) or not d[name]:
            raise ValueError(f"{where}.{name}: expected text, got {_json_kind(d[name])}")
    if not _finite(d["minute"]):
        raise ValueError(f"{where}.minute: expected a Unix time, got {_json_kind(d['minute'])}")
    if type(d["granted"]) is not bool:
        raise ValueError(f"{where}.granted: expected true or false, got {_json_kind(d['granted'])}")
    used = d["used"]
    if type(used) is not int or used < 0:
        raise ValueError(f"{where}.used: expected whole minutes >= 0, got {used!r}")
    return _SavedTally(d["client"], d["key"], d["group"], float(d["minute"]), d["granted"], used)


def _override_of(i: int, item: object) -> Override:
    where = f"overrides[{i}]"
    d = _fields(where, item, _OVERRIDE_KEYS)
    try:
        return Override(**d)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


__all__ = [
    "FORMAT",
    "KINDS",
    "MAX_OVERRIDE_MINUTES",
    "TARGET_KINDS",
    "USAGE_FILE",
    "VERSION",
    "BudgetUse",
    "Budgets",
    "Kind",
    "Override",
    "Overrides",
    "PendingSave",
    "TargetKind",
    "UsageState",
    "check_domain",
    "day_bounds",
    "write_atomically",
]
