"""A query whose handling raises is still answered: SERVFAIL, ID echoed, counted as an error,
and the listener keeps serving (listener.py: "Every packet that reaches the pipeline is answered").

The real ``UdpListener`` and ``TcpConnection`` on 127.0.0.1:0, a real client socket, and a
pipeline whose filter raises: ``decide`` is replaced on the snapshot's filter instance, so the
fault is inside ``Pipeline.handle`` exactly where a bug in a stage would be.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import dns.message
import dns.rcode
import pytest

from guardian_dns import udpio
from guardian_dns.config import apply_overrides, default_config
from guardian_dns.listener import (
    Gate,
    ListenerStats,
    TcpConnection,
    TcpServerState,
    UdpListener,
    bind_socket,
)
from guardian_dns.pipeline import R_BLOCKED, R_ERROR, REASONS, Pipeline
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot, build_snapshot
from guardian_dns.upstream import UpstreamPool
from tests.support import free_port
from tests.support.wire import make_query

BLOCKED: Final = "blocked.example"
TIMEOUT: Final = 3.0
QID: Final = 0x4242

Exchange = Callable[[bytes], Awaitable[bytes]]


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    path = tmp_path / "kids.txt"
    path.write_text(BLOCKED + "\n")
    cfg = apply_overrides(
        default_config(),
        upstreams=[f"udp://127.0.0.1:{free_port()}"],  # nothing listens: never reached here
        blocklists=[f"kids={path}"],
    )
    return build_snapshot(cfg, 1)


def _boom(name: str) -> tuple[int, int, int]:
    raise RuntimeError(f"injected fault deciding {name!r}")


async def _serve_udp(
    pipe: Pipeline, gate: Gate, run: Callable[[Exchange], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    listener = UdpListener(bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM), pipe, gate)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    try:
        client.connect(listener.sock.getsockname())

        async def exchange(query: bytes) -> bytes:
            await loop.sock_sendall(client, query)
            return await asyncio.wait_for(loop.sock_recv(client, 65535), TIMEOUT)

        await run(exchange)
    finally:
        client.close()
        listener.close()


async def _serve_udp_plain(
    pipe: Pipeline, gate: Gate, run: Callable[[Exchange], Awaitable[None]]
) -> None:
    """The same listener on the portable one-call-per-datagram I/O (udpio.PlainIO)."""
    saved = udpio.open_io
    udpio.open_io = udpio.PlainIO  # type: ignore[assignment]
    try:
        await _serve_udp(pipe, gate, run)
    finally:
        udpio.open_io = saved


async def _serve_tcp(
    pipe: Pipeline, gate: Gate, run: Callable[[Exchange], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    state = TcpServerState(pipe, gate)
    server = await loop.create_server(
        lambda: TcpConnection(state), sock=bind_socket("127.0.0.1", 0, socket.SOCK_STREAM)
    )
    host, port = server.sockets[0].getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:

        async def exchange(query: bytes) -> bytes:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))[0]
            return await asyncio.wait_for(reader.readexactly(size), TIMEOUT)

        await run(exchange)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "serve", [_serve_udp, _serve_udp_plain, _serve_tcp], ids=["udp", "udp-plain", "tcp"]
)
def test_a_query_whose_handling_raises_is_answered_servfail_and_counted(
    snap: Snapshot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    serve: Callable[[Pipeline, Gate, Callable[[Exchange], Awaitable[None]]], Awaitable[None]],
) -> None:
    async def main() -> None:
        uc = snap.config.upstream
        pool = UpstreamPool(
            snap.upstreams, timeout=uc.timeout, attempt_timeout=uc.attempt_timeout, down_backoff=1
        )
        pipe = Pipeline(snap, pool, QueryLog(16))
        gate = Gate(pipe, ListenerStats())

        async def run(exchange: Exchange) -> None:
            monkeypatch.setattr(snap.filter, "decide", _boom)
            query = make_query("www." + BLOCKED, "A", id=QID, edns=1232)
            reply = await exchange(query)
            got = dns.message.from_wire(reply)
            assert got.id == QID, f"ID not echoed: {reply.hex()}"
            assert got.rcode() == dns.rcode.SERVFAIL, f"{dns.rcode.to_text(got.rcode())}"
            assert pipe.counts[R_ERROR] == 1, dict(zip(REASONS, pipe.counts, strict=True))
            assert "injected fault" in caplog.text, "the internal error was not logged"

            # The fault is gone: the same listener answers the next query normally.
            monkeypatch.undo()
            query = make_query("www." + BLOCKED, "A", id=QID + 1, edns=1232)
            got = dns.message.from_wire(await exchange(query))
            assert got.id == QID + 1
            assert got.rcode() == dns.rcode.NXDOMAIN, "blocked name not blocked after the fault"
            assert pipe.counts[R_BLOCKED] == 1
            assert pipe.counts[R_ERROR] == 1

        try:
            await serve(pipe, gate, run)
        finally:
            for task in list(pipe.tasks):
                task.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
            await pool.close()

    asyncio.run(main())
