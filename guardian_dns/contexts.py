"""Who is asking, and what is in force for them now: the policy stage of the query path at run time.

What it decides: the ``Context`` a client's query is answered in (its group, or the client alone
when an override names it), what is in force in that context now (``policy.GroupPolicy.state``)
and until when, and whether a budgeted query from a client is still within its budget.
What it reads: the snapshot's groups and client matcher, the neighbour table's IP -> MAC mapping,
the temporary overrides, the budget tallies and the wall clock it is given.
What it must never do: decide a name differently from ``explain`` (both call ``policy.decide``),
or let a decision outlive the state it was made under: every ``Context`` carries a generation,
and the caches only answer from entries and packets made under the context's current one.

Why contexts: answers depend on the group, so the caches must be keyed on it. A context is one
cache key suffix (``tag``), one packet cache and one generation. There is one per group, plus one
per client with an override of its own (a paused tablet). The listener memoises ip -> context,
so the hot path pays one dict look-up for all of this. When a window opens or closes, an override
ends or the day ends, ``refresh`` installs the next state: if it differs, the context gets a new
generation and an empty packet cache, so nothing decided before outlives it; forwarded answers
are kept when they pass under the new state (the pipeline re-decides them, as after a reload).

The default group with no rules of its own (the only group when ``policy`` is not configured) is
``simple``: the pipeline then calls ``Filter.decide`` directly, exactly as without policies.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from guardian_dns.cache import PacketCache
from guardian_dns.clients import client_key
from guardian_dns.policy import GroupPolicy, State, decide
from guardian_dns.snapshot import Snapshot
from guardian_dns.usage import Budgets, Overrides, day_bounds

log = logging.getLogger(__name__)

_MAX_CLIENT_CONTEXTS: Final = 4096
_CLIENT_PACKETS: Final = 1000


class Context:
    """One group (or one client with its own overrides) and what is in force for it now."""

    __slots__ = (
        "gen",
        "identity",
        "list_decide",
        "packets",
        "policy",
        "rewrites",
        "simple",
        "state",
        "tag",
        "until",
    )

    def __init__(
        self,
        policy: GroupPolicy,
        identity: str | None,
        tag: bytes,
        packet_size: int,
        list_decide: Callable[[str, int], tuple[int, int, int]],
        rewrites: dict[str, str],
    ) -> None:
        self.policy = policy
        self.identity = identity  # the client an override names, or None for a group
        self.tag = tag  # appended to answer-cache and flight keys
        self.packets = PacketCache(packet_size)
        self.list_decide = list_decide
        self.rewrites = rewrites  # safe search: name -> enforcement name
        self.gen = 0
        self.state: State | None = None
        self.until = math.inf  # wall time of the next possible change
        self.simple = False

    def install(self, state: State, gen: int, plain_mask: int) -> bool:
        """Put ``state`` in force; True (and a new generation) when decisions may differ."""
        old = self.state
        self.until = state.until
        if old is not None and _same(old, state):
            self.state = state
            return False
        self.state = state
        self.gen = gen
        self.packets.clear()
        p = self.policy
        self.simple = (
            p.filtering
            and not p.own_names
            and not p.category_blocks
            and not p.windows
            and not p.budgets
            and not self.rewrites
            and not p.safe_search_blocks
            and not state.paused
            and not state.temp_allow
            and not state.temp_block
            and not state.block_all
            and state.mask == plain_mask
        )
        return True

    def decide(self, name: str) -> tuple[int, int, int, tuple[str, ...]]:
        """(verdict, rule, mask, budget keys) for ``name`` here and now (policy.decide)."""
        state = self.state
        assert state is not None
        v = decide(self.policy, state, name, self.list_decide)
        return v.verdict, v.rule, v.mask, v.budget


def _same(a: State, b: State) -> bool:
    return (
        a.mask == b.mask
        and a.soft_mask == b.soft_mask
        and a.block_all == b.block_all
        and a.except_names == b.except_names
        and a.paused == b.paused
        and a.temp_allow == b.temp_allow
        and a.temp_block == b.temp_block
    )


class Contexts:
    """Every context of one snapshot, and the run-time state they are computed from.

    Budgets and overrides outlive snapshots (the server hands them over on reload); contexts are
    rebuilt for each snapshot. ``next_gen`` is the pipeline's generation counter, so generations
    of every context and snapshot are distinct and increasing.
    """

    def __init__(
        self,
        snap: Snapshot,
        budgets: Budgets,
        overrides: Overrides,
        next_gen: Iterator[int],
        wall: float,
        neighbours: Mapping[str, str] | None = None,
    ) -> None:
        self.snap = snap
        self.budgets = budgets
        self.overrides = overrides
        self.next_gen = next_gen
        self.neighbours: Mapping[str, str] = neighbours or {}
        self.policies = snap.policies
        self.plain_mask = snap.filter.policy_mask
        self.packet_size = snap.config.cache.size
        table = snap.safe_search
        self._rewrites: dict[str, dict[str, str]] = {}
        for g in self.policies.groups:
            if g.safe_search != "off" and table is not None:
                engines = [e.name for e in table.engines]
                self._rewrites[g.name] = table.rewrites(engines, g.safe_search)
        self.groups: dict[str, Context] = {}
        for i, g in enumerate(self.policies.groups):
            tag = b"" if g is self.policies.default else bytes((0, i + 1))
            self.groups[g.name] = self._new(g, None, tag)
        self.clients: dict[tuple[str, str], Context] = {}
        self.next_change = math.inf
        self.refresh(wall, force=True)

    def _new(self, g: GroupPolicy, identity: str | None, tag: bytes) -> Context:
        return Context(
            g,
            identity,
            tag,
            # One device's replies: a small packet cache, so a thousand paused tablets cannot
            # hold a thousand group-sized ones.
            self.packet_size if identity is None else min(self.packet_size, _CLIENT_PACKETS),
            self.snap.filter.decide,
            self._rewrites.get(g.name, {}),
        )

    @property
    def default(self) -> Context:
        return self.groups[self.policies.default.name]

    def all(self) -> list[Context]:
        return [*self.groups.values(), *self.clients.values()]

    # -- who is asking --------------------------------------------------------------------------
    def identity(self, ip: str) -> str:
        """What budgets and client overrides are kept under: the MAC if known, else the address."""
        try:
            key = client_key(ip)
        except ValueError:
            return ip
        return self.neighbours.get(key, key)

    def for_client(self, ip: str, mac: str | None = None) -> Context:
        """The context of client ``ip`` (the listener memoises this per address); ``mac``: the
        device's MAC as a trusted forwarder named it (edns_client.py), instead of the table's."""
        neighbours = self.neighbours
        if mac is not None:
            with contextlib.suppress(ValueError):
                neighbours = {client_key(ip): mac}
        try:
            group = self.snap.clients.group_of(ip, neighbours)
        except ValueError:
            group = None
        g = self.groups.get(group) if group is not None else None
        if g is None:
            g = self.default
        if not self.overrides.has_client_overrides():
            return g
        try:
            key = client_key(ip)
        except ValueError:
            return g
        for ident in (neighbours.get(key), key):
            if ident is not None and self.overrides.names_client(ident):
                return self._client_context(g, ident)
        return g

    def _client_context(self, g: Context, ident: str) -> Context:
        ctx = self.clients.get((g.policy.name, ident))
        if ctx is None:
            if len(self.clients) >= _MAX_CLIENT_CONTEXTS:
                return g
            n = len(self.clients) + 1
            tag = bytes((1,)) + n.to_bytes(4, "big")
            ctx = self._new(g.policy, ident, tag)
            self.clients[(g.policy.name, ident)] = ctx
            self._install(ctx, self._wall, True)
        return ctx

    # -- what is in force -----------------------------------------------------------------------
    def refresh(self, wall: float, *, force: bool = False) -> bool:
        """Install the state in force at ``wall`` where it may have changed; True if any did."""
        self._wall = wall
        changed = False
        soonest = math.inf
        for ctx in self.all():
            if force or ctx.until <= wall:
                changed |= self._install(ctx, wall, force)
            soonest = min(soonest, ctx.until)
        self.next_change = soonest
        return changed

    def _install(self, ctx: Context, wall: float, force: bool) -> bool:
        g = ctx.policy
        matching = self.overrides.matching(g.name, ctx.identity or "", wall)
        paused = any(o.kind == "pause" for o in matching)
        allows = [o.domain for o in matching if o.kind == "allow" and o.domain]
        blocks = [o.domain for o in matching if o.kind == "block" and o.domain]
        ends = min((o.expires for o in matching), default=math.inf)
        # An override that starts later (none do today) or ends: the next expiry bounds the state.
        ends = min(ends, self.overrides.next_expiry(wall))
        day_end = day_bounds(self.policies.tz, wall)[1] if g.budgets else math.inf
        state = g.state(
            wall,
            paused=paused,
            temp_allow=allows,
            temp_block=blocks,
            overrides_until=ends,
            day_end=day_end,
        )
        changed = ctx.install(state, next(self.next_gen), self.plain_mask)
        if changed and not force:
            log.info(
                "policy: %s now %s (until %s)",
                f"client {ctx.identity} in {g.name}" if ctx.identity else f"group {g.name}",
                describe(state),
                "further notice" if state.until == math.inf else f"{state.until:.0f}",
            )
        return changed

    def overrides_changed(self, wall: float) -> None:
        """New overrides: client contexts are rebuilt on demand, group states re-installed."""
        self.clients = {}
        self.refresh(wall, force=True)

    # -- budgets ------------------------------------------------------------------------------
    def over_budget(self, ctx: Context, ip: str, keys: tuple[str, ...], wall: float) -> bool:
        """Count a query for ``keys`` from ``ip``; True when every key's budget is spent."""
        ident = ctx.identity or self.identity(ip)
        group = ctx.policy.name
        refused = True
        for key in keys:
            if not self.budgets.record(ident, group, key, wall):
                refused = False
        return refused


def describe(state: State) -> str:
    """A short text of a state, for the log and status."""
    parts = []
    if state.paused:
        parts.append("paused")
    if state.windows:
        parts.append("windows " + ", ".join(state.windows))
    if state.block_all:
        parts.append("everything blocked but exceptions")
    if state.temp_allow:
        parts.append("temporary allows " + ", ".join(sorted(state.temp_allow)))
    if state.temp_block:
        parts.append("temporary blocks " + ", ".join(sorted(state.temp_block)))
    return "; ".join(parts) or "base rules"


def budget_limits(snap: Snapshot) -> dict[tuple[str, str], int]:
    """(group, key) -> minutes a day, for ``usage.Budgets``."""
    return {(g.name, key): minutes for g in snap.policies.groups for key, _m, minutes in g.budgets}


__all__ = ["Context", "Contexts", "budget_limits", "describe"]
