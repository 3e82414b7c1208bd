"""Upstream resolution: ask the configured resolvers, safely, within a time budget.

What it decides: which upstream to ask next, when an attempt has failed, and whether a reply
really answers the question we asked.
What it reads: the network (UDP, TCP, TLS to the configured servers only).
What it must never do: reuse a query ID or a source port pattern an attacker can predict (RFC 5452:
every UDP query gets a fresh ID from the OS's CSPRNG and a fresh socket, so a fresh ephemeral port),
accept a reply whose ID, name (letter case included), type or class differ from what we sent, or
wait longer than the budget. A connected UDP socket makes the kernel drop datagrams from any other
address or port, which is the source check of RFC 5452 9.1 for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
from collections.abc import Sequence

from guardian_dns import wire
from guardian_dns.config import parse_upstream_url
from guardian_dns.errors import UpstreamError

log = logging.getLogger(__name__)

# Replies that say "this server could not help": try the next one (a forwarder's duty).
_RETRY_RCODES = frozenset({wire.SERVFAIL, wire.REFUSED, wire.NOTIMP, wire.FORMERR})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_ATTEMPTS = 6


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
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1


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
        qid = secrets.randbits(16)
        while qid in self.pending:
            qid = secrets.randbits(16)
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
        self.trusted = host in ("127.0.0.1", "::1") or host.startswith("127.")


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

    @property
    def all_trusted(self) -> bool:
        """Every upstream is on loopback: its AD bit may be relayed (RFC 6840 5.7)."""
        return bool(self.servers) and all(s.trusted for s in self.servers)

    async def query(self, question: bytes, do: bool, cd: bool) -> wire.Reply:
        """Resolve one question; raise UpstreamError when no server answered usefully in time."""
        if not self.servers:
            raise UpstreamError("no upstream servers configured")
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout
        order = sorted(self.servers, key=lambda s: s.down_until > start)
        last_error = "no attempt"
        answered_badly: set[int] = set()
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
                if srv.scheme == "udp":
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
            if reply.rcode in _RETRY_RCODES:
                self.stats.error("rcode")
                last_error = f"{srv.url}: rcode {reply.rcode}"
                answered_badly.add(id(srv))
                continue
            srv.down_until = 0.0
            self.stats.observe(loop.time() - start)
            return reply
        raise UpstreamError(last_error)

    async def _udp(
        self, srv: _Server, question: bytes, do: bool, cd: bool, timeout: float
    ) -> wire.Reply:
        loop = asyncio.get_running_loop()
        qid = secrets.randbits(16)
        msg = wire.build_upstream_query(qid, question, do, cd)
        sock = socket.socket(srv.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((srv.host, srv.port))
            sock.send(msg)
            fut: asyncio.Future[wire.Reply] = loop.create_future()
            fd = sock.fileno()
            loop.add_reader(fd, self._on_udp_readable, sock, fut, qid, question)
            handle = loop.call_later(timeout, _expire, fut)
            try:
                return await fut
            finally:
                handle.cancel()
                loop.remove_reader(fd)
        finally:
            sock.close()

    def _on_udp_readable(
        self, sock: socket.socket, fut: asyncio.Future[wire.Reply], qid: int, question: bytes
    ) -> None:
        while not fut.done():
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP port unreachable on a connected socket: fail fast
                fut.set_exception(exc)
                return
            if len(data) < 12 or (data[0] << 8 | data[1]) != qid:
                self.stats.mismatched += 1
                continue
            if data[12 : 12 + len(question)] != question:
                self.stats.mismatched += 1
                continue
            try:
                reply = wire.parse_reply(data)
            except wire.WireError as exc:
                # It claims to answer our exact question but cannot be read: a broken upstream,
                # not a spoof we could outwait. Fail this attempt now rather than at the timeout.
                fut.set_exception(exc)
                return
            if reply.question != question:
                self.stats.mismatched += 1
                continue
            fut.set_result(reply)

    async def close(self) -> None:
        for srv in self.servers:
            await srv.stream.close()
