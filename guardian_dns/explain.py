"""Explain: why a name is blocked or allowed for a client at an instant, in the server's own terms.

What it decides: nothing of its own. It finds the client's group with the snapshot's client
matcher, the rules in force with ``GroupPolicy.state`` and the verdict with ``policy.decide`` over
``Filter.decide``: the very functions the server calls, so the two cannot disagree. Around that
verdict it gathers what a parent needs to see: how the client was matched (file:line), the
schedule windows active and when that changes, the overrides that apply, every list rule on the
name or a parent of it, the group's own names that matched, and the safe-search rewrite.
What it reads: a snapshot, an instant, the overrides in force and a neighbour mapping, all handed
in; :func:`read_neighbours` and the CLI do the reading.
What it must never do: write anything, or decide by a path of its own: a rule shown here as
deciding is exactly the rule id the server would log.

Budgets: explain has no client's usage, so it passes no ``budget_spent`` and a name blocked only
by budgeted categories shows as passing "while the budget lasts"; the output says so.
Safe search is shown beside the verdict (the rewrite a passing name gets, or the engine without a
DNS mechanism that lists it), from the table the CLI hands in.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from guardian_dns import clients, lists, usage
from guardian_dns.filter import BLOCK, LOCAL_NODATA, LOCAL_NXDOMAIN, PASS
from guardian_dns.overrides import client_target
from guardian_dns.policy import RULE_NAMES, GroupPolicy, Policies, Verdict, decide
from guardian_dns.safesearch import SafeSearchTable
from guardian_dns.snapshot import Snapshot
from guardian_dns.trie import ALL_CATEGORIES, entry_rule_id, rule_ref

VERDICT_WORDS: Final[dict[int, str]] = {
    PASS: "allowed",
    BLOCK: "blocked",
    LOCAL_NXDOMAIN: "answered locally",
    LOCAL_NODATA: "answered locally",
}
_LOCAL_DETAIL: Final[dict[int, str]] = {LOCAL_NXDOMAIN: "NXDOMAIN", LOCAL_NODATA: "no data"}
_KINDS: Final = ("block", "allow", "admin block", "admin allow")  # the combo's mask order
RULE_NONE: Final = -1  # policy/filter: nothing decided, the name is forwarded


# --- arguments ---------------------------------------------------------------------------------


def normalise_name(text: str) -> str:
    """A query name as the listener folds it (lower case, no trailing dot, punycode); ValueError
    says why ``text`` is not one. A single label is accepted: a list may name a whole TLD."""
    name, why = lists._normalise(text, allow_tld=True)
    if name is None:
        raise ValueError(f"{text!r} is not a domain name: {why}")
    return name


def parse_at(text: str, tz: ZoneInfo, now: float) -> tuple[float, str | None]:
    """``--at``: a local time in ``tz`` as a Unix time, and a note when the wall clock is odd.

    Accepts ``2026-11-24 21:30`` (seconds optional, ``T`` allowed), an explicit UTC offset, or
    ``21:30`` for today. A time the clocks skip is read with the offset before the change (so
    02:30 for a skipped 01:30), and a time that happens twice is the first of the two; the note
    says which was taken.
    """
    s = text.strip()
    try:
        if len(s) <= 8 and ":" in s and "-" not in s:
            clock = datetime.strptime(s, "%H:%M:%S" if s.count(":") == 2 else "%H:%M")
            today = datetime.fromtimestamp(now, tz)
            naive = today.replace(
                hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0
            ).replace(tzinfo=None)
        else:
            naive = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"--at {text!r}: expected a local time such as '2026-11-24 21:30' or '21:30'"
        ) from None
    if naive.tzinfo is not None:
        return naive.timestamp(), None
    t = naive.replace(tzinfo=tz).timestamp()
    back = datetime.fromtimestamp(t, tz)
    if back.replace(tzinfo=None) != naive:
        return t, (
            f"{naive:%Y-%m-%d %H:%M} does not exist in {tz.key} (the clocks go forward): "
            f"explaining {back:%H:%M %Z}"
        )
    second = naive.replace(tzinfo=tz, fold=1).timestamp()
    if second != t:
        return t, (
            f"{naive:%Y-%m-%d %H:%M} happens twice in {tz.key} (the clocks go back): "
            f"explaining the first, {back:%H:%M %Z}"
        )
    return t, None


def find_group(policies: Policies, name: str) -> GroupPolicy:
    """The group called ``name``; ValueError names the known ones and the likely typo."""
    try:
        return policies.group(name)
    except KeyError:
        pass
    known = [g.name for g in policies.groups]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"no group {name!r} ({hint}known: {', '.join(known)})")


def read_neighbours(source: str) -> tuple[dict[str, str], str | None]:
    """The neighbour table (``policy.neighbour_table``: a file, or ``ip``), and a note on failure.

    Never raises: without it MAC members match nothing, which the note says.
    """
    if source == clients.IP_COMMAND_SOURCE:
        mapping = clients.NeighbourTable.read_command()
        if not mapping:
            return {}, "the neighbour table ('ip neigh show') gave nothing: MAC members match none"
        return mapping, None
    try:
        return clients.NeighbourTable.read_file(source), None
    except OSError as exc:
        return {}, (
            f"neighbour table {source}: cannot read ({exc.strerror or exc}): MAC members match none"
        )


# --- the explanation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRule:
    """One kind of list rule on the name or a parent of it, as the domain table keeps it.

    The table stores, per name and kind, the categories of every list that has such a rule and
    the first of those lists; its line is exact when that list is the name's first of any kind.
    ``blocks_now``: whether a block rule's categories are blocked for the group at that instant
    (None for allows, which cancel the categories they name).
    """

    name: str
    kind: str  # block | allow | admin block | admin allow | regex block
    list: str
    line: int
    list_category: str
    categories: tuple[str, ...]  # "*": every category
    blocks_now: bool | None
    budgeted: bool = False  # blocks now only through budgeted categories: once a budget is spent

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "list": self.list,
            "line": self.line,
            "list_category": self.list_category,
            "categories": list(self.categories),
            "admin": self.kind.startswith("admin"),
            "blocks_now": self.blocks_now,
            "budgeted": self.budgeted,
        }


@dataclass(frozen=True)
class Explanation:
    """Everything ``guardian-dns explain`` shows; ``as_json`` is its ``--json`` form."""

    name: str
    t: float
    tz: ZoneInfo
    client: str | None  # the canonical address or MAC asked about
    client_kind: str | None  # address | mac
    mac: str | None  # the MAC the neighbour table gives for an address
    client_rule: clients.Rule | None  # how the client was matched (None: no group lists it)
    group: str
    group_where: str | None  # file:line of the group, None for the built-in default group
    group_how: str  # why this group: client, --group or default
    # (schedule name, file:line of the group's rule, when the window closes: None for never)
    windows: tuple[tuple[str, str, float | None], ...]
    until: float | None  # when the rules in force next change, None: never
    overrides: tuple[usage.Override, ...]
    list_rules: tuple[ListRule, ...]
    group_rules: tuple[tuple[str, str], ...]  # (group allow|group block|schedule except, name)
    verdict: Verdict
    verdict_word: str
    rule: str  # the deciding rule, in words
    categories: tuple[str, ...]  # what blocked it
    budgets: tuple[tuple[str, int], ...]  # (budget key, minutes a day) it passes under
    safe_search: dict[str, Any] | None
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        rule = self.client_rule
        return {
            "name": self.name,
            "at": self.t,
            "at_local": _iso(self.t, self.tz),
            "timezone": self.tz.key,
            "client": None
            if self.client is None
            else {
                "client": self.client,
                "kind": self.client_kind,
                "mac": self.mac,
                "matched": None if rule is None else str(rule.spec),
                "member": None if rule is None else rule.member.text,
                "where": None if rule is None else rule.member.where,
                "device_where": None
                if rule is None or rule.device_entry is None
                else rule.device_entry.where,
                "group": None if rule is None else rule.group,
            },
            "group": {"name": self.group, "where": self.group_where, "how": self.group_how},
            "windows": [
                {
                    "schedule": name,
                    "where": where,
                    "ends": ends,
                    "ends_local": None if ends is None else _iso(ends, self.tz),
                }
                for name, where, ends in self.windows
            ],
            "next_change": self.until,
            "next_change_local": None if self.until is None else _iso(self.until, self.tz),
            "overrides": [o.as_json() for o in self.overrides],
            "list_rules": [r.as_json() for r in self.list_rules],
            "group_rules": [{"kind": kind, "name": name} for kind, name in self.group_rules],
            "verdict": self.verdict_word,
            "answer": _LOCAL_DETAIL.get(self.verdict.verdict),
            "rule": self.rule,
            "rule_id": self.verdict.rule,
            "matched": self.verdict.matched or None,
            "categories": list(self.categories),
            "budgets": [{"key": k, "minutes_per_day": m} for k, m in self.budgets],
            "safe_search": self.safe_search,
            "notes": list(self.notes),
        }


def explain(
    snap: Snapshot,
    name: str,
    t: float,
    *,
    client: str | None = None,
    group: str | None = None,
    neighbours: Mapping[str, str] | None = None,
    overrides: usage.Overrides | None = None,
    safe_search: SafeSearchTable | None = None,
    notes: Iterable[str] = (),
) -> Explanation:
    """Why ``name`` (already normalised) gets its answer at ``t``.

    ``client`` is an address or MAC (spelled as the user typed it), ``group`` a group name that
    wins over the client's own; with neither, the default group. ``neighbours`` maps addresses to
    MACs as the server's watcher would. ``safe_search`` is the table to show a rewrite from
    (None: not shown). ValueError for a client that is no address or MAC, or an unknown group.
    """
    policies = snap.policies
    notes = list(notes)
    neighbours = neighbours or {}
    kind = key = mac = None
    rule: clients.Rule | None = None
    if client is not None:
        key = client_target(client)
        if _is_address(key):
            kind = "address"
            mac = neighbours.get(key)
            rule = snap.clients.match(key, neighbours)
            if mac is None and snap.clients.uses_macs:
                notes.append(f"no MAC known for {key}: it is matched by its address only")
        else:
            kind, mac = "mac", key
            rule = snap.clients.match_mac(key)
    if group is not None:
        gp = find_group(policies, group)
        how = "--group"
        if rule is not None and rule.group != gp.name:
            notes.append(f"the client's own group is {rule.group!r}; explaining as {gp.name!r}")
    elif rule is not None:
        gp, how = policies.group(rule.group), "client"
    else:
        gp, how = policies.default, "default"
    # The overrides in force: the group's, plus those of the client's identity, which is its
    # MAC when an override names the MAC, else its address (as the server picks it).
    applied: tuple[usage.Override, ...] = ()
    if overrides is not None:
        identity = ""
        for ident in (mac, key):
            found = overrides.matching(gp.name, ident, t) if ident else ()
            if any(o.target_kind == "client" for o in found):
                identity = ident or ""
                break
        applied = overrides.matching(gp.name, identity, t)
    paused = any(o.kind == "pause" for o in applied)
    temp_allow = [o.domain for o in applied if o.kind == "allow" and o.domain is not None]
    temp_block = [o.domain for o in applied if o.kind == "block" and o.domain is not None]
    overrides_until = min((o.expires for o in applied), default=math.inf)
    state = gp.state(
        t,
        paused=paused,
        temp_allow=temp_allow,
        temp_block=temp_block,
        overrides_until=overrides_until,
        day_end=usage.day_bounds(policies.tz, t)[1],
    )
    verdict = decide(gp, state, name, snap.filter.decide, None)
    # The categories a list block applies to here and now (none while nothing is filtered).
    blocking = state.mask if gp.filtering and not state.paused else 0

    source = snap.config.source
    windows = tuple(
        (w.schedule_name, f"{source}:{w.line}", _finite_or_none(w.schedule.next_change(t)))
        for w in gp.windows
        if w.schedule_name in state.windows
    )
    group_rules: list[tuple[str, str]] = []
    for suffix in suffixes(name):
        if suffix in gp.allow_names:
            group_rules.append(("group allow", suffix))
        if suffix in gp.block_names:
            group_rules.append(("group block", suffix))
        if suffix in state.except_names:
            group_rules.append(("schedule except", suffix))
    budgets: tuple[tuple[str, int], ...] = ()
    if verdict.budget:
        limits = {k: minutes for k, _bits, minutes in gp.budgets}
        budgets = tuple((k, limits[k]) for k in verdict.budget)
        notes.append(
            "explain does not know today's use: a name blocked only by budgeted categories "
            "passes while the client's daily budget lasts, and is blocked once it is spent"
        )
    elif gp.budgets:
        notes.append("explain does not know today's use of the group's budgets")
    return Explanation(
        name=name,
        t=t,
        tz=policies.tz,
        client=key,
        client_kind=kind,
        mac=mac,
        client_rule=rule,
        group=gp.name,
        group_where=f"{source}:{gp.line}" if gp.line else None,
        group_how=how,
        windows=windows,
        until=_finite_or_none(state.until),
        overrides=tuple(sorted(applied, key=lambda o: (o.expires, o.id))),
        list_rules=tuple(list_rules(snap, name, blocking, state.soft_mask)),
        group_rules=tuple(group_rules),
        verdict=verdict,
        verdict_word=VERDICT_WORDS.get(verdict.verdict, str(verdict.verdict)),
        rule=rule_text(snap, verdict.rule),
        categories=category_names(snap, verdict.mask),
        budgets=budgets,
        safe_search=_safe_search(safe_search, gp, name, verdict),
        notes=tuple(notes),
    )


def _finite_or_none(t: float) -> float | None:
    return t if math.isfinite(t) else None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def suffixes(name: str) -> list[str]:
    """``a.b.c``, ``b.c``, ``c``: the name and its parents, most specific first."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def category_names(snap: Snapshot, mask: int) -> tuple[str, ...]:
    """The categories of a mask (``*`` for every category, as an allowlist without one)."""
    if mask == ALL_CATEGORIES:
        return ("*",)
    names = snap.filter.table.categories
    return tuple(c for bit, c in enumerate(names) if mask >> bit & 1)


