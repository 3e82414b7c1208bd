"""Upstream resolution: ask the configured resolvers, safely, within a time budget.

What it decides: which upstream to ask next, when an attempt has failed, and whether a reply
really answers the question we asked.
What it reads: the network (UDP, TCP, TLS to the configured servers only).
What it must never do: reuse a query ID or a source port pattern an attacker can predict, accept a
reply whose ID, name (letter case included), type or class differ from what we sent, or wait
longer than the budget.

Source ports (RFC 5452): each UDP query goes out on a socket picked at random from a pool of up
to ``UDP_POOL_SIZE`` connected sockets on random ephemeral ports (chosen by the kernel), and a
socket is retired after ``UDP_USES_PER_SOCKET`` queries so the set of ports keeps moving. With a
CSPRNG query ID that is about 25 bits an off-path spoofer must guess, without paying socket(),
connect(), close() and two epoll changes on every query (they cost more than the rest of a
forwarded query together).
IDs come from the OS's CSPRNG. A connected UDP socket makes the kernel drop datagrams from any
other address or port, which is the source check of RFC 5452 9.1 for free.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import socket
import ssl
import struct
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from guardian_dns import wire
from guardian_dns.config import parse_upstream_url
from guardian_dns.errors import UpstreamError

log = logging.getLogger(__name__)

# Replies that say "this server could not help": try the next one (a forwarder's duty).
RETRY_RCODES = frozenset({wire.SERVFAIL, wire.REFUSED, wire.NOTIMP, wire.FORMERR})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_ATTEMPTS = 6
UDP_POOL_SIZE = 512  # connected sockets per upstream server
UDP_USES_PER_SOCKET = 256  # then the socket is retired: its port changes


class _Random:
    """CSPRNG bytes fetched 4 KiB at a time: one getrandom() per 2048 IDs, not one per ID."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def u16(self) -> int:
        pos = self.pos
        if pos + 2 > len(self.buf):
            self.buf = os.urandom(4096)
            pos = 0
        self.pos = pos + 2
        return (self.buf[pos] << 8) | self.buf[pos + 1]


_random = _Random()


