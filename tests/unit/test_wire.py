"""The bounded wire parser: what each malformed query earns, and that upstream replies decompress
safely. Raw bytes come from RELIABILITY.md section 4 (ID 0x4242, RD)."""

from __future__ import annotations

import struct

import dns.message
import dns.rdatatype
import pytest

from guardian_dns import wire

WWW = bytes.fromhex("03777777076578616d706c65047465737400")  # www.example.test.
HDR_RD = bytes.fromhex("42420100")


def query(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: str = "0100") -> bytes:
    return bytes.fromhex("4242" + flags) + struct.pack("!HHHH", qd, an, ns, ar)


def opt(size: int = 1232, version: int = 0, flags: int = 0, rdata: bytes = b"") -> bytes:
    ttl = (version << 16) | flags
    return b"\x00" + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


A_IN = b"\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("data", "rcode", "reason"),
    [
        pytest.param(query(qd=0), wire.FORMERR, "counts", id="R03-qdcount-0"),
        pytest.param(
            query(qd=2) + WWW + A_IN + WWW + b"\x00\x1c\x00\x01",
            wire.FORMERR,
            "counts",
            id="R04-qdcount-2",
        ),
        pytest.param(
            query() + WWW + b"\x00\x01", wire.FORMERR, "truncated question", id="R05-missing-qclass"
        ),
        pytest.param(
            query() + b"\xc0\x0c" + A_IN, wire.FORMERR, "label type", id="R06-pointer-self-loop"
        ),
        pytest.param(
            query() + b"\xc0\x40" + A_IN, wire.FORMERR, "label type", id="R06-forward-pointer"
        ),
        pytest.param(
            query() + b"\x40" + b"a" * 64 + b"\x00" + A_IN,
            wire.FORMERR,
            "label type",
            id="R07-64-byte-label",
        ),
        pytest.param(
            query() + (b"\x0f" + b"a" * 15) * 16 + b"\x00" + A_IN,
            wire.FORMERR,
            "name too long",
            id="R08-257-byte-name",
        ),
        pytest.param(query(flags="0900") + WWW + A_IN, wire.NOTIMP, "opcode", id="R09-opcode-1"),
        pytest.param(
            query(flags="2900") + WWW + A_IN, wire.NOTIMP, "opcode", id="R09-opcode-5-update"
        ),
        pytest.param(query(flags="7900") + WWW + A_IN, wire.NOTIMP, "opcode", id="R09-opcode-15"),
        pytest.param(
            query(ar=1) + WWW + A_IN + opt(version=1),
            wire.BADVERS,
            "edns version",
            id="R10-edns-version-1",
        ),
        pytest.param(
            query(ar=2) + WWW + A_IN + opt() + opt(), wire.FORMERR, "bad OPT", id="R11-two-opts"
        ),
        pytest.param(
            query(ar=1)
            + WWW
            + A_IN
            + b"\x01a"
            + opt()[0:0]
            + b"\x00"
            + struct.pack("!HHIH", 41, 1232, 0, 0),
            wire.FORMERR,
            "bad OPT",
            id="R11-opt-owner-not-root",
        ),
        pytest.param(
            query(an=1) + WWW + A_IN + b"\xc0\x0c" + A_IN + b"\x00\x00\x00\x3c\x00\x04" + bytes(4),
            wire.FORMERR,
            "counts",
            id="R13-ancount-1",
        ),
        pytest.param(query() + b"\x03www", wire.FORMERR, "truncated name", id="truncated-name"),
        pytest.param(
            query(ar=1) + WWW + A_IN + b"\x00\x00\x29",
            wire.FORMERR,
            "truncated additional",
            id="truncated-opt",
        ),
    ],
)
def test_malformed_query_earns_the_rfc_rcode(data: bytes, rcode: int, reason: str) -> None:
    with pytest.raises(wire.WireError) as err:
        wire.parse_query(data)
    assert err.value.rcode == rcode
    assert err.value.reason == reason


