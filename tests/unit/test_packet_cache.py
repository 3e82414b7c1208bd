"""The packet cache (cache.PacketCache): a repeated query, byte for byte apart from its ID, is
answered from a dict in the UDP listener. These tests hold it to what a client may rely on:
the reply is the one the full path would give (own ID, own letter case, TTLs that count down,
flags per query), every answer is still counted and logged, blocked names go straight in, a
reload empties it, and it never grows past its size.

Real parts: the ``UdpListener`` on 127.0.0.1:0, a client socket, and the tests' authoritative
server (tests/support/authserver.py) as the upstream. Only the clock is moved by hand: the event
loop's ``time`` is offset so "one second later" needs no sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

import dns.message
import dns.rcode
import pytest

from guardian_dns.config import Config, apply_overrides, default_config
from guardian_dns.listener import Gate, ListenerStats, UdpListener, bind_socket
from guardian_dns.pipeline import R_BLOCKED, R_CACHED, R_RESOLVED, REASONS, Pipeline
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import build_snapshot
from guardian_dns.upstream import UpstreamPool
from tests.support.authserver import AuthServer
from tests.support.wire import make_query

BLOCKED: Final = "blocked.example.test"  # in the upstream zone: A 192.0.2.66
TIMEOUT: Final = 3.0


@pytest.fixture
def upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


def _config(tmp_path: Path, upstream: AuthServer, cache_size: int = 20000) -> Config:
    path = tmp_path / "kids.txt"
    path.write_text(BLOCKED + "\n")
    cfg = apply_overrides(
        default_config(), upstreams=[upstream.url_udp], blocklists=[f"kids={path}"]
    )
    return dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, size=cache_size))


class Rig:
    """A pipeline, its UDP listener and a client, with a clock the test can move forward."""

    def __init__(self, pipe: Pipeline, listener: UdpListener, client: socket.socket) -> None:
        self.pipe = pipe
        self.listener = listener
        self.client = client
        self.offset = 0.0

    async def ask(self, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.client, query)
        return await asyncio.wait_for(loop.sock_recv(self.client, 65535), TIMEOUT)

    def counts(self) -> dict[str, int]:
        return dict(zip(REASONS, self.pipe.counts, strict=True))


def _run(cfg: Config, body: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        snap = build_snapshot(cfg, 1)
        uc = cfg.upstream
        pool = UpstreamPool(
            snap.upstreams, timeout=uc.timeout, attempt_timeout=uc.attempt_timeout, down_backoff=1
        )
        pipe = Pipeline(snap, pool, QueryLog(64))
        listener = UdpListener(
            bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM), pipe, Gate(pipe, ListenerStats())
        )
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.connect(listener.sock.getsockname())
        rig = Rig(pipe, listener, client)
        real_time = loop.time
        loop.time = lambda: real_time() + rig.offset  # type: ignore[method-assign]
        try:
            await body(rig)
        finally:
            client.close()
            listener.close()
            await pool.close()

    asyncio.run(main())


def _ttl(reply: bytes) -> int:
    msg = dns.message.from_wire(reply)
    assert msg.answer, f"no answer in {msg}"
    return int(msg.answer[0].ttl)


def test_a_repeat_is_answered_from_the_packet_cache_with_its_own_id_and_counted(
    tmp_path: Path, upstream: AuthServer
) -> None:
    qname = "www.example.test"

    async def body(rig: Rig) -> None:
        first = await rig.ask(make_query(qname, "A", id=1, edns=1232))
        second = await rig.ask(make_query(qname, "A", id=2, edns=1232))
        assert len(rig.pipe.packets.data) == 1, "a cache hit did not reach the packet cache"
        third = await rig.ask(make_query(qname, "A", id=3, edns=1232))
        fourth = await rig.ask(make_query(qname, "A", id=4, edns=1232))
        assert [struct.unpack("!H", r[:2])[0] for r in (first, second, third, fourth)] == [
            1,
            2,
            3,
            4,
        ]
        # Same bytes after the ID as the answer-cache hit (same second of age, same TTL).
        assert third[2:] == second[2:] and fourth[2:] == second[2:]
        assert dns.message.from_wire(third).answer == dns.message.from_wire(first).answer
        assert rig.counts()["resolved"] == 1 and rig.counts()["cached"] == 3, rig.counts()
        assert rig.pipe.qlog.total == 4, "packet-cache answers must be in the query log"
        newest = rig.pipe.qlog.recent(REASONS, limit=1)[0]
        assert (newest.name, newest.reason, newest.client) == (qname + ".", "cached", "127.0.0.1")

    _run(_config(tmp_path, upstream), body)
    assert upstream.count(qname) == 1


def test_a_packet_cache_record_ends_when_the_ttl_would_change(
    tmp_path: Path, upstream: AuthServer
) -> None:
    """Aged TTLs are exact: the record is good only within one whole second of the entry's age."""
    qname = "www.example.test"

    async def body(rig: Rig) -> None:
        first = _ttl(await rig.ask(make_query(qname, "A", id=1)))
        rig.offset += 0.2
        assert _ttl(await rig.ask(make_query(qname, "A", id=2))) == first  # answer cache
        rig.offset += 0.3
        assert _ttl(await rig.ask(make_query(qname, "A", id=3))) == first  # packet cache
        hits = rig.pipe.counts[R_CACHED]
        rig.offset += 0.7  # 1.2 s after the answer was stored
        assert _ttl(await rig.ask(make_query(qname, "A", id=4))) == first - 1
        rig.offset += 2.0
        assert _ttl(await rig.ask(make_query(qname, "A", id=5))) == first - 3
        assert _ttl(await rig.ask(make_query(qname, "A", id=6))) == first - 3
        assert rig.pipe.counts[R_CACHED] == hits + 3
        rig.offset += 400.0  # past the 300 s TTL: asked upstream again, never served stale
        assert _ttl(await rig.ask(make_query(qname, "A", id=7))) == 300
        assert rig.pipe.counts[R_RESOLVED] == 2

    _run(_config(tmp_path, upstream), body)
    assert upstream.count(qname) == 2


