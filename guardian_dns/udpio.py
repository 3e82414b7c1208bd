"""Batched datagram I/O for the UDP listener: many queries per system call.

What it decides: nothing about DNS. It moves datagrams between a socket and the listener, as
(message, reply address) pairs, and says which client address each came from.
What it reads: one non-blocking UDP socket.
What it must never do: block, drop a datagram it has read, or send a reply to anyone but the
address its query came from.

Why: at 100k queries a second the kernel's per-call cost of ``recvfrom``/``sendto`` (entry,
socket lookup, the address turned into a Python string and tuple, the ``BlockingIOError`` that
ends every read batch) is a large share of a cache hit. Linux's ``recvmmsg(2)`` and
``sendmmsg(2)`` read and send a whole batch per call; ctypes reaches them without a compiled
extension. The reply address stays the raw ``sockaddr`` the kernel gave us, so it never becomes
text at all; only a new client address is turned into text, once, for the listener's memo.

Where ctypes or the two calls are missing (not Linux, a libc without them, a Python built
without ctypes), ``open_io`` returns the portable ``PlainIO``: one ``recvfrom``/``sendto`` per
datagram, the same interface.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from guardian_dns.wire import MAX_UDP_QUERY

try:
    import ctypes
except ImportError:  # e.g. OpenWrt without python3-ctypes: PlainIO only
    ctypes = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SLOTS = 64  # datagrams per system call, both ways
RECV_SIZE = MAX_UDP_QUERY  # a query never needs more; longer ones arrive truncated
SEND_SIZE = 4096  # the largest reply we send over UDP (server.udp_max_size is at most 4096)
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)  # 0x40 on Linux, where MmsgIO is used

# One datagram read: (message, reply address, client key). The key is what identifies the
# client in the listener's memo (its address without the port); ``client_text`` turns it into
# the text the rest of the server uses.
Datagram = tuple[bytes, Any, Any]


class BatchIO(Protocol):
    """What the listener needs from a socket."""

    def recv(self) -> list[Datagram]:
        """Up to ``SLOTS`` waiting datagrams; empty when none are waiting."""
        ...

    def send(self, replies: list[tuple[bytes, Any]]) -> int:
        """Send each reply to its address; returns how many could not be sent."""
        ...

    def client_text(self, key: Any) -> str:
        """The client's address as text (``192.0.2.1``, ``2001:db8::1``)."""
        ...


class PlainIO:
    """One system call per datagram: the portable fallback."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self) -> list[Datagram]:
        out: list[Datagram] = []
        recvfrom = self.sock.recvfrom
        for _ in range(SLOTS):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except OSError:  # BlockingIOError: nothing more waiting
                break
            out.append((data, addr, addr[0]))
        return out

    def send(self, replies: list[tuple[bytes, Any]]) -> int:
        failed = 0
        sendto = self.sock.sendto
        for resp, addr in replies:
            try:
                sendto(resp, addr)
            except OSError:
                failed += 1
        return failed

    def client_text(self, key: Any) -> str:
        return str(key)


if ctypes is not None:

    class _Iovec(ctypes.Structure):
        _fields_: ClassVar = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class _Msghdr(ctypes.Structure):
        _fields_: ClassVar = [
            ("msg_name", ctypes.c_void_p),
            ("msg_namelen", ctypes.c_uint32),
            ("msg_iov", ctypes.c_void_p),
            ("msg_iovlen", ctypes.c_size_t),
            ("msg_control", ctypes.c_void_p),
            ("msg_controllen", ctypes.c_size_t),
            ("msg_flags", ctypes.c_int),
        ]

    class _Mmsghdr(ctypes.Structure):
        _fields_: ClassVar = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


Calls = tuple[Callable[..., int], Callable[..., int]]


def _load() -> Calls | None:
    """libc's recvmmsg and sendmmsg, or None where ctypes or either call is missing."""
    if ctypes is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg = libc.recvmmsg
        sendmmsg = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    c_int, c_uint, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
    recvmmsg.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
    recvmmsg.restype = c_int
    sendmmsg.argtypes = [c_int, c_void_p, c_uint, c_int]
    sendmmsg.restype = c_int
    return recvmmsg, sendmmsg


