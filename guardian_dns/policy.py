"""Policies: which group a client is in, and what that group may reach at this moment.

What it decides: for one client and one name, the verdict of its group's rules as they stand
now (categories, services, the group's own allow/block names, schedule windows, temporary allows
and pauses, time budgets), and until when that standing holds.
What it reads: the configuration's ``policy`` section, the snapshot's domain table (through
``Filter.decide``), the clock it is given, and the run-time overrides and budgets it is handed.
What it must never do: I/O, or decide differently from ``explain``: the server and the CLI call
the same ``GroupPolicy.state`` and ``decide`` below.

A group's rules are compiled once per snapshot into masks of category bits (``GroupPolicy``).
What is in force at a time ``t`` is a ``State``: the mask of categories blocked now, whether
everything is blocked (``block: "*"`` windows) and which names still pass, plus ``until``, the
next instant anything can change (a window opens or closes, an override expires, the day ends for
budgets). The pipeline keeps one ``Context`` per group (and per client with a pause of its own)
holding the current State and its own packet cache; a timer swaps in the next State at ``until``
and empties that cache, so nothing decided under a window outlives it.

Precedence, first match wins (tests/unit/test_policy.py checks each line):

1. a pause for the client or its group: nothing is filtered;
2. a group with ``filtering: false``: nothing is filtered;
3. a temporary allow of the name (or a parent) for the client or its group, then a temporary
   block of it (``guardian-dns block NAME --for 2h``);
4. the group's own ``allow`` names, then its own ``block`` names (most specific first);
   then, with safe search on, the search engines that have no DNS mechanism to enforce it;
5. a ``block: "*"`` window: everything is blocked except the window's ``except`` names;
6. the lists (``Filter.decide``) with the categories blocked now: the group's categories and
   services, plus those of active ``block`` windows, minus those of active ``allow`` windows;
   a name blocked only by budgeted categories passes while the client's budget lasts.
"""

from __future__ import annotations

import contextlib
import math
import os
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from guardian_dns.adminlists import AdminNames
from guardian_dns.config import (
    DEFAULT_GROUP,
    EVERYTHING,
    SERVICE_PREFIX,
    Config,
    GroupConfig,
    ListConfig,
)
from guardian_dns.filter import BLOCK, PASS
from guardian_dns.safesearch import SafeSearchTable
from guardian_dns.schedule import Schedule
from guardian_dns.services import load_services, service_category
from guardian_dns.trie import DomainTable

# Rule ids of verdicts that come from a policy rather than a list line (lists use ids >= 0, the
# built-in bypass table -2). The query log and explain show them by name.
RULE_PAUSED: Final = -3
RULE_UNFILTERED: Final = -4
RULE_TEMP_ALLOW: Final = -5
RULE_GROUP_ALLOW: Final = -6
RULE_GROUP_BLOCK: Final = -7
RULE_WINDOW_BLOCK: Final = -8
RULE_WINDOW_EXCEPT: Final = -9
RULE_BUDGET_SPENT: Final = -10
RULE_SAFE_SEARCH: Final = -11
RULE_SAFE_SEARCH_REWRITE: Final = -12
RULE_ADMIN_ALLOW: Final = -13
RULE_ADMIN_BLOCK: Final = -14
RULE_TEMP_BLOCK: Final = -15
RULE_NAMES: Final[dict[int, str]] = {
    -2: "built-in bypass protection",
    RULE_PAUSED: "filtering paused",
    RULE_UNFILTERED: "group has filtering: false",
    RULE_TEMP_ALLOW: "temporary allow",
    RULE_GROUP_ALLOW: "group allow",
    RULE_GROUP_BLOCK: "group block",
    RULE_WINDOW_BLOCK: "schedule blocks everything",
    RULE_WINDOW_EXCEPT: "schedule exception",
    RULE_BUDGET_SPENT: "time budget spent",
    RULE_SAFE_SEARCH: "safe search: this engine cannot enforce it, so it is blocked",
    RULE_SAFE_SEARCH_REWRITE: "safe search: answered with the engine's enforcement name",
    RULE_ADMIN_ALLOW: "administrator's allow (guardian-dns allow)",
    RULE_ADMIN_BLOCK: "administrator's block (guardian-dns block)",
    RULE_TEMP_BLOCK: "temporary block (guardian-dns block --for)",
}


