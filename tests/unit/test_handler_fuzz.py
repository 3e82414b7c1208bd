"""``Pipeline.handle`` on hostile bytes: it never raises, every answer parses and fits, and a
blocked name is always blocked -- property tests (hypothesis), in-process, no listener.

What the properties are (RELIABILITY.md sections 0 and 1.3): whatever a client sends once the
listener has dropped runts and responses (< 12 bytes, QR=1), ``handle`` returns None or a reply
that dnspython can read, with the query's ID and opcode, QR set, no larger than 512 bytes
without EDNS and min(max(client size, 512), 1232) with it; a query that was not answered at once
is answered exactly once later through the responder. The upstream is a loopback port nothing
listens on, so forwarded questions come back SERVFAIL quickly (ICMP port unreachable).

One event loop and one pipeline per module: hypothesis examples share its cache, so a mutated
query can also meet a cache entry another example left behind (cold and warm, as RELIABILITY.md
section 0.5 asks).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardian_dns import wire
from guardian_dns.config import apply_overrides, default_config
from guardian_dns.pipeline import R_BLOCKED, Pipeline
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot, build_snapshot
from guardian_dns.upstream import UpstreamPool
from tests.support import free_port
from tests.support.authserver import AuthServer
from tests.support.wire import make_query

BLOCKED_DOMAINS: Final = ("blocked.example", "ads.tracker.test")
BIG: Final = "big.example.test"  # the test upstream's 11 TXT records, about 2.8 KB
BIG_RECORDS: Final = 11
UDP_MAX: Final = 1232  # server.udp_max_size default
SETTLE_SECONDS: Final = 5.0  # every late answer must have come well inside this
FUZZ: Final = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Collector:
    """The responder: late answers, with the token each query was handled under."""

    def __init__(self) -> None:
        self.udp = True
        self.late: list[tuple[bytes, object]] = []

    def send(self, resp: bytes, addr: object) -> None:
        self.late.append((resp, addr))


class Harness:
    """A Pipeline in its own event loop; ``exchange`` answers packets as the listener does."""

    def __init__(self, snap: Snapshot) -> None:
        self.loop = asyncio.new_event_loop()
        self.out = Collector()
        self.pool, self.pipe = self.loop.run_until_complete(self._build(snap))

    @staticmethod
    async def _build(snap: Snapshot) -> tuple[UpstreamPool, Pipeline]:
        uc = snap.config.upstream
        pool = UpstreamPool(
            snap.upstreams, timeout=uc.timeout, attempt_timeout=uc.attempt_timeout, down_backoff=1.0
        )
        return pool, Pipeline(snap, pool, QueryLog(256))

    def exchange(
        self, packets: Sequence[bytes], udp: bool = True
    ) -> list[tuple[bytes | None, bytes | None]]:
        """For each packet: (synchronous reply, late reply). Fails unless exactly one exists."""
        self.out.udp = udp
        return self.loop.run_until_complete(self._exchange(packets))

    async def _exchange(self, packets: Sequence[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        pipe, out, loop = self.pipe, self.out, self.loop
        out.late.clear()
        sync = [pipe.handle(p, "127.0.0.1", loop.time(), out, i) for i, p in enumerate(packets)]
        await self.settle()
        late: dict[object, list[bytes]] = {}
        for resp, token in out.late:
            late.setdefault(token, []).append(resp)
        result: list[tuple[bytes | None, bytes | None]] = []
        for i, (packet, now) in enumerate(zip(packets, sync, strict=True)):
            later = late.pop(i, [])
            if now is None and len(later) != 1:
                pytest.fail(
                    f"query {packet.hex()} was not answered at once and got {len(later)} late "
                    "answers (expected exactly 1)"
                )
            if now is not None and later:
                pytest.fail(f"query {packet.hex()} was answered at once and again later")
            result.append((now, later[0] if later else None))
        assert not late, f"late answers for tokens nobody used: {sorted(map(str, late))}"
        return result

    async def settle(self) -> None:
        deadline = self.loop.time() + SETTLE_SECONDS
        while self.pipe.tasks or self.pipe.inflight:
            if self.loop.time() > deadline:
                pytest.fail(
                    f"{len(self.pipe.inflight)} questions still in flight after {SETTLE_SECONDS} s"
                )
            await asyncio.sleep(0.001)

    def close(self) -> None:
        async def shutdown() -> None:
            tasks = list(self.pipe.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pool.close()

        try:
            self.loop.run_until_complete(shutdown())
        finally:
            self.loop.close()


def make_snapshot(list_dir: Path, upstream: str) -> Snapshot:
    path = list_dir / "kids.txt"
    path.write_text("\n".join(BLOCKED_DOMAINS) + "\n")
    cfg = apply_overrides(default_config(), upstreams=[upstream], blocklists=[f"kids={path}"])
    return build_snapshot(cfg, 1)


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    # A loopback port nothing listens on: forwards fail fast, and nothing leaves the machine.
    return make_snapshot(tmp_path_factory.mktemp("lists"), f"udp://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def harness(snap: Snapshot) -> Iterator[Harness]:
    h = Harness(snap)
    try:
        yield h
    finally:
        h.close()


# -- the oracle ----------------------------------------------------------------------------------
def reply_limit(query: bytes) -> int:
    """What a UDP reply to ``query`` may weigh, read independently of the server's parser."""
    try:
        msg = dns.message.from_wire(query)
    except Exception:
        return 512  # not a query we act on: an error reply, which must fit any client
    if msg.edns < 0:
        return 512
    return min(max(msg.payload, 512), UDP_MAX)


