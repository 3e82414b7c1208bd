"""The listeners: UDP and TCP sockets, who may ask, and how much a client may cost us.

What it decides: whether a packet or connection is even looked at (ACL, size, QR bit, framing),
and when a TCP connection has had enough (idle timeout, connection caps, unread replies).
What it reads: sockets.
What it must never do: die or stall on input. Every packet that reaches the pipeline is answered
(SERVFAIL if handling raised) or deliberately dropped and counted.

UDP reads batches of datagrams on ``loop.add_reader`` (udpio: ``recvmmsg`` where Linux has
it) rather than through asyncio's datagram transport: the transport allocates a 256 KiB buffer
per datagram (an mmap/munmap pair per packet with glibc), and draining up to 64 datagrams per
wake-up saves the event loop round trip. Answers that are ready synchronously (cache hits,
blocks) are sent when the batch has been read, back to back (see ``_receive`` for why); a
repeated query is answered from the packet cache (cache.PacketCache) right here, before the
pipeline parses anything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import typing
from typing import TYPE_CHECKING, Literal

from guardian_dns import edns_client, udpio, wire

if TYPE_CHECKING:
    from guardian_dns.contexts import Context
    from guardian_dns.pipeline import Pipeline

log = logging.getLogger(__name__)

_MAX_WRITE_BUFFER = 256 * 1024  # a TCP client that stops reading loses its connection
_ACL_MEMO_MAX = 65536


class ListenerStats:
    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.tcp_connections = 0
        self.tcp_rejected = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


# What the gate knows about an address: False (refused), or the rate-limit bucket it counts
# against (None: not rate limited) and its policy context (contexts.py).
Admission = Literal[False] | tuple[str | None, "Context"]


class Gate:
    """ACL, rate-limit class and policy context per address, memoised: parsing an address and
    matching it against the groups per packet would cost more than answering it.

    The memo maps an address to False (refused) or to (bucket, context). The bucket is what the
    address counts against when rate limited (the address, or its /64 for IPv6 so a device
    cannot escape by rotating privacy addresses); buckets count UDP queries in a fixed
    one-second window (RFC 5358 section 4, BCP 140: a resolver must not be a flood amplifier).
    The memo is dropped whenever what it was computed from changes: a reload, the neighbour
    table (a device's MAC moved to another address), or the overrides (a client paused alone).
    """

    def __init__(self, pipeline: Pipeline, stats: ListenerStats) -> None:
        self.pipeline = pipeline
        self.stats = stats
        self.memo: dict[str, Admission] = {}
        # UDP clients by udpio's key (the raw address): their text and admission, or None
        # for a trusted forwarder (admitted per message, by the client it names).
        self.clients: dict[object, tuple[str, Admission | None]] = {}
        pipeline.gates.append(self)  # reset by every snapshot swap
        self.counts: dict[str, int] = {}
        self.limit = 0
        self.reset()

    def reset(self) -> None:
        """Forget every classification: the snapshot, neighbours or overrides changed."""
        self.memo = {}
        self.clients = {}
        server = self.pipeline.snap.config.server
        self.limit = server.rate_limit
        # A local dnsmasq (OpenWrt) names the client in EDNS; only these may (edns_client.py).
        self.forwarded = edns_client.ForwardedClients(
            server.trusted_forwarders, self._classify_forwarded
        )

    def _classify_forwarded(
        self, forwarder: str, who: edns_client.Identity
    ) -> tuple[str, Admission]:
        """The client a trusted forwarder names: the ACL is the forwarder's (it let the client
        in), the rate limit and the policy context are the client's own."""
        pipeline = self.pipeline
        snap = pipeline.snap
        client = who.client(forwarder)
        if not snap.client_allowed(forwarder):
            return client, False
        bucket = None
        if self.limit:
            if who.address is not None and not snap.rate_limit_exempt(who.address):
                bucket = snap.rate_bucket(who.address)
            elif who.address is None and who.mac is not None:
                bucket = who.mac
            elif who.address is None and not snap.rate_limit_exempt(forwarder):
                bucket = snap.rate_bucket(forwarder)
        return client, (bucket, pipeline.contexts.for_client(who.address or forwarder, who.mac))

    def new_window(self) -> None:
        self.counts = {}

    def classify(self, ip: str) -> Admission:
        pipeline = self.pipeline
        snap = pipeline.snap
        verdict: Admission = False
        if snap.client_allowed(ip):
            bucket = None
            if self.limit and not snap.rate_limit_exempt(ip):
                bucket = snap.rate_bucket(ip)
            verdict = (bucket, pipeline.contexts.for_client(ip))
        if len(self.memo) >= _ACL_MEMO_MAX:
            self.memo = {}
        self.memo[ip] = verdict
        return verdict

    def client(self, key: object, ip: str) -> tuple[str, Admission | None]:
        """Classify a UDP client seen for the first time since the last reset (the listener's
        memo by raw address, so the address is turned into text once, not per packet)."""
        known: tuple[str, Admission | None] = (
            (ip, None) if ip in self.forwarded.trusted else (ip, self.admit(ip))
        )
        if len(self.clients) >= _ACL_MEMO_MAX:
            self.clients = {}
        self.clients[key] = known
        return known

    def admit(self, ip: str) -> Admission:
        verdict = self.memo.get(ip)
        if verdict is None:
            verdict = self.classify(ip)
        return verdict