class MmsgIO:
    """recvmmsg/sendmmsg on fixed buffers allocated once per socket.

    Memory: ``SLOTS`` receive slots of ``RECV_SIZE`` and as many send slots of ``SEND_SIZE``
    (512 KiB per listening socket). A reply is copied into its slot; a reply too long for a
    slot (never, with the configured limits) is sent on its own with ``sendto``.
    """

    def __init__(self, sock: socket.socket, calls: Calls) -> None:
        self._recvmmsg, self._sendmmsg = calls
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        v6 = sock.family == socket.AF_INET6
        self.namelen = nl = 28 if v6 else 16  # sizeof(sockaddr_in6) / sizeof(sockaddr_in)
        # The client key: the address (and for IPv6 the scope id), not the port.
        key_from, key_to = (8, 28) if v6 else (4, 8)

        def ring(size: int) -> tuple[Any, Any, memoryview, memoryview, list[Any]]:
            data = ctypes.create_string_buffer(SLOTS * size)
            names = ctypes.create_string_buffer(SLOTS * nl)
            iovs = (_Iovec * SLOTS)()
            msgs = (_Mmsghdr * SLOTS)()
            base, nbase = ctypes.addressof(data), ctypes.addressof(names)
            for i in range(SLOTS):
                iovs[i].iov_base = base + i * size
                iovs[i].iov_len = size
                hdr = msgs[i].msg_hdr
                hdr.msg_name = nbase + i * nl
                hdr.msg_namelen = nl
                hdr.msg_iov = ctypes.addressof(iovs[i])
                hdr.msg_iovlen = 1
            keep = [data, names, iovs, msgs]  # the kernel writes into these: keep them alive
            return msgs, iovs, memoryview(data).cast("B"), memoryview(names).cast("B"), keep

        rmsgs, _riovs, self._rdata, self._rnames, self._keep_r = ring(RECV_SIZE)
        smsgs, siovs, self._sdata, self._snames, self._keep_s = ring(SEND_SIZE)
        self._rmsgs = ctypes.addressof(rmsgs)
        self._smsgs_base = ctypes.addressof(smsgs)
        self._msg_size = ctypes.sizeof(_Mmsghdr)
        # Per receive slot: where its bytes start, its header (the kernel writes the length
        # there), where its address starts. The client key is a slice of the address.
        self._rslots = [(i * RECV_SIZE, rmsgs[i], i * nl) for i in range(SLOTS)]
        self._k0, self._k1 = key_from, key_to
        # Per send slot: where its bytes start, its iovec (for the length), its address.
        self._sslots = [(i * SEND_SIZE, siovs[i], i * nl) for i in range(SLOTS)]

    def recv(self) -> list[Datagram]:
        n = self._recvmmsg(self.fd, self._rmsgs, SLOTS, _MSG_DONTWAIT, None)
        if n <= 0:
            return []
        data, names, nl, k0, k1 = self._rdata, self._rnames, self.namelen, self._k0, self._k1
        # tobytes() on a memoryview slice: half the cost of bytes(slice); the key is a slice of
        # the address rather than a third copy out of the buffer.
        return [
            (
                data[off : off + m.msg_len].tobytes(),
                (addr := names[a : a + nl].tobytes()),
                addr[k0:k1],
            )
            for off, m, a in self._rslots[:n]
        ]

    def send(self, replies: list[tuple[bytes, Any]]) -> int:
        failed = 0
        data, names, nl, slots = self._sdata, self._snames, self.namelen, self._sslots
        n = 0
        for resp, addr in replies:
            if len(resp) > SEND_SIZE or len(addr) != nl:
                # Never with the configured limits; sent on its own, in its turn.
                failed += self._flush_slots(n) + self._send_one(resp, addr)
                n = 0
                continue
            off, iov, a = slots[n]
            data[off : off + len(resp)] = resp
            iov.iov_len = len(resp)
            names[a : a + nl] = addr
            n += 1
            if n == SLOTS:
                failed += self._flush_slots(n)
                n = 0
        return failed + self._flush_slots(n)

    def _flush_slots(self, n: int) -> int:
        """sendmmsg the first ``n`` send slots; how many could not be sent."""
        failed = 0
        start = 0
        while start < n:
            sent = self._sendmmsg(self.fd, self._smsgs_base + start * self._msg_size, n - start, 0)
            if sent < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                sent = 0
            start += sent
            if start < n:
                # The message after the last one sent failed (a bad address, a full buffer):
                # count it and go on with the rest, as one sendto per reply would.
                failed += 1
                start += 1
        return failed

    def _send_one(self, resp: bytes, addr: Any) -> int:
        try:
            self.sock.sendto(resp, addr if isinstance(addr, tuple) else self.address(addr))
        except (OSError, ValueError):
            return 1
        return 0

    def address(self, name: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
        """A raw sockaddr as the tuple ``socket.sendto`` takes."""
        port = int.from_bytes(name[2:4], "big")
        if self.family == socket.AF_INET6:
            return (
                socket.inet_ntop(socket.AF_INET6, name[8:24]),
                port,
                int.from_bytes(name[4:8], "big"),
                int.from_bytes(name[24:28], "little"),
            )
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port

    def client_text(self, key: Any) -> str:
        if self.family == socket.AF_INET6:
            text = socket.inet_ntop(socket.AF_INET6, key[:16])
            scope = int.from_bytes(key[16:20], "little")
            if scope and text.startswith("fe80"):
                # As recvfrom reports it: the interface name after '%'.
                try:
                    text += "%" + socket.if_indextoname(scope)
                except OSError:
                    text += "%" + str(scope)
            return text
        return socket.inet_ntop(socket.AF_INET, key)


def open_io(sock: socket.socket) -> BatchIO:
    """The batched I/O for a bound UDP socket: MmsgIO where the OS has it, else PlainIO.

    ``GUARDIAN_DNS_UDP_IO=plain`` forces the fallback (to rule the batched calls out when
    chasing a problem, and so the tests cover both).
    """
    if os.environ.get("GUARDIAN_DNS_UDP_IO") == "plain":
        return PlainIO(sock)
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return PlainIO(sock)
    calls = _load()
    if calls is None:
        log.info("recvmmsg/sendmmsg not available: one system call per datagram")
        return PlainIO(sock)
    return MmsgIO(sock, calls)