def check_reply(query: bytes, resp: bytes | None, how: str = "at once") -> None:
    """The properties every reply has, whatever the query was."""
    if resp is None:
        return
    where = f"query {query.hex()} -> reply ({how}) {resp.hex()}"
    assert isinstance(resp, bytes), f"{where}: not bytes but {type(resp).__name__}"
    assert len(resp) >= 12, f"{where}: shorter than a header"
    assert resp[:2] == query[:2], f"{where}: ID not echoed"
    assert resp[2] & 0x80, f"{where}: QR not set"
    assert resp[2] & 0x78 == query[2] & 0x78, f"{where}: opcode not echoed"
    limit = reply_limit(query)
    assert len(resp) <= limit, f"{where}: {len(resp)} bytes, over the client's limit of {limit}"
    try:
        dns.message.from_wire(resp)
    except Exception as exc:
        pytest.fail(f"{where}: dnspython cannot read it: {type(exc).__name__}: {exc}")


def ask_and_check(harness: Harness, packets: Sequence[bytes]) -> None:
    for packet, (now, later) in zip(packets, harness.exchange(packets), strict=True):
        check_reply(packet, now)
        check_reply(packet, later, "late")


def as_query(data: bytes | bytearray) -> bytes:
    """What the listener lets through: at least 12 bytes, QR clear."""
    out = bytearray(data)
    if len(out) < 12:
        out += bytes(12 - len(out))
    out[2] &= 0x7F
    return bytes(out)


# -- strategies ----------------------------------------------------------------------------------
labels = st.binary(min_size=1, max_size=63)
ldh_label = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,14}", fullmatch=True)
qtypes = st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 46, 48, 64, 65, 251, 252, 255, 666])
qclasses = st.sampled_from([1, 1, 1, 3, 254, 255, 0])
edns_sizes = st.one_of(st.none(), st.integers(0, 65535))


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    """A well-formed query: any label bytes, any type, class, flags and EDNS the parser accepts."""
    name = b""
    for label in draw(st.lists(st.one_of(labels, ldh_label.map(str.encode)), max_size=6)):
        if len(name) + len(label) + 2 <= 255:
            name += bytes([len(label)]) + label
    edns = draw(edns_sizes)
    opts = draw(st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=20)), max_size=2))
    return make_query(
        name + b"\x00",
        draw(qtypes),
        id=draw(st.integers(0, 65535)),
        rd=draw(st.booleans()),
        edns=edns,
        do=draw(st.booleans()) and edns is not None,
        opts=opts if edns is not None else (),
        cd=draw(st.booleans()),
        ad=draw(st.booleans()),
        qclass=draw(qclasses),
        flags_extra=draw(st.sampled_from([0, 0, wire.F_Z, wire.F_AA, wire.F_TC])),
    )


