"""In-process cost of one query through ``Pipeline.handle``, without sockets.

    python bench/hotpath.py [--domains N]

Prints microseconds per query for a cache hit, a blocked name seen for the first time (the
decision is made and cached), a blocked name answered from the cache, and a pass-through name's
decision (trie miss, up to where a forward would start). Socket costs (recvfrom + sendto, about
6 us per query on loopback here) come on top; the end-to-end figures are in bench/peers.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import random
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


async def main(domains: int) -> None:
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
    pool = UpstreamPool(
        (), timeout=uc.timeout, attempt_timeout=uc.attempt_timeout, down_backoff=1.0
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
    pipe.cache.clear()
    misses = [make_query(rand_name(rng)) for _ in range(20000)]
    t0 = time.perf_counter()
    for q in misses:
        pipe.handle(q, "127.0.0.1", now, sink, None)
    t1 = time.perf_counter()
    print(f"{'pass-through up to forward':<34} {(t1 - t0) / len(misses) * 1e6:6.2f} us/query")
    for task in list(pipe.tasks):
        task.cancel()
    await asyncio.sleep(0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100000)
    asyncio.run(main(ap.parse_args().domains))