def rule_text(snap: Snapshot, rule: int) -> str:
    """A rule id in words: a policy rule's name, or ``list FILE:LINE (category C)``."""
    if rule == RULE_NONE:
        return "no rule: the name is not listed"
    if rule < 0:
        return RULE_NAMES.get(rule, f"rule {rule}")
    ref = rule_ref(snap.rules, rule, snap.filter.table)
    if ref is None:
        return f"rule {rule}"
    where = f"{ref.list_source}:{ref.line}" if ref.line else ref.list_source
    return f"list {where} (category {ref.category})"


def list_rules(snap: Snapshot, name: str, blocked_now: int, soft: int = 0) -> list[ListRule]:
    """Every list rule on ``name`` or a parent of it, most specific first, then regex rules.

    Each listed suffix is looked up exactly (``DomainTable.find``), so a rule on a parent shows
    even where the query path's walk would stop early; what decides is ``Filter.decide``.
    """
    table = snap.filter.table
    out: list[ListRule] = []
    for suffix in suffixes(name):
        entry = table.find(suffix.encode())
        if entry < 0:
            continue
        combo = table.combo_of(entry)
        for kind in range(4):
            mask = combo[kind]
            if not mask:
                continue
            ref = rule_ref(snap.rules, entry_rule_id(entry, combo[4 + kind]), table)
            if ref is None:
                continue
            blocks = bool(mask & blocked_now) if kind in (0, 2) else None
            budgeted = bool(blocks) and not mask & blocked_now & ~soft
            out.append(
                ListRule(
                    suffix,
                    _KINDS[kind],
                    ref.list_source,
                    ref.line,
                    ref.category,
                    category_names(snap, mask),
                    blocks,
                    budgeted,
                )
            )
    regex = snap.filter.regex
    hit = regex.match(name) if regex is not None else None
    if hit is not None:
        mask, rule_id = hit
        ref = rule_ref(snap.rules, rule_id)
        if ref is not None:
            out.append(
                ListRule(
                    name,
                    "regex block",
                    ref.list_source,
                    ref.line,
                    ref.category,
                    category_names(snap, mask),
                    bool(mask & blocked_now),
                    bool(mask & blocked_now) and not mask & blocked_now & ~soft,
                )
            )
    return out


