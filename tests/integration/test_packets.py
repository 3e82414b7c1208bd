"""What a client sees for every kind of packet: RELIABILITY.md section 4 A, B (R01-R21), G (R43).

The real server runs as a subprocess (``GuardianProcess``) in front of the scriptable upstream on
loopback (``AuthServer``). Malformed and odd queries are built byte by byte with
``tests.support.wire.make_query`` and the replies are read with dnspython; a few cases also go
through real clients (dnspython's ``dns.query``, ``dig`` and ``kdig``). Every case runs over UDP
and TCP unless it says otherwise.

What "right" means here, from RELIABILITY.md section 1.3: FORMERR and NOTIMP replies are a bare
header with the ID and opcode echoed and QDCOUNT 0 (BIND style); BADVERS echoes the question with
an OPT of version 0; no reply at all for a runt or a response (and a closed connection over TCP);
and whatever the input, the server stays alive and never forwards an invalid message -- the
upstream's query log is the witness, never the server's word.

One server per block mode for the whole module (each test resets the shared upstream's log and
uses names of its own where the cache could hide a forward), so the file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import re
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support import require_tool, wire
from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess

pytestmark = pytest.mark.integration

HOST: Final = "127.0.0.1"
CLIENT_TIMEOUT: Final = 3.0  # a reply that should come must come well inside this
NO_REPLY: Final = 0.5  # RELIABILITY.md section 5: "no reply" is silence for about 500 ms
QID: Final = 0x4242
WWW: Final = "www.example.test"
WWW_ADDRESS: Final = "192.0.2.10"
WILD_ADDRESS: Final = "192.0.2.50"  # any name under wild.example.test
BIG: Final = "big.example.test"  # 11 TXT records, about 2.8 KB
BIG_RECORDS: Final = 11
BLOCKED: Final = "blocked.example.test"
CATEGORY: Final = "kids"
ALIVE_NAME: Final = "alive.wild.example.test"  # is_alive's name, so it never pollutes a count
CUSTOM_IPV4: Final = "192.0.2.99"
BLOCK_TTL: Final = 5  # blocking.ttl default
UDP_MAX: Final = 1232  # server.udp_max_size default
EDE_BLOCKED: Final = 15

OPCODE_SHIFT: Final = 11
NOERROR: Final = 0
FORMERR: Final = 1
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16

# The flag words a client must see (QR, RA, RD copied; AA, TC, Z, AD, CD clear), by rcode.
QR_RD_RA: Final = wire.QR | wire.RD | wire.RA

TRANSPORTS: Final = pytest.mark.parametrize("transport", ["udp", "tcp"])


# ---------------------------------------------------------------------------- exchanging


def exchange(
    data: bytes, port: int, transport: str, *, timeout: float = CLIENT_TIMEOUT
) -> tuple[bytes | None, bool]:
    """Send one message; (first reply or None, connection closed by the server -- TCP only)."""
    if transport == "udp":
        return wire.udp_exchange(data, port, HOST, timeout=timeout), False
    replies, closed = wire.tcp_exchange([data], port, HOST, timeout=timeout)
    return (replies[0] if replies else None), closed


def ask_raw(data: bytes, port: int, transport: str) -> bytes:
    """One message that must be answered; silence fails the test with the bytes that were sent."""
    reply, _closed = exchange(data, port, transport)
    assert reply is not None, (
        f"no reply over {transport} within {CLIENT_TIMEOUT} s to {wire.to_hex(data, 2)}"
    )
    return reply


def header(data: bytes) -> tuple[int, int, int, int, int, int]:
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    return ident, flags, qd, an, ns, ar


def show(data: bytes) -> str:
    """A reply for assertion messages: its hex and, when dnspython can read it, its text."""
    try:
        text = dns.message.from_wire(data).to_text()
    except Exception as exc:  # the point is to show it, however broken
        text = f"(dnspython cannot parse it: {exc})"
    return f"\n{wire.to_hex(data, 2)}\n{text}"


def expect_header(
    data: bytes,
    *,
    flags: int,
    qd: int,
    an: int,
    ns: int,
    ar: int,
    ident: int = QID,
) -> None:
    """The whole 12-byte header, field by field, with the reply shown on a mismatch."""
    got = header(data)
    want = (ident, flags, qd, an, ns, ar)
    names = ("ID", "flags", "QDCOUNT", "ANCOUNT", "NSCOUNT", "ARCOUNT")
    diffs = [
        f"{name}: want {w:#06x} got {g:#06x}" if name in ("ID", "flags") else f"{name}: {w} != {g}"
        for name, w, g in zip(names, want, got, strict=True)
        if w != g
    ]
    assert not diffs, "; ".join(diffs) + show(data)


def expect_bare_error(data: bytes, query: bytes, rcode: int) -> None:
    """FORMERR / NOTIMP: header only, ID and opcode echoed, RD copied, QDCOUNT 0, no OPT."""
    opcode_bits = header(query)[1] & 0x7800
    rd = header(query)[1] & wire.RD
    flags = wire.QR | wire.RA | rd | opcode_bits | rcode
    expect_header(data, flags=flags, qd=0, an=0, ns=0, ar=0)
    assert len(data) == 12, f"trailing bytes after a bare {rcode} header" + show(data)
    wire.parse_reply(data)  # a client can read it


def forwarded(upstream: AuthServer, exclude: str = ALIVE_NAME) -> list[str]:
    """What reached the upstream since the test started, as 'name TYPE' (the alive probe aside)."""
    return [
        f"{q.qname} {q.qtype_name}" for q in upstream.queries if q.qname.lower() != exclude.lower()
    ]


def assert_alive(server: GuardianProcess) -> None:
    assert server.proc.poll() is None, (
        f"guardian_dns exited ({server.proc.returncode}); stderr:\n{server.stderr_text()}"
    )
    assert wire.is_alive(server.port, HOST, qname=ALIVE_NAME, timeout=0.5), (
        f"guardian_dns no longer answers a normal query; stderr:\n{server.stderr_text()}"
    )


def flag_bits(message: dns.message.Message) -> int:
    """dnspython's flag word without the opcode and rcode bits it also holds."""
    return int(message.flags) & ~0x780F


