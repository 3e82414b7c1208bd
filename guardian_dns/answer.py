"""Answers we build: sanitised forwarded answers, blocked and local answers, as cache entries.

What it decides: which records of an upstream reply a client may see (the CNAME chain from the
question, an SOA for negative answers, DNSSEC records only when DO was set, no private addresses
for public names) and for how long (TTL clamps, RFC 2308 negative TTL); what a block looks like in
each block mode.
What it reads: a parsed ``wire.Reply`` and the settings it is given.
What it must never do: copy AUTHORITY or ADDITIONAL data that answers another name (RFC 2181
5.4.1), pass on the upstream's AA bit, or keep a TTL with the top bit set (RFC 2181 8).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from guardian_dns import wire
from guardian_dns.cache import (
    KIND_BLOCKED,
    KIND_FORWARDED,
    KIND_LOCAL,
    KIND_NEGATIVE,
    KIND_SERVFAIL,
    Entry,
)

_QPTR = b"\xc0\x0c"  # the question name in every reply we send
_OPT_DO = wire.opt_record(True)
_OPT_NO_DO = wire.opt_record(False)
_FIXED = struct.Struct("!HHIH")
_U32 = struct.Struct("!I")


_FOREVER = float("inf")  # an entry valid until its generation is replaced
_REWRITE_TTL = 300  # CNAME TTL of a rewrite whose target answer has no records


@dataclass(frozen=True)
class AnswerPolicy:
    """The knobs answer building needs, taken from the config once per snapshot."""

    min_ttl: int
    max_ttl: int
    negative_max_ttl: int
    servfail_ttl: int
    stale_max_age: int
    rebinding_protection: bool
    local_suffixes: tuple[str, ...]  # ".lan", ".home.arpa", ... (with the leading dot)
    local_names: frozenset[str]  # "lan", "home.arpa", ... themselves
    pass_ad: bool  # the upstream path is trusted (loopback), so AD may be relayed


def _clamp(ttl: int, pol: AnswerPolicy) -> int:
    if ttl & 0x80000000:
        ttl = 0
    if ttl < pol.min_ttl:
        ttl = pol.min_ttl
    return min(ttl, pol.max_ttl)


def _is_local(name: str, pol: AnswerPolicy) -> bool:
    return name in pol.local_names or name.endswith(pol.local_suffixes)


def _body(records: list[wire.RR], qname: bytes) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    out = bytearray()
    ttls = []
    for owner, rtype, rclass, ttl, rdata in records:
        own = _QPTR if owner == qname else owner
        out += own
        ttls.append((len(out) + 4, ttl))
        out += _FIXED.pack(rtype, rclass, ttl, len(rdata))
        out += rdata
    return bytes(out), tuple(ttls)


def forwarded(
    reply: wire.Reply,
    qtype: int,
    do: bool,
    ad_wanted: bool,
    pol: AnswerPolicy,
    now: float,
    gen: int,
    name: str,
) -> tuple[Entry, list[str]]:
    """Sanitise an upstream reply that already matched our question, into a cache entry.

    ``name`` is the question as lower-case text. Also returns the names of the CNAME chain
    (the question first) so the caller can inspect them.
    """
    if reply.simple_end and not reply.rcode:
        wired = _addresses(reply, qtype, do, ad_wanted, pol, now, gen, name)
        if wired is not None:
            return wired, [name]
    qname = reply.question[: len(reply.question) - 4].lower()
    simple = _simple_positive(reply, qname, qtype, do, ad_wanted, pol, now, gen, name)
    if simple is not None:
        return simple, [name]
    names = {qname}
    order = [qname]
    want_dnssec = do or qtype in (wire.T_RRSIG, wire.T_NSEC, wire.T_NSEC3, wire.T_DNSKEY)
    kept: list[wire.RR] = []
    pending = reply.answer
    if pending and all(rr[0] == qname and rr[1] == qtype for rr in pending):
        kept, pending = pending, []  # the usual answer: one RRset for the question, no chain
    changed = True
    # The CNAME chain may arrive in any order; grow the set of names until it stops changing.
    while changed and pending:
        changed = False
        rest = []
        for rr in pending:
            owner, rtype = rr[0], rr[1]
            if owner in names:
                if rtype in (wire.T_RRSIG, wire.T_NSEC, wire.T_NSEC3) and not want_dnssec:
                    continue
                kept.append(rr)
                changed = True
                if rtype == wire.T_CNAME:
                    target = rr[4].lower()
                    if target not in names:
                        names.add(target)
                        order.append(target)
            elif rtype == wire.T_DNAME and qname.endswith(owner):
                kept.append(rr)
                changed = True
            else:
                rest.append(rr)
        pending = rest
    chain_text = [name] + [wire.wire_to_text(n) for n in order[1:]]
    stripped_ttl = -1  # TTL to remember an answer emptied by rebinding protection
    if pol.rebinding_protection and not _is_local(name, pol):
        clean = [
            rr
            for rr in kept
            if rr[1] not in (wire.T_A, wire.T_AAAA) or not wire.is_private_rdata(rr[1], rr[4])
        ]
        if len(clean) != len(kept):
            stripped_ttl = min(_clamp(rr[3], pol) for rr in kept if rr not in clean)
            kept = clean
    rcode = reply.rcode
    answers = [(o, t, c, _clamp(ttl, pol), d) for o, t, c, ttl, d in kept]
    authority: list[wire.RR] = []
    has_data = any(rr[1] == qtype or qtype == wire.T_ANY for rr in answers)
    if rcode == wire.NXDOMAIN or (rcode == wire.NOERROR and not has_data):
        # Negative answer: keep the SOA of a zone that contains the last name of the chain.
        last = order[-1]
        for owner, rtype, rclass, ttl, rdata in reply.authority:
            in_zone = wire.is_subdomain(last, owner)
            if not in_zone:
                continue
            if rtype == wire.T_SOA or (want_dnssec and rtype in wire._DNSSEC_TYPES):
                authority.append((owner, rtype, rclass, ttl, rdata))
    ttl_min: int
    if answers and has_data:
        ttl_min = min(rr[3] for rr in answers)
        kind = KIND_FORWARDED
    elif rcode in (wire.NOERROR, wire.NXDOMAIN):
        soa = next((rr for rr in authority if rr[1] == wire.T_SOA), None)
        if soa is not None:
            minimum = struct.unpack_from("!I", soa[4], len(soa[4]) - 4)[0]
            ttl_min = min(_clamp(soa[3], pol), minimum & 0x7FFFFFFF, pol.negative_max_ttl)
            authority = [
                (o, t, c, min(ttl_min, _clamp(ttl, pol)), d) for o, t, c, ttl, d in authority
            ]
        elif stripped_ttl >= 0:
            ttl_min = stripped_ttl  # what the upstream said, minus what we may not pass on
        else:
            ttl_min = 0  # RFC 2308 5: a negative answer without SOA is not cached
        if answers:
            ttl_min = min([ttl_min] + [rr[3] for rr in answers])
        kind = KIND_NEGATIVE
    else:
        return servfail_entry(now, do, pol, gen), chain_text
    body, ttls = _body(answers + authority, qname)
    extra = wire.F_AD if (pol.pass_ad and ad_wanted and reply.flags & wire.F_AD) else 0
    entry = Entry(
        body=body,
        ancount=len(answers),
        nscount=len(authority),
        rflags=(rcode & 0xF) | extra,
        ttls=ttls,
        stored=now,
        expires=now + ttl_min,
        stale_until=now + ttl_min + pol.stale_max_age,
        kind=kind,
        gen=gen,
        opt=wire.opt_record(do),
    )
    return entry, chain_text


def _addresses(
    reply: wire.Reply,
    qtype: int,
    do: bool,
    ad_wanted: bool,
    pol: AnswerPolicy,
    now: float,
    gen: int,
    name: str,
) -> Entry | None:
    """The commonest forwarded answer, A or AAAA records of the asked type owned by the
    question (``reply.simple_end``), kept as the upstream's own bytes: the owners are already
    ``0xC00C`` and our reply's question sits at offset 12 too. Only the TTLs may change (the
    clamps). None: a private address or another type, for the general path."""
    data = reply.data
    start = pos = reply.an_pos
    end = reply.simple_end
    check_private = pol.rebinding_protection and not _is_local(name, pol)
    ttls = []
    ttl_min = 0x7FFFFFFF
    clamped = False
    count = 0
    while pos < end:
        rtype = data[pos + 3]
        if rtype != qtype:
            return None
        if check_private and (
            wire.private_v4(data[pos + 12], data[pos + 13])
            if rtype == wire.T_A
            else wire.is_private_rdata(rtype, data[pos + 12 : pos + 28])
        ):
            return None
        ttl = _U32.unpack_from(data, pos + 6)[0]
        kept = _clamp(ttl, pol)
        clamped = clamped or kept != ttl
        if kept < ttl_min:
            ttl_min = kept
        ttls.append((pos - start + 6, kept))
        count += 1
        pos += 16 if rtype == wire.T_A else 28
    body = data[start:end]
    if clamped:
        buf = bytearray(body)
        for off, ttl in ttls:
            wire.pack_u32_into(buf, off, ttl)
        body = bytes(buf)
    return _positive(body, count, ttls, ttl_min, reply, do, ad_wanted, pol, now, gen)


def _simple_positive(
    reply: wire.Reply,
    qname: bytes,
    qtype: int,
    do: bool,
    ad_wanted: bool,
    pol: AnswerPolicy,
    now: float,
    gen: int,
    name: str,
) -> Entry | None:
    """Most forwarded answers: NOERROR, one RRset owned by the question, of the asked type, no
    private address. Built directly; anything else (None) takes the general path above."""
    answers = reply.answer
    if reply.rcode or not answers:
        return None
    check_private = (
        qtype in (wire.T_A, wire.T_AAAA) and pol.rebinding_protection and not _is_local(name, pol)
    )
    body = bytearray()
    ttls = []
    ttl_min = 0x7FFFFFFF
    for owner, rtype, rclass, ttl, rdata in answers:
        if owner != qname or rtype != qtype:
            return None
        if check_private and wire.is_private_rdata(rtype, rdata):
            return None
        ttl = _clamp(ttl, pol)
        ttl_min = min(ttl, ttl_min)
        body += _QPTR
        ttls.append((len(body) + 4, ttl))
        body += _FIXED.pack(rtype, rclass, ttl, len(rdata))
        body += rdata
    return _positive(bytes(body), len(answers), ttls, ttl_min, reply, do, ad_wanted, pol, now, gen)


def _positive(
    body: bytes,
    count: int,
    ttls: list[tuple[int, int]],
    ttl_min: int,
    reply: wire.Reply,
    do: bool,
    ad_wanted: bool,
    pol: AnswerPolicy,
    now: float,
    gen: int,
) -> Entry:
    """The entry of a positive answer of ``count`` records owned by the question: what the
    wire fast path (``_addresses``) and the record path (``_simple_positive``) both build."""
    extra = wire.F_AD if (pol.pass_ad and ad_wanted and reply.flags & wire.F_AD) else 0
    return Entry(
        body=body,
        ancount=count,
        nscount=0,
        rflags=extra,
        ttls=tuple(ttls),
        stored=now,
        expires=now + ttl_min,
        stale_until=now + ttl_min + pol.stale_max_age,
        kind=KIND_FORWARDED,
        gen=gen,
        opt=_OPT_DO if do else _OPT_NO_DO,
    )


def servfail_entry(now: float, do: bool, pol: AnswerPolicy, gen: int) -> Entry:
    """A resolution failure, cached briefly so a failing name cannot hammer the upstream."""
    return Entry(
        body=b"",
        ancount=0,
        nscount=0,
        rflags=wire.SERVFAIL,
        ttls=(),
        stored=now,
        expires=now + pol.servfail_ttl,
        stale_until=now + pol.servfail_ttl,
        kind=KIND_SERVFAIL,
        gen=gen,
        opt=wire.opt_record(do, 0, wire.EDE_NO_REACHABLE_AUTHORITY),
    )


@dataclass(frozen=True)
class BlockStyle:
    """How a block looks: mode, TTL, optional block-page addresses, EDE on or off."""

    mode: str
    ttl: int
    ipv4: bytes | None
    ipv6: bytes | None
    ede: bool

    @staticmethod
    def from_config(mode: str, ttl: int, v4: str | None, v6: str | None, ede: bool) -> BlockStyle:
        if mode == "null_ip":
            v4, v6 = "0.0.0.0", "::"
        b4 = ipaddress.IPv4Address(v4).packed if v4 else None
        b6 = ipaddress.IPv6Address(v6).packed if v6 else None
        return BlockStyle(mode, ttl, b4, b6, ede)


class BlockTemplates:
    """Blocked answers built once per snapshot: body, counts and OPT for every category, for
    A, AAAA and other types, with and without DO. A newly blocked name then costs one Entry
    (TCP, CNAME chains) or nothing at all (UDP: ``template`` and the packet cache)."""

    def __init__(self, style: BlockStyle, categories: tuple[str, ...]) -> None:
        self.style = style
        self._parts: dict[tuple[int, int, bool], tuple[bytes, int, int, bytes]] = {}
        self._templates: dict[tuple[int, int, bool], Entry] = {}
        for cat, cat_name in enumerate(categories):
            for qtype in (wire.T_A, wire.T_AAAA, 0):
                for do in (False, True):
                    parts = self._build(style, qtype, do, cat_name)
                    self._parts[cat, qtype, do] = parts
                    body, ancount, rcode, opt = parts
                    self._templates[cat, qtype, do] = Entry(
                        body=body,
                        ancount=ancount,
                        nscount=0,
                        rflags=rcode,
                        ttls=(),
                        stored=0.0,
                        expires=_FOREVER,
                        stale_until=_FOREVER,
                        kind=KIND_BLOCKED,
                        gen=-1,
                        opt=opt,
                        category=cat,
                    )

    def template(self, category: int, qtype: int, do: bool) -> Entry:
        """The shared answer for a blocked name, to render a reply from; never cached itself."""
        if qtype != wire.T_A and qtype != wire.T_AAAA:
            qtype = 0
        return self._templates[category, qtype, do]

    @staticmethod
    def _build(
        style: BlockStyle, qtype: int, do: bool, cat_name: str
    ) -> tuple[bytes, int, int, bytes]:
        records: list[wire.RR] = []
        rcode = wire.NOERROR
        if style.mode == "nxdomain":
            rcode = wire.NXDOMAIN
        elif style.mode == "refused":
            rcode = wire.REFUSED
        elif qtype == wire.T_A and style.ipv4:
            records.append((b"", wire.T_A, wire.C_IN, style.ttl, style.ipv4))
        elif qtype == wire.T_AAAA and style.ipv6:
            records.append((b"", wire.T_AAAA, wire.C_IN, style.ttl, style.ipv6))
        # The block TTL is short and fixed, so the body is never aged: no TTL offsets kept.
        body, _ttls = _body(records, b"")
        text = f"blocked: {cat_name}".encode()
        opt = wire.opt_record(do, 0, wire.EDE_BLOCKED, text) if style.ede else wire.opt_record(do)
        return body, len(records), rcode, opt

    def entry(self, category: int, qtype: int, do: bool, now: float, gen: int, rule: int) -> Entry:
        """The answer for a blocked name, in the configured block mode, with EDE 15 (RFC 8914)."""
        if qtype != wire.T_A and qtype != wire.T_AAAA:
            qtype = 0
        body, ancount, rcode, opt = self._parts[category, qtype, do]
        # Valid for as long as this generation of the lists and policy: the cache keys entries
        # by generation, so a reload or list change re-decides. The TTL the client sees is the
        # block TTL in the body, which never counts down. Expiring after the block TTL instead
        # made every blocked name a miss again every few seconds.
        expires = _FOREVER
        return Entry(
            body=body,
            ancount=ancount,
            nscount=0,
            rflags=rcode,
            ttls=(),
            stored=now,
            expires=expires,
            stale_until=expires,
            kind=KIND_BLOCKED,
            gen=gen,
            opt=opt,
            rule=rule,
            category=category,
        )


def local_entry(rcode: int, do: bool, now: float, gen: int, ttl: int, ede: int = -1) -> Entry:
    """A name we answer ourselves (DoH canary, DDR, relay opt-out): an empty NXDOMAIN/NODATA."""
    return Entry(
        body=b"",
        ancount=0,
        nscount=0,
        rflags=rcode,
        ttls=(),
        stored=now,
        expires=now + ttl,
        stale_until=now + ttl,
        kind=KIND_LOCAL,
        gen=gen,
        opt=wire.opt_record(do, 0, ede) if ede >= 0 else wire.opt_record(do),
    )


def any_entry(do: bool, now: float, gen: int, ttl: int) -> Entry:
    """RFC 8482 minimal answer to ANY: one synthesised HINFO "RFC8482" "" record."""
    rdata = b"\x07RFC8482\x00"
    body, ttls = _body([(b"", wire.T_HINFO, wire.C_IN, ttl, rdata)], b"")
    return Entry(
        body=body,
        ancount=1,
        nscount=0,
        rflags=wire.NOERROR,
        ttls=ttls,
        stored=now,
        expires=now + ttl,
        stale_until=now + ttl,
        kind=KIND_LOCAL,
        gen=gen,
        opt=wire.opt_record(do),
    )


def _records(body: bytes, count: int) -> list[tuple[bytes, bytes]]:
    """Split an entry body into (owner, rest of the record) pairs.

    Owners in our bodies are either the pointer to the question (``_QPTR``) or a whole name
    without compression (``_body`` writes nothing else), so this needs no packet context.
    """
    out = []
    pos = 0
    for _ in range(count):
        start = pos
        if body[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while body[pos]:
                pos += body[pos] + 1
            pos += 1
        owner = body[start:pos]
        rdlen = (body[pos + 8] << 8) | body[pos + 9]
        end = pos + 10 + rdlen
        out.append((owner, body[pos:end]))
        pos = end
    return out


def rewritten(target: Entry, target_wire: bytes, now: float, gen: int, rule: int) -> Entry:
    """Safe search: the question's answer as ``CNAME target`` plus the target's own answer.

    ``target`` is the cached answer for the enforcement name (forcesafesearch.google.com) and the
    same type; its owner pointers become the target name written out, since the question at
    offset 12 is now the name the client asked for. The CNAME's TTL is the target's shortest.
    """
    body = target.body_at(now)
    records = _records(body, target.ancount + target.nscount)
    ttl = min((t for _off, t in target.ttls), default=_REWRITE_TTL)
    age = int(now - target.stored)
    ttl = max(ttl - age, 0) if target.ttls else _REWRITE_TTL
    out = bytearray(_QPTR)
    ttls = [(len(out) + 4, ttl)]
    out += _FIXED.pack(wire.T_CNAME, wire.C_IN, ttl, len(target_wire)) + target_wire
    for owner, rest in records:
        out += target_wire if owner == _QPTR else owner
        ttls.append((len(out) + 4, struct.unpack_from("!I", rest, 4)[0]))
        out += rest
    remaining = max(target.expires - now, 0.0)
    return Entry(
        body=bytes(out),
        ancount=1 + target.ancount,
        nscount=target.nscount,
        rflags=target.rflags,
        ttls=tuple(ttls),
        stored=now,
        expires=now + remaining,
        stale_until=target.stale_until,
        kind=target.kind,
        gen=gen,
        opt=target.opt,
        rule=rule,
    )


def capped(entry: Entry, ttl: int) -> Entry:
    """``entry`` with no TTL above ``ttl``: an answer must not outlive the policy state it was
    allowed under (a window that opens at 21:00 blocks it then, whatever the record's TTL)."""
    if not entry.ttls or all(t <= ttl for _off, t in entry.ttls):
        return entry
    buf = bytearray(entry.body)
    ttls = []
    for off, t in entry.ttls:
        t = min(t, ttl)
        wire.pack_u32_into(buf, off, t)
        ttls.append((off, t))
    new = Entry(
        body=bytes(buf),
        ancount=entry.ancount,
        nscount=entry.nscount,
        rflags=entry.rflags,
        ttls=tuple(ttls),
        stored=entry.stored,
        expires=min(entry.expires, entry.stored + ttl),
        stale_until=entry.stale_until,
        kind=entry.kind,
        gen=entry.gen,
        opt=entry.opt,
        rule=entry.rule,
        category=entry.category,
    )
    new.chain = entry.chain
    new.budget = entry.budget
    return new
