"""The query path, end to end, in one place: read this file to know what happens to a query.

  listener (ACL, framing)            -> the packet cache (cache.PacketCache): the same query
                                        bytes answered moments ago are answered again from a
                                        dict, before any parsing; else ``Pipeline.handle``
  1. wire.parse_query                 bounded header/question/OPT check; FORMERR/NOTIMP/BADVERS
  2. cache                            a finished answer for (question, DO) under this snapshot
  3. class/type gate                  CHAOS and zone transfers are never forwarded
  4. filter.decide                    blocked / answered locally / pass, with the matching rule
  5. upstream (coalesced)             one upstream query per distinct question in flight
  6. answer.forwarded                 sanitise: chain only, no AA, no private addresses, TTLs
  7. CNAME inspection (filter again)  a blocked name anywhere in the chain blocks the answer
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
import logging
import struct
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
from guardian_dns.errors import UpstreamError
from guardian_dns.filter import BLOCK, LOCAL_NODATA, LOCAL_NXDOMAIN, PASS
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot
from guardian_dns.upstream import RETRY_RCODES, UpstreamPool

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

    def __init__(self, snap: Snapshot, upstream: UpstreamPool, qlog: QueryLog) -> None:
        # Kept, not looked up: CPython 3.11's get_running_loop() costs a getpid() syscall.
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.cache = AnswerCache(snap.config.cache.size)
        self.packets = PacketCache(snap.config.cache.size)
        self.qlog = qlog
        self.counts = [0] * len(REASONS)
        self.blocked_by_category = [0] * 64
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
        self.gen = snap.gen
        self.upstream = upstream
        self.udp_max = snap.config.server.udp_max_size
        cc = snap.config.cache
        self.serve_stale = cc.serve_stale
        self.stale_ttl = cc.stale_answer_ttl
        self.stale_wait = cc.stale_client_timeout
        if self.cache.size != cc.size:
            self.cache.size = cc.size
        self.packets.size = cc.size
        self.packets.clear()

    # -- the hot path ----------------------------------------------------------------------------
    def handle(
        self, data: bytes, client: str, now: float, out: Responder, addr: object
    ) -> bytes | None:
        """Answer now (bytes) or later through ``out.send`` (None). Never raises on bad input."""
        try:
            q = wire.parse_query(data)
        except wire.WireError as exc:
            self.counts[R_MALFORMED] += 1
            self.malformed[exc.reason] = self.malformed.get(exc.reason, 0) + 1
            return wire.error_reply(data, exc.rcode, exc.qend, exc.qend > 0, exc.do)
        entry = self.cache.get(q[7])
        if entry is not None and entry.gen == self.gen and now < entry.expires:
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
                self.packets.put(data, (until, resp[2:], reason, entry.rule, category))
            return resp
        return self._miss(data, q, entry, client, now, out, addr)

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
        entry: Entry | None,
        client: str,
        now: float,
        out: Responder,
        addr: object,
    ) -> bytes | None:
        snap = self.snap
        qtype = q[3]
        if q[4] != wire.C_IN or qtype in (wire.T_AXFR, wire.T_IXFR):
            # CHAOS (version.bind, id.server) and zone transfers: never forwarded, never cached.
            self.counts[R_REFUSED] += 1
            self.qlog.append((now, client, data, R_REFUSED, -1))
            return wire.error_reply(data, wire.REFUSED, q[2], q[5] >= 0, q[6])
        name = wire.qname_text(data, q[8])
        verdict, rule, mask = snap.filter.decide(name)
        new: Entry | None = None
        if verdict == BLOCK:
            if out.udp:
                # Straight into the packet cache: no Entry, no LRU bookkeeping, and the answer
                # cache keeps its room for forwarded answers.
                cat = snap.filter.category_index(mask)
                tmpl = snap.blocks.template(cat, qtype, q[6])
                self.counts[R_BLOCKED] += 1
                self.blocked_by_category[cat] += 1
                self.qlog.append((now, client, data, R_BLOCKED, rule))
                resp = self._reply(data, q, tmpl, tmpl.body, tmpl.opt, True)
                self.packets.put(data, (_FOREVER, resp[2:], R_BLOCKED, rule, cat))
                return resp
            new = self._blocked(mask, rule, qtype, q[6], now)
        elif verdict == LOCAL_NXDOMAIN:
            new = answer.local_entry(wire.NXDOMAIN, q[6], now, self.gen, _LOCAL_TTL)
        elif verdict == LOCAL_NODATA:
            new = answer.local_entry(wire.NOERROR, q[6], now, self.gen, _LOCAL_TTL)
        elif qtype == wire.T_ANY:
            new = answer.any_entry(q[6], now, self.gen, _LOCAL_TTL)
        elif (
            entry is not None
            and entry.kind <= KIND_NEGATIVE
            and now < entry.expires
            and self.revalidate
            and self._chain_passes(entry.chain)
        ):
            # Cached under an older generation of the lists and still allowed under the new one:
            # keep it rather than asking upstream again, so a reload does not flush the cache.
            entry.gen = self.gen
            self.counts[R_CACHED] += 1
            self.qlog.append((now, client, data, R_CACHED, entry.rule))
            return self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
        if new is not None:
            self.cache.put(q[7], new)
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
        waiter = (data, q, client, out, addr)
        flight = self.inflight.get(q[7])
        if flight is not None:
            flight.waiters.append(waiter)  # RFC 5452 5: one upstream query per question
            self.coalesced += 1
            return None
        flight = _Flight(self, data[12 : q[2]], q, name, stale, now)
        flight.waiters.append(waiter)
        self.inflight[q[7]] = flight
        loop = self.loop
        if stale is not None:
            # RFC 8767 client response timer: answer stale if the upstream is slow.
            flight.timer = loop.call_later(self.stale_wait, self._stale_timer, flight)
        flight.server = self.upstream.try_udp(flight.question, q[6], bool(q[1] & wire.F_CD), flight)
        if flight.server is None:
            self._slow(flight)
        return None

    def _chain_passes(self, chain: tuple[str, ...]) -> bool:
        decide = self.snap.filter.decide
        return all(decide(target)[0] == PASS for target in chain)

    def _blocked(self, mask: int, rule: int, qtype: int, do: bool, now: float) -> Entry:
        snap = self.snap
        return snap.blocks.entry(snap.filter.category_index(mask), qtype, do, now, self.gen, rule)

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
                    verdict, rule, mask = snap.filter.decide(target)
                    if verdict == BLOCK:
                        entry = self._blocked(mask, rule, q[3], do, now)
                        break
            key = q[7]
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
        self.cache.put(flight.q[7], entry)
        self._finish(flight, entry, False)

    def _stale_timer(self, flight: _Flight) -> None:
        flight.timer = None
        stale = flight.stale
        if stale is None or not flight.waiters:
            return
        waiters, flight.waiters = flight.waiters, []
        self._answer(waiters, stale, True)

    def _finish(self, flight: _Flight, entry: Entry, is_stale: bool) -> None:
        if self.inflight.get(flight.q[7]) is flight:
            del self.inflight[flight.q[7]]
        if flight.timer is not None:
            flight.timer.cancel()
        waiters, flight.waiters = flight.waiters, []
        self._answer(waiters, entry, is_stale)

    def _answer(self, waiters: list[_Waiting], entry: Entry, is_stale: bool) -> None:
        now = self.loop.time()
        for data, q, client, out, addr in waiters:
            try:
                if is_stale:
                    resp = self._stale_reply(data, q, entry, client, now, out.udp)
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


# One client waiting for a forwarded answer: (query bytes, parsed query, client, where, address).
_Waiting = tuple[bytes, wire.Query, str, Responder, object]


class _Flight:
    """One distinct question on its way upstream, and every client waiting for it.

    It is the fast path's waiter (``deliver``/``fail`` are called by the upstream pool from the
    socket callback), so the common forwarded query costs no task, future or timer of its own.
    """

    __slots__ = (
        "gen",
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
        name: str,
        stale: Entry | None,
        now: float,
    ) -> None:
        self.pipeline = pipeline
        self.name = name
        self.question = question
        self.q = q
        self.stale = stale
        self.started = now
        self.snap = pipeline.snap
        self.gen = pipeline.gen
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