def _safe_search(
    table: SafeSearchTable | None, gp: GroupPolicy, name: str, verdict: Verdict
) -> dict[str, Any] | None:
    """What safe search does with the name for the group: every engine of the table, the
    group's level for the one with two (YouTube). A rewrite only happens to a name that passes."""
    if table is None or gp.safe_search == "off":
        return None
    engines = frozenset(e.name for e in table.engines)
    target = table.target(name, engines, gp.safe_search)
    unenforceable = table.unenforceable(engines)
    no_mechanism = next((s for s in suffixes(name) if s in unenforceable), None)
    listed = name if target is not None else no_mechanism
    engine = next((e for e in table.engines if listed in e.names), None)
    return {
        "mode": gp.safe_search,
        "target": target,
        "applies": target is not None and verdict.verdict == PASS,
        "engine": None if engine is None else engine.name,
        "where": None if engine is None else f"{table.source}:{engine.line}",
        "no_mechanism": no_mechanism,  # an engine without a DNS mechanism lists this name
    }


# --- words ---------------------------------------------------------------------------------------


def local_time(t: float, tz: ZoneInfo) -> str:
    """``Tue 2026-11-24 21:30 GMT`` (seconds only when there are some)."""
    dt = datetime.fromtimestamp(t, tz)
    return dt.strftime("%a %Y-%m-%d %H:%M:%S %Z" if dt.second else "%a %Y-%m-%d %H:%M %Z")