def system_timezone() -> zoneinfo.ZoneInfo:
    """The host's zone: $TZ, else /etc/timezone, else the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            candidates.append(link.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return zoneinfo.ZoneInfo("UTC")


def services_used(config: Config) -> tuple[str, ...]:
    """Ids of the services any group refers to, in a stable order."""
    used: set[str] = set()
    for g in config.policy.groups:
        used.update(g.block_services)
        names: list[str] = list(g.block_categories or ())
        names += [k for k, _m in g.budgets]
        for rule in g.schedules:
            names += list(rule.block) + list(rule.allow)
        used.update(n[len(SERVICE_PREFIX) :] for n in names if n.startswith(SERVICE_PREFIX))
    return tuple(sorted(used))


def service_lists(config: Config) -> tuple[ListConfig, ...]:
    """One list per service a group uses (blocklists/services/)."""
    services = load_services()
    return tuple(
        ListConfig(file=str(services[sid].file), category=service_category(sid), format="domains")
        for sid in services_used(config)
        if sid in services
    )


def all_lists(config: Config, state_dir: str | None = None) -> tuple[ListConfig, ...]:
    """What the table is built from: the configured files, with a state directory the feed's
    set and the subscriptions' copies (sources.py), and one list per service a group uses."""
    from guardian_dns.sources import resolve

    return resolve(config, state_dir)[0] + service_lists(config)


def suffix_match(name: str, names: frozenset[str] | Mapping[str, object]) -> str | None:
    """The most specific of ``names`` that is ``name`` or a parent of it."""
    if not names:
        return None
    if name in names:
        return name
    # No generator: this runs for every name a policy group decides.
    pos = name.find(".")
    while pos >= 0:
        suffix = name[pos + 1 :]
        if suffix in names:
            return suffix
        pos = name.find(".", pos + 1)
    return None


@dataclass(frozen=True)
class Window:
    """One compiled schedule rule of a group."""

    schedule_name: str
    schedule: Schedule
    block_mask: int
    block_all: bool
    except_names: frozenset[str]
    allow_mask: int
    line: int


@dataclass(frozen=True)
class State:
    """What is in force for a group (and maybe one client) from a moment until ``until``."""

    mask: int  # categories blocked now, budgeted ones included
    soft_mask: int  # the budgeted categories of ``mask``: blocked only once a budget is spent
    block_all: bool
    except_names: frozenset[str]
    paused: bool
    temp_allow: frozenset[str]
    until: float  # Unix time of the next possible change (math.inf: none)
    windows: tuple[str, ...]  # names of the active schedule windows, for explain and status
    temp_block: frozenset[str] = frozenset()  # temporary blocks (after temporary allows)