def ede(reply: wire.Reply) -> tuple[int, ...]:
    return reply.opt.ede_codes if reply.opt is not None else ()


# ---------------------------------------------------------------------------- servers


def config_text(upstream: AuthServer, blocklist: Path, blocking: dict[str, str]) -> str:
    lines = [
        "upstream:",
        "  servers:",
        f"    - {upstream.url_udp}",
        "metrics:",
        "  listen: 127.0.0.1:${METRICS_PORT}",
        "blocking:",
        *(f"  {key}: {value}" for key, value in blocking.items()),
        "  lists:",
        f"    - file: {blocklist}",
        f"      category: {CATEGORY}",
    ]
    return "\n".join(lines) + "\n"


BLOCK_MODES: Final[dict[str, dict[str, str]]] = {
    "nxdomain": {},  # the default
    "null_ip": {"mode": "null_ip"},
    "custom_ip": {"mode": "custom_ip", "custom_ipv4": CUSTOM_IPV4},
    "refused": {"mode": "refused"},
}


@pytest.fixture(scope="module")
def _shared_upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


@pytest.fixture(scope="module")
def _servers(
    _shared_upstream: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], GuardianProcess]]:
    """One server per block mode, started on first use and kept for the module."""
    blocklist = tmp_path_factory.mktemp("lists") / "kids.domains"
    blocklist.write_text(BLOCKED + "\n", encoding="utf-8")
    started: dict[str, GuardianProcess] = {}
    with contextlib.ExitStack() as stack:

        def get(mode: str) -> GuardianProcess:
            if mode not in started:
                text = config_text(_shared_upstream, blocklist, BLOCK_MODES[mode])
                server = stack.enter_context(GuardianProcess(text))
                # Warm the alive probe's name so later "alive" checks are cache hits.
                assert wire.is_alive(server.port, HOST, qname=ALIVE_NAME, timeout=CLIENT_TIMEOUT)
                started[mode] = server
            return started[mode]

        yield get


@pytest.fixture
def upstream(_shared_upstream: AuthServer) -> Iterator[AuthServer]:
    """The shared upstream, with no behaviours and an empty query log."""
    _shared_upstream.reset()
    yield _shared_upstream
    assert not _shared_upstream.errors, f"AuthServer internal errors: {_shared_upstream.errors}"


def _checked(server: GuardianProcess) -> Iterator[GuardianProcess]:
    assert server.proc.poll() is None, (
        f"guardian_dns died in an earlier test; stderr:\n{server.stderr_text()}"
    )
    yield server
    assert server.proc.poll() is None, (
        f"guardian_dns exited ({server.proc.returncode}) during this test; "
        f"stderr:\n{server.stderr_text()}"
    )
    assert "Traceback" not in server.stderr_text(), (
        f"an exception escaped inside guardian_dns; stderr:\n{server.stderr_text()}"
    )


@pytest.fixture
def guardian(
    _servers: Callable[[str], GuardianProcess], upstream: AuthServer
) -> Iterator[GuardianProcess]:
    """The default-config server (block mode nxdomain) in front of ``upstream``."""
    yield from _checked(_servers("nxdomain"))


@pytest.fixture
def mode_server(
    request: pytest.FixtureRequest,
    _servers: Callable[[str], GuardianProcess],
    upstream: AuthServer,
) -> Iterator[GuardianProcess]:
    """The server for the block mode given by indirect parametrisation."""
    yield from _checked(_servers(request.param))


# ---------------------------------------------------------------------------- A. R01-R02 no reply