def bind_socket(host: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener:
    udp = True

    def __init__(self, sock: socket.socket, pipeline: Pipeline, gate: Gate) -> None:
        self.sock = sock
        self.io = udpio.open_io(sock)
        self.pipeline = pipeline
        self.gate = gate
        self.loop = asyncio.get_running_loop()
        self.outbox: list[tuple[bytes, object]] = []
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        self._receive(self.outbox)
        self._flush()

    def _flush(self) -> None:
        replies, self.outbox = self.outbox, []
        if replies:
            failed = self.io.send(replies)
            if failed:
                self.gate.stats.drop("send", failed)

    def _receive(self, replies: list[tuple[bytes, object]]) -> None:
        """Read and answer one batch of datagrams (udpio); the replies are sent by the caller.

        Why the replies wait for the end of the batch: a reply wakes the client's receiving
        thread, and on loopback or a busy LAN it falls asleep again before our next reply if we
        interleave reading and sending, so every reply pays a wake-up in the kernel (more CPU
        than answering it). Sent back to back, most find the client still awake.
        """
        batch = self.io.recv()
        if not batch:
            return
        add_reply = replies.append
        pipeline = self.pipeline
        handle = pipeline.handle
        counts_by_reason = pipeline.counts
        by_category = pipeline.blocked_by_category
        log_append = pipeline.qlog.append
        gate = self.gate
        clients = gate.clients
        counts = gate.counts
        now = self.loop.time()
        for data, addr, key in batch:
            if len(data) < 12 or data[2] & 0x80:
                # Too short to be a query, or a response (QR=1): never answer (RFC 1035 4.1.1).
                gate.stats.drop("short" if len(data) < 12 else "qr")
                continue
            known = clients.get(key)
            if known is None:
                known = gate.client(key, self.io.client_text(key))
                clients = gate.clients
            ip, ok = known
            if ok is None:  # a local dnsmasq: the client it names (edns_client.py)
                ip, ok = gate.forwarded.admit(ip, data)
            if ok is False:
                if self.pipeline.snap.acl_drop:
                    gate.stats.drop("acl")
                    continue
                gate.stats.drop("acl-refused")
                resp: bytes | None = wire.error_reply(data, wire.REFUSED)
            else:
                bucket, ctx = ok
                if bucket is not None:  # a rate-limited client
                    n = counts.get(bucket, 0) + 1
                    counts[bucket] = n
                    if n > gate.limit:
                        gate.stats.drop("ratelimit")
                        continue
                hit = ctx.packets.data.get(data[2:])
                if hit is not None and now < hit[0]:
                    # The same question, byte for byte, was answered moments ago (cache.py).
                    resp = data[:2] + hit[1]
                    counts_by_reason[hit[2]] += 1
                    if hit[4] >= 0:
                        by_category[hit[4]] += 1
                    log_append((now, ip, data, hit[2], hit[3]))
                else:
                    try:
                        resp = handle(data, ip, now, self, addr, ctx)
                    except Exception:
                        log.exception("internal error on a query from %s", ip)
                        pipeline.counts[8] += 1
                        resp = wire.error_reply(data, wire.SERVFAIL)
            if resp is not None:
                add_reply((resp, addr))

    def send(self, resp: bytes, addr: object) -> None:
        """A late answer (forwarded, stale): queued and sent with the others of this loop turn
        (upstream replies arrive on many sockets, one callback each)."""
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append((resp, addr))

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class TcpServerState:
    """Connection accounting shared by every TCP listener (caps are per server, not per socket)."""

    def __init__(self, pipeline: Pipeline, gate: Gate) -> None:
        self.pipeline = pipeline
        self.gate = gate
        self.per_client: dict[str, int] = {}
        self.total = 0
        self.conns: set[TcpConnection] = set()


class TcpConnection(asyncio.Protocol):
    """One client connection: pipelined queries (RFC 7766 6.2.1.1), answered as they complete."""

    udp = False

    def __init__(self, state: TcpServerState) -> None:
        self.loop = asyncio.get_running_loop()
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.buf = bytearray()
        self.inflight = 0
        self.paused = False
        self.closed = False
        self.counted = False
        self.eof = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = typing.cast(asyncio.Transport, transport)
        transport = self.transport
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        st = self.state
        cfg = st.pipeline.snap.config.server
        if st.gate.admit(self.ip) is False:
            st.gate.stats.drop("acl")
            transport.abort()
            return
        if (
            st.per_client.get(self.ip, 0) >= cfg.tcp_max_connections_per_client
            or st.total >= cfg.tcp_max_connections
        ):
            st.gate.stats.tcp_rejected += 1
            transport.abort()
            return
        self.counted = True
        st.per_client[self.ip] = st.per_client.get(self.ip, 0) + 1
        st.total += 1
        st.conns.add(self)
        st.gate.stats.tcp_connections += 1
        loop = self.loop
        self.idle = cfg.tcp_idle_timeout
        self.max_inflight = cfg.tcp_max_queries_in_flight
        self.deadline = loop.time() + self.idle
        self.timer = loop.call_at(self.deadline, self._check_idle)

    def _check_idle(self) -> None:
        if self.closed or self.transport is None:
            return
        loop = self.loop
        now = loop.time()
        if now >= self.deadline and self.inflight == 0:
            # Idle, or a message that never completed (slowloris): RFC 7766 6.2.3.
            self.transport.close()
            return
        self.timer = loop.call_at(max(self.deadline, now + 0.5), self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        buf = self.buf
        buf += data
        pipeline = self.state.pipeline
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if n < 12:
                self._abort("framing")
                return
            if len(buf) < n + 2:
                break
            msg = bytes(buf[2 : n + 2])
            del buf[: n + 2]
            if msg[2] & 0x80:
                self._abort("qr")  # a response sent as a query: close, as BIND does
                return
            now = self.loop.time()
            self.deadline = now + self.idle
            try:
                gate = self.state.gate
                client = self.ip
                if client in gate.forwarded.trusted:
                    client, admission = gate.forwarded.admit(client, msg)
                else:
                    admission = gate.admit(client)
                ctx = admission[1] if admission is not False else None
                resp = pipeline.handle(msg, client, now, self, None, ctx)
            except Exception:
                log.exception("internal error on a TCP query from %s", self.ip)
                pipeline.counts[8] += 1
                resp = wire.error_reply(msg, wire.SERVFAIL)
            if resp is None:
                self.inflight += 1
                if self.inflight >= self.max_inflight and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
            else:
                self._write(resp)
            if self.closed:
                return

    def send(self, resp: bytes, addr: object) -> None:
        self.inflight -= 1
        if self.closed or self.transport is None:
            return
        self.deadline = self.loop.time() + self.idle
        self._write(resp)
        if self.eof and self.inflight == 0 and not self.closed:
            self.transport.close()
            return
        if self.paused and self.inflight < self.max_inflight and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _write(self, resp: bytes) -> None:
        assert self.transport is not None
        self.transport.write(struct.pack("!H", len(resp)) + resp)
        if self.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self._abort("unread")

    def _abort(self, reason: str) -> None:
        self.state.gate.stats.drop("tcp-" + reason)
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def eof_received(self) -> bool | None:
        # Half-close: finish answering what is in flight, then close (RFC 7766 6.2.4).
        self.eof = True
        if self.inflight == 0 and self.transport is not None:
            self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        st = self.state
        if self.counted:
            self.counted = False
            left = st.per_client.get(self.ip, 1) - 1
            if left <= 0:
                st.per_client.pop(self.ip, None)
            else:
                st.per_client[self.ip] = left
            st.total -= 1
            st.conns.discard(self)