def test_255_byte_name_is_accepted() -> None:
    name = b"".join(bytes([n]) + b"a" * n for n in (63, 63, 63, 61)) + b"\x00"
    assert len(name) == 255
    q = wire.parse_query(query() + name + A_IN)
    assert q[wire.Q_END] == 12 + 255 + 4


@pytest.mark.parametrize(
    ("extra", "edns", "do"),
    [
        pytest.param(b"", -1, False, id="no-edns"),
        pytest.param(opt(4096), 4096, False, id="edns-4096"),
        pytest.param(opt(100), 512, False, id="edns-below-512-counts-as-512"),
        pytest.param(opt(1232, flags=0x8000), 1232, True, id="do-bit"),
        pytest.param(opt(1232, flags=0x4000), 1232, False, id="R12-unknown-edns-flag-ignored"),
        pytest.param(
            opt(1232, rdata=struct.pack("!HH", 100, 2) + b"xy"),
            1232,
            False,
            id="R12-unknown-option-ignored",
        ),
    ],
)
def test_edns_is_read_and_unknowns_ignored(extra: bytes, edns: int, do: bool) -> None:
    q = wire.parse_query(query(ar=1 if extra else 0) + WWW + A_IN + extra)
    assert q[wire.Q_EDNS] == edns
    assert q[wire.Q_DO] is do


def test_cache_key_ignores_case_but_not_do() -> None:
    mixed = bytes.fromhex("03577757074578416d50" + "6c65045465537400")  # WwW.ExAmPle.TeSt
    a = wire.parse_query(query() + mixed + A_IN)
    b = wire.parse_query(query() + WWW + A_IN)
    c = wire.parse_query(query(ar=1) + WWW + A_IN + opt(flags=0x8000))
    assert a[wire.Q_KEY] == b[wire.Q_KEY]
    assert c[wire.Q_KEY] != b[wire.Q_KEY]
    assert wire.qname_text(query() + mixed + A_IN, a[wire.Q_NAME_END]) == "www.example.test"


def test_trailing_garbage_after_question_is_tolerated() -> None:
    q = wire.parse_query(query() + WWW + A_IN + b"\xff" * 16)
    assert q[wire.Q_QTYPE] == 1


def test_badvers_reply_echoes_question_with_opt_version_0() -> None:
    data = query(ar=1) + WWW + A_IN + opt(version=1)
    with pytest.raises(wire.WireError) as err:
        wire.parse_query(data)
    e = err.value
    msg = dns.message.from_wire(wire.error_reply(data, e.rcode, e.qend, True, e.do))
    assert msg.rcode() == 16
    assert msg.edns == 0
    assert msg.id == 0x4242
    assert str(msg.question[0].name) == "www.example.test."


def test_formerr_reply_has_no_question_and_echoes_id_and_opcode() -> None:
    data = query(qd=0)
    reply = wire.error_reply(data, wire.FORMERR)
    assert reply[:2] == b"\x42\x42"
    flags = struct.unpack("!H", reply[2:4])[0]
    assert flags & 0xF == wire.FORMERR
    assert flags & wire.F_QR
    assert struct.unpack("!H", reply[4:6])[0] == 0


def _reply_bytes(answer_owner: bytes) -> bytes:
    head = bytes.fromhex("4242" + "8180") + struct.pack("!HHHH", 1, 1, 0, 0)
    return (
        head
        + WWW
        + A_IN
        + answer_owner
        + A_IN
        + b"\x00\x00\x01\x2c\x00\x04"
        + bytes([192, 0, 2, 10])
    )


