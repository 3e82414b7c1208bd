"""DNS wire format, by hand and bounded: the only code that reads untrusted bytes.

What it decides: whether a query is well formed enough to act on (and which error code it earns
if not), and what an upstream reply really says once its names are decompressed safely.
What it reads: raw bytes only; no I/O.
What it must never do: hand an untrusted message to ``dnslib.DNSRecord.parse`` (it accepts
invalid names and its cost is quadratic in compression pointers, see RELIABILITY.md section 0),
follow a compression pointer forwards or more than ``MAX_POINTER_HOPS`` times, or accept a name
over 255 octets. Every bound here is a defence against a child's laptop or a hostile upstream.

Hot path note: ``parse_query`` runs for every packet, so it returns a plain tuple and touches the
bytes as few times as possible; the cache key is the lower-cased question as it sits on the wire.
"""

from __future__ import annotations

import struct
from typing import Final

# --- codes ------------------------------------------------------------------------------------
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16  # extended: upper 8 bits live in the OPT TTL

T_A: Final = 1
T_NS: Final = 2
T_CNAME: Final = 5
T_SOA: Final = 6
T_PTR: Final = 12
T_HINFO: Final = 13
T_MX: Final = 15
T_TXT: Final = 16
T_AAAA: Final = 28
T_SRV: Final = 33
T_DNAME: Final = 39
T_OPT: Final = 41
T_RRSIG: Final = 46
T_NSEC: Final = 47
T_DNSKEY: Final = 48
T_NSEC3: Final = 50
T_SVCB: Final = 64
T_HTTPS: Final = 65
T_IXFR: Final = 251
T_AXFR: Final = 252
T_ANY: Final = 255

C_IN: Final = 1
C_CH: Final = 3

F_QR: Final = 0x8000
F_AA: Final = 0x0400
F_TC: Final = 0x0200
F_RD: Final = 0x0100
F_RA: Final = 0x0080
F_Z: Final = 0x0040
F_AD: Final = 0x0020
F_CD: Final = 0x0010

EDE_STALE: Final = 3
EDE_BLOCKED: Final = 15
EDE_FILTERED: Final = 17
EDE_PROHIBITED: Final = 18
EDE_NO_REACHABLE_AUTHORITY: Final = 22
OPT_EDE: Final = 15

MAX_NAME: Final = 255
MAX_POINTER_HOPS: Final = 32
MAX_UDP_QUERY: Final = 4096  # a query never needs more; bigger datagrams are truncated by recv
OUR_EDNS_SIZE: Final = 1232

# Types whose RDATA holds names that may be compressed (RFC 3597 section 4): we decompress them so
# a cached answer never refers to an offset in a message we no longer have.
# Type -> octets of fixed data before the one name at the end of its RDATA (MX preference, SRV
# priority/weight/port); MD, MF, MB, MG, MR are 3, 4, 7, 8, 9.
_NAME_RDATA: Final = {T_NS: 0, T_CNAME: 0, T_PTR: 0, T_DNAME: 0, 3: 0, 4: 0, 7: 0, 8: 0, 9: 0}
_NAME_RDATA[T_MX] = 2
_NAME_RDATA[T_SRV] = 6
_DNSSEC_TYPES: Final = frozenset({T_RRSIG, T_NSEC, T_NSEC3, 50, 51})

