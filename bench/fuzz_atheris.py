"""Coverage-guided fuzzing of ``Pipeline.handle`` with atheris (libFuzzer), in-process.

    pip install atheris            # x86_64 wheels; elsewhere it needs clang to build
    python bench/fuzz_atheris.py -max_total_time=60 [corpus_dir] [-runs=N] [libFuzzer flags]

Every input is handled the way the UDP listener would hand it over: at least 12 bytes and QR
clear (the listener drops the rest before the pipeline sees them). A crash is any exception out
of ``handle``, or a reply that breaks the rules in RELIABILITY.md section 1.3: shorter than a
header, ID or opcode not echoed, QR not set, over 512 bytes (the fuzzer never sends EDNS sizes it
could rely on, so the strict UDP bound applies only without OPT), or unreadable by dnspython.
The upstream is a loopback port nothing listens on, so forwarded questions fail fast and come
back SERVFAIL through the responder, and are checked the same way.

libFuzzer writes a crashing input to ``crash-<sha1>``; replay it with
``python bench/fuzz_atheris.py crash-<sha1>``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from pathlib import Path

import dns.message

from guardian_dns.config import apply_overrides, default_config
from guardian_dns.pipeline import REASONS, Pipeline
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import build_snapshot
from guardian_dns.upstream import UpstreamPool

BLOCKED = ("blocked.example", "ads.tracker.test")


class Collector:
    udp = True

    def __init__(self) -> None:
        self.late: list[tuple[bytes, object]] = []

    def send(self, resp: bytes, addr: object) -> None:
        self.late.append((resp, addr))


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit(query: bytes) -> int:
    try:
        msg = dns.message.from_wire(query)
    except Exception:
        return 512
    return 512 if msg.edns < 0 else min(max(msg.payload, 512), 1232)


def check(query: bytes, resp: bytes) -> None:
    where = f"query {query.hex()} -> reply {resp.hex()}"
    if len(resp) < 12:
        raise AssertionError(f"{where}: shorter than a header")
    if resp[:2] != query[:2]:
        raise AssertionError(f"{where}: ID not echoed")
    if not resp[2] & 0x80 or resp[2] & 0x78 != query[2] & 0x78:
        raise AssertionError(f"{where}: QR not set or opcode not echoed")
    if len(resp) > _limit(query):
        raise AssertionError(f"{where}: {len(resp)} bytes, over {_limit(query)}")
    try:
        dns.message.from_wire(resp)
    except Exception as exc:
        raise AssertionError(f"{where}: dnspython cannot read it: {exc!r}") from exc


class Target:
    def __init__(self, list_dir: Path) -> None:
        path = list_dir / "kids.txt"
        path.write_text("\n".join(BLOCKED) + "\n")
        cfg = apply_overrides(
            default_config(),
            upstreams=[f"udp://127.0.0.1:{_unused_port()}"],
            blocklists=[f"kids={path}"],
        )
        self.snap = build_snapshot(cfg, 1)
        self.loop = asyncio.new_event_loop()
        self.out = Collector()
        self.pool, self.pipe = self.loop.run_until_complete(self._build())
        self.runs = 0

    async def _build(self) -> tuple[UpstreamPool, Pipeline]:
        uc = self.snap.config.upstream
        pool = UpstreamPool(
            self.snap.upstreams,
            timeout=uc.timeout,
            attempt_timeout=uc.attempt_timeout,
            down_backoff=1.0,
        )
        return pool, Pipeline(self.snap, pool, QueryLog(256))

    async def _one(self, data: bytes) -> None:
        pipe, out, loop = self.pipe, self.out, self.loop
        out.late.clear()
        resp = pipe.handle(data, "127.0.0.1", loop.time(), out, data)
        if resp is not None:
            check(data, resp)
            return
        deadline = loop.time() + 5.0
        while pipe.tasks or pipe.inflight:
            if loop.time() > deadline:
                raise AssertionError(f"query {data.hex()}: no late answer within 5 s")
            await asyncio.sleep(0.0005)
        if len(out.late) != 1:
            raise AssertionError(f"query {data.hex()}: {len(out.late)} late answers, expected 1")
        check(data, out.late[0][0])

    def __call__(self, raw: bytes) -> None:
        if len(raw) < 12 or raw[2] & 0x80:
            return  # the listener drops these before the pipeline sees them
        self.runs += 1
        self.loop.run_until_complete(self._one(raw))

    def close(self) -> None:
        async def shutdown() -> None:
            for task in list(self.pipe.tasks):
                task.cancel()
            await asyncio.gather(*self.pipe.tasks, return_exceptions=True)
            await self.pool.close()

        self.loop.run_until_complete(shutdown())
        self.loop.close()


def main() -> None:
    try:
        import atheris
    except ImportError:
        sys.exit(
            "atheris is not installed: pip install atheris "
            "(wheels exist for x86_64 Linux; elsewhere it needs clang and libFuzzer)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp))

        def report() -> None:
            counts = dict(zip(REASONS, target.pipe.counts, strict=True))
            print(f"handled {target.runs} inputs: {counts}", file=sys.stderr)
            print(f"malformed reasons: {target.pipe.malformed}", file=sys.stderr)

        import atexit

        atexit.register(report)
        atheris.instrument_all()
        atheris.Setup(sys.argv, target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
