"""The query path, end to end, in one place: read this file to know what happens to a query.

  listener (ACL, framing)            -> ``Pipeline.handle`` with the raw bytes
  1. wire.parse_query                 bounded header/question/OPT check; FORMERR/NOTIMP/BADVERS
  2. cache                            a finished answer for (question, DO) under this snapshot
  3. class/type gate                  CHAOS and zone transfers are never forwarded
  4. filter.decide                    blocked / answered locally / pass, with the matching rule
  5. upstream (coalesced)             one upstream query per distinct question in flight
  6. answer.forwarded                 sanitise: chain only, no AA, no private addresses, TTLs
  7. CNAME inspection (filter again)  a blocked name anywhere in the chain blocks the answer
  8. cache.put, reply, counters, ring buffer

What it decides: nothing of its own; it orders the stages and turns their results into bytes.
What it must never do: log per query, allocate per-query objects on the hit path beyond the reply
bytes and one ring-buffer tuple, or let an exception escape to the listener unanswered.

Cache hits and blocked names (whose answers are cached too) are answered synchronously inside the
listener's read loop; only misses create a task.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Protocol

from guardian_dns import answer, wire
from guardian_dns.cache import (
    KIND_BLOCKED,
    KIND_FORWARDED,
    KIND_NEGATIVE,
    KIND_SERVFAIL,
    AnswerCache,
    Entry,
)
from guardian_dns.errors import UpstreamError
from guardian_dns.filter import BLOCK, LOCAL_NODATA, LOCAL_NXDOMAIN
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot
from guardian_dns.upstream import UpstreamPool

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


class Responder(Protocol):
    """Where a late (asynchronous) answer goes: the UDP listener or one TCP connection."""

    udp: bool

    def send(self, resp: bytes, addr: object) -> None: ...


class Pipeline:
    """Runs queries against the current snapshot. Survives reloads; the snapshot is swapped."""

    def __init__(self, snap: Snapshot, upstream: UpstreamPool, qlog: QueryLog) -> None:
        self.cache = AnswerCache(snap.config.cache.size)
        self.qlog = qlog
        self.counts = [0] * len(REASONS)
        self.blocked_by_category = [0] * 64
        self.malformed: dict[str, int] = {}
        self.inflight: dict[bytes, asyncio.Future[tuple[Entry, bool]]] = {}
        self.coalesced = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.swap(snap, upstream)

    def swap(self, snap: Snapshot, upstream: UpstreamPool) -> None:
        """Put a new snapshot in force. Cached decisions of older generations become misses."""
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
            self.qlog.append((now, client, data[12 : q[2]], reason, entry.rule))
            return self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
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
            self.qlog.append((now, client, data[12 : q[2]], R_REFUSED, -1))
            return wire.error_reply(data, wire.REFUSED, q[2], q[5] >= 0, q[6])
        name = wire.qname_text(data, q[8])
        verdict, rule, mask = snap.filter.decide(name)
        new: Entry | None = None
        if verdict == BLOCK:
            new = self._blocked(mask, rule, qtype, q[6], now)
        elif verdict == LOCAL_NXDOMAIN:
            new = answer.local_entry(wire.NXDOMAIN, q[6], now, self.gen, _LOCAL_TTL)
        elif verdict == LOCAL_NODATA:
            new = answer.local_entry(wire.NOERROR, q[6], now, self.gen, _LOCAL_TTL)
        elif qtype == wire.T_ANY:
            new = answer.any_entry(q[6], now, self.gen, _LOCAL_TTL)
        if new is not None:
            self.cache.put(q[7], new)
            reason = _MISS_REASON[new.kind]
            self.counts[reason] += 1
            if reason == R_BLOCKED:
                self.blocked_by_category[new.category] += 1
            self.qlog.append((now, client, data[12 : q[2]], reason, new.rule))
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
        task = asyncio.get_running_loop().create_task(
            self._forward(data, q, stale, client, name, out, addr)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return None

    def _blocked(self, mask: int, rule: int, qtype: int, do: bool, now: float) -> Entry:
        snap = self.snap
        cat = snap.filter.category_index(mask)
        return answer.blocked_entry(
            snap.block_style, qtype, do, now, self.gen, rule, cat, snap.categories[cat]
        )

    def _stale_reply(
        self, data: bytes, q: wire.Query, entry: Entry, client: str, now: float, udp: bool
    ) -> bytes:
        self.counts[R_STALE] += 1
        self.qlog.append((now, client, data[12 : q[2]], R_STALE, -1))
        opt = wire.opt_record(q[6], 0, wire.EDE_STALE)
        return self._reply(data, q, entry, entry.stale_body(self.stale_ttl), opt, udp)

    async def _forward(
        self,
        data: bytes,
        q: wire.Query,
        stale: Entry | None,
        client: str,
        name: str,
        out: Responder,
        addr: object,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            key = q[7]
            fut = self.inflight.get(key)
            if fut is None:
                fut = loop.create_future()
                self.inflight[key] = fut
                fetch = loop.create_task(self._fetch(key, data[12 : q[2]], q, fut, stale))
                self.tasks.add(fetch)
                fetch.add_done_callback(self.tasks.discard)
            else:
                self.coalesced += 1
            if stale is not None:
                try:
                    entry, is_stale = await asyncio.wait_for(asyncio.shield(fut), self.stale_wait)
                except TimeoutError:
                    entry, is_stale = stale, True
            else:
                entry, is_stale = await fut
            now = loop.time()
            if is_stale:
                resp = self._stale_reply(data, q, entry, client, now, out.udp)
            else:
                reason = _MISS_REASON[entry.kind]
                self.counts[reason] += 1
                if reason == R_BLOCKED:
                    self.blocked_by_category[entry.category] += 1
                self.qlog.append((now, client, data[12 : q[2]], reason, entry.rule))
                resp = self._reply(data, q, entry, entry.body_at(now), entry.opt, out.udp)
        except Exception:
            self.counts[R_ERROR] += 1
            log.exception("internal error answering %s", name)
            resp = wire.error_reply(data, wire.SERVFAIL, q[2], q[5] >= 0, q[6])
        out.send(resp, addr)

    async def _fetch(
        self,
        key: bytes,
        question: bytes,
        q: wire.Query,
        fut: asyncio.Future[tuple[Entry, bool]],
        stale: Entry | None,
    ) -> None:
        """Resolve one distinct question for every client waiting on it (RFC 5452 section 5)."""
        loop = asyncio.get_running_loop()
        snap, gen = self.snap, self.gen
        do = q[6]
        try:
            try:
                reply = await self.upstream.query(question, do, bool(q[1] & wire.F_CD))
            except UpstreamError as exc:
                now = loop.time()
                log.debug("upstream failure: %s", exc)
                if stale is not None and now < stale.stale_until:
                    stale.recheck_at = now + _STALE_RECHECK
                    fut.set_result((stale, True))
                    return
                entry = answer.servfail_entry(now, do, snap.answer_policy, gen)
                self.cache.put(key, entry)
                fut.set_result((entry, False))
                return
            now = loop.time()
            ad_wanted = bool(q[1] & wire.F_AD) or do
            entry, chain = answer.forwarded(
                reply, q[3], do, ad_wanted, snap.answer_policy, now, gen
            )
            if snap.cname_inspection and len(chain.names) > 1:
                for target in chain.names[1:]:
                    verdict, rule, mask = snap.filter.decide(target)
                    if verdict == BLOCK:
                        entry = self._blocked(mask, rule, q[3], do, now)
                        break
            if entry.expires > now or entry.kind == KIND_SERVFAIL:
                self.cache.put(key, entry)
            elif entry.kind != KIND_BLOCKED and stale is not None:
                self.cache.pop(key)
            fut.set_result((entry, False))
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved here; every waiter re-raises its own copy
            raise
        finally:
            self.inflight.pop(key, None)