_HDR = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class WireError(ValueError):
    """The bytes are not a DNS message we can act on; ``rcode`` says what the client gets."""

    def __init__(self, reason: str, rcode: int = FORMERR, qend: int = 0, do: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rcode = rcode
        self.qend = qend  # set for BADVERS, whose reply echoes the question
        self.do = do


# --- queries ----------------------------------------------------------------------------------
# parse_query result, a tuple for speed. Index names for readers:
Q_ID: Final = 0
Q_FLAGS: Final = 1
Q_END: Final = 2  # offset just past QTYPE/QCLASS: data[12:Q_END] is the question as sent
Q_QTYPE: Final = 3
Q_QCLASS: Final = 4
Q_EDNS: Final = 5  # -1: no OPT; otherwise the client's UDP payload size (>= 512)
Q_DO: Final = 6  # bool
Q_KEY: Final = 7  # lower-cased question bytes (+ b"\x01" when DO): the cache key
Q_NAME_END: Final = 8  # offset just past the QNAME

Query = tuple[int, int, int, int, int, int, bool, bytes, int]


def parse_query(data: bytes) -> Query:
    """Validate a query's header, question and OPT; raise WireError with the rcode it earns.

    Callers must already have dropped messages shorter than 12 bytes or with QR set (RFC 1035:
    never answer a response). Unknown EDNS options and flags are ignored (RFC 6891 6.1.2).
    """
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if flags & 0x7800:  # opcode != QUERY
        raise WireError("opcode", NOTIMP)
    if qd != 1 or an or ns or ar > 2:
        raise WireError("counts")
    # Never look further than a 255-octet name could reach, whatever the message length.
    end = min(len(data), 12 + MAX_NAME)
    pos = 12
    while True:
        if pos >= end:
            raise WireError("truncated name" if end < 12 + MAX_NAME else "name too long")
        ln = data[pos]
        if ln == 0:
            pos += 1
            break
        if ln > 63:  # compression pointer or reserved label type: never valid in a question here
            raise WireError("label type")
        pos += ln + 1
    end = len(data)
    name_end = pos
    qend = pos + 4
    if qend > end:
        raise WireError("truncated question")
    qtype = (data[pos] << 8) | data[pos + 1]
    qclass = (data[pos + 2] << 8) | data[pos + 3]
    edns = -1
    do = False
    if ar:
        pos = qend
        seen_opt = False
        for _ in range(ar):
            owner_end = _skip_name(data, pos)
            if owner_end + 10 > end:
                raise WireError("truncated additional")
            rtype, _rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, owner_end)
            nxt = owner_end + 10 + rdlen
            if nxt > end:
                raise WireError("truncated rdata")
            if rtype == T_OPT:
                if seen_opt or owner_end != pos + 1:  # second OPT, or owner not the root
                    raise WireError("bad OPT")
                seen_opt = True
                edns = max(_rclass, 512)  # RFC 6891 6.2.5: below 512 counts as 512
                if (ttl >> 16) & 0xFF:
                    raise WireError("edns version", BADVERS, qend, bool(ttl & 0x8000))
                do = bool(ttl & 0x8000)
            pos = nxt
    key = data[12:qend].lower()
    if do:
        key += b"\x01"
    return (qid, flags, qend, qtype, qclass, edns, do, key, name_end)