def _expire(fut: asyncio.Future[wire.Reply]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class UpstreamStats:
    """Plain counters read by the metrics collector at scrape time."""

    def __init__(self) -> None:
        self.queries = 0
        self.errors: dict[str, int] = {}
        self.mismatched = 0  # replies dropped because they did not match our question
        self.tc_retries = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def observe(self, seconds: float) -> None:
        self.latency_sum += seconds
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1


class _StreamConn:
    """A pipelined TCP or TLS connection to an upstream (RFC 7766 6.2.1), reconnected as needed."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, sni: str | None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.sni = sni
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, tuple[asyncio.Future[wire.Reply], bytes]] = {}
        self._connecting: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def _connect(self, timeout: float) -> None:
        if self.writer is not None and not self.writer.is_closing():
            return
        if self._connecting is not None:
            await asyncio.wait_for(asyncio.shield(self._connecting), timeout)
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.sni if self.tls else None,
                ),
                timeout,
            )
            self.writer = writer
            self._reader_task = loop.create_task(self._read_loop(reader, writer))
            self._connecting.set_result(None)
        except BaseException as exc:
            self._connecting.set_exception(ConnectionError(str(exc)))
            self._connecting.exception()  # mark retrieved: waiters get their own error
            raise
        finally:
            self._connecting = None

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(n)
                if len(data) < 12:
                    continue
                qid = (data[0] << 8) | data[1]
                item = self.pending.get(qid)
                if item is None or item[0].done():
                    continue
                fut, question = item
                if data[12 : 12 + len(question)] != question:
                    continue
                try:
                    reply = wire.parse_reply(data)
                except wire.WireError as exc:
                    fut.set_exception(exc)
                    continue
                if reply.question != question:
                    continue
                fut.set_result(reply)
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError):
            pass
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()
            for fut, _q in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("upstream closed the connection"))

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> wire.Reply:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._connect(timeout)
        writer = self.writer
        if writer is None:
            raise ConnectionError("not connected")
        qid = _random.u16()
        while qid in self.pending:
            qid = _random.u16()
        msg = wire.build_upstream_query(qid, question, do, cd)
        fut: asyncio.Future[wire.Reply] = loop.create_future()
        self.pending[qid] = (fut, question)
        handle = loop.call_later(max(0.0, timeout - (loop.time() - start)), _expire, fut)
        try:
            writer.write(struct.pack("!H", len(msg)) + msg)
            return await fut
        finally:
            handle.cancel()
            self.pending.pop(qid, None)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task


class Waiter(Protocol):
    """Whoever waits for one UDP attempt: the pipeline's fast path, or a coroutine's future."""

    question: bytes

    def deliver(self, reply: wire.Reply) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class _FutureWaiter:
    __slots__ = ("fut", "question")

    def __init__(self, fut: asyncio.Future[wire.Reply], question: bytes) -> None:
        self.fut = fut
        self.question = question

    def deliver(self, reply: wire.Reply) -> None:
        if not self.fut.done():
            self.fut.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class _UdpSocket:
    """One connected UDP socket of the pool, with the queries waiting for an answer on it."""

    __slots__ = ("fd", "pending", "retired", "sock", "uses")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pending: dict[int, Waiter] = {}
        self.uses = 0
        self.retired = False


class _Server:
    def __init__(self, url: str, ca_file: str | None) -> None:
        scheme, host, port, sni = parse_upstream_url(url)
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.down_until = 0.0
        tls = None
        if scheme == "tls":
            tls = ssl.create_default_context(cafile=ca_file)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.stream = _StreamConn(host, port, tls, sni or host)
        self.udp_pool: list[_UdpSocket] = []


class UpstreamPool:
    """The configured upstreams, tried healthy-first within one budget per client query."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float,
        attempt_timeout: float,
        down_backoff: float,
        ca_file: str | None = None,
    ) -> None:
        self.servers = [_Server(u, ca_file) for u in urls]
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.down_backoff = down_backoff
        self.stats = UpstreamStats()
        self.urls = tuple(urls)
        # Kept, not looked up: CPython 3.11's get_running_loop() costs a getpid() syscall.
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        # Fast-path attempts in send order; their deadlines are in the same order because the
        # attempt timeout is fixed, so a periodic sweep from the left finds every expired one.
        self._deadlines: deque[tuple[float, _UdpSocket, int, Waiter, _Server]] = deque()
        self._sweeping = False
        self._outbox: list[tuple[_UdpSocket, int, bytes]] = []

    def try_udp(self, question: bytes, do: bool, cd: bool, waiter: Waiter) -> _Server | None:
        """Send the first attempt over UDP without a coroutine, if the best server is UDP.

        The answer (or a TimeoutError from the sweep) reaches ``waiter``; None means the caller
        must take the general path (no server, best server down or not UDP, socket error).
        """
        loop = self.loop
        now = loop.time()
        srv = None
        for s in self.servers:
            if s.down_until <= now:
                srv = s
                break
        if srv is None or srv.scheme != "udp":
            return None
        try:
            us = self._udp_socket(srv)
        except OSError:
            return None
        qid = self._claim(srv, us, waiter)
        outbox = self._outbox
        if not outbox:
            loop.call_soon(self._flush)
        outbox.append((us, qid, wire.build_upstream_query(qid, question, do, cd)))
        self.stats.queries += 1
        self._deadlines.append((now + self.attempt_timeout, us, qid, waiter, srv))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(0.05, self._sweep)
        return srv

    def _flush(self) -> None:
        """Send the queries the fast path queued during this turn of the loop, back to back.

        Why queued: each datagram to a sleeping upstream wakes it, and sent one by one between
        client queries nearly every one pays that wake-up. A send that fails now fails its
        attempt the way a timeout would, so the waiter takes the general path.
        """
        outbox, self._outbox = self._outbox, []
        for us, qid, msg in outbox:
            try:
                us.sock.send(msg)
            except OSError as exc:
                waiter = us.pending.pop(qid, None)
                if waiter is not None:
                    self._release(us)
                    waiter.fail(exc)

    def _sweep(self) -> None:
        loop = self.loop
        now = loop.time()
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _deadline, us, qid, waiter, srv = dl.popleft()
            if us.pending.get(qid) is waiter:
                del us.pending[qid]
                self._release(us)
                srv.down_until = now + self.down_backoff
                self.stats.error("timeout")
                waiter.fail(TimeoutError())
        if dl:
            loop.call_later(0.05, self._sweep)
        else:
            self._sweeping = False

    def _claim(self, srv: _Server, us: _UdpSocket, waiter: Waiter) -> int:
        qid = _random.u16()
        while qid in us.pending:
            qid = _random.u16()
        us.pending[qid] = waiter
        us.uses += 1
        if us.uses >= UDP_USES_PER_SOCKET and not us.retired:
            us.retired = True
            srv.udp_pool.remove(us)
        return qid

    async def query(
        self,
        question: bytes,
        do: bool,
        cd: bool,
        *,
        started: float | None = None,
        after: _Server | None = None,
        tcp_first: bool = False,
        bad_answer: bool = False,
    ) -> wire.Reply:
        """Resolve one question; raise UpstreamError when no server answered usefully in time.

        ``started``/``after`` continue a fast-path attempt: same budget, and the server that
        just failed goes last (``bad_answer``: it answered unusably, so it is not asked again;
        ``tcp_first``: it truncated, so it is asked over TCP first).
        """
        if not self.servers:
            raise UpstreamError("no upstream servers configured")
        loop = self.loop
        start = loop.time() if started is None else started
        deadline = start + self.timeout
        now = loop.time()
        order = sorted(self.servers, key=lambda s: s.down_until > now)
        last_error = "no attempt"
        answered_badly: set[int] = set()
        if after is not None and after in order:  # (not after a reload swapped the pool)
            if tcp_first:
                order.remove(after)
                order.insert(0, after)
            else:
                order.remove(after)
                order.append(after)
                if bad_answer:
                    answered_badly.add(id(after))
        for attempt in range(MAX_ATTEMPTS):
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0.005:
                break
            srv = order[attempt % len(order)]
            if id(srv) in answered_badly:
                if len(answered_badly) == len(order):
                    break
                continue
            budget = min(self.attempt_timeout, remaining)
            self.stats.queries += 1
            try:
                if tcp_first and srv is after:
                    tcp_first = False
                    self.stats.tc_retries += 1
                    reply = await srv.stream.exchange(question, do, cd, remaining)
                elif srv.scheme == "udp":
                    reply = await self._udp(srv, question, do, cd, budget)
                    if reply.flags & wire.F_TC:
                        # RFC 7766: a truncated answer is retried over TCP, never cached.
                        self.stats.tc_retries += 1
                        remaining = deadline - loop.time()
                        reply = await srv.stream.exchange(question, do, cd, remaining)
                else:
                    reply = await srv.stream.exchange(question, do, cd, budget)
            except TimeoutError:
                srv.down_until = loop.time() + self.down_backoff
                self.stats.error("timeout")
                last_error = f"{srv.url}: timeout"
                continue
            except wire.WireError as exc:
                self.stats.error("malformed")
                last_error = f"{srv.url}: malformed reply ({exc.reason})"
                answered_badly.add(id(srv))
                continue
            except (OSError, ssl.SSLError) as exc:
                srv.down_until = loop.time() + self.down_backoff
                self.stats.error("network")
                last_error = f"{srv.url}: {exc}"
                continue
            if reply.rcode in RETRY_RCODES:
                self.stats.error("rcode")
                last_error = f"{srv.url}: rcode {reply.rcode}"
                answered_badly.add(id(srv))
                continue
            srv.down_until = 0.0
            self.stats.observe(loop.time() - start)
            return reply
        raise UpstreamError(last_error)

    def _udp_socket(self, srv: _Server) -> _UdpSocket:
        """A pool socket chosen at random; a new one (new random port) while the pool fills."""
        pool = srv.udp_pool
        if len(pool) < UDP_POOL_SIZE:
            sock = socket.socket(srv.family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((srv.host, srv.port))
            except OSError:
                sock.close()
                raise
            us = _UdpSocket(sock)
            self.loop.add_reader(us.fd, self._on_udp_readable, us)
            pool.append(us)
            return us
        return pool[_random.u16() % len(pool)]

    def _release(self, us: _UdpSocket) -> None:
        if us.retired and not us.pending:
            self.loop.remove_reader(us.fd)
            us.sock.close()

    async def _udp(
        self, srv: _Server, question: bytes, do: bool, cd: bool, timeout: float
    ) -> wire.Reply:
        loop = self.loop
        us = self._udp_socket(srv)
        fut: asyncio.Future[wire.Reply] = loop.create_future()
        waiter = _FutureWaiter(fut, question)
        qid = self._claim(srv, us, waiter)
        handle = loop.call_later(timeout, _expire, fut)
        try:
            us.sock.send(wire.build_upstream_query(qid, question, do, cd))
            return await fut
        finally:
            handle.cancel()
            if us.pending.get(qid) is waiter:
                del us.pending[qid]
            self._release(us)

    def _on_udp_readable(self, us: _UdpSocket) -> None:
        pending = us.pending
        while True:
            try:
                data = us.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable on a connected socket: fail fast
                waiters = list(pending.values())
                pending.clear()
                for w in waiters:
                    w.fail(ConnectionRefusedError(exc.errno, exc.strerror))
                self._release(us)
                return
            if len(data) < 12:
                self.stats.mismatched += 1
                continue
            qid = (data[0] << 8) | data[1]
            waiter = pending.get(qid)
            if waiter is None:
                self.stats.mismatched += 1
                continue
            question = waiter.question
            if data[12 : 12 + len(question)] != question:
                self.stats.mismatched += 1
                continue
            try:
                reply = wire.parse_reply(data)
            except wire.WireError as exc:
                # It claims to answer our exact question but cannot be read: a broken upstream,
                # not a spoof we could outwait. Fail this attempt now rather than at the timeout.
                del pending[qid]
                self._release(us)
                waiter.fail(exc)
                if not pending:
                    return
                continue
            if reply.question != question:
                self.stats.mismatched += 1
                continue
            del pending[qid]
            self._release(us)
            waiter.deliver(reply)
            if not pending:
                # Nothing else is expected on this socket: another recv would almost always be
                # EAGAIN (a syscall and an exception per forwarded query). A late datagram makes
                # the socket readable again and is read then. It also never touches a socket
                # that _release has just closed.
                return

    async def close(self) -> None:
        loop = self.loop
        for srv in self.servers:
            for us in srv.udp_pool:
                us.retired = True
                if not us.pending:
                    loop.remove_reader(us.fd)
                    us.sock.close()
            srv.udp_pool.clear()
            await srv.stream.close()