@dataclass(frozen=True)
class GroupPolicy:
    """A group's rules, compiled against one snapshot's categories. Immutable."""

    name: str
    index: int
    filtering: bool
    base_mask: int
    allow_names: frozenset[str]
    block_names: frozenset[str]
    windows: tuple[Window, ...]
    budgets: tuple[tuple[str, int, int], ...]  # (key, category mask, minutes per day)
    safe_search: str
    line: int = 0
    # Safe search on engines that have no DNS mechanism (safesearch.SafeSearchTable): blocked.
    safe_search_blocks: frozenset[str] = frozenset()
    # The administrator's names (adminlists.py, guardian-dns block/allow) for this group.
    admin_allow: frozenset[str] = frozenset()
    admin_block: frozenset[str] = frozenset()
    # Admin blocks "--category C": name -> the category bits; blocked only while C is blocked.
    category_blocks: dict[str, int] = field(default_factory=dict, compare=False)
    budget_mask: int = field(init=False)
    # Every own name (the group's and the administrator's) -> the rule that decides it, allows
    # over blocks at the same name: one walk up the name, not four.
    own_names: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        own = dict.fromkeys(self.admin_block, RULE_ADMIN_BLOCK)
        own.update(dict.fromkeys(self.block_names, RULE_GROUP_BLOCK))
        own.update(dict.fromkeys(self.admin_allow, RULE_ADMIN_ALLOW))
        own.update(dict.fromkeys(self.allow_names, RULE_GROUP_ALLOW))
        object.__setattr__(self, "own_names", own)
        mask = 0
        for _key, bits, _minutes in self.budgets:
            mask |= bits
        object.__setattr__(self, "budget_mask", mask)

    def state(
        self,
        t: float,
        *,
        paused: bool = False,
        temp_allow: Iterable[str] = (),
        temp_block: Iterable[str] = (),
        overrides_until: float = math.inf,
        day_end: float = math.inf,
    ) -> State:
        """The rules in force at Unix time ``t``; overrides are the caller's (usage.py)."""
        mask = self.base_mask
        block_all = False
        except_names: set[str] = set()
        active = []
        until = overrides_until
        allow_mask = 0
        for w in self.windows:
            until = min(until, w.schedule.next_change(t))
            if not w.schedule.active(t):
                continue
            active.append(w.schedule_name)
            mask |= w.block_mask
            allow_mask |= w.allow_mask
            if w.block_all:
                block_all = True
                except_names.update(w.except_names)
        mask &= ~allow_mask
        # A budgeted key is soft (passes while minutes remain) only where nothing else blocks
        # it now: homework's "block roblox" beats the daily Roblox budget while it lasts.
        soft = self.budget_mask & ~allow_mask & ~mask
        if self.budget_mask:
            until = min(until, day_end)
        return State(
            mask=mask | soft,
            soft_mask=soft,
            block_all=block_all,
            except_names=frozenset(except_names),
            paused=paused,
            temp_allow=frozenset(temp_allow),
            temp_block=frozenset(temp_block),
            until=until,
            windows=tuple(active),
        )

    def budget_keys(self, mask: int) -> tuple[str, ...]:
        """The budget keys whose categories are in ``mask`` (a block found by the lists)."""
        return tuple(key for key, bits, _m in self.budgets if bits & mask)


class Verdict(NamedTuple):
    """A decision with its reason: what the pipeline acts on and explain prints.

    A named tuple rather than a frozen dataclass: one is made per decided name on the query
    path, and a frozen dataclass costs several times more to build.
    """

    verdict: int  # filter.PASS, BLOCK, LOCAL_NXDOMAIN, LOCAL_NODATA
    rule: int  # a list rule id (>= 0) or one of the RULE_* above, -1 for nothing
    mask: int  # categories that blocked it
    budget: tuple[str, ...] = ()  # budget keys that let it pass (usage must be recorded)
    matched: str = ""  # the group/override/window name that matched, for explain


def decide(
    policy: GroupPolicy,
    state: State,
    name: str,
    list_decide: Callable[[str, int], tuple[int, int, int]],
    budget_spent: Callable[[str], bool] | None = None,
) -> Verdict:
    """The verdict for ``name`` under ``state`` (precedence in the module docstring).

    ``list_decide`` is the snapshot's ``Filter.decide``; ``budget_spent(key)`` answers for the
    asking client (None: no client, as in explain without --client: budgets count as unspent).
    """
    if state.paused:
        return Verdict(PASS, RULE_PAUSED, 0)
    if not policy.filtering:
        return Verdict(PASS, RULE_UNFILTERED, 0)
    if state.temp_allow:
        hit = suffix_match(name, state.temp_allow)
        if hit is not None:
            return Verdict(PASS, RULE_TEMP_ALLOW, 0, matched=hit)
    if state.temp_block:
        hit = suffix_match(name, state.temp_block)
        if hit is not None:
            return Verdict(BLOCK, RULE_TEMP_BLOCK, 0, matched=hit)
    names = policy.own_names
    if names:
        hit = suffix_match(name, names)
        if hit is not None:
            # At the same name allow wins (the map says which), and the most specific name wins.
            rule = names[hit]
            if rule in (RULE_GROUP_ALLOW, RULE_ADMIN_ALLOW):
                return Verdict(PASS, rule, 0, matched=hit)
            return Verdict(BLOCK, rule, 0, matched=hit)
    if policy.safe_search_blocks:
        hit = suffix_match(name, policy.safe_search_blocks)
        if hit is not None:
            return Verdict(BLOCK, RULE_SAFE_SEARCH, 0, matched=hit)
    if policy.category_blocks:
        hit = suffix_match(name, policy.category_blocks)
        if hit is not None and policy.category_blocks[hit] & state.mask:
            return Verdict(BLOCK, RULE_ADMIN_BLOCK, policy.category_blocks[hit], matched=hit)
    if state.block_all:
        hit = suffix_match(name, state.except_names)
        if hit is None:
            verdict, rule, _mask = list_decide(name, state.mask)
            if verdict != PASS and verdict != BLOCK:
                return Verdict(verdict, rule, 0)  # built-in local answers still apply
            return Verdict(BLOCK, RULE_WINDOW_BLOCK, 0, matched=",".join(state.windows))
        return Verdict(PASS, RULE_WINDOW_EXCEPT, 0, matched=hit)
    verdict, rule, mask = list_decide(name, state.mask)
    if verdict == BLOCK and state.soft_mask and not (mask & ~state.soft_mask):
        # Blocked only by budgeted categories: it passes while the client's budget lasts.
        keys = policy.budget_keys(mask)
        if budget_spent is not None and all(budget_spent(k) for k in keys):
            return Verdict(BLOCK, rule, mask, matched=RULE_NAMES[RULE_BUDGET_SPENT])
        return Verdict(PASS, rule, 0, budget=keys)
    return Verdict(verdict, rule, mask)


