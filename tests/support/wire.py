"""Raw DNS packets for tests: build queries byte by byte, exchange them, read replies.

What it decides: nothing; it is a toolbox. ``make_query`` writes every field by hand so a test can
produce exactly the malformed messages of RELIABILITY.md R01-R17 (counts that lie, two OPTs, an
OPT owned by ``a.``, a Z bit, unknown EDNS flags and options, 64-byte labels, trailing garbage...).
``parse_reply`` reads replies with dnspython, a well-tested parser, never with our own code.
What it reads: sockets on loopback only (the conftest guard enforces it).
What it must never do: validate what it builds -- a "wrong" packet is the point.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import dns.edns
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = [
    "Edns",
    "Question",
    "Reply",
    "encode_name",
    "frame",
    "is_alive",
    "make_query",
    "parse_reply",
    "question_wire",
    "tcp_exchange",
    "to_hex",
    "udp_exchange",
    "udp_exchange_many",
    "unhex",
]

DEFAULT_TIMEOUT: Final = 2.0
DEFAULT_PAYLOAD: Final = 1232

# Header flag bits (the 16-bit word after the ID).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
Z: Final = 0x0040
AD: Final = 0x0020
CD: Final = 0x0010
EDNS_DO: Final = 0x8000


# ---------------------------------------------------------------------------- hex


def unhex(text: str) -> bytes:
    """Bytes from hex text; spaces, newlines, ':' and '_' are ignored (``"4242 0100 ..."``)."""
    cleaned = "".join(ch for ch in text if ch not in " \t\r\n:_")
    return bytes.fromhex(cleaned)


def to_hex(data: bytes, group: int = 0) -> str:
    """Lowercase hex; with ``group`` > 0, a space every ``group`` bytes."""
    if group <= 0:
        return data.hex()
    return " ".join(data[i : i + group].hex() for i in range(0, len(data), group))


# ---------------------------------------------------------------------------- building


def encode_name(name: str | bytes) -> bytes:
    """Uncompressed wire form of ``name``; ``bytes`` are taken as already-encoded wire.

    Labels are *not* checked against 63 bytes (R07 needs a 64-byte label); a label longer than
    255 bytes cannot be expressed and raises ValueError. ``""`` and ``"."`` are the root.
    """
    if isinstance(name, bytes):
        return name
    text = name[:-1] if name.endswith(".") else name
    out = bytearray()
    if text:
        for label in text.split("."):
            raw = label.encode("ascii")
            if len(raw) > 255:
                raise ValueError(f"label of {len(raw)} bytes cannot be encoded")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def _rdtype(qtype: str | int) -> int:
    return qtype if isinstance(qtype, int) else int(dns.rdatatype.from_text(qtype))


def _rdclass(qclass: str | int) -> int:
    return qclass if isinstance(qclass, int) else int(dns.rdataclass.from_text(qclass))


def frame(message: bytes) -> bytes:
    """The message with its TCP 2-byte length prefix."""
    return struct.pack("!H", len(message)) + message


def make_query(
    qname: str | bytes,
    qtype: str | int = "A",
    *,
    id: int = 0x4242,
    rd: bool = True,
    edns: int | None = None,
    do: bool = False,
    ednsver: int = 0,
    opts: Sequence[tuple[int, bytes]] = (),
    flags_extra: int = 0,
    cd: bool = False,
    ad: bool = False,
    opcode: int = 0,
    qclass: str | int | None = "IN",
    extra_questions: Sequence[tuple[str | bytes, str | int]] = (),
    answer_a: str | None = None,
    opt_count: int = 1,
    opt_owner: str | bytes = ".",
    edns_flags_extra: int = 0,
    ext_rcode: int = 0,
    qdcount: int | None = None,
    ancount: int | None = None,
    nscount: int | None = None,
    arcount: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A query message, every byte under the caller's control.

    - ``qname``: text (labels encoded as given, no length checks) or raw wire bytes
      (``b"\\xc0\\x0c"``).
    - ``edns``: the advertised UDP payload; EDNS is also switched on (payload 1232) by ``do``,
      ``ednsver``, ``opts``, ``edns_flags_extra`` or ``ext_rcode``. ``opts`` are (code, data) pairs.
    - ``flags_extra`` is OR-ed into the header flag word (``0x0040`` is the Z bit);
      ``edns_flags_extra`` into the OPT flags (``0x4000`` is an unknown flag).
    - ``qclass=None`` leaves QCLASS out (R05); ``extra_questions`` appends more questions (R04).
    - ``answer_a`` puts ``qname A answer_a`` into ANSWER (R13); ``opt_count=2`` repeats the OPT RR
      and ``opt_owner="a."`` gives it a non-root owner (R11).
    - ``qdcount``/``ancount``/``nscount``/``arcount`` override the computed header counts;
      ``trailing`` is appended after everything (R14).
    """
    flags = (opcode & 0xF) << 11
    if rd:
        flags |= RD
    if cd:
        flags |= CD
    if ad:
        flags |= AD
    flags |= flags_extra

    body = bytearray()
    questions = [(qname, qtype, qclass), *((n, t, "IN") for n, t in extra_questions)]
    for name, rdtype, rdclass in questions:
        body += encode_name(name)
        body += struct.pack("!H", _rdtype(rdtype))
        if rdclass is not None:
            body += struct.pack("!H", _rdclass(rdclass))

    answers = 0
    if answer_a is not None:
        body += encode_name(qname)
        body += struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(answer_a)
        answers = 1

    use_edns = bool(edns is not None or do or ednsver or opts or edns_flags_extra or ext_rcode)
    additional = 0
    if use_edns:
        payload = DEFAULT_PAYLOAD if edns is None else edns
        edns_flags = (EDNS_DO if do else 0) | edns_flags_extra
        ttl = ((ext_rcode & 0xFF) << 24) | ((ednsver & 0xFF) << 16) | (edns_flags & 0xFFFF)
        rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in opts)
        opt_rr = (
            encode_name(opt_owner)
            + struct.pack("!HHIH", 41, payload & 0xFFFF, ttl, len(rdata))
            + rdata
        )
        body += opt_rr * opt_count
        additional = opt_count

    header = struct.pack(
        "!HHHHHH",
        id & 0xFFFF,
        flags & 0xFFFF,
        len(questions) if qdcount is None else qdcount,
        answers if ancount is None else ancount,
        0 if nscount is None else nscount,
        additional if arcount is None else arcount,
    )
    return header + bytes(body) + trailing