def _skip_name(data: bytes, pos: int) -> int:
    """Offset just past a (possibly compressed) name; bounded, never follows pointers."""
    end = len(data)
    for _ in range(128):
        if pos >= end:
            raise WireError("truncated name")
        ln = data[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError("truncated pointer")
            return pos + 2
        if ln > 63:
            raise WireError("label type")
        pos += ln + 1
    raise WireError("too many labels")


def qname_text(data: bytes, name_end: int) -> str:
    """The question name as lower-case dotted text, no trailing dot ("" for the root).

    Only called on cache misses. Bytes outside ASCII are kept as latin-1 so the text maps
    one-to-one onto the wire name; they can never equal a listed (punycode) domain.
    """
    labels = []
    pos = 12
    while pos < name_end - 1:
        ln = data[pos]
        labels.append(data[pos + 1 : pos + 1 + ln])
        pos += ln + 1
    return b".".join(labels).decode("latin-1").lower()


def header_id_flags(data: bytes) -> tuple[int, int]:
    return _U16.unpack_from(data, 0)[0], _U16.unpack_from(data, 2)[0]


# --- building replies ---------------------------------------------------------------------------
def opt_record(do: bool, ext_rcode: int = 0, ede: int = -1, ede_text: bytes = b"") -> bytes:
    """Our own OPT RR: payload 1232, version 0, DO echoed (RFC 3225), optional EDE (RFC 8914)."""
    rdata = b""
    if ede >= 0:
        rdata = struct.pack("!HHH", OPT_EDE, 2 + len(ede_text), ede) + ede_text
    ttl = ((ext_rcode >> 4) << 24) | (0x8000 if do else 0)
    return b"\x00" + _RR_FIXED.pack(T_OPT, OUR_EDNS_SIZE, ttl, len(rdata)) + rdata


def reply_flags(qflags: int, rcode: int, extra: int = 0) -> int:
    """QR and RA set, RD and CD copied from the query, AA never (we are not authoritative)."""
    return F_QR | F_RA | (qflags & (F_RD | F_CD)) | (rcode & 0xF) | extra


def error_reply(
    data: bytes, rcode: int, qend: int = 0, edns: bool = False, do: bool = False
) -> bytes:
    """FORMERR/NOTIMP/REFUSED/SERVFAIL/BADVERS, with the question echoed when ``qend`` is known.

    Without a parsed question (FORMERR, NOTIMP) the reply carries QDCOUNT 0, as BIND does, so the
    client can still read it; the ID and opcode are echoed.
    """
    qid, qflags = header_id_flags(data)
    flags = F_QR | F_RA | (qflags & (0x7800 | F_RD | F_CD)) | (rcode & 0xF)
    if not qend:
        return _HDR.pack(qid, flags, 0, 0, 0, 0)
    question = data[12:qend]
    if edns or rcode == BADVERS:
        return _HDR.pack(qid, flags, 1, 0, 0, 1) + question + opt_record(do, rcode)
    return _HDR.pack(qid, flags, 1, 0, 0, 0) + question


def truncated_reply(data: bytes, q: Query, flags: int, opt: bytes) -> bytes:
    """TC=1 with header and question only: never a partial RRset (RFC 2181 9)."""
    return _HDR.pack(q[Q_ID], flags | F_TC, 1, 0, 0, 1 if opt else 0) + data[12 : q[Q_END]] + opt


def build_upstream_query(qid: int, question: bytes, do: bool, cd: bool) -> bytes:
    """The query we send upstream: our ID, RD, the client's question (case kept), our OPT."""
    flags = F_RD | (F_CD if cd else 0)
    opt = b"\x00" + _RR_FIXED.pack(T_OPT, OUR_EDNS_SIZE, 0x8000 if do else 0, 0)
    return _HDR.pack(qid, flags, 1, 0, 0, 1) + question + opt


def encode_name(name: str) -> bytes:
    """Dotted text to uncompressed wire form ("" is the root)."""
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("latin-1")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


# --- upstream replies ---------------------------------------------------------------------------
def read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """Decompress a name: (uncompressed wire bytes, offset just past it in the message).

    Pointers must point strictly backwards (RFC 9267): loops and forward references are errors,
    and so are more than MAX_POINTER_HOPS hops or a result over 255 octets.
    """
    end = len(data)
    out = bytearray()
    after = -1
    hops = 0
    limit = pos  # a pointer must go below the start of the label sequence it interrupts
    while True:
        if pos >= end:
            raise WireError("truncated name")
        ln = data[pos]
        if ln == 0:
            out.append(0)
            if after < 0:
                after = pos + 1
            break
        if ln & 0xC0 == 0xC0:
            if pos + 1 >= end:
                raise WireError("truncated pointer")
            target = ((ln & 0x3F) << 8) | data[pos + 1]
            if target >= limit:
                raise WireError("pointer loop or forward pointer")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise WireError("too many pointers")
            if after < 0:
                after = pos + 2
            pos = limit = target
            continue
        if ln > 63:
            raise WireError("label type")
        if pos + 1 + ln > end:
            raise WireError("truncated label")
        out += data[pos : pos + 1 + ln]
        if len(out) > MAX_NAME - 1:
            raise WireError("name too long")
        pos += 1 + ln
    return bytes(out), after


def is_subdomain(name: bytes, zone: bytes) -> bool:
    """True when the uncompressed wire name equals ``zone`` or lies below it (label-aligned)."""
    pos = 0
    while True:
        if name[pos:] == zone:
            return True
        ln = name[pos]
        if ln == 0:
            return False
        pos += ln + 1


def wire_to_text(name: bytes) -> str:
    """Uncompressed wire name to lower-case dotted text without the trailing dot."""
    labels = []
    pos = 0
    while name[pos]:
        ln = name[pos]
        labels.append(name[pos + 1 : pos + 1 + ln])
        pos += ln + 1
    return b".".join(labels).decode("latin-1").lower()


# One resource record of an upstream reply: (owner wire lower-cased, type, class, ttl, rdata with
# names decompressed). Owner names are kept in wire form so re-encoding is a concatenation.
RR = tuple[bytes, int, int, int, bytes]


class Reply:
    """An upstream reply that passed the bounded parser. Built off the hot path (cache misses).

    Only the header, question and ANSWER section are checked up front: a positive answer never
    needs more, and AUTHORITY (for the SOA of a negative answer) is parsed when first asked for.
    ADDITIONAL is never used: we answer with our own OPT and no additional data (RFC 2181 5.4.1).

    The usual answer, A or AAAA records owned by the question (a ``0xC00C`` pointer), is only
    walked: ``simple_end`` is where that section ends, ``answer`` is parsed only if someone asks,
    and answer.forwarded builds the cache entry from these bytes as they are.
    """

    __slots__ = (
        "_an_count",
        "_answer",
        "_auth",
        "_auth_count",
        "_auth_pos",
        "an_pos",
        "data",
        "flags",
        "qid",
        "question",
        "rcode",
        "simple_end",
    )

    def __init__(
        self,
        qid: int,
        flags: int,
        question: bytes,
        data: bytes,
        an_pos: int,
        an_count: int,
        answer: list[RR] | None,
        auth_pos: int,
        nscount: int,
        simple_end: int = 0,
    ) -> None:
        self.qid = qid
        self.flags = flags
        self.rcode = flags & 0xF
        self.question = question
        self.data = data
        self.an_pos = an_pos
        self._an_count = an_count
        self._answer = answer
        self.simple_end = simple_end  # 0: not the simple case
        self._auth_pos = auth_pos
        self._auth_count = nscount
        self._auth: list[RR] | None = None

    @property
    def answer(self) -> list[RR]:
        if self._answer is None:
            # A simple section: walked and bounded already, so this cannot fail.
            self._answer, _end = _read_records(self.data, self.an_pos, self._an_count)
        return self._answer

    @property
    def authority(self) -> list[RR]:
        if self._auth is None:
            self._auth, _end = _read_records(self.data, self._auth_pos, self._auth_count)
        return self._auth


def _simple_section(data: bytes, pos: int, count: int) -> int:
    """Where an answer section of only A/AAAA records owned by ``0xC00C`` ends; 0 otherwise
    (anything else, or anything out of bounds, goes to the full parser and its errors)."""
    end = len(data)
    for _ in range(count):
        if pos + 12 > end or data[pos] != 0xC0 or data[pos + 1] != 12 or data[pos + 2]:
            return 0
        rtype = data[pos + 3]
        rdlen = (data[pos + 10] << 8) | data[pos + 11]
        if not ((rtype == T_A and rdlen == 4) or (rtype == T_AAAA and rdlen == 16)):
            return 0
        pos += 12 + rdlen
        if pos > end:
            return 0
    return pos


def _read_records(data: bytes, pos: int, count: int) -> tuple[list[RR], int]:
    out: list[RR] = []
    end = len(data)
    qname = b""
    for _ in range(count):
        if data[pos : pos + 2] == b"\xc0\x0c":  # the usual owner: the question's name
            if not qname:
                qname, _after = read_name(data, 12)
            owner = qname
            pos += 2
        else:
            owner, pos = read_name(data, pos)
        if pos + 10 > end:
            raise WireError("truncated record")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        rend = pos + rdlen
        if rend > end:
            raise WireError("truncated rdata")
        if rtype != T_OPT:
            out.append(
                (owner.lower(), rtype, rclass, ttl, _decompress_rdata(data, rtype, pos, rend))
            )
        pos = rend
    return out, pos


def parse_reply(data: bytes) -> Reply:
    """Parse an upstream reply with the same bounds as queries. Raises WireError."""
    if len(data) < 12:
        raise WireError("short reply")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if not flags & F_QR:
        raise WireError("not a response")
    if qd != 1:
        raise WireError("reply question count")
    if an + ns + ar > 4096:
        raise WireError("too many records")
    qname_end = _skip_name(data, 12)
    if data[12] & 0xC0:
        raise WireError("compressed question")
    if qname_end + 4 > len(data):
        raise WireError("truncated question")
    question = data[12 : qname_end + 4]
    qend = qname_end + 4
    simple_end = _simple_section(data, qend, an) if an else 0
    if simple_end:
        return Reply(qid, flags, question, data, qend, an, None, simple_end, ns, simple_end)
    answer, pos = _read_records(data, qend, an)
    return Reply(qid, flags, question, data, qend, an, answer, pos, ns)


def _decompress_rdata(data: bytes, rtype: int, pos: int, rend: int) -> bytes:
    fixed = _NAME_RDATA.get(rtype)
    if fixed is not None:
        if rend - pos < fixed + 1:
            raise WireError("rdata length")
        name, after = read_name(data, pos + fixed)
        if after != rend:
            raise WireError("rdata length")
        return data[pos : pos + fixed] + name
    if rtype == T_SOA:
        mname, p = read_name(data, pos)
        rname, p = read_name(data, p)
        if p + 20 != rend:
            raise WireError("SOA length")
        return mname + rname + data[p:rend]
    if rtype == T_A and rend - pos != 4:
        raise WireError("A length")
    if rtype == T_AAAA and rend - pos != 16:
        raise WireError("AAAA length")
    return data[pos:rend]


def encode_rr(owner: bytes, rtype: int, rclass: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


def pack_u32_into(buf: bytearray, offset: int, value: int) -> None:
    _U32.pack_into(buf, offset, value)


# --- address classes for rebinding protection ---------------------------------------------------
def private_v4(a: int, b: int) -> bool:
    """0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16, by the first two octets."""
    if a in (0, 10, 127):
        return True
    if a == 100:
        return 64 <= b < 128
    if a == 169:
        return b == 254
    if a == 172:
        return 16 <= b < 32
    return a == 192 and b == 168


_V4_MAPPED = bytes(10) + b"\xff\xff"


def is_private_rdata(rtype: int, rdata: bytes) -> bool:
    """True for A/AAAA data in private or special space, IPv4-mapped forms included.

    Byte tests rather than ``ipaddress`` objects: this runs for every address of every
    forwarded answer.
    """
    if rtype == T_A:
        return private_v4(rdata[0], rdata[1])
    if rdata[:12] == _V4_MAPPED:
        return private_v4(rdata[12], rdata[13])
    if rdata[0] & 0xFE == 0xFC:  # fc00::/7 unique local
        return True
    if rdata[0] == 0xFE and rdata[1] & 0xC0 == 0x80:  # fe80::/10 link-local
        return True
    return rdata[:15] == bytes(15) and rdata[15] in (0, 1)  # :: and ::1