@dataclass(frozen=True)
class Policies:
    """Every group of a snapshot, the default one included, and the time zone they live in."""

    groups: tuple[GroupPolicy, ...]
    default: GroupPolicy
    tz: zoneinfo.ZoneInfo

    def group(self, name: str) -> GroupPolicy:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def compile_policies(
    config: Config,
    table: DomainTable,
    default_mask: int,
    safe_search: SafeSearchTable | None = None,
    admin: AdminNames | None = None,
) -> Policies:
    """Compile the config's groups against the table's category bits (config is validated).

    ``safe_search`` is the engines table, needed when a group turns safe search on.
    """
    pol = config.policy
    tz = zoneinfo.ZoneInfo(pol.timezone) if pol.timezone else system_timezone()
    mask = table.mask_for
    list_categories = [c for c in table.categories if not c.startswith(SERVICE_PREFIX)]
    schedules = {name: Schedule.parse(list(specs), tz) for name, specs, _line in pol.schedules}
    configured = {g.name: g for g in pol.groups}
    if DEFAULT_GROUP not in configured:
        configured = {DEFAULT_GROUP: GroupConfig(name=DEFAULT_GROUP), **configured}
    compiled = []
    for i, g in enumerate(configured.values()):
        if g.block_categories is None:
            base = default_mask
        else:
            named = [c for c in g.block_categories if c != EVERYTHING]
            base = mask(named)
            if EVERYTHING in g.block_categories:
                base |= mask(list_categories)
        base |= mask([service_category(s) for s in g.block_services])
        windows = tuple(
            Window(
                schedule_name=rule.during,
                schedule=schedules[rule.during],
                block_mask=mask([c for c in rule.block if c != EVERYTHING]),
                block_all=EVERYTHING in rule.block,
                except_names=frozenset(rule.except_names),
                allow_mask=mask(rule.allow),
                line=rule.line,
            )
            for rule in g.schedules
        )
        budgets = tuple((key, mask([key]), minutes) for key, minutes in g.budgets)
        group_allow, group_block = frozenset[str](), frozenset[str]()
        if admin is not None and admin.groups.get(g.name):
            group_allow, group_block = admin.groups[g.name]
        compiled.append(
            GroupPolicy(
                name=g.name,
                index=i,
                filtering=g.filtering,
                base_mask=base,
                allow_names=frozenset(g.allow),
                block_names=frozenset(g.block),
                windows=windows,
                budgets=budgets,
                safe_search=g.safe_search,
                line=g.line,
                safe_search_blocks=(
                    safe_search.unenforceable(e.name for e in safe_search.engines)
                    if safe_search is not None and g.safe_search != "off"
                    else frozenset()
                ),
                admin_allow=group_allow | (admin.allow if admin is not None else frozenset()),
                admin_block=group_block | (admin.block if admin is not None else frozenset()),
                category_blocks=(
                    {n: mask(cats) for n, cats in admin.category_blocks.items() if mask(cats)}
                    if admin is not None
                    else {}
                ),
            )
        )
    by_name = {g.name: g for g in compiled}
    return Policies(tuple(compiled), by_name[pol.default_group], tz)
