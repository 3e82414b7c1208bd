"""udpio: batched datagram I/O moves every datagram, both ways, to and from the right address.

Real sockets on 127.0.0.1 and ::1; both implementations (recvmmsg/sendmmsg and the portable
recvfrom/sendto fallback) must behave the same, since the listener cannot tell them apart.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from guardian_dns import udpio


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _make(kind: str, sock: socket.socket) -> udpio.BatchIO:
    if kind == "plain":
        return udpio.PlainIO(sock)
    calls = udpio._load()
    if calls is None:
        pytest.skip("this platform has no recvmmsg/sendmmsg: only the fallback applies")
    return udpio.MmsgIO(sock, calls)


FAMILIES = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]


@pytest.fixture(
    params=[(k, f) for k in ("mmsg", "plain") for f in FAMILIES], ids=lambda p: f"{p[0]}-{p[1][0]}"
)
def server(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[udpio.BatchIO, socket.socket, str, int]]:
    kind, (host, family) = request.param
    if family == socket.AF_INET6 and not _has_ipv6():
        pytest.skip("no IPv6 on loopback here")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    try:
        yield _make(kind, sock), sock, host, family
    finally:
        sock.close()


def _client(host: str, family: int) -> socket.socket:
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.bind((host, 0))
    c.settimeout(2)
    return c


def _recv_all(io: udpio.BatchIO, sock: socket.socket, want: int) -> list[udpio.Datagram]:
    got: list[udpio.Datagram] = []
    while len(got) < want:
        ready, _, _ = select.select([sock], [], [], 2)
        assert ready, f"only {len(got)} of {want} datagrams arrived"
        got += io.recv()
    return got


def test_a_batch_is_read_in_order_with_each_senders_address(server: Any) -> None:
    io, sock, host, family = server
    port = sock.getsockname()[1]
    a, b = _client(host, family), _client(host, family)
    try:
        for i in range(5):
            a.sendto(b"a%d" % i, (host, port))
            b.sendto(b"b%d" % i, (host, port))
        got = _recv_all(io, sock, 10)
        assert [d for d, _addr, _key in got] == [
            m for i in range(5) for m in (b"a%d" % i, b"b%d" % i)
        ]
        # Both clients share the address, so they share the key (the memo is per address,
        # not per port), and the key reads back as the address's text.
        assert {key for _d, _a, key in got} == {got[0][2]}
        assert io.client_text(got[0][2]) == host
        # Replies go back to the port each query came from.
        assert io.send([(b"to-" + d, addr) for d, addr, _k in got]) == 0
        assert sorted(a.recv(100) for _ in range(5)) == [b"to-a%d" % i for i in range(5)]
        assert sorted(b.recv(100) for _ in range(5)) == [b"to-b%d" % i for i in range(5)]
    finally:
        a.close()
        b.close()


def test_more_than_one_batch_waiting_and_more_replies_than_slots(server: Any) -> None:
    io, sock, host, family = server
    port = sock.getsockname()[1]
    c = _client(host, family)
    try:
        n = udpio.SLOTS * 2 + 7
        for i in range(n):
            c.sendto(i.to_bytes(2, "big"), (host, port))
        first = io.recv()
        assert len(first) == udpio.SLOTS  # never more than a batch per call
        got = first + _recv_all(io, sock, n - len(first))
        assert [int.from_bytes(d, "big") for d, _a, _k in got] == list(range(n))
        assert io.send([(d * 3, addr) for d, addr, _k in got]) == 0
        assert [c.recv(100) for _ in range(n)] == [i.to_bytes(2, "big") * 3 for i in range(n)]
        assert io.recv() == []  # nothing waiting: an empty batch, no exception
    finally:
        c.close()


def test_long_datagrams_are_cut_and_long_replies_still_sent(server: Any) -> None:
    io, sock, host, family = server
    port = sock.getsockname()[1]
    c = _client(host, family)
    try:
        c.sendto(b"x" * 5000, (host, port))
        ((data, addr, _key),) = _recv_all(io, sock, 1)
        assert data == b"x" * udpio.RECV_SIZE
        big = b"y" * (udpio.SEND_SIZE + 100)  # longer than a send slot: sent on its own
        assert io.send([(b"before", addr), (big, addr), (b"after", addr)]) == 0
        assert [c.recv(9000) for _ in range(3)] == [b"before", big, b"after"]
    finally:
        c.close()


def test_a_reply_that_cannot_be_sent_is_counted_and_the_rest_still_go(server: Any) -> None:
    io, sock, host, family = server
    port = sock.getsockname()[1]
    c = _client(host, family)
    try:
        c.sendto(b"q", (host, port))
        ((_data, addr, _key),) = _recv_all(io, sock, 1)
        # The same address with port 0: the kernel refuses to send there (EINVAL).
        bad: Any
        if isinstance(addr, tuple):
            bad = (addr[0], 0, *addr[2:])
        else:
            bad = addr[:2] + b"\x00\x00" + addr[4:]
        assert io.send([(b"one", addr), (b"lost", bad), (b"two", addr)]) == 1
        assert [c.recv(100) for _ in range(2)] == [b"one", b"two"]
    finally:
        c.close()


def test_open_io_picks_the_batched_calls_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        expected = udpio.PlainIO if udpio._load() is None else udpio.MmsgIO
        assert type(udpio.open_io(s)) is expected
        monkeypatch.setenv("GUARDIAN_DNS_UDP_IO", "plain")
        assert type(udpio.open_io(s)) is udpio.PlainIO