# ---------------------------------------------------------------------------- exchanging


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_source(sock: socket.socket, source: str | tuple[str, int] | None) -> None:
    if source is None:
        return
    sock.bind((source, 0) if isinstance(source, str) else source)


def udp_exchange(
    data: bytes,
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    source: str | tuple[str, int] | None = None,
) -> bytes | None:
    """Send one datagram and return the first reply, or None if nothing came within ``timeout``.

    ``source`` binds the client first (``"127.0.0.3"`` or ``("127.0.0.3", 0)``). The reply is
    returned whatever its ID; checking it is the test's job.
    """
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        _bind_source(sock, source)
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            reply, _ = sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return reply


def udp_exchange_many(
    data: bytes,
    port: int,
    host: str = "127.0.0.1",
    *,
    count: int,
    timeout: float = DEFAULT_TIMEOUT,
    source: str | tuple[str, int] | None = None,
) -> list[tuple[bytes, tuple[str, int]]]:
    """Send one datagram; collect up to ``count`` replies (with their sender) until ``timeout``."""
    replies: list[tuple[bytes, tuple[str, int]]] = []
    deadline = time.monotonic() + timeout
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        _bind_source(sock, source)
        sock.sendto(data, (host, port))
        while len(replies) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                reply, sender = sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                break
            replies.append((reply, (sender[0], sender[1])))
    return replies


def tcp_exchange(
    frames: Sequence[bytes],
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    expect: int | None = None,
    one_write: bool = True,
    add_length: bool = True,
    source: str | tuple[str, int] | None = None,
) -> tuple[list[bytes], bool]:
    """Send messages on one TCP connection; return (replies, closed).

    Each of ``frames`` gets its 2-byte length prefix unless ``add_length`` is False (then the bytes
    go out exactly as given -- for bad prefixes). With ``one_write`` everything is sent in a single
    ``sendall``. Replies are read until ``expect`` of them arrived (default: one per frame when
    ``add_length``, else read until EOF), the peer closed (EOF or RST: ``closed`` is True), or
    ``timeout`` passed since the connection was opened.
    """
    if expect is None and add_length:
        expect = len(frames)
    payloads = [frame(f) if add_length else f for f in frames]
    deadline = time.monotonic() + timeout
    replies: list[bytes] = []
    closed = False
    buffer = bytearray()
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        _bind_source(sock, source)
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            if one_write:
                sock.sendall(b"".join(payloads))
            else:
                for payload in payloads:
                    sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return replies, True
        while expect is None or len(replies) < expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                    closed = True
                    break
                raise
            if not chunk:
                closed = True
                break
            buffer += chunk
            while len(buffer) >= 2:
                (length,) = struct.unpack_from("!H", buffer)
                if len(buffer) < 2 + length:
                    break
                replies.append(bytes(buffer[2 : 2 + length]))
                del buffer[: 2 + length]
    return replies, closed


