"""A real, scriptable authoritative DNS server on loopback: the "upstream" of the tests.

What it decides: the answer to each query, from two small fixed zones and per-name *behaviours*
(delay, drop, truncate, SERVFAIL, spoofed replies first, poisoned sections, a self-referencing
compression pointer, ...).
What it reads: UDP datagrams and length-framed TCP messages on one port of 127.0.0.1 (or ::1).
What it must never do: bind anything but the host it is given (loopback in tests), or die on a
packet it cannot parse -- such a packet is logged, counted in ``bad_packets`` and ignored.

Usage::

    with AuthServer() as upstream:
        upstream.set_behaviour("www.example.test", delay=0.5)
        ...  # point the server under test at upstream.url_udp
        assert upstream.count("www.example.test", "A") == 1

One thread serves both transports with ``selectors`` (non-blocking sockets); delayed replies sit
in a timer heap, so a slow answer never holds up the others. TCP accepts several queries per
connection, pipelined or not, and keeps the connection open until the client closes it.

Zones (authoritative, AA set unless a behaviour says otherwise; SOA TTL 300, MINIMUM 60):

``example.test``
    ``www`` A 192.0.2.10, AAAA 2001:db8::10 (TTL 300) -- ``big`` 11 TXT records of 250 bytes
    (about 2.8 KB) -- ``blocked`` A 192.0.2.66 -- ``allowed`` CNAME ``blocked`` -- ``chain``
    CNAME ``www`` -- ``rebind`` A 192.168.1.100, 10.1.2.3, 127.0.0.1, 169.254.1.1, 0.0.0.0,
    192.0.2.20 and AAAA fd00::1, fe80::1 -- ``signed`` A 192.0.2.30 (plus an RRSIG, and AD, when
    the query has DO=1) -- ``poison`` A 192.0.2.40 -- ``loop`` A 192.0.2.41 -- ``*.wild`` A
    192.0.2.50 (any number of distinct names that resolve) -- apex SOA and NS ``ns1``
    (A 192.0.2.53).
``home.arpa``
    ``printer`` A 192.168.1.50 (a private answer under a local domain).

Answers follow CNAMEs inside the zones (``allowed`` returns the CNAME and ``blocked``'s A). A name
that does not exist gets NXDOMAIN with the zone SOA in AUTHORITY; an existing name (or empty
non-terminal) without the asked type gets NOERROR/NODATA with the SOA; an unknown qtype such as
666 is simply "another type" (NODATA). A name outside both zones gets REFUSED without AA, as a
real authoritative server that is not a resolver answers. Opcodes other than QUERY get NOTIMP,
EDNS versions above 0 get BADVERS, a message without exactly one question gets FORMERR. Over UDP,
a reply larger than the client's buffer (512 without EDNS) is truncated: TC=1 and no records.

A reply echoes the question as received (case kept), copies RD and CD, never sets RA, and
carries an OPT (payload 1232, DO echoed) when the query had one.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    NS,
    QTYPE,
    RR,
    RRSIG,
    SOA,
    TXT,
    A,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSLabelError,
    DNSQuestion,
    DNSRecord,
)

from tests.support.wire import question_end

__all__ = [
    "FAKE_ADDRESS",
    "POISON_ADDRESS",
    "WRONG_FIRST_KINDS",
    "ZONES",
    "AuthServer",
    "Behaviour",
    "LoggedQuery",
]

log = logging.getLogger(__name__)

ZONES: Final[tuple[str, ...]] = ("example.test", "home.arpa", "google.com", "youtube.com")
FAKE_ADDRESS: Final = "203.0.113.99"  # carried by every wrong_first fake
POISON_ADDRESS: Final = "203.0.113.66"  # bank.example in the poisoned ADDITIONAL section
WRONG_FIRST_KINDS: Final[frozenset[str]] = frozenset({"id", "qname", "qtype", "port"})

OUR_PAYLOAD: Final = 1232
SOA_TTL: Final = 300
SOA_MINIMUM: Final = 60
SIGNED_NAMES: Final[frozenset[str]] = frozenset({"signed.example.test"})

_RCODE_NOERROR: Final = 0
_RCODE_FORMERR: Final = 1
_RCODE_SERVFAIL: Final = 2
_RCODE_NXDOMAIN: Final = 3
_RCODE_NOTIMP: Final = 4
_RCODE_REFUSED: Final = 5
_RCODE_BADVERS: Final = 16
_TYPE_CNAME: Final = 5
_TYPE_OPT: Final = 41
_TYPE_RRSIG: Final = 46
_TYPE_ANY: Final = 255
_MAX_CNAME_CHAIN: Final = 8

Transport = Literal["udp", "tcp"]


def _norm(name: str) -> str:
    """The key for names: lowercase, no trailing dot (the root is "")."""
    return name.lower().rstrip(".")


def _qtype_number(qtype: int | str) -> int:
    if isinstance(qtype, int):
        return qtype
    text = qtype.upper()
    if text.startswith("TYPE") and text[4:].isdigit():
        return int(text[4:])
    number: int = getattr(QTYPE, text)
    return number


@dataclass(frozen=True)
class Behaviour:
    """How the server treats queries for one name (or, as the default, all names).

    ``truncate``: UDP replies get TC=1 and no records; TCP replies are full.
    ``wrong_first``: before the real reply, send these fakes over UDP, in order -- ``"id"`` (wrong
    ID), ``"qname"`` (right ID, another qname), ``"qtype"`` (right ID, another qtype), ``"port"``
    (right everything, but sent from another socket, i.e. another source port). Each carries
    A 203.0.113.99. TCP queries get no fakes.
    ``answer_loop``: the reply's ANSWER owner name is a compression pointer to itself.
    ``delay`` postpones the real reply (the fakes go out at once); ``drop`` sends nothing.
    """

    delay: float = 0.0
    drop: bool = False
    truncate: bool = False
    servfail: bool = False
    rcode: int | None = None
    wrong_first: tuple[str, ...] = ()
    poison: bool = False
    ttl: int | None = None
    answer_loop: bool = False
    aa: bool = True

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.wrong_first if kind not in WRONG_FIRST_KINDS]
        if unknown:
            raise ValueError(
                f"wrong_first: unknown kind(s) {unknown} (known: {sorted(WRONG_FIRST_KINDS)})"
            )
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if self.rcode is not None and not 0 <= self.rcode <= 4095:
            raise ValueError("rcode must be 0..4095")
        if self.ttl is not None and not 0 <= self.ttl <= 0x7FFFFFFF:
            raise ValueError("ttl must be 0..2**31-1")


@dataclass(frozen=True)
class LoggedQuery:
    """One query as the server received it. ``qname`` keeps the case, without the trailing dot."""

    time: float  # time.monotonic() at receipt
    transport: Transport
    source_host: str
    source_port: int
    id: int
    qname: str
    qtype: int
    qclass: int
    rd: bool
    cd: bool
    ad: bool
    opcode: int
    edns: bool
    do_bit: bool
    edns_version: int | None
    edns_payload: int | None
    raw: bytes = field(repr=False)

    @property
    def qtype_name(self) -> str:
        name: str = QTYPE.get(self.qtype)
        return name


@dataclass(frozen=True)
class _Record:
    rtype: int
    ttl: int
    rdata: object


@dataclass
class _Lookup:
    rcode: int
    authoritative: bool
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authentic: bool = False  # the answer holds signed data (AD when DO)


def _build_zone_data() -> dict[str, list[_Record]]:
    def soa(zone: str) -> _Record:
        # serial, refresh, retry, expire, minimum
        times = (2024010101, 3600, 600, 86400, SOA_MINIMUM)
        return _Record(QTYPE.SOA, SOA_TTL, SOA("ns1.example.test.", f"hostmaster.{zone}.", times))

    def a(address: str, ttl: int = 300) -> _Record:
        return _Record(QTYPE.A, ttl, A(address))

    def aaaa(address: str, ttl: int = 300) -> _Record:
        return _Record(QTYPE.AAAA, ttl, AAAA(address))

    def cname(target: str) -> _Record:
        return _Record(QTYPE.CNAME, 300, CNAME(target + "."))

    ns = _Record(QTYPE.NS, 300, NS("ns1.example.test."))
    big = [
        _Record(QTYPE.TXT, 300, TXT(f"{i:02d}".encode() + bytes([0x61 + i]) * 248))
        for i in range(11)
    ]
    rebind = [
        a("192.168.1.100"),
        a("10.1.2.3"),
        a("127.0.0.1"),
        a("169.254.1.1"),
        a("0.0.0.0"),
        a("192.0.2.20"),
        aaaa("fd00::1"),
        aaaa("fe80::1"),
    ]
    return {
        "example.test": [soa("example.test"), ns],
        "ns1.example.test": [a("192.0.2.53")],
        "www.example.test": [a("192.0.2.10"), aaaa("2001:db8::10")],
        "big.example.test": big,
        "blocked.example.test": [a("192.0.2.66")],
        "allowed.example.test": [cname("blocked.example.test")],
        "chain.example.test": [cname("www.example.test")],
        "rebind.example.test": rebind,
        "signed.example.test": [a("192.0.2.30")],
        "poison.example.test": [a("192.0.2.40")],
        "loop.example.test": [a("192.0.2.41")],
        "*.wild.example.test": [a("192.0.2.50")],
        # Safe search (tests/integration/test_policies.py): the engines' names and the
        # enforcement names they are rewritten to, with documentation-range addresses.
        "google.com": [soa("google.com"), ns],
        "www.google.com": [a("192.0.2.101")],
        "forcesafesearch.google.com": [a("192.0.2.102"), aaaa("2001:db8::102")],
        "youtube.com": [soa("youtube.com"), ns],
        "www.youtube.com": [a("192.0.2.103")],
        "restrict.youtube.com": [a("192.0.2.104")],
        "restrictmoderate.youtube.com": [a("192.0.2.105")],
        "home.arpa": [soa("home.arpa"), ns],
        "printer.home.arpa": [a("192.168.1.50")],
    }


def _zone_of(name: str) -> str | None:
    for zone in ZONES:
        if name == zone or name.endswith("." + zone):
            return zone
    return None


@dataclass(eq=False)  # identity semantics: kept in a set
class _TcpConn:
    sock: socket.socket
    peer: tuple[str, int]
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closed: bool = False


class AuthServer:
    """See the module docstring. A context manager; ``start()``/``stop()`` work too."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._records = _build_zone_data()
        self._existing = self._existing_names(self._records)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._default = Behaviour()
        self._behaviours: dict[str, Behaviour] = {}
        self._answering = True
        self._log: list[LoggedQuery] = []
        self._packets = 0
        self._bad_packets = 0
        self._errors: list[str] = []

        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._fake_udp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._conns: set[_TcpConn] = set()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AuthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("AuthServer already started")
        self._udp, self._tcp = self._bind_pair()
        self.port = self._udp.getsockname()[1]
        self._fake_udp = socket.socket(self._family, socket.SOCK_DGRAM)
        self._fake_udp.bind((self.host, 0))
        self._fake_udp.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
        self._selector.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._serve, name=f"AuthServer:{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - would be a bug in the loop
            raise RuntimeError("AuthServer thread did not stop within 10 s")
        self._thread = None
        for conn in list(self._conns):
            self._close_conn(conn)
        for sock in (self._udp, self._tcp, self._fake_udp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._udp = self._tcp = self._fake_udp = self._wake_r = self._wake_w = None
        self._selector = None

    def _bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP bound to the same port; with port 0, retry until both fit."""
        attempts = 1 if self._requested_port else 100
        last_error: OSError | None = None
        for _ in range(attempts):
            udp = socket.socket(self._family, socket.SOCK_DGRAM)
            tcp = socket.socket(self._family, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self._requested_port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                tcp.listen(128)
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                last_error = exc
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise RuntimeError(f"could not bind UDP and TCP on one port of {self.host}: {last_error}")

    # ------------------------------------------------------------------ addresses

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if self._family == socket.AF_INET6 else self.host
        return f"{host}:{self.port}"

    @property
    def url_udp(self) -> str:
        return f"udp://{self.address}"

    @property
    def url_tcp(self) -> str:
        return f"tcp://{self.address}"

    # ------------------------------------------------------------------ knobs

    def set_behaviour(
        self,
        qname: str,
        *,
        delay: float = 0.0,
        drop: bool = False,
        truncate: bool = False,
        servfail: bool = False,
        rcode: int | None = None,
        wrong_first: Sequence[str] = (),
        poison: bool = False,
        ttl: int | None = None,
        answer_loop: bool = False,
        aa: bool = True,
    ) -> Behaviour:
        """Replace the behaviour for ``qname`` (any case, trailing dot optional).

        Unlisted knobs take their defaults -- they are *not* merged with the default behaviour.
        """
        behaviour = Behaviour(
            delay=delay,
            drop=drop,
            truncate=truncate,
            servfail=servfail,
            rcode=rcode,
            wrong_first=tuple(wrong_first),
            poison=poison,
            ttl=ttl,
            answer_loop=answer_loop,
            aa=aa,
        )
        with self._lock:
            self._behaviours[_norm(qname)] = behaviour
        return behaviour

    def set_default(
        self,
        *,
        delay: float = 0.0,
        drop: bool = False,
        truncate: bool = False,
        servfail: bool = False,
        rcode: int | None = None,
        wrong_first: Sequence[str] = (),
        poison: bool = False,
        ttl: int | None = None,
        answer_loop: bool = False,
        aa: bool = True,
    ) -> Behaviour:
        """Replace the behaviour of every name that has no ``set_behaviour`` of its own."""
        behaviour = Behaviour(
            delay=delay,
            drop=drop,
            truncate=truncate,
            servfail=servfail,
            rcode=rcode,
            wrong_first=tuple(wrong_first),
            poison=poison,
            ttl=ttl,
            answer_loop=answer_loop,
            aa=aa,
        )
        with self._lock:
            self._default = behaviour
        return behaviour

    def clear_behaviour(self, qname: str) -> None:
        with self._lock:
            self._behaviours.pop(_norm(qname), None)

    def behaviour_for(self, qname: str) -> Behaviour:
        with self._lock:
            return self._behaviours.get(_norm(qname), self._default)

    def stop_answering(self) -> None:
        """Stay bound and keep logging queries, but answer nothing (an upstream gone silent)."""
        with self._lock:
            self._answering = False

    def start_answering(self) -> None:
        with self._lock:
            self._answering = True

    @property
    def answering(self) -> bool:
        with self._lock:
            return self._answering

    def reset(self) -> None:
        """Back to the state just after start: no behaviours, answering, empty log and counters."""
        with self._lock:
            self._default = Behaviour()
            self._behaviours.clear()
            self._answering = True
            self._log.clear()
            self._packets = 0
            self._bad_packets = 0
            self._errors.clear()

    # ------------------------------------------------------------------ query log

    @property
    def queries(self) -> list[LoggedQuery]:
        """A snapshot (a new list) of every query received, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._packets = 0
            self._bad_packets = 0

    @staticmethod
    def _matches(entry: LoggedQuery, qname: str | None, qtype: int | None) -> bool:
        if qname is not None and _norm(entry.qname) != qname:
            return False
        return qtype is None or entry.qtype == qtype

    def count(self, qname: str | None = None, qtype: int | str | None = None) -> int:
        """Queries received for ``qname`` (any case) and/or ``qtype`` (number or name)."""
        name = None if qname is None else _norm(qname)
        number = None if qtype is None else _qtype_number(qtype)
        with self._lock:
            return sum(1 for entry in self._log if self._matches(entry, name, number))

    def wait_for(
        self,
        n: int = 1,
        qname: str | None = None,
        qtype: int | str | None = None,
        timeout: float = 5.0,
    ) -> bool:
        """Block until ``count(qname, qtype) >= n`` (True) or ``timeout`` passes (False)."""
        name = None if qname is None else _norm(qname)
        number = None if qtype is None else _qtype_number(qtype)

        def reached() -> bool:
            return sum(1 for entry in self._log if self._matches(entry, name, number)) >= n

        with self._changed:
            return self._changed.wait_for(reached, timeout=timeout)

    @property
    def packets_received(self) -> int:
        """Every datagram or TCP message received, parseable or not."""
        with self._lock:
            return self._packets

    @property
    def bad_packets(self) -> int:
        """Messages that could not be parsed, or were responses (QR=1); ignored."""
        with self._lock:
            return self._bad_packets

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server thread (should stay empty)."""
        with self._lock:
            return list(self._errors)

    # ------------------------------------------------------------------ event loop

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _on_wake(self, _sock: socket.socket, _mask: int) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _serve(self) -> None:
        selector = self._selector
        assert selector is not None
        while not self._stopping:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, mask in selector.select(timeout):
                handler: Callable[[socket.socket, int], None] = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                self._guarded(lambda: handler(sock, mask))  # noqa: B023 - called at once
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, action = heapq.heappop(self._timers)
                self._guarded(action)

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run one handler; an exception is logged and recorded, never fatal to the thread."""
        try:
            action()
        except Exception as exc:
            log.exception("AuthServer: internal error")
            with self._lock:
                self._errors.append(f"{type(exc).__name__}: {exc}")

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        if delay <= 0:
            action()
            return
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), action))

    def _on_udp(self, sock: socket.socket, _mask: int) -> None:
        for _ in range(64):  # bounded, so TCP and timers get their turn
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on Linux
                log.debug("AuthServer: UDP recv error %s", exc)
                continue

            def send(reply: bytes, src: socket.socket = sock, dst: tuple[str, int] = peer) -> None:
                try:
                    src.sendto(reply, dst)
                except OSError as exc:
                    log.debug("AuthServer: UDP send to %s failed: %s", dst, exc)

            self._handle(data, "udp", peer, send)

    def _on_accept(self, sock: socket.socket, _mask: int) -> None:
        assert self._selector is not None
        for _ in range(64):
            try:
                client, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            conn = _TcpConn(client, (peer[0], peer[1]))
            self._conns.add(conn)
            self._selector.register(client, selectors.EVENT_READ, self._conn_handler(conn))

    def _conn_handler(self, conn: _TcpConn) -> Callable[[socket.socket, int], None]:
        def handler(_sock: socket.socket, mask: int) -> None:
            if mask & selectors.EVENT_WRITE:
                self._flush(conn)
            if mask & selectors.EVENT_READ and not conn.closed:
                self._on_tcp_read(conn)

        return handler

    def _on_tcp_read(self, conn: _TcpConn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(conn)
            return
        if not data:
            self._close_conn(conn)
            return
        conn.inbuf += data
        while len(conn.inbuf) >= 2:
            (length,) = struct.unpack_from("!H", conn.inbuf)
            if len(conn.inbuf) < 2 + length:
                break
            message = bytes(conn.inbuf[2 : 2 + length])
            del conn.inbuf[: 2 + length]

            def send(reply: bytes, target: _TcpConn = conn) -> None:
                if target.closed:
                    return
                target.outbuf += struct.pack("!H", len(reply)) + reply
                self._flush(target)

            self._handle(message, "tcp", conn.peer, send)

    def _flush(self, conn: _TcpConn) -> None:
        if conn.closed:
            return
        try:
            while conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close_conn(conn)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        assert self._selector is not None
        self._selector.modify(conn.sock, events, self._conn_handler(conn))

    def _close_conn(self, conn: _TcpConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()

    # ------------------------------------------------------------------ DNS logic

    def _handle(
        self,
        data: bytes,
        transport: Transport,
        peer: tuple[str, int],
        send: Callable[[bytes], None],
    ) -> None:
        with self._lock:
            self._packets += 1
        try:
            query = DNSRecord.parse(data)
        except Exception as exc:  # dnslib raises several unrelated types on bad input
            log.info(
                "AuthServer: ignoring unparseable %s message from %s: %s", transport, peer, exc
            )
            with self._lock:
                self._bad_packets += 1
            return
        if query.header.qr:
            log.info("AuthServer: ignoring a response (QR=1) from %s", peer)
            with self._lock:
                self._bad_packets += 1
            return

        opt = next((rr for rr in query.ar if rr.rtype == _TYPE_OPT), None)
        if len(query.questions) != 1:
            with self._lock:
                answering = self._answering
            if answering:
                send(self._bare_reply(query, opt, _RCODE_FORMERR, with_question=False))
            return

        question: DNSQuestion = query.q
        qname_text = str(question.qname)
        qname_text = (
            qname_text[:-1] if qname_text.endswith(".") and qname_text != "." else qname_text
        )
        entry = LoggedQuery(
            time=time.monotonic(),
            transport=transport,
            source_host=peer[0],
            source_port=peer[1],
            id=query.header.id,
            qname=qname_text,
            qtype=question.qtype,
            qclass=question.qclass,
            rd=bool(query.header.rd),
            cd=bool(query.header.cd),
            ad=bool(query.header.ad),
            opcode=query.header.opcode,
            edns=opt is not None,
            do_bit=opt is not None and bool(opt.ttl & 0x8000),
            edns_version=None if opt is None else (opt.ttl >> 16) & 0xFF,
            edns_payload=None if opt is None else opt.rclass,
            raw=bytes(data),
        )
        key = _norm(qname_text)
        with self._changed:
            self._log.append(entry)
            self._changed.notify_all()
            answering = self._answering
            behaviour = self._behaviours.get(key, self._default)
        if not answering or behaviour.drop:
            return

        if transport == "udp":
            for kind in behaviour.wrong_first:
                self._send_fake(kind, query, opt, send, peer)

        if behaviour.answer_loop:
            reply = self._loop_reply(data, query)
        else:
            try:
                reply = self._reply(query, opt, entry, behaviour, transport)
            except (DNSError, DNSLabelError) as exc:
                # dnslib parses some names it refuses to write back (a 64-byte label, a name over
                # 255 bytes): answer FORMERR with a bare header, as a real server would.
                log.info("AuthServer: FORMERR for %r: %s", qname_text, exc)
                flags = 0x8000 | (query.header.opcode << 11) | (data[2] & 0x01) << 8 | 1
                reply = struct.pack("!HHHHHH", query.header.id, flags, 0, 0, 0, 0)
        self._later(behaviour.delay, lambda: send(reply))

    def _reply(
        self,
        query: DNSRecord,
        opt: RR | None,
        entry: LoggedQuery,
        behaviour: Behaviour,
        transport: Transport,
    ) -> bytes:
        if entry.opcode != 0:
            return self._bare_reply(query, opt, _RCODE_NOTIMP, with_question=True)
        if entry.edns_version:
            return self._bare_reply(query, opt, _RCODE_BADVERS, with_question=True)

        if behaviour.servfail:
            result = _Lookup(_RCODE_SERVFAIL, authoritative=False)
        elif behaviour.rcode is not None:
            result = _Lookup(behaviour.rcode, authoritative=True)
        else:
            result = self._lookup(query.q.qname, entry.qtype, entry.do_bit)
        if behaviour.ttl is not None:
            for rr in result.answer:
                rr.ttl = behaviour.ttl
        if behaviour.poison:
            result.additional.append(RR("bank.example.", QTYPE.A, ttl=300, rdata=A(POISON_ADDRESS)))
            result.authority.append(RR("example.", QTYPE.NS, ttl=300, rdata=NS("evil.")))

        header = self._header(query, result.rcode)
        header.aa = int(behaviour.aa and result.authoritative)
        header.ad = int(entry.do_bit and result.authentic)
        message = DNSRecord(header, q=query.q)
        for rr in result.answer:
            message.add_answer(rr)
        for rr in result.authority:
            message.add_auth(rr)
        for rr in result.additional:
            message.add_ar(rr)
        if opt is not None:
            message.add_ar(self._opt(entry.do_bit, result.rcode))
        wire = bytes(message.pack())

        if transport == "udp":
            limit = max(512, entry.edns_payload or 0) if opt is not None else 512
            if behaviour.truncate or len(wire) > limit:
                header.tc = 1
                truncated = DNSRecord(header, q=query.q)
                if opt is not None:
                    truncated.add_ar(self._opt(entry.do_bit, result.rcode))
                wire = bytes(truncated.pack())
        return wire

    @staticmethod
    def _header(query: DNSRecord, rcode: int) -> DNSHeader:
        header = DNSHeader(id=query.header.id, qr=1, opcode=query.header.opcode)
        header.rd = query.header.rd
        header.cd = query.header.cd
        header.ra = 0
        header.rcode = rcode & 0xF
        return header

    @staticmethod
    def _opt(do_bit: bool, rcode: int) -> EDNS0:
        return EDNS0(udp_len=OUR_PAYLOAD, flags="do" if do_bit else "", ext_rcode=rcode >> 4)

    def _bare_reply(
        self, query: DNSRecord, opt: RR | None, rcode: int, *, with_question: bool
    ) -> bytes:
        header = self._header(query, rcode)
        message = DNSRecord(header, q=query.q) if with_question and query.questions else None
        if message is None:
            message = DNSRecord(header)
        if opt is not None:
            message.add_ar(self._opt(bool(opt.ttl & 0x8000), rcode))
        elif rcode > 15:
            header.rcode = _RCODE_SERVFAIL  # an extended rcode needs an OPT to be expressed
        return bytes(message.pack())

    def _lookup(self, qname: DNSLabel, qtype: int, do_bit: bool) -> _Lookup:
        name = _norm(str(qname))
        zone = _zone_of(name)
        if zone is None:
            return _Lookup(_RCODE_REFUSED, authoritative=False)
        result = _Lookup(_RCODE_NOERROR, authoritative=True)
        owner: DNSLabel | str = qname  # the first owner keeps the client's case
        current = name
        for _ in range(_MAX_CNAME_CHAIN):
            records = self._records_for(current)
            if records is None:
                result.rcode = _RCODE_NXDOMAIN
                result.authority.append(self._soa_rr(_zone_of(current) or zone))
                break
            cnames = [rec for rec in records if rec.rtype == _TYPE_CNAME]
            if cnames and qtype not in (_TYPE_CNAME, _TYPE_ANY):
                target = str(cnames[0].rdata).rstrip(".")
                result.answer.append(self._rr(owner, cnames[0]))
                if _zone_of(target) is None:
                    break  # out of our zones: the client's resolver continues from here
                owner, current = target + ".", target
                continue
            matching = [rec for rec in records if qtype == _TYPE_ANY or rec.rtype == qtype]
            if not matching:
                result.authority.append(self._soa_rr(_zone_of(current) or zone))
                break
            result.answer.extend(self._rr(owner, rec) for rec in matching)
            if current in SIGNED_NAMES:
                result.authentic = True
                if do_bit:
                    result.answer.extend(self._rrsigs(owner, current, matching))
            break
        return result

    def _records_for(self, name: str) -> list[_Record] | None:
        """The records at ``name`` ([] for an empty non-terminal); None: no such name."""
        records = self._records.get(name)
        if records is not None:
            return records
        if name in self._existing:
            return []
        head, _, parent = name.partition(".")
        if head and parent:
            wildcard = self._records.get("*." + parent)
            if wildcard is not None:
                return wildcard
        return None

    @staticmethod
    def _existing_names(records: dict[str, list[_Record]]) -> frozenset[str]:
        names: set[str] = set()
        for name in records:
            zone = _zone_of(name.lstrip("*."))
            labels = name.split(".")
            for i in range(len(labels)):
                suffix = ".".join(labels[i:])
                if zone is not None and (suffix == zone or suffix.endswith("." + zone)):
                    names.add(suffix)
        return frozenset(n for n in names if not n.startswith("*"))

    @staticmethod
    def _rr(owner: DNSLabel | str, record: _Record) -> RR:
        return RR(owner, record.rtype, ttl=record.ttl, rdata=record.rdata)

    def _soa_rr(self, zone: str) -> RR:
        soa = next(rec for rec in self._records[zone] if rec.rtype == QTYPE.SOA)
        return RR(zone + ".", QTYPE.SOA, ttl=soa.ttl, rdata=soa.rdata)

    @staticmethod
    def _rrsigs(owner: DNSLabel | str, name: str, records: Iterable[_Record]) -> list[RR]:
        """Well-formed but fake signatures (algorithm 13, zero-free filler), one per RRset."""
        sigs: list[RR] = []
        for rtype in dict.fromkeys(rec.rtype for rec in records):
            ttl = next(rec.ttl for rec in records if rec.rtype == rtype)
            rdata = RRSIG(
                rtype,
                13,
                len(name.split(".")),
                ttl,
                2000000000,  # expiration, 2033
                1700000000,  # inception, 2023
                4242,
                (_zone_of(name) or name) + ".",
                bytes(range(1, 65)),
            )
            sigs.append(RR(owner, _TYPE_RRSIG, ttl=ttl, rdata=rdata))
        return sigs

    @staticmethod
    def _loop_reply(data: bytes, query: DNSRecord) -> bytes:
        """QR AA reply whose single ANSWER owner name is a pointer to its own offset."""
        question = data[12 : question_end(data)]
        offset = 12 + len(question)
        flags = 0x8400 | (0x0100 if query.header.rd else 0)
        header = struct.pack("!HHHHHH", query.header.id, flags, 1, 1, 0, 0)
        answer = struct.pack("!HHHIH", 0xC000 | offset, QTYPE.A, 1, 300, 4)
        return header + question + answer + socket.inet_aton("192.0.2.41")

    def _send_fake(
        self,
        kind: str,
        query: DNSRecord,
        opt: RR | None,
        send: Callable[[bytes], None],
        peer: tuple[str, int],
    ) -> None:
        qid = query.header.id
        qname: DNSLabel | str = query.q.qname
        qtype = query.q.qtype
        if kind == "id":
            qid = (qid + 0x1111) & 0xFFFF
        elif kind == "qname":
            qname = "spoofed." + str(query.q.qname)
        elif kind == "qtype":
            qtype = QTYPE.AAAA if qtype == QTYPE.A else QTYPE.A
        header = DNSHeader(id=qid, qr=1, aa=1, rd=query.header.rd)
        fake = DNSRecord(header, q=DNSQuestion(qname, qtype, query.q.qclass))
        fake.add_answer(RR(qname, QTYPE.A, ttl=300, rdata=A(FAKE_ADDRESS)))
        if opt is not None:
            fake.add_ar(self._opt(bool(opt.ttl & 0x8000), 0))
        wire = bytes(fake.pack())
        if kind == "port":
            assert self._fake_udp is not None
            try:
                self._fake_udp.sendto(wire, peer)
            except OSError as exc:
                log.debug("AuthServer: fake send failed: %s", exc)
        else:
            send(wire)
