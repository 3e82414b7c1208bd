"""In-process cost of one query through ``Pipeline.handle``, without sockets.

    python bench/hotpath.py [--domains N]

Prints microseconds per query for a cache hit, a blocked name seen for the first time (the
decision is made and cached), a blocked name answered from the cache, and a forwarded name: the
whole fast path to a canned upstream on 127.0.0.1 in the same event loop (its two syscalls and
the upstream's two included). The client's recvfrom + sendto (about 6 us per query on loopback
here) come on top of every figure; the end-to-end figures are in bench/peers.sh.

    python bench/hotpath.py --profile      # the forwarded case under cProfile, top 25
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import socket
import string
import struct
import tempfile
import time
from pathlib import Path

from guardian_dns.config import Config, apply_overrides, default_config
from guardian_dns.pipeline import Pipeline
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import build_snapshot
from guardian_dns.upstream import UpstreamPool


def make_query(name: str, qtype: int = 1, edns: bool = True, qid: int = 0x4242) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    head = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0) if edns else b""
    return head + wire + struct.pack("!HH", qtype, 1) + opt


class Sink:
    udp = True

    def send(self, resp: bytes, addr: object) -> None:
        pass


def rand_name(rng: random.Random) -> str:
    label = "".join(rng.choices(string.ascii_lowercase, k=10))
    return f"www.{label}.example.com"


class CannedUpstream:
    """A UDP 'upstream' on 127.0.0.1 in this loop: answers every query with one A record."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            qend = data.index(b"\x00", 12) + 5
            head = data[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
            rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 3600, 4) + bytes([192, 0, 2, 1])
            self.sock.sendto(head + data[12:qend] + rr, addr)


async def forward_run(pipe: Pipeline, queries: list[bytes], now: float) -> float:
    """Seconds for every query to be forwarded and answered, 200 in flight at a time."""
    loop = asyncio.get_running_loop()
    done = 0
    target = 0
    batch_done: asyncio.Future[None] = loop.create_future()

    class Collect:
        udp = True

        def send(self, resp: bytes, addr: object) -> None:
            nonlocal done
            done += 1
            if done == target and not batch_done.done():
                batch_done.set_result(None)

    out = Collect()
    start = time.perf_counter()
    for i in range(0, len(queries), 200):
        batch = queries[i : i + 200]
        target = done + len(batch)
        batch_done = loop.create_future()
        for q in batch:
            pipe.handle(q, "127.0.0.1", now, out, None)
        await batch_done
    return time.perf_counter() - start


async def main(domains: int, profile: bool) -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        listed = [rand_name(rng).removeprefix("www.") for _ in range(domains)]
        path = Path(tmp) / "list.txt"
        path.write_text("\n".join(listed) + "\n")
        cfg: Config = apply_overrides(
            default_config(), upstreams=["udp://127.0.0.1:9"], blocklists=[f"bench={path}"]
        )
        t0 = time.perf_counter()
        snap = build_snapshot(cfg, 1)
        print(f"snapshot: {snap.domains} domains in {time.perf_counter() - t0:.2f} s")
    uc = cfg.upstream
    canned = CannedUpstream(asyncio.get_running_loop())
    pool = UpstreamPool(
        (f"udp://127.0.0.1:{canned.port}",),
        timeout=uc.timeout,
        attempt_timeout=uc.attempt_timeout,
        down_backoff=1.0,
    )
    pipe = Pipeline(snap, pool, QueryLog(10000))
    sink = Sink()
    now = time.monotonic()

    def run(label: str, queries: list[bytes], repeat: int = 1) -> None:
        handle = pipe.handle
        start = time.perf_counter()
        n = 0
        for _ in range(repeat):
            for q in queries:
                handle(q, "127.0.0.1", now, sink, None)
                n += 1
        us = (time.perf_counter() - start) / n * 1e6
        print(f"{label:<34} {us:6.2f} us/query  ({n} queries)")

    blocked = [
        make_query("www." + d, rng.choice((1, 28)), qid=i & 0xFFFF) for i, d in enumerate(listed)
    ]
    count = min(len(blocked), 50000)
    run("blocked, first time (decide+cache)", blocked[:count])
    run("blocked, from cache", blocked[:count])
    hot = blocked[:2000]
    run("cache hit (2000 hot names)", hot, repeat=20)
    misses = [make_query(rand_name(rng), qid=i) for i in range(20000)]
    await forward_run(pipe, misses[:2000], now)  # fill the socket pool
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    seconds = await forward_run(pipe, misses[2000:], now)
    if prof:
        prof.disable()
    print(f"{'forwarded (canned upstream)':<34} {seconds / 18000 * 1e6:6.2f} us/query")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.domains, args.profile))
    except ImportError:
        asyncio.run(main(args.domains, args.profile))