def is_alive(
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = 0.1,
    qname: str = "www.example.test",
) -> bool:
    """RELIABILITY's "alive": a normal UDP query gets a reply with its ID within ``timeout``."""
    query = make_query(qname, "A", id=0x7A7A)
    reply = udp_exchange(query, port, host, timeout=timeout)
    return reply is not None and len(reply) >= 2 and reply[:2] == query[:2]


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Question:
    name: str  # presentation form, case kept, with the trailing dot
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Edns:
    version: int
    payload: int
    flags: int  # the 16 flag bits (DO is 0x8000; the rest must be zero in replies)
    options: tuple[tuple[int, bytes], ...]
    ede: tuple[tuple[int, str | None], ...]  # RFC 8914 extended errors: (info code, text)

    @property
    def do(self) -> bool:
        return bool(self.flags & EDNS_DO)

    @property
    def option_codes(self) -> tuple[int, ...]:
        return tuple(code for code, _ in self.options)

    @property
    def ede_codes(self) -> tuple[int, ...]:
        return tuple(code for code, _ in self.ede)


@dataclass(frozen=True)
class Reply:
    """A reply as a test wants to see it. ``rcode`` includes the EDNS extended bits."""

    id: int
    flags: int  # the raw 16-bit header word (opcode and low rcode bits included)
    opcode: int
    rcode: int
    question: tuple[Question, ...]
    answer: tuple[dns.rrset.RRset, ...]
    authority: tuple[dns.rrset.RRset, ...]
    additional: tuple[dns.rrset.RRset, ...]  # without the OPT
    opt: Edns | None
    message: dns.message.Message
    wire: bytes

    @property
    def qr(self) -> bool:
        return bool(self.flags & QR)

    @property
    def aa(self) -> bool:
        return bool(self.flags & AA)

    @property
    def tc(self) -> bool:
        return bool(self.flags & TC)

    @property
    def rd(self) -> bool:
        return bool(self.flags & RD)

    @property
    def ra(self) -> bool:
        return bool(self.flags & RA)

    @property
    def z(self) -> bool:
        return bool(self.flags & Z)

    @property
    def ad(self) -> bool:
        return bool(self.flags & AD)

    @property
    def cd(self) -> bool:
        return bool(self.flags & CD)

    @property
    def rcode_text(self) -> str:
        return dns.rcode.to_text(dns.rcode.Rcode.make(self.rcode))

    @property
    def size(self) -> int:
        return len(self.wire)

    @property
    def question_wire(self) -> bytes:
        """The first question exactly as it sits in the reply (for byte-exact echo checks)."""
        return question_wire(self.wire)

    def rdtypes(self, section: str = "answer") -> list[int]:
        return [int(rrset.rdtype) for rrset in getattr(self, section)]

    def addresses(self) -> list[str]:
        """Every A and AAAA address in ANSWER, in order."""
        found: list[str] = []
        for rrset in self.answer:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                found.extend(rdata.to_text() for rdata in rrset)
        return found

    def texts(self, section: str = "answer") -> list[str]:
        """``str()`` of each RRset in a section, for readable assertions and failure output."""
        return [rrset.to_text() for rrset in getattr(self, section)]


def question_end(data: bytes, offset: int = 12) -> int:
    """Offset just past the first question (name + type + class); a pointer ends the name."""
    while offset < len(data):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            offset += 2
            break
        offset += 1 + length
        if length == 0:
            break
    return offset + 4


def question_wire(data: bytes) -> bytes:
    """The raw first question of a message (name bytes up to the root or a pointer, type, class)."""
    return data[12 : question_end(data)]


def parse_reply(data: bytes) -> Reply:
    """Parse with dnspython (raises its exceptions on malformed input: that is a test failure)."""
    message = dns.message.from_wire(data)
    ident, flags = struct.unpack_from("!HH", data)
    opt: Edns | None = None
    if message.edns >= 0:
        options = tuple((int(option.otype), option.to_wire()) for option in message.options)
        ede = tuple(
            (int(option.code), option.text)
            for option in message.options
            if isinstance(option, dns.edns.EDEOption)
        )
        opt = Edns(
            version=message.edns,
            payload=int(message.payload),
            flags=message.ednsflags & 0xFFFF,
            options=options,
            ede=ede,
        )
    return Reply(
        id=ident,
        flags=flags,
        opcode=int(message.opcode()),
        rcode=int(message.rcode()),
        question=tuple(
            Question(rrset.name.to_text(), int(rrset.rdtype), int(rrset.rdclass))
            for rrset in message.question
        ),
        answer=tuple(message.answer),
        authority=tuple(message.authority),
        additional=tuple(message.additional),
        opt=opt,
        message=message,
        wire=bytes(data),
    )