# One mutation: (kind, position, value); positions are taken modulo the message length.
mutation = st.tuples(
    st.sampled_from(["flip", "set", "truncate", "count", "pointer", "chain", "append", "insert"]),
    st.integers(0, 1 << 16),
    st.integers(0, 255),
)


def mutate(data: bytes, ops: Sequence[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        at = pos % max(len(buf), 1)
        if kind == "flip":
            buf[at] ^= 1 << (value % 8)
        elif kind == "set":
            buf[at] = value
        elif kind == "truncate":
            del buf[max(at, 12) :]
        elif kind == "count":
            field = 4 + 2 * (pos % 4)  # QD, AN, NS or AR
            struct.pack_into("!H", buf, field, (0, 1, 2, 3, 255, 0xFFFF)[value % 6])
        elif kind == "pointer":  # a compression pointer, anywhere, to anywhere
            buf[at : at + 2] = bytes([0xC0 | (value & 0x3F), pos & 0xFF])
        elif kind == "chain":  # a run of pointers, each to the one before
            start = max(at, 12)
            chain = b"".join(struct.pack("!H", 0xC000 | (start + 2 * i - 2)) for i in range(40))
            buf[start:] = chain + bytes(buf[start:])
        elif kind == "append":
            buf += random.Random(pos).randbytes(value)
        else:  # insert a label length byte, shifting everything after it
            buf.insert(at, value)
    return as_query(buf)


# -- properties ----------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(min_size=12, max_size=600))
def test_arbitrary_bytes_never_raise_and_any_answer_parses(harness: Harness, data: bytes) -> None:
    ask_and_check(harness, [as_query(data)])


@FUZZ
@given(
    head=st.tuples(
        st.integers(0, 65535),
        st.integers(0, 0x7FFF),
        st.sampled_from([0, 1, 1, 1, 2]),
        st.sampled_from([0, 0, 0, 1]),
        st.sampled_from([0, 0, 0, 1]),
        st.sampled_from([0, 1, 1, 2, 3]),
    ),
    body=st.binary(max_size=300),
)
def test_plausible_headers_over_random_bodies_never_raise(
    harness: Harness, head: tuple[int, ...], body: bytes
) -> None:
    ask_and_check(harness, [as_query(struct.pack("!HHHHHH", *head) + body)])


@FUZZ
@given(query=valid_queries())
def test_valid_queries_are_answered_and_parse(harness: Harness, query: bytes) -> None:
    ask_and_check(harness, [query])


@FUZZ
@given(query=valid_queries(), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_queries_never_raise_and_any_answer_parses(
    harness: Harness, query: bytes, ops: list[tuple[str, int, int]]
) -> None:
    ask_and_check(harness, [mutate(query, ops)])


@st.composite
def blocked_queries(draw: st.DrawFn) -> bytes:
    """A valid IN query for a listed domain or a name below it, in any letter case."""
    domain = draw(st.sampled_from(BLOCKED_DOMAINS))
    prefix = draw(st.lists(ldh_label, max_size=3))
    name = ".".join([*prefix, domain])
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    edns = draw(edns_sizes)
    return make_query(
        name,
        draw(st.sampled_from([1, 28, 5, 15, 16, 65, 255, 666])),
        id=draw(st.integers(0, 65535)),
        rd=draw(st.booleans()),
        edns=edns,
        do=draw(st.booleans()) and edns is not None,
        cd=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None)
@given(query=blocked_queries())
def test_a_blocked_name_always_gets_the_block_answer_cold_and_warm(
    harness: Harness, query: bytes
) -> None:
    harness.pipe.cache.clear()
    blocked_before = harness.pipe.counts[R_BLOCKED]
    (cold, _), (warm, _) = harness.exchange([query, query])
    assert harness.pipe.counts[R_BLOCKED] == blocked_before + 2
    sent = dns.message.from_wire(query)
    for resp, how in ((cold, "cold"), (warm, "warm")):
        assert resp is not None, f"blocked query {query.hex()} ({how}) was not answered at once"
        check_reply(query, resp, how)
        got = dns.message.from_wire(resp)
        where = f"query {query.hex()} -> reply ({how}) {resp.hex()}"
        assert got.rcode() == dns.rcode.NXDOMAIN, f"{where}: not the block answer (nxdomain)"
        assert not got.answer, f"{where}: block answer carries records"
        qlen = len(sent.question[0].name.to_wire()) + 4
        assert resp[12 : 12 + qlen] == query[12 : 12 + qlen], (
            f"{where}: question not echoed byte for byte (letter case included)"
        )
        if sent.edns >= 0:
            assert got.edns == 0, f"{where}: EDNS query answered without OPT"
            assert (got.ednsflags & dns.flags.DO) == (sent.ednsflags & dns.flags.DO), (
                f"{where}: DO not echoed"
            )
            codes = [o.code for o in got.options]
            assert dns.edns.EDE in codes, f"{where}: no EDE 15 (Blocked)"
        else:
            assert got.edns < 0, f"{where}: OPT in the reply to a query without EDNS"
    assert cold == warm, f"query {query.hex()}: cold {cold!r} and warm {warm!r} differ"


def test_a_big_forwarded_answer_fits_every_client_limit_or_is_truncated(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    """The size rule with a real 2.8 KB answer (11 TXT records), cold and from the cache."""
    h = Harness(make_snapshot(tmp_path, auth_server.url_udp))
    try:
        for payload in (None, 0, 511, 512, 513, 1000, 1231, 1232, 1233, 4096, 65535):
            for do in (False, True):
                query = make_query(BIG, "TXT", edns=payload, do=do and payload is not None)
                limit = reply_limit(query)
                for how in ("cold", "warm"):
                    if how == "cold":
                        h.pipe.cache.clear()
                    now, later = h.exchange([query])[0]
                    resp = now if now is not None else later
                    check_reply(query, resp, how)
                    assert resp is not None
                    got = dns.message.from_wire(resp)
                    where = f"query {query.hex()} -> reply ({how}) {resp.hex()}"
                    assert got.flags & dns.flags.TC, f"{where}: over {limit} bytes, yet no TC"
                    assert not got.answer, f"{where}: a truncated reply with a partial RRset"
                    assert (got.edns >= 0) == (payload is not None), f"{where}: OPT mismatch"
        # The same answer in full to a TCP client.
        now, later = h.exchange([make_query(BIG, "TXT", edns=1232)], udp=False)[0]
        resp = now if now is not None else later
        assert resp is not None
        got = dns.message.from_wire(resp)
        assert not got.flags & dns.flags.TC
        assert sum(len(rrset) for rrset in got.answer) == BIG_RECORDS, got.to_text()
    finally:
        h.close()


# -- cost ------------------------------------------------------------------------------------------
def adversarial_packets(count: int) -> list[bytes]:
    """Pointer chains, 255-byte names, many labels, maximal UDP datagrams; all distinct."""
    rng = random.Random(20240601)
    head = struct.Struct("!HHHHHH")
    out: list[bytes] = []
    for i in range(count):
        qid = i & 0xFFFF
        kind = i % 6
        if kind == 0:  # a question that is a chain of pointers
            chain = b"".join(struct.pack("!H", 0xC000 | (12 + 2 * k)) for k in range(200))
            out.append(head.pack(qid, 0x100, 1, 0, 0, 0) + chain + b"\x00\x01\x00\x01")
        elif kind == 1:  # a 255-byte name of one-letter labels below a blocked domain
            tail = wire.encode_name(BLOCKED_DOMAINS[0])
            labels = b""
            while len(labels) + 2 + len(tail) <= 255:
                labels += b"\x01" + bytes([rng.randrange(97, 123)])
            name = labels + tail
            out.append(head.pack(qid, 0x100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01")
        elif kind == 2:  # 255 bytes in four long labels, forwarded
            name = b"".join(
                bytes([n]) + rng.randbytes(n).replace(b".", b"-") for n in (63, 63, 63, 61)
            )
            out.append(head.pack(qid, 0x100, 1, 0, 0, 0) + name + b"\x00\x00\x01\x00\x01")
        elif kind == 3:  # labels until the datagram ends (no root): walked, then refused
            out.append(head.pack(qid, 0x100, 1, 0, 0, 0) + b"\x01a" * ((4096 - 12) // 2))
        elif kind == 4:  # two additional records whose owners are pointer chains and labels
            owner = b"\x01b" * 120 + b"\xc0\x0c"
            rr = owner + struct.pack("!HHIH", 1, 1, 0, 0)
            name = wire.encode_name(f"q{i}.example.com")
            out.append(head.pack(qid, 0x100, 1, 0, 0, 2) + name + b"\x00\x01\x00\x01" + rr * 2)
        else:  # a valid query with an OPT padded to a full datagram
            name = wire.encode_name(f"p{i}.example.com")
            pad = rng.randbytes(4096 - 12 - len(name) - 4 - 11 - 4)
            opt = b"\x00" + struct.pack("!HHIH", 41, 4096, 0, len(pad) + 4)
            opt += struct.pack("!HH", 12, len(pad)) + pad
            out.append(head.pack(qid, 0x100, 1, 0, 0, 1) + name + b"\x00\x01\x00\x01" + opt)
    return out


def test_two_thousand_adversarial_packets_cost_under_a_second(harness: Harness) -> None:
    packets = adversarial_packets(2000)
    pipe, out, loop = harness.pipe, harness.out, harness.loop

    async def run() -> tuple[float, list[bytes | None]]:
        out.late.clear()
        start = time.perf_counter()
        replies = [pipe.handle(p, "127.0.0.1", loop.time(), out, i) for i, p in enumerate(packets)]
        elapsed = time.perf_counter() - start
        await harness.settle()
        return elapsed, replies

    elapsed, replies = loop.run_until_complete(run())
    late = {token: resp for resp, token in out.late}
    for i, (packet, resp) in enumerate(zip(packets, replies, strict=True)):
        if resp is None:
            assert i in late, f"query {packet[:64].hex()}... was never answered"
            resp = late[i]
        check_reply(packet, resp)
    assert elapsed < 1.0, f"2000 adversarial packets took {elapsed:.2f} s in handle (bound 1 s)"


def _parse_cost(message: bytes, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        with pytest.raises(wire.WireError):
            wire.parse_query(message)
    return (time.perf_counter() - start) / rounds


def test_question_parse_cost_is_bounded_by_the_255_byte_name_not_the_message() -> None:
    """RELIABILITY.md 0.2: the question is parsed with bounded code (255 bytes, 127 labels).

    A TCP message may be 65535 bytes. One made of one-letter labels with no root label must be
    refused as soon as the name passes 255 bytes, so it costs about what a 600-byte one does.
    """
    head = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    small = head + b"\x01a" * 294  # 600 bytes
    huge = head + b"\x01a" * ((65535 - 12) // 2)  # a maximal TCP message
    _parse_cost(huge, 5)  # warm up
    cost_small = min(_parse_cost(small, 200) for _ in range(3))
    cost_huge = min(_parse_cost(huge, 20) for _ in range(3))
    ratio = cost_huge / cost_small
    assert ratio < 10, (
        f"wire.parse_query walks the whole message looking for the end of the name: a "
        f"{len(huge)}-byte message of one-letter labels (header {head.hex()}, then "
        f"'0161' repeated) costs {cost_huge * 1e6:.0f} us, {ratio:.0f}x a {len(small)}-byte one "
        f"({cost_small * 1e6:.1f} us); the 255-byte bound is checked only after the loop, so "
        f"the cost grows with the message, not the name"
    )