def duration_text(seconds: float) -> str:
    """``12 min``, ``1 h 30 min``, ``2 d 3 h``: whole minutes, rounded up (never early)."""
    minutes = max(0, math.ceil(seconds / 60 - 1e-9))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def from_now(t: float, now: float) -> str:
    """``in 12 min``, ``in under a minute``, or ``ended``."""
    left = t - now
    if left <= 0:
        return "ended"
    if left < 60:
        return "in under a minute"
    return f"in {duration_text(left)}"


def _iso(t: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def override_text(o: usage.Override) -> str:
    """``pause for group 'kids'``, ``allow youtube.com for client 192.168.1.23``."""
    what = "pause" if o.kind == "pause" else f"{o.kind} {o.domain}"
    return f"{what} for {o.target_kind} {o.target!r}"


def render(e: Explanation) -> str:
    """The text form: one heading word per line, then the answer."""
    tz = e.tz
    lines: list[str] = []
    who = f"client {e.client}" if e.client else f"group {e.group!r}"
    lines.append(f"{e.name} for {who} at {local_time(e.t, tz)} ({tz.key})")
    lines.append("")
    if e.client is not None:
        if e.mac and e.client_kind == "address":
            lines.append(f"client     {e.client}, MAC {e.mac} (neighbour table)")
        else:
            lines.append(f"client     {e.client}")
        if e.client_rule is not None:
            lines.append(f"           matched {e.client_rule}")
        else:
            lines.append("           no group lists it: the default group")
    where = e.group_where or "built in: not in the config"
    lines.append(f"group      {e.group} ({where}; {_HOW[e.group_how]})")
    if e.windows:
        for name, place, ends in e.windows:
            until = "" if ends is None else f" until {local_time(ends, tz)}"
            lines.append(f"schedule   {name} is active{until} ({place})")
    else:
        lines.append("schedule   no window of this group is active")
    if e.until is None:
        lines.append("           nothing in force changes later")
    else:
        later = duration_text(e.until - e.t)
        lines.append(
            f"           what is in force may next change at {local_time(e.until, tz)} "
            f"({later} later)"
        )
    if e.overrides:
        for o in e.overrides:
            lines.append(
                f"override   {o.id}: {override_text(o)} until {local_time(o.expires, tz)}"
                + (f", by {o.who}" if o.who else "")
            )
    else:
        lines.append("override   none applies")
    if e.list_rules:
        for r in e.list_rules:
            where = f"{r.list}:{r.line}" if r.line else r.list
            now = ""
            if r.budgeted:
                now = "; blocked for this group once its budget is spent"
            elif r.blocks_now is not None:
                now = "; blocked for this group now" if r.blocks_now else "; not blocked now"
            lines.append(
                f"list       {r.name}: {r.kind} [{', '.join(r.categories)}] "
                f"in {where} (category {r.list_category}){now}"
            )
    else:
        lines.append("list       no list names it or a parent of it")
    for kind, name in e.group_rules:
        lines.append(f"group rule {kind} {name}")
    if e.safe_search is not None:
        s = e.safe_search
        if s["target"]:
            done = "rewritten to" if s["applies"] else "not reached (no pass), else rewritten to"
            lines.append(
                f"safe search {s['mode']}: {done} {s['target']} "
                f"(engine {s['engine']}, {s['where']})"
            )
        elif s["no_mechanism"]:
            lines.append(
                f"safe search {s['mode']}: {s['no_mechanism']} belongs to an engine without a "
                f"DNS mechanism (engine {s['engine']}, {s['where']})"
            )
        else:
            lines.append(f"safe search {s['mode']}: this name is not rewritten")
    lines.append("")
    lines.append(answer_text(e))
    for note in e.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


_HOW: Final = {
    "client": "the client's group",
    "--group": "given with --group",
    "default": "the default group",
}


def answer_text(e: Explanation) -> str:
    """``answer     blocked: group block 'annoying.test'`` and friends."""
    v = e.verdict
    word = e.verdict_word.upper()
    if v.verdict in _LOCAL_DETAIL:
        word += f" ({_LOCAL_DETAIL[v.verdict]})"
    if e.budgets:
        keys = ", ".join(f"{k} ({m} min a day)" for k, m in e.budgets)
        return f"answer     {word} while the budget lasts: {keys}; then blocked by {e.rule}"
    reason = e.rule
    if v.rule < 0 and v.matched:
        reason += f" {v.matched!r}"
    if e.categories:
        reason += f"; categories {', '.join(e.categories)}"
    return f"answer     {word}: {reason}"


__all__ = [
    "Explanation",
    "ListRule",
    "answer_text",
    "category_names",
    "duration_text",
    "explain",
    "find_group",
    "from_now",
    "list_rules",
    "local_time",
    "normalise_name",
    "override_text",
    "parse_at",
    "read_neighbours",
    "render",
    "rule_text",
    "suffixes",
]