@TRANSPORTS
def test_runt_of_11_bytes_gets_no_reply_and_server_stays_up(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R01: 11 bytes ``4242010000010000000000`` -> silence (TCP: the connection is closed)."""
    runt = wire.unhex("4242010000010000000000")
    reply, closed = exchange(runt, guardian.port, transport, timeout=NO_REPLY)
    assert reply is None, "a runt of 11 bytes was answered" + show(reply)
    if transport == "tcp":
        assert closed, "a TCP frame of 11 bytes did not close the connection (framing error)"
    assert forwarded(upstream) == []
    assert_alive(guardian)


@TRANSPORTS
def test_response_sent_as_query_gets_no_reply_and_server_stays_up(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R02: QR=1 -> never answer a response (UDP silence; TCP close)."""
    response = wire.unhex("42428100000100000000000003777777076578616d706c6504746573740000010001")
    reply, closed = exchange(response, guardian.port, transport, timeout=NO_REPLY)
    assert reply is None, "a response (QR=1) was answered" + show(reply)
    if transport == "tcp":
        assert closed, "a response sent as a query over TCP did not close the connection"
    assert forwarded(upstream) == []
    assert_alive(guardian)


# ---------------------------------------------------------------------------- A. FORMERR table

NAME_257 = ".".join(["abcdefghijklmno"] * 16)  # 16 labels of 15: 16 * 16 + 1 = 257 wire bytes
assert len(wire.encode_name(NAME_257)) == 257

# (query, rcodes allowed): R03 may be FORMERR or NOTIMP (dnsdist answers an empty query NOTIMP).
FORMERR_CASES: Final[list[Any]] = [
    pytest.param(wire.unhex("424201000000000000000000"), (FORMERR, NOTIMP), id="R03-qdcount-0"),
    pytest.param(
        wire.make_query(WWW, "A", extra_questions=[(WWW, "AAAA")]), (FORMERR,), id="R04-qdcount-2"
    ),
    pytest.param(
        wire.unhex("424201000001000000000000") + wire.encode_name(WWW) + b"\x00\x01",
        (FORMERR,),
        id="R05-question-without-qclass",
    ),
    pytest.param(
        wire.unhex("424201000001000000000000c00c00010001"), (FORMERR,), id="R06-pointer-to-itself"
    ),
    pytest.param(
        wire.unhex("424201000001000000000000c04000010001"), (FORMERR,), id="R06-forward-pointer"
    ),
    pytest.param(wire.make_query(b"\x40" + b"a" * 64 + b"\x00"), (FORMERR,), id="R07-label-of-64"),
    pytest.param(wire.make_query(NAME_257), (FORMERR,), id="R08-name-of-257-bytes"),
    pytest.param(
        wire.make_query(WWW, edns=1232, opt_count=2), (FORMERR,), id="R11-two-opt-records"
    ),
    pytest.param(
        wire.make_query(WWW, edns=1232, opt_owner="a."), (FORMERR,), id="R11-opt-owner-not-root"
    ),
    pytest.param(
        wire.make_query(WWW, edns=1232, ancount=1, arcount=0), (FORMERR,), id="R11-opt-in-answer"
    ),
    pytest.param(
        wire.make_query(WWW, edns=1232, nscount=1, arcount=0),
        (FORMERR,),
        id="R11-opt-in-authority",
    ),
]


@pytest.mark.parametrize(("query", "rcodes"), FORMERR_CASES)
@TRANSPORTS
def test_malformed_query_gets_bare_formerr_and_is_never_forwarded(
    guardian: GuardianProcess,
    upstream: AuthServer,
    transport: str,
    query: bytes,
    rcodes: tuple[int, ...],
) -> None:
    """R03-R08, R11: FORMERR, ID and opcode echoed, QDCOUNT 0, no OPT; upstream sees nothing."""
    reply = ask_raw(query, guardian.port, transport)
    rcode = header(reply)[1] & 0xF
    assert rcode in rcodes, f"rcode {rcode}, want one of {rcodes}" + show(reply)
    expect_bare_error(reply, query, rcode)
    assert forwarded(upstream) == [], "an invalid query was forwarded"
    assert_alive(guardian)


@TRANSPORTS
def test_pointer_loop_in_question_is_rejected_at_once(
    guardian: GuardianProcess, transport: str
) -> None:
    """R06: a self-pointing QNAME costs no pointer chase (the reply is immediate)."""
    query = wire.unhex("424201000001000000000000c00c00010001")
    ask_raw(query, guardian.port, transport)  # warm the connection path
    start = time.monotonic()
    reply = ask_raw(query, guardian.port, transport)
    elapsed = time.monotonic() - start
    expect_bare_error(reply, query, FORMERR)
    # R06 asks < 10 ms; a generous bound for a busy 2-core CI box still catches a stall.
    assert elapsed < 0.25, f"FORMERR for a pointer loop took {elapsed * 1000:.0f} ms"
    assert_alive(guardian)


@TRANSPORTS
def test_query_carrying_an_answer_is_formerr_and_its_record_is_never_cached(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R13: ANCOUNT=1 with an A RR in a query -> FORMERR; the injected address is never served."""
    name = f"r13-{transport}.wild.example.test"
    query = wire.make_query(name, answer_a="203.0.113.13")
    reply = ask_raw(query, guardian.port, transport)
    expect_bare_error(reply, query, FORMERR)
    assert forwarded(upstream) == []

    normal = wire.parse_reply(ask_raw(wire.make_query(name), guardian.port, transport))
    assert normal.addresses() == [WILD_ADDRESS], "the query's own ANSWER was cached" + show(
        normal.wire
    )
    assert upstream.count(name, "A") == 1, "the real query never reached the upstream"


# ---------------------------------------------------------------------------- A. R08 255 bytes


@TRANSPORTS
def test_name_of_exactly_255_bytes_is_forwarded_normally(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R08: labels 63, 63, 63, 48 + example.test = 255 wire bytes -> forwarded, upstream answers."""
    first = transport[0] * 63
    name = ".".join([first, "b" * 63, "c" * 63, "d" * 48, "example", "test"])
    assert len(wire.encode_name(name)) == 255
    query = wire.make_query(name, edns=1232)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=1, ar=1)
    assert wire.question_wire(raw) == wire.question_wire(query), "question not echoed" + show(raw)
    assert upstream.count(name, "A") == 1, f"upstream saw {forwarded(upstream)}"


# ---------------------------------------------------------------------------- A. R09 opcodes


@pytest.mark.parametrize(
    "opcode",
    [1, 2, 3, 4, 5, 15],
    ids=["IQUERY-1", "STATUS-2", "opcode-3", "NOTIFY-4", "UPDATE-5", "opcode-15"],
)
@TRANSPORTS
def test_unsupported_opcode_gets_notimp_with_opcode_echoed(
    guardian: GuardianProcess, upstream: AuthServer, transport: str, opcode: int
) -> None:
    """R09: NOTIMP, opcode echoed, no answer data, nothing forwarded (e.g. ``42427900...``)."""
    query = wire.make_query(WWW, opcode=opcode, edns=1232)
    reply = ask_raw(query, guardian.port, transport)
    expect_bare_error(reply, query, NOTIMP)
    assert (header(reply)[1] >> OPCODE_SHIFT) & 0xF == opcode
    assert forwarded(upstream) == []
    assert_alive(guardian)


# ---------------------------------------------------------------------------- A. R10 BADVERS


def expect_badvers(raw: bytes, query: bytes) -> None:
    expect_header(raw, flags=QR_RD_RA, qd=1, an=0, ns=0, ar=1)  # low rcode bits 0: 16 = 1 << 4
    assert wire.question_wire(raw) == wire.question_wire(query), "question not echoed" + show(raw)
    reply = wire.parse_reply(raw)
    assert reply.rcode == BADVERS, f"rcode {reply.rcode_text}, want BADVERS" + show(raw)
    assert reply.opt is not None and reply.opt.version == 0, "BADVERS needs OPT version 0" + show(
        raw
    )
    assert reply.opt.payload == UDP_MAX
    assert reply.opt.flags == 0
    assert reply.answer == ()


@TRANSPORTS
def test_edns_version_1_gets_badvers_on_a_cold_cache(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R10 cold: ``...00002904d0000100000000`` for a name never asked -> BADVERS, not forwarded."""
    name = f"r10-cold-{transport}.wild.example.test"
    query = wire.make_query(name, ednsver=1)
    assert query.endswith(wire.unhex("00002904d0000100000000"))
    expect_badvers(ask_raw(query, guardian.port, transport), query)
    assert forwarded(upstream) == [], "an EDNS version 1 query was forwarded"
    assert_alive(guardian)

    # The refusal cached nothing: the same name with EDNS 0 resolves normally.
    normal = wire.parse_reply(ask_raw(wire.make_query(name, edns=1232), guardian.port, transport))
    assert normal.addresses() == [WILD_ADDRESS], show(normal.wire)


@TRANSPORTS
def test_edns_version_1_gets_badvers_even_when_the_answer_is_cached(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R10 warm: answered normally first (now cached), then EDNS version 1 -> still BADVERS."""
    name = f"r10-warm-{transport}.wild.example.test"
    normal = wire.parse_reply(ask_raw(wire.make_query(name, edns=1232), guardian.port, transport))
    assert normal.addresses() == [WILD_ADDRESS], show(normal.wire)
    assert upstream.count(name) == 1

    query = wire.make_query(name, ednsver=1)
    expect_badvers(ask_raw(query, guardian.port, transport), query)
    warm = wire.make_query(WWW, ednsver=1)
    ask_raw(wire.make_query(WWW, edns=1232), guardian.port, transport)
    expect_badvers(ask_raw(warm, guardian.port, transport), warm)
    assert upstream.count(name) == 1


# ---------------------------------------------------------------------------- A. R12 ignored bits


R12_CASES: Final = {
    "unknown-option-100": {"opts": [(100, b"\x01\x02\x03")]},
    "unknown-edns-flag-0x4000": {"edns_flags_extra": 0x4000},
    "header-z-bit": {"flags_extra": wire.Z},
    "all-three": {"opts": [(100, b"")], "edns_flags_extra": 0x4000, "flags_extra": wire.Z},
}


@pytest.mark.parametrize("case", list(R12_CASES))
@TRANSPORTS
def test_unknown_edns_option_flag_and_z_bit_are_ignored_and_not_echoed(
    guardian: GuardianProcess,
    upstream: AuthServer,
    transport: str,
    case: str,
) -> None:
    """R12: a normal answer; option 100 not echoed; Z and the OPT's MBZ flags zero."""
    name = f"r12-{case}-{transport}.wild.example.test"
    query = wire.make_query(name, edns=1232, **R12_CASES[case])
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA, qd=1, an=1, ns=0, ar=1)
    assert wire.question_wire(raw) == wire.question_wire(query)
    reply = wire.parse_reply(raw)
    assert reply.addresses() == [WILD_ADDRESS], show(raw)
    assert reply.opt is not None, "the OPT was not echoed" + show(raw)
    assert reply.opt.version == 0 and reply.opt.payload == UDP_MAX
    assert reply.opt.flags == 0, f"OPT flags {reply.opt.flags:#06x} echoed" + show(raw)
    assert 100 not in reply.opt.option_codes, "unknown option 100 echoed" + show(raw)

    for logged in upstream.queries:
        if logged.qname.lower() == name:
            upstream_query = dns.message.from_wire(logged.raw)
            assert not upstream_query.flags & wire.Z, "Z bit forwarded upstream"
            assert 100 not in [int(o.otype) for o in upstream_query.options], (
                "option 100 forwarded upstream"
            )


# ---------------------------------------------------------------------------- A. R14 trailing


@TRANSPORTS
def test_trailing_garbage_after_the_question_is_answered_or_formerr(
    guardian: GuardianProcess, transport: str
) -> None:
    """R14: 16 bytes of trailing garbage -> a normal answer or FORMERR; the server stays alive."""
    query = wire.make_query(WWW, trailing=bytes(range(0xA0, 0xB0)))
    raw = ask_raw(query, guardian.port, transport)
    if header(raw)[1] & 0xF == FORMERR:
        expect_bare_error(raw, query, FORMERR)
    else:
        expect_header(raw, flags=QR_RD_RA, qd=1, an=1, ns=0, ar=0)
        assert wire.question_wire(raw) == wire.question_wire(query)
        assert wire.parse_reply(raw).addresses() == [WWW_ADDRESS], show(raw)
    assert_alive(guardian)


# ---------------------------------------------------------------------------- A. R15 case


@pytest.mark.parametrize(
    ("qname", "address"),
    [
        pytest.param("WwW.ExAmPlE.TeSt", WWW_ADDRESS, id="www-mixed-case"),
        pytest.param("MiXeD-{t}.WiLd.ExAmPlE.TeSt", WILD_ADDRESS, id="cold-name-mixed-case"),
    ],
)
@TRANSPORTS
def test_mixed_case_question_is_echoed_byte_exact_in_question_and_answer(
    guardian: GuardianProcess, transport: str, qname: str, address: str
) -> None:
    """R15: the question as sent, byte for byte; the answer's owner name in the same case."""
    qname = qname.format(t=transport.upper())
    query = wire.make_query(qname, edns=1232)
    for attempt in ("first", "cached"):
        raw = ask_raw(query, guardian.port, transport)
        expect_header(raw, flags=QR_RD_RA, qd=1, an=1, ns=0, ar=1)
        assert wire.question_wire(raw) == wire.question_wire(query), (
            f"{attempt}: question not echoed byte-exact" + show(raw)
        )
        reply = wire.parse_reply(raw)
        assert reply.addresses() == [address], show(raw)
        assert reply.answer[0].name.to_text() == qname + ".", (
            f"{attempt}: answer owner {reply.answer[0].name} is not {qname}." + show(raw)
        )


@TRANSPORTS
def test_mixed_case_blocked_name_is_blocked_with_question_echoed(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R15: ``BlOcKeD.example.test`` -> NXDOMAIN + EDE 15, question byte-exact, not forwarded."""
    query = wire.make_query("BlOcKeD.example.test", edns=1232)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=0, ar=1)
    assert wire.question_wire(raw) == wire.question_wire(query), show(raw)
    assert ede(wire.parse_reply(raw)) == (EDE_BLOCKED,), show(raw)
    assert forwarded(upstream) == []


# ---------------------------------------------------------------------------- A. R16 QTYPE 666


@TRANSPORTS
def test_unknown_qtype_666_is_forwarded_and_gets_nodata(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R16: QTYPE 666 (``...029a0001``) -> forwarded; NOERROR/NODATA with the zone SOA."""
    name = f"r16-{transport}.wild.example.test"
    query = wire.make_query(name, 666, edns=1232)
    assert query[-15:-11] == wire.unhex("029a0001")
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA, qd=1, an=0, ns=1, ar=1)
    assert wire.question_wire(raw) == wire.question_wire(query)
    reply = wire.parse_reply(raw)
    assert reply.rdtypes("authority") == [dns.rdatatype.SOA], show(raw)
    assert upstream.count(name, 666) == 1


@TRANSPORTS
def test_unknown_qtype_666_for_a_blocked_name_is_blocked_and_not_forwarded(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R16: QTYPE 666 for ``blocked.example.test`` -> the block answer; upstream sees nothing."""
    query = wire.make_query(BLOCKED, 666, edns=1232)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=0, ar=1)
    assert wire.question_wire(raw) == wire.question_wire(query)
    assert ede(wire.parse_reply(raw)) == (EDE_BLOCKED,), show(raw)
    assert forwarded(upstream) == []


# ---------------------------------------------------------------------------- A. R17 CHAOS


@pytest.mark.parametrize(
    ("qname", "edns"),
    [
        ("version.bind", None),
        ("version.bind", 1232),
        ("id.server", 1232),
        ("hostname.bind", None),
    ],
    ids=["version.bind", "version.bind-edns", "id.server-edns", "hostname.bind"],
)
@TRANSPORTS
def test_chaos_class_queries_are_refused_and_never_forwarded(
    guardian: GuardianProcess, upstream: AuthServer, transport: str, qname: str, edns: int | None
) -> None:
    """R17: ``version.bind TXT CH`` -> REFUSED, question echoed, OPT only when asked."""
    query = wire.make_query(qname, "TXT", qclass="CH", edns=edns)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | REFUSED, qd=1, an=0, ns=0, ar=0 if edns is None else 1)
    assert wire.question_wire(raw) == wire.question_wire(query), show(raw)
    reply = wire.parse_reply(raw)
    if edns is not None:
        assert reply.opt is not None and reply.opt.version == 0, show(raw)
    assert forwarded(upstream) == [], "a CHAOS query was forwarded"
    assert_alive(guardian)


# ---------------------------------------------------------------------------- B. R18-R19 sizes


@pytest.mark.parametrize(
    ("edns", "limit"),
    [
        pytest.param(None, 512, id="R18-no-edns"),
        pytest.param(512, 512, id="R18-edns-512"),
        pytest.param(100, 512, id="R18-edns-100-counts-as-512"),
        pytest.param(4096, UDP_MAX, id="R19-edns-4096-capped-at-1232"),
    ],
)
def test_big_answer_over_udp_is_truncated_to_the_limit_then_full_over_tcp(
    guardian: GuardianProcess, edns: int | None, limit: int
) -> None:
    """R18/R19: ~2.8 KB TXT -> UDP: <= limit, TC=1, question, no partial RRset; TCP: all 11."""
    query = wire.make_query(BIG, "TXT", edns=edns)
    raw = ask_raw(query, guardian.port, "udp")
    assert len(raw) <= limit, f"UDP reply of {len(raw)} bytes over the {limit}-byte limit"
    ar = 0 if edns is None else 1
    expect_header(raw, flags=QR_RD_RA | wire.TC, qd=1, an=0, ns=0, ar=ar)
    assert wire.question_wire(raw) == wire.question_wire(query), show(raw)
    reply = wire.parse_reply(raw)
    if edns is None:
        assert reply.opt is None, "OPT in a reply to a query without EDNS" + show(raw)
    else:
        assert reply.opt is not None and reply.opt.payload == UDP_MAX, show(raw)

    full_raw = ask_raw(query, guardian.port, "tcp")
    expect_header(full_raw, flags=QR_RD_RA, qd=1, an=BIG_RECORDS, ns=0, ar=ar)
    full = wire.parse_reply(full_raw)
    assert len(full.answer) == 1 and len(full.answer[0]) == BIG_RECORDS, full.texts()
    assert len(full_raw) > UDP_MAX


def test_edns_payload_below_512_counts_as_512(guardian: GuardianProcess) -> None:
    """RFC 6891 6.2.5: EDNS size 100 means 512, so a reply of ~340 bytes is sent whole (UDP)."""
    name = ".".join(["e" * 63, "f" * 63, "g" * 63, "h" * 48, "example", "test"])
    query = wire.make_query(name, edns=100)
    raw = ask_raw(query, guardian.port, "udp")
    assert 100 < len(raw) <= 512, f"reply of {len(raw)} bytes" + show(raw)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=1, ar=1)
    assert wire.parse_reply(raw).opt is not None


# ---------------------------------------------------------------------------- B. R20 flags


@pytest.mark.parametrize("rd", [True, False], ids=["rd-1", "rd-0"])
@TRANSPORTS
def test_forwarded_answer_clears_upstream_aa_sets_ra_and_copies_rd(
    guardian: GuardianProcess, upstream: AuthServer, transport: str, rd: bool
) -> None:
    """R20: the upstream sets AA; the client sees AA=0, RA=1, RD as sent, our OPT (1232)."""
    name = f"r20-{transport}-rd{int(rd)}.wild.example.test"
    query = wire.make_query(name, rd=rd, edns=4096)
    for attempt in ("forwarded", "cached"):
        raw = ask_raw(query, guardian.port, transport)
        flags = wire.QR | wire.RA | (wire.RD if rd else 0)
        expect_header(raw, flags=flags, qd=1, an=1, ns=0, ar=1)
        reply = wire.parse_reply(raw)
        assert reply.opt is not None, f"{attempt}: no OPT" + show(raw)
        assert (reply.opt.version, reply.opt.payload, reply.opt.flags) == (0, UDP_MAX, 0), (
            f"{attempt}: OPT is not ours (version 0, payload 1232, no flags)" + show(raw)
        )
        assert reply.addresses() == [WILD_ADDRESS]
    logged = [q for q in upstream.queries if q.qname.lower() == name]
    assert len(logged) == 1, f"upstream saw {forwarded(upstream)}"


# ---------------------------------------------------------------------------- B. R21 ANY


@TRANSPORTS
def test_any_query_gets_rfc8482_hinfo_and_is_not_forwarded(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R21: ANY -> one HINFO "RFC8482" "" (dnspython client); the upstream sees nothing."""
    query = dns.message.make_query(WWW, "ANY", use_edns=0, payload=1232)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    reply = send(query, HOST, port=guardian.port, timeout=CLIENT_TIMEOUT)
    assert reply.rcode() == dns.rcode.NOERROR, reply.to_text()
    assert flag_bits(reply) == QR_RD_RA, reply.to_text()
    assert len(reply.answer) == 1, reply.to_text()
    rrset = reply.answer[0]
    assert rrset.rdtype == dns.rdatatype.HINFO and rrset.name == query.question[0].name
    assert [(r.cpu, r.os) for r in rrset] == [(b"RFC8482", b"")], reply.to_text()
    assert reply.edns == 0 and reply.payload == UDP_MAX
    assert len(reply.to_wire()) <= UDP_MAX
    assert forwarded(upstream) == []


@TRANSPORTS
def test_any_query_for_a_blocked_name_is_blocked(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R21: ANY for ``blocked.example.test`` -> NXDOMAIN + EDE 15, not the RFC 8482 answer."""
    query = wire.make_query(BLOCKED, "ANY", edns=1232)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=0, ar=1)
    assert ede(wire.parse_reply(raw)) == (EDE_BLOCKED,), show(raw)
    assert forwarded(upstream) == []


# ---------------------------------------------------------------------------- G. R43 bypass


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "edes"),
    [
        pytest.param("use-application-dns.net", "A", NXDOMAIN, None, id="firefox-doh-canary"),
        pytest.param("_dns.resolver.arpa", "SVCB", NOERROR, None, id="ddr-resolver-arpa"),
        pytest.param("mask.icloud.com", "A", NXDOMAIN, None, id="icloud-private-relay"),
        pytest.param("mask-h2.icloud.com", "AAAA", NXDOMAIN, None, id="icloud-private-relay-h2"),
        pytest.param(BLOCKED, "HTTPS", NXDOMAIN, (EDE_BLOCKED,), id="blocked-https-type-65"),
        pytest.param(BLOCKED, "SVCB", NXDOMAIN, (EDE_BLOCKED,), id="blocked-svcb-type-64"),
    ],
)
@TRANSPORTS
def test_bypass_signals_are_answered_locally_and_never_forwarded(
    guardian: GuardianProcess,
    upstream: AuthServer,
    transport: str,
    qname: str,
    qtype: str,
    rcode: int,
    edes: tuple[int, ...] | None,
) -> None:
    """R43: DoH canary / DDR / Private Relay / HTTPS of a blocked name, through dnspython."""
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    reply = send(query, HOST, port=guardian.port, timeout=CLIENT_TIMEOUT)
    assert reply.rcode() == rcode, reply.to_text()
    assert flag_bits(reply) == QR_RD_RA, reply.to_text()
    assert reply.question == query.question
    assert reply.answer == [] and reply.authority == [] and reply.additional == []
    assert reply.edns == 0 and reply.payload == UDP_MAX
    if edes is not None:
        codes = tuple(int(o.code) for o in reply.options if isinstance(o, dns.edns.EDEOption))
        assert codes == edes, reply.to_text()
    assert forwarded(upstream) == [], f"{qname} {qtype} reached the upstream"


# ---------------------------------------------------------------------------- block modes


@pytest.mark.parametrize(
    ("mode_server", "qtype", "rcode", "addresses"),
    [
        pytest.param("nxdomain", "A", NXDOMAIN, [], id="nxdomain-A"),
        pytest.param("nxdomain", "AAAA", NXDOMAIN, [], id="nxdomain-AAAA"),
        pytest.param("null_ip", "A", NOERROR, ["0.0.0.0"], id="null_ip-A"),
        pytest.param("null_ip", "AAAA", NOERROR, ["::"], id="null_ip-AAAA"),
        pytest.param("null_ip", "HTTPS", NOERROR, [], id="null_ip-HTTPS-nodata"),
        pytest.param("custom_ip", "A", NOERROR, [CUSTOM_IPV4], id="custom_ip-A"),
        pytest.param("custom_ip", "AAAA", NOERROR, [], id="custom_ip-AAAA-without-v6"),
        pytest.param("refused", "A", REFUSED, [], id="refused-A"),
        pytest.param("refused", "HTTPS", REFUSED, [], id="refused-HTTPS"),
    ],
    indirect=["mode_server"],
)
@TRANSPORTS
def test_blocked_name_answer_follows_the_block_mode(
    mode_server: GuardianProcess,
    upstream: AuthServer,
    transport: str,
    qtype: str,
    rcode: int,
    addresses: list[str],
) -> None:
    """blocking.mode: the answer, TTL 5 (blocking.ttl), EDE 15 with the category; not forwarded."""
    for attempt in ("first", "cached"):
        query = wire.make_query(BLOCKED, qtype, edns=1232)
        raw = ask_raw(query, mode_server.port, transport)
        expect_header(raw, flags=QR_RD_RA | rcode, qd=1, an=len(addresses), ns=0, ar=1)
        assert wire.question_wire(raw) == wire.question_wire(query)
        reply = wire.parse_reply(raw)
        assert reply.addresses() == addresses, f"{attempt}:" + show(raw)
        for rrset in reply.answer:
            assert rrset.ttl == BLOCK_TTL, f"{attempt}: TTL {rrset.ttl}, want {BLOCK_TTL}"
            assert rrset.name.to_text() == BLOCKED + "."
        assert reply.opt is not None
        assert reply.opt.ede == ((EDE_BLOCKED, f"blocked: {CATEGORY}"),), show(raw)
    assert forwarded(upstream) == []


@TRANSPORTS
def test_blocked_name_without_edns_gets_plain_nxdomain_without_opt(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """No OPT in the query: the block is a bare NXDOMAIN (no OPT, so no EDE)."""
    query = wire.make_query(BLOCKED)
    raw = ask_raw(query, guardian.port, transport)
    expect_header(raw, flags=QR_RD_RA | NXDOMAIN, qd=1, an=0, ns=0, ar=0)
    assert forwarded(upstream) == []


# ---------------------------------------------------------------------------- label boundaries

# Over UDP ask A, over TCP AAAA: the second transport must not find the first one's cached answer.
QTYPE_FOR: Final = {"udp": "A", "tcp": "AAAA"}


@pytest.mark.parametrize(
    ("qname", "blocked"),
    [
        pytest.param(BLOCKED, True, id="listed-name"),
        pytest.param("www.blocked.example.test", True, id="subdomain"),
        pytest.param("a.b.c.blocked.example.test", True, id="deep-subdomain"),
        pytest.param("notblocked.example.test", False, id="notblocked-label-boundary"),
        pytest.param("xblocked.example.test", False, id="xblocked-label-boundary"),
        pytest.param("example.test", False, id="parent-of-listed-name"),
    ],
)
@TRANSPORTS
def test_a_listed_name_blocks_its_subdomains_but_not_lookalikes(
    guardian: GuardianProcess, upstream: AuthServer, transport: str, qname: str, blocked: bool
) -> None:
    """A list entry blocks itself and below, on label boundaries only (dnspython client)."""
    qtype = QTYPE_FOR[transport]
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    reply = send(query, HOST, port=guardian.port, timeout=CLIENT_TIMEOUT)
    codes = [int(o.code) for o in reply.options if isinstance(o, dns.edns.EDEOption)]
    if blocked:
        assert reply.rcode() == dns.rcode.NXDOMAIN, reply.to_text()
        assert codes == [EDE_BLOCKED], reply.to_text()
        assert reply.authority == [], "a block carries no SOA: " + reply.to_text()
        assert forwarded(upstream) == []
    else:
        assert EDE_BLOCKED not in codes, f"{qname} was blocked:\n{reply.to_text()}"
        # The upstream's own answer: NXDOMAIN or NODATA, with its zone SOA.
        assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA], reply.to_text()
        assert upstream.count(qname, qtype) == 1, f"upstream saw {forwarded(upstream)}"
    assert flag_bits(reply) == QR_RD_RA, reply.to_text()


# ---------------------------------------------------------------------------- real clients


def run_client(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def dig(port: int, *args: str) -> str:
    return run_client(
        [require_tool("dig"), "-r", f"@{HOST}", "-p", str(port), "+time=2", "+tries=1", *args]
    )


def kdig(port: int, *args: str) -> str:
    return run_client([require_tool("kdig"), f"@{HOST}", "-p", str(port), "+time=2", *args])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dig_shows_a_blocked_name_as_nxdomain_with_ede_15(
    guardian: GuardianProcess, upstream: AuthServer, tcp: bool
) -> None:
    out = dig(guardian.port, *(["+tcp"] if tcp else []), BLOCKED, "A")
    assert "status: NXDOMAIN" in out, out
    assert re.search(r"flags: qr rd ra;", out), out
    assert re.search(r"EDE: 15 \(Blocked\).*blocked: kids", out), out
    assert forwarded(upstream) == []


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dig_gets_a_forwarded_answer_without_aa(guardian: GuardianProcess, tcp: bool) -> None:
    out = dig(guardian.port, *(["+tcp"] if tcp else []), WWW, "A")
    assert "status: NOERROR" in out, out
    assert re.search(r"flags: qr rd ra;", out), f"AA or another flag leaked:\n{out}"
    assert re.search(rf"^{re.escape(WWW)}\.\s+\d+\s+IN\s+A\s+{WWW_ADDRESS}$", out, re.M), out
    assert "udp: 1232" in out, out


def test_dig_with_edns_version_1_gets_badvers(guardian: GuardianProcess) -> None:
    out = dig(guardian.port, "+edns=1", "+noednsnegotiation", WWW, "A")
    assert "status: BADVERS" in out, out
    assert "EDNS: version: 0" in out, out


def test_dig_falls_back_to_tcp_for_the_big_answer(guardian: GuardianProcess) -> None:
    """R18 with a real client: dig gets TC over UDP and retries over TCP by itself."""
    out = dig(guardian.port, "+bufsize=512", BIG, "TXT")
    assert "Truncated, retrying in TCP mode" in out, out
    assert "ANSWER: 11," in out, out


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_kdig_chaos_version_bind_is_refused(
    guardian: GuardianProcess, upstream: AuthServer, tcp: bool
) -> None:
    out = kdig(guardian.port, "+tcp" if tcp else "+notcp", "-c", "CH", "-t", "TXT", "version.bind")
    assert "status: REFUSED" in out, out
    assert forwarded(upstream) == []


def test_kdig_gets_the_full_big_answer_over_tcp(guardian: GuardianProcess) -> None:
    out = kdig(guardian.port, "+tcp", "-t", "TXT", BIG)
    assert "status: NOERROR" in out, out
    assert "ANSWER: 11;" in out, out
    assert re.search(r"Flags: qr rd ra;", out), out


def test_kdig_ddr_query_gets_nodata_locally(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    out = kdig(guardian.port, "-t", "SVCB", "_dns.resolver.arpa")
    assert "status: NOERROR" in out, out
    assert "ANSWER: 0;" in out, out
    assert forwarded(upstream) == []