def test_reply_with_backward_pointer_parses() -> None:
    rep = wire.parse_reply(_reply_bytes(b"\xc0\x0c"))
    assert rep.answer[0][0] == WWW
    assert rep.answer[0][3] == 300


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param(b"\xc0\x22", id="R25-pointer-to-itself"),
        pytest.param(b"\xc0\x40", id="forward-pointer"),
        pytest.param(b"\x40" + b"a" * 64 + b"\x00", id="bad-label-type"),
    ],
)
def test_reply_with_bad_name_is_rejected(owner: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_reply(_reply_bytes(owner))


def test_pointer_chain_is_bounded_and_fast() -> None:
    # A chain of 200 pointers, each to the previous one: refused after MAX_POINTER_HOPS.
    head = bytes.fromhex("42428180") + struct.pack("!HHHH", 1, 1, 0, 0) + WWW + A_IN
    body = bytearray(head)
    prev = 12
    for _ in range(200):
        here = len(body)
        body += struct.pack("!H", 0xC000 | prev)
        prev = here
    owner = struct.pack("!H", 0xC000 | prev)
    data = bytes(body) + owner + A_IN + b"\x00\x00\x00\x01\x00\x04" + bytes(4)
    data = data[:4] + struct.pack("!HHHH", 1, 1, 0, 0) + data[12:]
    with pytest.raises(wire.WireError):
        wire.parse_reply(data)


def test_reply_decompresses_cname_target() -> None:
    # www.example.test CNAME example.test (pointer into the question).
    head = bytes.fromhex("42428180") + struct.pack("!HHHH", 1, 1, 0, 0) + WWW + A_IN
    rr = b"\xc0\x0c" + b"\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02" + b"\xc0\x10"
    rep = wire.parse_reply(head + rr)
    assert rep.answer[0][4] == bytes.fromhex("076578616d706c65047465737400")
    assert wire.wire_to_text(rep.answer[0][4]) == "example.test"


@pytest.mark.parametrize(
    ("rtype", "rdata", "private"),
    [
        (wire.T_A, bytes([192, 168, 1, 100]), True),
        (wire.T_A, bytes([10, 1, 2, 3]), True),
        (wire.T_A, bytes([127, 0, 0, 1]), True),
        (wire.T_A, bytes([169, 254, 1, 1]), True),
        (wire.T_A, bytes([0, 0, 0, 0]), True),
        (wire.T_A, bytes([192, 0, 2, 10]), False),
        (wire.T_AAAA, bytes.fromhex("fd000000000000000000000000000001"), True),
        (wire.T_AAAA, bytes.fromhex("fe800000000000000000000000000001"), True),
        (wire.T_AAAA, bytes.fromhex("00000000000000000000ffffc0a80101"), True),
        (wire.T_AAAA, bytes.fromhex("20010db8000000000000000000000001"), False),
    ],
)
def test_private_address_classes(rtype: int, rdata: bytes, private: bool) -> None:
    assert wire.is_private_rdata(rtype, rdata) is private


def test_upstream_query_is_well_formed() -> None:
    q = wire.build_upstream_query(0x1234, WWW + A_IN, do=True, cd=True)
    msg = dns.message.from_wire(q)
    assert msg.id == 0x1234
    assert msg.question[0].rdtype == dns.rdatatype.A
    assert msg.edns == 0
    assert msg.payload == 1232
    assert msg.ednsflags & 0x8000


@pytest.mark.parametrize(
    ("rtype", "prefix"),
    [
        pytest.param(15, b"\x00\x0a", id="MX-preference-then-name"),
        pytest.param(33, b"\x00\x01\x00\x05\x01\xbb", id="SRV-priority-weight-port-then-name"),
        pytest.param(2, b"", id="NS-name-only"),
    ],
)
def test_names_inside_rdata_are_decompressed(rtype: int, prefix: bytes) -> None:
    # The target is a pointer to "example.test" inside the question (offset 16).
    head = bytes.fromhex("42428180") + struct.pack("!HHHH", 1, 1, 0, 0) + WWW + A_IN
    rdata = prefix + b"\x03mx1\xc0\x10"
    rr = b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    rep = wire.parse_reply(head + rr)
    assert rep.answer[0][4] == prefix + bytes.fromhex("036d7831076578616d706c65047465737400")


def test_rdata_too_short_for_its_fixed_part_is_rejected() -> None:
    head = bytes.fromhex("42428180") + struct.pack("!HHHH", 1, 1, 0, 0) + WWW + A_IN
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 60, 3) + b"\x00\x01\x00"
    with pytest.raises(wire.WireError):
        wire.parse_reply(head + rr)
