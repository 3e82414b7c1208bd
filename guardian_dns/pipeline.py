"""The query path, end to end, in one place: read this file to know what happens to a query.

  listener (ACL, framing)            -> the client's policy context (contexts.py, memoised per
                                        address: its group, or itself when an override names
                                        it), then that context's packet cache: the same query
                                        bytes answered moments ago are answered again from a
                                        dict, before any parsing; else ``Pipeline.handle``
  1. wire.parse_query                 bounded header/question/OPT check; FORMERR/NOTIMP/BADVERS
  2. cache                            a finished answer for (question, DO, context) under the
                                      context's current generation; a budgeted one is counted
  3. class/type gate                  CHAOS and zone transfers are never forwarded
  4. decide                           filter.decide (the default group without rules of its
                                      own), else policy.decide for the context's state now:
                                      blocked / answered locally / safe-search rewrite / pass
  5. upstream (coalesced)             one upstream query per distinct question in flight
  6. answer.forwarded                 sanitise: chain only, no AA, no private addresses, TTLs
                                      (capped at the context's next change of state)
  7. CNAME inspection (decide again)  a blocked name anywhere in the chain blocks the answer
  8. cache.put, reply, counters, ring buffer; a cache hit (or a UDP block) also fills the
     packet cache

What it decides: nothing of its own; it orders the stages and turns their results into bytes.
What it must never do: log per query, allocate per-query objects on the hit path beyond the reply
bytes and one ring-buffer tuple, or let an exception escape to the listener unanswered.

Cache hits and blocked names (whose answers are cached too) are answered synchronously inside the
listener's read loop. A miss becomes a ``_Flight`` (every client asking the same question waits on
it); its first UDP attempt runs on callbacks from the upstream pool, and only the unusual cases
(failover, TCP after truncation, TLS, retries) run as a coroutine task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from guardian_dns import answer, wire
from guardian_dns.cache import (
    KIND_FORWARDED,
    KIND_NEGATIVE,
    KIND_SERVFAIL,
    AnswerCache,
    Entry,
    PacketCache,
)
from guardian_dns.contexts import Context, Contexts, budget_limits
from guardian_dns.errors import UpstreamError
from guardian_dns.filter import BLOCK, LOCAL_NODATA, LOCAL_NXDOMAIN, PASS
from guardian_dns.policy import RULE_BUDGET_SPENT, RULE_SAFE_SEARCH_REWRITE
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot
from guardian_dns.upstream import RETRY_RCODES, UpstreamPool
from guardian_dns.usage import Budgets, Overrides

log = logging.getLogger(__name__)

# Why an answer was given: the reason in the query log and the `reason` metric label.
R_RESOLVED = 0
R_CACHED = 1
R_BLOCKED = 2
R_LOCAL = 3
R_STALE = 4
R_SERVFAIL = 5
R_REFUSED = 6
R_MALFORMED = 7
R_ERROR = 8
REASONS = (
    "resolved",
    "cached",
    "blocked",
    "local",
    "stale",
    "servfail",
    "refused",
    "malformed",
    "error",
)
# Reason of a cache hit, by entry kind (forwarded, negative, servfail, blocked, local).
_HIT_REASON = (R_CACHED, R_CACHED, R_SERVFAIL, R_BLOCKED, R_LOCAL)
# Reason of a fresh answer, by entry kind.
_MISS_REASON = (R_RESOLVED, R_RESOLVED, R_SERVFAIL, R_BLOCKED, R_LOCAL)

_HDR = struct.Struct("!HHHHHH")
_STALE_RECHECK = 30.0  # RFC 8767 failure recheck timer
_LOCAL_TTL = 60
_FOREVER = float("inf")  # a packet-cache record valid until the snapshot is replaced


class Responder(Protocol):
    """Where a late (asynchronous) answer goes: the UDP listener or one TCP connection."""

    udp: bool

    def send(self, resp: bytes, addr: object) -> None: ...


class Pipeline:
    """Runs queries against the current snapshot. Survives reloads; the snapshot is swapped."""

    def __init__(
        self,
        snap: Snapshot,
        upstream: UpstreamPool,
        qlog: QueryLog,
        *,
        overrides: Overrides | None = None,
        budgets: Budgets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Kept, not looked up: CPython 3.11's get_running_loop() costs a getpid() syscall.
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.cache = AnswerCache(snap.config.cache.size)
        self.qlog = qlog
        self.counts = [0] * len(REASONS)
        self.blocked_by_category = [0] * 80  # 64 list categories at most, then "policy"
        # Generations of every context of every snapshot come from this one counter, so an
        # entry's generation says both which context state and which snapshot it was made under.
        self.gens = itertools.count(1)
        self.revalidate_from = 0
        self.clock = clock  # wall time (Unix), for schedules and budgets; injectable for tests
        self.wall_offset = clock() - self.loop.time()
        self.overrides = overrides if overrides is not None else Overrides()
        self.budgets = budgets if budgets is not None else Budgets(snap.policies.tz, {})
        self.neighbours: dict[str, str] = {}
        self.gates: list[Any] = []  # listener.Gate memos of ip -> context, reset on swap
        self.malformed: dict[str, int] = {}
        self.inflight: dict[bytes, _Flight] = {}
        self.coalesced = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.swap(snap, upstream)

    def swap(self, snap: Snapshot, upstream: UpstreamPool) -> None:
        """Put a new snapshot in force. Cached decisions of older generations become misses."""
        old = getattr(self, "snap", None)
        # A forwarded answer cached under the old generation may be kept (after its name and
        # CNAME chain pass the new filter) only if nothing else that shaped it changed.
        self.revalidate = (
            old is not None
            and old.answer_policy == snap.answer_policy
            and old.cname_inspection == snap.cname_inspection
            and old.upstreams == snap.upstreams
        )
        self.snap = snap
        self.upstream = upstream
        gen = next(self.gens)
        if not self.revalidate:
            self.revalidate_from = gen
        self.budgets.set_limits(budget_limits(snap))
        self.contexts = Contexts(
            snap, self.budgets, self.overrides, self.gens, self.wall(), self.neighbours
        )
        self.main = self.contexts.default
        for gate in self.gates:
            gate.reset()
        self.udp_max = snap.config.server.udp_max_size
        cc = snap.config.cache
        self.serve_stale = cc.serve_stale
        self.stale_ttl = cc.stale_answer_ttl
        self.stale_wait = cc.stale_client_timeout
        if self.cache.size != cc.size:
            self.cache.size = cc.size

    def set_neighbours(self, neighbours: Any) -> None:
        """A new IP -> MAC mapping: clients are matched to groups again."""
        self.neighbours = neighbours
        self.contexts.neighbours = neighbours
        for gate in self.gates:
            gate.reset()

    def set_overrides(self, overrides: Overrides) -> None:
        """New temporary allows and pauses (the CLI wrote them): states and memos are redone."""
        self.overrides = overrides
        self.contexts.overrides = overrides
        self.contexts.overrides_changed(self.wall())
        for gate in self.gates:
            gate.reset()

    @property
    def packets(self) -> PacketCache:
        """The packet cache of the default group's context."""
        return self.main.packets

    def wall(self) -> float:
        """Wall-clock (Unix) time now, as schedules and budgets count it."""
        return self.loop.time() + self.wall_offset

    def tick(self) -> bool:
        """Once a second and at each context's change: re-sync the wall clock (it may be stepped
        by NTP; the loop's clock is monotonic) and install states that are due. True if any
        context changed."""
        self.wall_offset = self.clock() - self.loop.time()
        wall = self.wall()
        if wall < self.contexts.next_change:
            return False
        return self.contexts.refresh(wall)

    # -- the hot path ----------------------------------------------------------------------------
    def handle(
        self,
        data: bytes,
        client: str,
        now: float,
        out: Responder,
        addr: object,
        ctx: Context | None = None,
    ) -> bytes | None:
        """Answer now (bytes) or later through ``out.send`` (None). Never raises on bad input.

        ``ctx`` is the client's policy context (the listener's memo); None: the default group's.
        """
        try:
            q = wire.parse_query(data)
        except wire.WireError as exc:
            self.counts[R_MALFORMED] += 1
            self.malformed[exc.reason] = self.malformed.get(exc.reason, 0) + 1
            return wire.error_reply(data, exc.rcode, exc.qend, exc.qend > 0, exc.do)
        if ctx is None:
            ctx = self.main
        key = q[7] + ctx.tag
        entry = self.cache.get(key)
        if entry is not None and entry.gen == ctx.gen and now < entry.expires:
            if entry.budget:
                if self.contexts.over_budget(ctx, client, entry.budget, now + self.wall_offset):
                    return self._budget_block(data, q, client, now, out, ctx)
                self.counts[R_CACHED] += 1
                self.qlog.append((now, client, data, R_CACHED, entry.rule))
                return self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
            reason = _HIT_REASON[entry.kind]
            self.counts[reason] += 1
            if reason == R_BLOCKED:
                self.blocked_by_category[entry.category] += 1
            self.qlog.append((now, client, data, reason, entry.rule))
            resp = self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
            if out.udp:
                # Asked twice: from now on the listener answers it from the packet cache, for
                # as long as the TTLs in these bytes stay right (the entry's age in seconds).
                until = entry.expires
                if entry.ttls:
                    until = min(until, entry.stored + entry.memo_age + 1)
                category = entry.category if reason == R_BLOCKED else -1
                ctx.packets.put(data, (until, resp[2:], reason, entry.rule, category))
            return resp
        return self._miss(data, q, key, entry, client, now, out, addr, ctx)

    def _reply(
        self, data: bytes, q: wire.Query, entry: Entry, body: bytes, opt: bytes, udp: bool
    ) -> bytes:
        rflags = entry.rflags
        if rflags & wire.F_AD and not (q[1] & wire.F_AD or q[6]):
            rflags &= ~wire.F_AD  # RFC 6840 5.8: AD only for clients that asked for it
        flags = 0x8080 | (q[1] & 0x0110) | rflags  # QR RA, RD and CD copied
        edns = q[5]
        if edns >= 0:
            resp = (
                _HDR.pack(q[0], flags, 1, entry.ancount, entry.nscount, 1)
                + data[12 : q[2]]
                + body
                + opt
            )
            limit = edns if edns < self.udp_max else self.udp_max
        else:
            resp = (
                _HDR.pack(q[0], flags, 1, entry.ancount, entry.nscount, 0) + data[12 : q[2]] + body
            )
            opt = b""
            limit = 512
        if (udp and len(resp) > limit) or len(resp) > 65535:
            return wire.truncated_reply(data, q, flags, opt)
        return resp

    # -- misses ----------------------------------------------------------------------------------
    def _miss(
        self,
        data: bytes,
        q: wire.Query,
        key: bytes,
        entry: Entry | None,
        client: str,
        now: float,
        out: Responder,
        addr: object,
        ctx: Context,
    ) -> bytes | None:
        snap = self.snap
        qtype = q[3]
        if q[4] != wire.C_IN or qtype in (wire.T_AXFR, wire.T_IXFR):
            # CHAOS (version.bind, id.server) and zone transfers: never forwarded, never cached.
            self.counts[R_REFUSED] += 1
            self.qlog.append((now, client, data, R_REFUSED, -1))
            return wire.error_reply(data, wire.REFUSED, q[2], q[5] >= 0, q[6])
        name = wire.qname_text(data, q[8])
        budget: tuple[str, ...] = ()
        if ctx.simple:
            verdict, rule, mask = snap.filter.decide(name)
        else:
            verdict, rule, mask, budget = ctx.decide(name)
            if budget and self.contexts.over_budget(ctx, client, budget, now + self.wall_offset):
                return self._budget_block(data, q, client, now, out, ctx)
        gen = ctx.gen
        new: Entry | None = None
        if verdict == BLOCK:
            cat = snap.block_category(mask)
            if out.udp:
                # Straight into the packet cache: no Entry, no LRU bookkeeping, and the answer
                # cache keeps its room for forwarded answers.
                tmpl = snap.blocks.template(cat, qtype, q[6])
                self.counts[R_BLOCKED] += 1
                self.blocked_by_category[cat] += 1
                self.qlog.append((now, client, data, R_BLOCKED, rule))
                resp = self._reply(data, q, tmpl, tmpl.body, tmpl.opt, True)
                ctx.packets.put(data, (_FOREVER, resp[2:], R_BLOCKED, rule, cat))
                return resp
            new = snap.blocks.entry(cat, qtype, q[6], now, gen, rule)
        elif verdict == LOCAL_NXDOMAIN:
            new = answer.local_entry(wire.NXDOMAIN, q[6], now, gen, _LOCAL_TTL)
        elif verdict == LOCAL_NODATA:
            new = answer.local_entry(wire.NOERROR, q[6], now, gen, _LOCAL_TTL)
        elif qtype == wire.T_ANY:
            new = answer.any_entry(q[6], now, gen, _LOCAL_TTL)
        elif ctx.rewrites and name in ctx.rewrites:
            return self._rewrite(data, q, key, ctx.rewrites[name], client, now, out, addr, ctx)
        elif (
            entry is not None
            and entry.kind <= KIND_NEGATIVE
            and now < entry.expires
            and entry.gen >= self.revalidate_from
            and self._chain_passes(entry.chain, ctx)
        ):
            # Cached under an older generation (of the lists, or of this context's schedule
            # state) and still allowed under the new one: keep it rather than asking upstream
            # again, so a reload or a window change does not flush the cache.
            kept = self._capped(entry, ctx, now)
            kept.gen = gen
            kept.budget = budget
            if kept is not entry:
                self.cache.put(key, kept)
                entry = kept
            self.counts[R_CACHED] += 1
            self.qlog.append((now, client, data, R_CACHED, entry.rule))
            return self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
        if new is not None:
            self.cache.put(key, new)
            reason = _MISS_REASON[new.kind]
            self.counts[reason] += 1
            if reason == R_BLOCKED:
                self.blocked_by_category[new.category] += 1
            self.qlog.append((now, client, data, reason, new.rule))
            return self._reply(data, q, new, new.body, new.opt, out.udp)
        # Forward. An expired answer may still serve as the stale fallback (RFC 8767).
        stale = None
        if (
            entry is not None
            and self.serve_stale
            and entry.kind in (KIND_FORWARDED, KIND_NEGATIVE)
            and now < entry.stale_until
        ):
            stale = entry
            if now < entry.recheck_at:
                # The upstream failed for this name moments ago: answer stale without waiting.
                return self._stale_reply(data, q, entry, client, now, out.udp)
        waiter = (data, q, client, out, addr, False)
        flight = self.inflight.get(key)
        if flight is not None:
            flight.waiters.append(waiter)  # RFC 5452 5: one upstream query per question
            self.coalesced += 1
            return None
        flight = _Flight(self, data[12 : q[2]], q, key, name, stale, now, ctx, budget)
        flight.waiters.append(waiter)
        self._launch(flight)
        return None

    def _launch(self, flight: _Flight) -> None:
        self.inflight[flight.key] = flight
        q = flight.q
        if flight.stale is not None:
            # RFC 8767 client response timer: answer stale if the upstream is slow.
            flight.timer = self.loop.call_later(self.stale_wait, self._stale_timer, flight)
        flight.server = self.upstream.try_udp(flight.question, q[6], bool(q[1] & wire.F_CD), flight)
        if flight.server is None:
            self._slow(flight)

    def _rewrite(
        self,
        data: bytes,
        q: wire.Query,
        key: bytes,
        target: str,
        client: str,
        now: float,
        out: Responder,
        addr: object,
        ctx: Context,
    ) -> bytes | None:
        """Safe search: answer ``CNAME target`` and the target's records, resolved upstream."""
        question = wire.encode_name(target) + data[q[2] - 4 : q[2]]
        tkey = question.lower() + (b"\x01" if q[6] else b"") + ctx.tag
        found = self.cache.get(tkey)
        if (
            found is not None
            and found.gen == ctx.gen
            and now < found.expires
            and found.kind <= KIND_NEGATIVE
        ):
            new = self._rewritten(found, question, now, ctx)
            self.cache.put(key, new)
            self.counts[R_RESOLVED] += 1
            self.qlog.append((now, client, data, R_RESOLVED, new.rule))
            return self._reply(data, q, new, new.body, new.opt, out.udp)
        waiter = (data, q, client, out, addr, True)
        flight = self.inflight.get(tkey)
        if flight is not None:
            flight.waiters.append(waiter)
            self.coalesced += 1
            return None
        tq: wire.Query = (0, q[1], 0, q[3], q[4], q[5], q[6], tkey, 0)
        flight = _Flight(self, question, tq, tkey, target, None, now, ctx, ())
        flight.waiters.append(waiter)
        self._launch(flight)
        return None

    def _rewritten(self, target: Entry, question: bytes, now: float, ctx: Context) -> Entry:
        new = answer.rewritten(target, question[:-4], now, ctx.gen, RULE_SAFE_SEARCH_REWRITE)
        return self._capped(new, ctx, now)

    def _capped(self, entry: Entry, ctx: Context, now: float) -> Entry:
        """Cap TTLs so an answer a client caches does not outlive the context's state."""
        until = ctx.until
        if until == math.inf or not entry.ttls:
            return entry
        return answer.capped(entry, max(int(until - self.wall_offset - now) + 1, 1))

    def _budget_block(
        self, data: bytes, q: wire.Query, client: str, now: float, out: Responder, ctx: Context
    ) -> bytes:
        """A budgeted name after the client's budget is spent: blocked, for this client only,
        so neither cache keeps the answer."""
        cat = self.snap.block_category(0)
        tmpl = self.snap.blocks.template(cat, q[3], q[6])
        self.counts[R_BLOCKED] += 1
        self.blocked_by_category[cat] += 1
        self.qlog.append((now, client, data, R_BLOCKED, RULE_BUDGET_SPENT))
        return self._reply(data, q, tmpl, tmpl.body, tmpl.opt, out.udp)

    def _verdict(self, ctx: Context, name: str) -> tuple[int, int, int]:
        if ctx.simple:
            return self.snap.filter.decide(name)
        verdict, rule, mask, _budget = ctx.decide(name)
        return verdict, rule, mask

    def _chain_passes(self, chain: tuple[str, ...], ctx: Context) -> bool:
        return all(self._verdict(ctx, target)[0] == PASS for target in chain)

    def _stale_reply(
        self, data: bytes, q: wire.Query, entry: Entry, client: str, now: float, udp: bool
    ) -> bytes:
        self.counts[R_STALE] += 1
        self.qlog.append((now, client, data, R_STALE, -1))
        opt = wire.opt_record(q[6], 0, wire.EDE_STALE)
        return self._reply(data, q, entry, entry.stale_body(self.stale_ttl), opt, udp)

    def _slow(self, flight: _Flight, **retry: Any) -> None:
        """The general path (failover, TCP, TLS, retries) as a task; rare, so a coroutine."""
        task = self.loop.create_task(self._resolve(flight, retry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resolve(self, flight: _Flight, retry: dict[str, Any]) -> None:
        q = flight.q
        try:
            reply = await self.upstream.query(
                flight.question, q[6], bool(q[1] & wire.F_CD), started=flight.started, **retry
            )
        except UpstreamError as exc:
            log.debug("upstream failure: %s", exc)
            self._failed(flight)
        except Exception:
            self.counts[R_ERROR] += 1
            log.exception("internal error resolving %r", flight.question)
            self._failed(flight)
        else:
            self.complete(flight, reply)

    def complete(self, flight: _Flight, reply: wire.Reply) -> None:
        """A usable upstream reply: sanitise, inspect the CNAME chain, cache, answer everyone."""
        try:
            now = self.loop.time()
            snap, q = flight.snap, flight.q
            do = q[6]
            ad_wanted = bool(q[1] & wire.F_AD) or do
            entry, chain = answer.forwarded(
                reply, q[3], do, ad_wanted, snap.answer_policy, now, flight.gen, flight.name
            )
            if snap.cname_inspection and len(chain) > 1:
                entry.chain = tuple(chain[1:])
                for target in chain[1:]:
                    verdict, rule, mask = self._verdict(flight.ctx, target)
                    if verdict == BLOCK:
                        cat = snap.block_category(mask)
                        entry = snap.blocks.entry(cat, q[3], do, now, flight.gen, rule)
                        break
            if entry.kind <= KIND_NEGATIVE:
                entry = self._capped(entry, flight.ctx, now)
                entry.budget = flight.budget
            key = flight.key
            if entry.expires > now or entry.kind == KIND_SERVFAIL:
                self.cache.put(key, entry)
            elif flight.stale is not None:
                self.cache.pop(key)
        except Exception:
            self.counts[R_ERROR] += 1
            log.exception("internal error answering %r", flight.question)
            self._failed(flight)
            return
        self._finish(flight, entry, False)

    def _failed(self, flight: _Flight) -> None:
        """No usable answer in the budget: stale if we have it (RFC 8767), else SERVFAIL."""
        now = self.loop.time()
        stale = flight.stale
        if stale is not None and now < stale.stale_until:
            stale.recheck_at = now + _STALE_RECHECK
            self._finish(flight, stale, True)
            return
        entry = answer.servfail_entry(now, flight.q[6], flight.snap.answer_policy, flight.gen)
        self.cache.put(flight.key, entry)
        self._finish(flight, entry, False)

    def _stale_timer(self, flight: _Flight) -> None:
        flight.timer = None
        stale = flight.stale
        if stale is None or not flight.waiters:
            return
        waiters, flight.waiters = flight.waiters, []
        self._answer(flight, waiters, stale, True)

    def _finish(self, flight: _Flight, entry: Entry, is_stale: bool) -> None:
        if self.inflight.get(flight.key) is flight:
            del self.inflight[flight.key]
        if flight.timer is not None:
            flight.timer.cancel()
        waiters, flight.waiters = flight.waiters, []
        self._answer(flight, waiters, entry, is_stale)

    def _answer(
        self, flight: _Flight, waiters: list[_Waiting], entry: Entry, is_stale: bool
    ) -> None:
        now = self.loop.time()
        for data, q, client, out, addr, rewrite in waiters:
            try:
                if is_stale:
                    resp = self._stale_reply(data, q, entry, client, now, out.udp)
                elif rewrite and entry.kind <= KIND_NEGATIVE:
                    new = self._rewritten(entry, flight.question, now, flight.ctx)
                    self.cache.put(q[7] + flight.ctx.tag, new)
                    self.counts[R_RESOLVED] += 1
                    self.qlog.append((now, client, data, R_RESOLVED, new.rule))
                    resp = self._reply(data, q, new, new.body, new.opt, out.udp)
                else:
                    reason = _MISS_REASON[entry.kind]
                    self.counts[reason] += 1
                    if reason == R_BLOCKED:
                        self.blocked_by_category[entry.category] += 1
                    self.qlog.append((now, client, data, reason, entry.rule))
                    resp = self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
            except Exception:
                self.counts[R_ERROR] += 1
                log.exception("internal error answering a query from %s", client)
                resp = wire.error_reply(data, wire.SERVFAIL)
            out.send(resp, addr)


# One client waiting for a forwarded answer: (query bytes, parsed query, client, where, address,
# whether it asked for a name that safe search rewrites to the flight's question).
_Waiting = tuple[bytes, wire.Query, str, Responder, object, bool]


class _Flight:
    """One distinct question on its way upstream, and every client waiting for it.

    It is the fast path's waiter (``deliver``/``fail`` are called by the upstream pool from the
    socket callback), so the common forwarded query costs no task, future or timer of its own.
    """

    __slots__ = (
        "budget",
        "ctx",
        "gen",
        "key",
        "name",
        "pipeline",
        "q",
        "question",
        "server",
        "snap",
        "stale",
        "started",
        "timer",
        "waiters",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        question: bytes,
        q: wire.Query,
        key: bytes,
        name: str,
        stale: Entry | None,
        now: float,
        ctx: Context,
        budget: tuple[str, ...],
    ) -> None:
        self.pipeline = pipeline
        self.name = name
        self.question = question
        self.q = q
        self.key = key  # the question's cache key in its context
        self.ctx = ctx
        self.budget = budget
        self.stale = stale
        self.started = now
        self.snap = pipeline.snap
        self.gen = ctx.gen
        self.waiters: list[_Waiting] = []
        self.timer: asyncio.TimerHandle | None = None
        self.server: Any = None

    def deliver(self, reply: wire.Reply) -> None:
        pipe = self.pipeline
        if reply.flags & wire.F_TC:
            # RFC 7766: a truncated answer is retried over TCP, never cached.
            pipe._slow(self, after=self.server, tcp_first=True)
        elif reply.rcode in RETRY_RCODES:
            pipe.upstream.stats.error("rcode")
            pipe._slow(self, after=self.server, bad_answer=True)
        else:
            pipe.upstream.stats.observe(pipe.loop.time() - self.started)
            pipe.complete(self, reply)

    def fail(self, exc: BaseException) -> None:
        bad = isinstance(exc, wire.WireError)
        if bad:
            self.pipeline.upstream.stats.error("malformed")
        self.pipeline._slow(self, after=self.server, bad_answer=bad)
