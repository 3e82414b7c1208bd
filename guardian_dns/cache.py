"""The answer cache: finished answer bodies keyed on the lower-cased question and the DO bit.

What it decides: whether a question can be answered without asking anyone, and for how long.
What it reads: nothing but its own entries and the clock it is given.
What it must never do: hand out an entry past its stale limit, grow past its size, or store a
truncated or unsanitised answer (the pipeline only stores what ``answer`` built).

An entry holds the answer and authority sections ready to append after the client's own question
(owner names that equal the question are compression pointers to offset 12, so the client's letter
case is echoed for free) plus the offsets of every TTL. A hit patches TTLs at most once per second
of age and reuses the patched bytes until the age changes, so the hit path is a dict lookup and
two concatenations. Blocked and locally answered names are cached the same way, keyed on the
policy generation, which makes the blocked path as fast as a cache hit.
"""

from __future__ import annotations

from collections import OrderedDict

from guardian_dns import wire

# What produced an entry; the pipeline maps these to reasons in the query log and metrics.
KIND_FORWARDED = 0
KIND_NEGATIVE = 1
KIND_SERVFAIL = 2
KIND_BLOCKED = 3
KIND_LOCAL = 4


class Entry:
    """One cached answer. Mutable only in its memo fields and stale-recheck time."""

    __slots__ = (
        "ancount",
        "body",
        "budget",
        "category",
        "chain",
        "expires",
        "gen",
        "kind",
        "memo_age",
        "memo_body",
        "nscount",
        "opt",
        "recheck_at",
        "rflags",
        "rule",
        "stale_until",
        "stored",
        "ttls",
    )

    def __init__(
        self,
        *,
        body: bytes,
        ancount: int,
        nscount: int,
        rflags: int,
        ttls: tuple[tuple[int, int], ...],
        stored: float,
        expires: float,
        stale_until: float,
        kind: int,
        gen: int,
        opt: bytes,
        rule: int = -1,
        category: int = -1,
    ) -> None:
        self.body = body
        self.ancount = ancount
        self.nscount = nscount
        self.rflags = rflags  # rcode and AD, OR-ed into the reply flags
        self.ttls = ttls  # (offset in body, original TTL)
        self.stored = stored
        self.expires = expires
        self.stale_until = stale_until
        self.kind = kind
        self.gen = gen  # snapshot generation the decision was made under
        self.opt = opt  # the OPT RR for EDNS clients (EDE included where it applies)
        self.rule = rule
        # CNAME targets of a forwarded answer: what a new policy generation must re-check before
        # it may keep serving this entry instead of asking upstream again.
        self.chain: tuple[str, ...] = ()
        self.category = category
        # Budget keys a group counts this answer against (policy.py): every hit is recorded for
        # the asking client, and such an answer never enters the packet cache.
        self.budget: tuple[str, ...] = ()
        self.memo_age = 0
        self.memo_body = body
        self.recheck_at = 0.0

    def body_at(self, now: float) -> bytes:
        """The body with every TTL decremented by the entry's whole seconds of age."""
        age = int(now - self.stored)
        if age == self.memo_age:
            return self.memo_body
        buf = bytearray(self.body)
        for off, ttl in self.ttls:
            wire.pack_u32_into(buf, off, ttl - age if ttl > age else 0)
        self.memo_age = age
        self.memo_body = bytes(buf)
        return self.memo_body

    def stale_body(self, ttl: int) -> bytes:
        """The body with every TTL set to the stale-answer TTL (RFC 8767: 30 s)."""
        buf = bytearray(self.body)
        for off, _ttl in self.ttls:
            wire.pack_u32_into(buf, off, ttl)
        return bytes(buf)


class AnswerCache:
    """A bounded LRU of entries. Expired entries stay until evicted: they may be served stale."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[bytes, Entry] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> Entry | None:
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        if self.size <= 0:
            return
        data = self._data
        data[key] = entry
        data.move_to_end(key)
        while len(data) > self.size:
            data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: bytes) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


# A packet-cache record: (valid until, the reply after its ID, reason, rule id, category or -1).
Packet = tuple[float, bytes, int, int, int]


class PacketCache:
    """Finished UDP replies keyed on the exact query message after its ID (dnsdist's design).

    Why a second cache: most queries on a LAN are the same few hundred questions asked again,
    byte for byte apart from the ID. Answering those from a dict keyed on ``message[2:]`` skips
    parsing, the answer cache's LRU bookkeeping and reply assembly, which are most of a cache
    hit's cost in Python. It holds only what a hit on the answer cache produced (a question
    asked at least twice), so one-off names and 0x20-randomised clients cannot flood it.

    Everything the reply depends on is in the key (flags, question as sent, EDNS size and DO),
    and a record is valid only while its TTLs would be unchanged (until the entry's age in
    whole seconds changes) and only under the snapshot it was made in: ``clear`` on reload.
    Bounded by emptying it when full: cheaper per query than LRU order, and the hot questions
    are back after one answer-cache hit each.
    """

    __slots__ = ("data", "flushes", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: dict[bytes, Packet] = {}
        self.flushes = 0

    def put(self, message: bytes, record: Packet) -> None:
        data = self.data
        if len(data) >= self.size:
            if self.size <= 0:
                return
            data.clear()
            self.flushes += 1
        data[message[2:]] = record

    def clear(self) -> None:
        """Forget every reply, keeping the same dict (the listener holds a reference to it)."""
        self.data.clear()