def test_letter_case_flags_and_do_bit_each_get_their_own_reply(
    tmp_path: Path, upstream: AuthServer
) -> None:
    async def body(rig: Rig) -> None:
        variants = {
            "lower": make_query("www.example.test", "A", id=7),
            "upper": make_query("WWW.Example.TEST", "A", id=7),
            "no rd": make_query("www.example.test", "A", id=7, rd=False),
            "do": make_query("www.example.test", "A", id=7, edns=1232, do=True),
        }
        for _ in range(3):
            replies = {k: await rig.ask(q) for k, q in variants.items()}
        for label, query in variants.items():
            got = dns.message.from_wire(replies[label])
            sent = dns.message.from_wire(query)
            assert got.question[0].name.to_text() == sent.question[0].name.to_text(), label
            assert bool(got.flags & 0x0100) == bool(sent.flags & 0x0100), f"{label}: RD not copied"
            assert (got.ednsflags & 0x8000 != 0) == (label == "do"), f"{label}: DO not echoed"
        assert len(rig.pipe.packets.data) == len(variants)

    _run(_config(tmp_path, upstream), body)


def test_a_blocked_name_goes_straight_in_and_a_reload_empties_it(
    tmp_path: Path, upstream: AuthServer
) -> None:
    cfg = _config(tmp_path, upstream)

    async def body(rig: Rig) -> None:
        for i in range(4):
            reply = dns.message.from_wire(await rig.ask(make_query(BLOCKED, "A", id=10 + i)))
            assert reply.rcode() == dns.rcode.NXDOMAIN and reply.id == 10 + i
        assert len(rig.pipe.packets.data) == 1, "the first block did not go to the packet cache"
        assert len(rig.pipe.cache) == 0, "a blocked UDP answer needs no answer-cache entry"
        assert rig.pipe.counts[R_BLOCKED] == 4
        cat = rig.pipe.snap.filter.category_index(1)
        assert rig.pipe.blocked_by_category[cat] == 4, "blocks by category miss the repeats"
        assert {d.reason for d in rig.pipe.qlog.recent(REASONS)} == {"blocked"}
        assert {d.rule for d in rig.pipe.qlog.recent(REASONS)} != {-1}, "the rule was not logged"

        # The list no longer has the name: after the swap the next query is decided again.
        (tmp_path / "kids.txt").write_text("something-else.example.test\n")
        rig.pipe.swap(build_snapshot(cfg, 2), rig.pipe.upstream)
        assert not rig.pipe.packets.data, "a reload must empty the packet cache"
        reply = dns.message.from_wire(await rig.ask(make_query(BLOCKED, "A", id=20)))
        assert reply.rcode() == dns.rcode.NOERROR, "the unlisted name is still blocked"

    _run(cfg, body)


def test_it_never_grows_past_its_size(tmp_path: Path, upstream: AuthServer) -> None:
    async def body(rig: Rig) -> None:
        for i in range(25):
            name = f"n{i}.wild.example.test"
            for j in range(2):
                await rig.ask(make_query(name, "A", id=j))
            assert len(rig.pipe.packets.data) <= 4
        assert rig.pipe.packets.flushes >= 5

    _run(_config(tmp_path, upstream, cache_size=4), body)


def test_tcp_answers_never_enter_it(tmp_path: Path, upstream: AuthServer) -> None:
    """Only UDP replies are memoised: over TCP the size limit and framing differ."""
    cfg = _config(tmp_path, upstream)

    async def main() -> None:
        snap = build_snapshot(cfg, 1)
        uc = cfg.upstream
        pool = UpstreamPool(
            snap.upstreams, timeout=uc.timeout, attempt_timeout=uc.attempt_timeout, down_backoff=1
        )
        pipe = Pipeline(snap, pool, QueryLog(8))

        class Tcp:
            udp = False

            def send(self, resp: bytes, addr: object) -> None:
                pass

        now = asyncio.get_running_loop().time()
        for i in range(3):
            resp = pipe.handle(make_query(BLOCKED, "A", id=i), "127.0.0.1", now, Tcp(), None)
            assert resp is not None and dns.message.from_wire(resp).rcode() == dns.rcode.NXDOMAIN
        assert not pipe.packets.data
        assert pipe.counts[R_BLOCKED] == 3
        await pool.close()

    asyncio.run(main())
