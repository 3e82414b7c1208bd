"""The test upstream (tests/support/authserver.py) and the loopback guard do what tests rely on.

Checked with two independent clients: dnspython (``dns.query``) and ``dig``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support import (
    NonLoopbackError,
    guard,
    is_loopback_target,
    require_tool,
)
from tests.support.authserver import FAKE_ADDRESS, POISON_ADDRESS, AuthServer, Behaviour
from tests.support.wire import (
    make_query,
    parse_reply,
    tcp_exchange,
    udp_exchange,
    udp_exchange_many,
    unhex,
)

HOST = "127.0.0.1"
TIMEOUT = 2.0


def ask_udp(
    server: AuthServer, qname: str, qtype: str = "A", **kwargs: object
) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, **kwargs)  # type: ignore[arg-type]
    return dns.query.udp(query, HOST, port=server.port, timeout=TIMEOUT)


def ask_tcp(
    server: AuthServer, qname: str, qtype: str = "A", **kwargs: object
) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, **kwargs)  # type: ignore[arg-type]
    return dns.query.tcp(query, HOST, port=server.port, timeout=TIMEOUT)


def rdata_texts(message: dns.message.Message) -> set[str]:
    return {
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in message.answer
        for rd in rrset
    }


# ---------------------------------------------------------------------------- zone data


@pytest.mark.parametrize(
    ("qname", "qtype", "expected"),
    [
        ("www.example.test", "A", {"A 192.0.2.10"}),
        ("www.example.test", "AAAA", {"AAAA 2001:db8::10"}),
        ("blocked.example.test", "A", {"A 192.0.2.66"}),
        (
            "allowed.example.test",
            "A",
            {"CNAME blocked.example.test.", "A 192.0.2.66"},
        ),
        ("chain.example.test", "A", {"CNAME www.example.test.", "A 192.0.2.10"}),
        (
            "rebind.example.test",
            "A",
            {
                "A 192.168.1.100",
                "A 10.1.2.3",
                "A 127.0.0.1",
                "A 169.254.1.1",
                "A 0.0.0.0",
                "A 192.0.2.20",
            },
        ),
        ("rebind.example.test", "AAAA", {"AAAA fd00::1", "AAAA fe80::1"}),
        ("signed.example.test", "A", {"A 192.0.2.30"}),
        ("printer.home.arpa", "A", {"A 192.168.1.50"}),
        ("any-name-42.wild.example.test", "A", {"A 192.0.2.50"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_zone_names_are_answered_authoritatively(
    auth_server: AuthServer, qname: str, qtype: str, expected: set[str]
) -> None:
    reply = ask_udp(auth_server, qname, qtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA
    assert rdata_texts(reply) == expected


def test_www_ttl_is_300(auth_server: AuthServer) -> None:
    reply = ask_udp(auth_server, "www.example.test")
    assert [rrset.ttl for rrset in reply.answer] == [300]


def test_missing_name_is_nxdomain_with_zone_soa(auth_server: AuthServer) -> None:
    reply = ask_udp(auth_server, "nope.example.test")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    (soa_set,) = reply.authority
    assert soa_set.rdtype == dns.rdatatype.SOA
    assert soa_set.name.to_text() == "example.test."
    assert soa_set.ttl == 300
    assert soa_set[0].minimum == 60


@pytest.mark.parametrize(
    ("qname", "qtype"),
    [
        ("www.example.test", "MX"),
        ("www.example.test", "TYPE666"),
        ("blocked.example.test", "TYPE666"),
        ("wild.example.test", "A"),  # empty non-terminal above the wildcard
        ("printer.home.arpa", "AAAA"),
    ],
    ids=lambda v: v,
)
def test_existing_name_other_type_is_nodata_with_soa(
    auth_server: AuthServer, qname: str, qtype: str
) -> None:
    reply = ask_udp(auth_server, qname, qtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


def test_name_outside_the_zones_is_refused_without_aa(auth_server: AuthServer) -> None:
    reply = ask_udp(auth_server, "bank.example")
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA


def test_big_txt_is_truncated_over_plain_udp_and_full_over_tcp(auth_server: AuthServer) -> None:
    udp = ask_udp(auth_server, "big.example.test", "TXT")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert len(udp.to_wire()) <= 512

    tcp = ask_tcp(auth_server, "big.example.test", "TXT")
    assert not tcp.flags & dns.flags.TC
    (txt,) = tcp.answer
    assert len(txt) == 11
    assert 2700 <= len(tcp.to_wire()) <= 3100


def test_big_txt_fits_a_4096_edns_buffer_over_udp(auth_server: AuthServer) -> None:
    reply = ask_udp(auth_server, "big.example.test", "TXT", use_edns=0, payload=4096)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 11
    assert reply.payload == 1232  # our OPT, echoed because the query had one


# ---------------------------------------------------------------------------- protocol edges


def test_query_without_question_gets_formerr(auth_server: AuthServer) -> None:
    raw = udp_exchange(unhex("424201000000000000000000"), auth_server.port)
    assert raw is not None
    reply = parse_reply(raw)
    assert (reply.id, reply.rcode_text) == (0x4242, "FORMERR")


def test_other_opcode_gets_notimp(auth_server: AuthServer) -> None:
    raw = udp_exchange(make_query("www.example.test", opcode=2), auth_server.port)
    assert raw is not None
    reply = parse_reply(raw)
    assert reply.rcode_text == "NOTIMP"
    assert reply.opcode == 2


def test_edns_version_1_gets_badvers_and_opt_version_0(auth_server: AuthServer) -> None:
    raw = udp_exchange(make_query("www.example.test", edns=1232, ednsver=1), auth_server.port)
    assert raw is not None
    reply = parse_reply(raw)
    assert reply.rcode_text == "BADVERS"
    assert reply.opt is not None and reply.opt.version == 0
    assert reply.answer == ()


def test_unparseable_packets_are_ignored_and_serving_continues(auth_server: AuthServer) -> None:
    assert udp_exchange(b"\x42\x42\x01", auth_server.port, timeout=0.3) is None
    response = make_query("www.example.test", flags_extra=0x8000)  # QR=1: not a query
    assert udp_exchange(response, auth_server.port, timeout=0.3) is None
    assert auth_server.bad_packets == 2
    assert auth_server.packets_received == 2
    assert ask_udp(auth_server, "www.example.test").rcode() == dns.rcode.NOERROR
    assert auth_server.errors == []


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(unhex("4242010000010000000000"), id="r01-short-header"),
        pytest.param(unhex("424201000001000000000000c00c00010001"), id="r06-pointer-loop"),
        pytest.param(unhex("424201000001000000000000c04000010001"), id="r06-forward-pointer"),
        pytest.param(make_query("a" * 64 + ".example.test"), id="r07-64-byte-label"),
        pytest.param(make_query(".".join(["a" * 15] * 16)), id="r08-257-byte-name"),
        pytest.param(make_query("www.example.test", opt_count=2), id="r11-two-opts"),
        pytest.param(make_query("www.example.test", trailing=b"\xff" * 16), id="r14-trailing"),
        pytest.param(make_query("www.example.test", qclass=None), id="r05-no-qclass"),
    ],
)
def test_malformed_queries_never_stop_the_upstream(auth_server: AuthServer, packet: bytes) -> None:
    udp_exchange(packet, auth_server.port, timeout=0.2)
    tcp_exchange([packet], auth_server.port, timeout=0.2)
    assert ask_udp(auth_server, "www.example.test").rcode() == dns.rcode.NOERROR
    assert auth_server.errors == []


def test_wait_for_reports_a_timeout(auth_server: AuthServer) -> None:
    assert not auth_server.wait_for(1, "www.example.test", timeout=0.05)
    ask_udp(auth_server, "www.example.test")
    assert auth_server.wait_for(1, "WWW.example.test.", "A", timeout=0.05)


# ---------------------------------------------------------------------------- knobs


def test_truncate_knob_sets_tc_over_udp_but_answers_fully_over_tcp(
    auth_server: AuthServer,
) -> None:
    auth_server.set_behaviour("www.example.test", truncate=True)
    udp = ask_udp(auth_server, "www.example.test")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = ask_tcp(auth_server, "www.example.test")
    assert not tcp.flags & dns.flags.TC
    assert rdata_texts(tcp) == {"A 192.0.2.10"}


def test_delay_holds_only_that_name(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("www.example.test", delay=0.6)
    results: dict[str, float] = {}

    def timed(qname: str) -> None:
        start = time.monotonic()
        ask_udp(auth_server, qname)
        results[qname] = time.monotonic() - start

    slow = threading.Thread(target=timed, args=("www.example.test",))
    slow.start()
    assert auth_server.wait_for(1, "www.example.test")
    timed("blocked.example.test")  # answered while www is still pending
    slow.join()
    assert results["www.example.test"] >= 0.55
    assert results["blocked.example.test"] < 0.5


def test_drop_means_no_reply_but_the_query_is_logged(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("www.example.test", drop=True)
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(
            dns.message.make_query("www.example.test", "A"),
            HOST,
            port=auth_server.port,
            timeout=0.3,
        )
    assert auth_server.count("www.example.test", "A") == 1


@pytest.mark.parametrize(
    ("knobs", "rcode", "aa"),
    [
        ({"servfail": True}, dns.rcode.SERVFAIL, False),
        ({"rcode": 5}, dns.rcode.REFUSED, True),
        ({"rcode": 3, "aa": False}, dns.rcode.NXDOMAIN, False),
    ],
    ids=["servfail", "rcode-refused", "rcode-nxdomain-no-aa"],
)
def test_rcode_knobs_answer_with_that_rcode_and_no_records(
    auth_server: AuthServer, knobs: dict[str, object], rcode: dns.rcode.Rcode, aa: bool
) -> None:
    auth_server.set_behaviour("www.example.test", **knobs)  # type: ignore[arg-type]
    reply = ask_udp(auth_server, "www.example.test")
    assert reply.rcode() == rcode
    assert bool(reply.flags & dns.flags.AA) == aa
    assert reply.answer == []


def test_ttl_knob_overrides_answer_ttl(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("chain.example.test", ttl=2)
    reply = ask_udp(auth_server, "chain.example.test")
    assert {rrset.ttl for rrset in reply.answer} == {2}


def test_aa_knob_clears_aa(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("www.example.test", aa=False)
    reply = ask_udp(auth_server, "www.example.test")
    assert not reply.flags & dns.flags.AA
    assert rdata_texts(reply) == {"A 192.0.2.10"}


def test_poison_adds_out_of_zone_records(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("poison.example.test", poison=True)
    reply = ask_udp(auth_server, "poison.example.test")
    assert rdata_texts(reply) == {"A 192.0.2.40"}
    additional = {
        (rrset.name.to_text(), rd.to_text()) for rrset in reply.additional for rd in rrset
    }
    authority = {(rrset.name.to_text(), rd.to_text()) for rrset in reply.authority for rd in rrset}
    assert ("bank.example.", POISON_ADDRESS) in additional
    assert ("example.", "evil.") in authority


def test_wrong_first_fakes_arrive_before_the_real_reply(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("www.example.test", wrong_first=["id", "qname", "qtype", "port"])
    query = make_query("www.example.test", "A", id=0x1234)
    received = udp_exchange_many(query, auth_server.port, count=5, timeout=TIMEOUT)
    assert len(received) == 5
    replies = [(parse_reply(data), sender) for data, sender in received]

    fake_id, fake_qname, fake_qtype, fake_port, real = replies
    for reply, _ in replies[:4]:
        assert reply.addresses() == [FAKE_ADDRESS]
    assert fake_id[0].id != 0x1234
    assert fake_qname[0].id == 0x1234
    assert fake_qname[0].question[0].name.lower() != "www.example.test."
    assert fake_qtype[0].question[0].qtype != dns.rdatatype.A
    assert fake_port[0].id == 0x1234
    assert fake_port[0].question[0].name == "www.example.test."
    assert fake_port[1][1] != auth_server.port  # another source port
    for _reply, sender in replies[:3]:
        assert sender[1] == auth_server.port
    assert real[0].id == 0x1234
    assert real[0].addresses() == ["192.0.2.10"]
    assert real[1] == (HOST, auth_server.port)


def test_wrong_first_sends_no_fakes_over_tcp(auth_server: AuthServer) -> None:
    auth_server.set_behaviour("www.example.test", wrong_first=["id", "port"])
    replies, _closed = tcp_exchange([make_query("www.example.test", id=7)], auth_server.port)
    assert [parse_reply(r).addresses() for r in replies] == [["192.0.2.10"]]


def test_answer_loop_reply_points_at_itself_and_dnspython_rejects_it(
    auth_server: AuthServer,
) -> None:
    auth_server.set_behaviour("loop.example.test", answer_loop=True)
    query = make_query("loop.example.test", "A")
    raw = udp_exchange(query, auth_server.port)
    assert raw is not None
    answer_offset = len(query)  # header + question; the answer starts right after
    assert answer_offset == 0x23
    assert raw[answer_offset : answer_offset + 2] == bytes.fromhex("c023")
    assert struct.unpack_from("!HH", raw, 4) == (1, 1)  # qdcount, ancount
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(raw)


def test_set_default_applies_to_names_without_their_own_behaviour(
    auth_server: AuthServer,
) -> None:
    auth_server.set_default(servfail=True)
    auth_server.set_behaviour("www.example.test")  # all defaults: a normal answer
    assert ask_udp(auth_server, "chain.example.test").rcode() == dns.rcode.SERVFAIL
    assert ask_udp(auth_server, "WWW.example.test.").rcode() == dns.rcode.NOERROR
    auth_server.reset()
    assert ask_udp(auth_server, "chain.example.test").rcode() == dns.rcode.NOERROR
    assert auth_server.count() == 1  # reset also emptied the log


def test_stop_answering_silences_everything_until_start_answering(
    auth_server: AuthServer,
) -> None:
    auth_server.stop_answering()
    assert udp_exchange(make_query("www.example.test"), auth_server.port, timeout=0.3) is None
    replies, _ = tcp_exchange([make_query("www.example.test")], auth_server.port, timeout=0.3)
    assert replies == []
    assert auth_server.count("www.example.test") == 2
    auth_server.start_answering()
    assert ask_udp(auth_server, "www.example.test").rcode() == dns.rcode.NOERROR


def test_unknown_wrong_first_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="wrong_first"):
        Behaviour(wrong_first=("ttl",))


# ---------------------------------------------------------------------------- query log, DNSSEC


def test_query_log_keeps_qname_case_and_source_port(auth_server: AuthServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(TIMEOUT)
        source_port = sock.getsockname()[1]
        sock.sendto(
            make_query("WwW.ExAmPlE.TeSt", "AAAA", id=0x0BAD, cd=True), (HOST, auth_server.port)
        )
        reply = parse_reply(sock.recv(65535))
    assert reply.question_wire == make_query("WwW.ExAmPlE.TeSt", "AAAA")[12:]
    (entry,) = auth_server.queries
    assert entry.qname == "WwW.ExAmPlE.TeSt"
    assert (entry.source_host, entry.source_port) == ("127.0.0.3", source_port)
    assert (entry.transport, entry.id, entry.qtype, entry.qclass) == ("udp", 0x0BAD, 28, 1)
    assert (entry.rd, entry.cd, entry.edns, entry.do_bit) == (True, True, False, False)
    assert auth_server.count("www.example.test", "AAAA") == 1
    assert auth_server.count("www.example.test", "A") == 0
    auth_server.clear_log()
    assert auth_server.queries == []


def test_query_log_records_tcp_and_edns(auth_server: AuthServer) -> None:
    tcp_exchange([make_query("www.example.test", edns=4096, do=True)], auth_server.port)
    (entry,) = auth_server.queries
    assert entry.transport == "tcp"
    assert (entry.edns, entry.do_bit, entry.edns_payload, entry.edns_version) == (
        True,
        True,
        4096,
        0,
    )


def test_do_bit_brings_rrsig_and_ad(auth_server: AuthServer) -> None:
    signed = ask_udp(auth_server, "signed.example.test", want_dnssec=True)
    assert {rrset.rdtype for rrset in signed.answer} == {dns.rdatatype.A, dns.rdatatype.RRSIG}
    assert signed.flags & dns.flags.AD
    assert signed.ednsflags & dns.flags.DO

    plain = ask_udp(auth_server, "signed.example.test")
    assert {rrset.rdtype for rrset in plain.answer} == {dns.rdatatype.A}
    assert not plain.flags & dns.flags.AD
    assert [q.do_bit for q in auth_server.queries] == [True, False]


def test_pipelined_tcp_queries_get_all_replies_on_one_connection(
    auth_server: AuthServer,
) -> None:
    queries = [
        make_query("www.example.test", "A", id=1),
        make_query("www.example.test", "AAAA", id=2),
        make_query("big.example.test", "TXT", id=3),
    ]
    replies, closed = tcp_exchange(queries, auth_server.port, one_write=True)
    assert [parse_reply(r).id for r in replies] == [1, 2, 3]
    assert not closed
    assert {q.source_port for q in auth_server.queries} == {auth_server.queries[0].source_port}


def test_stopped_server_releases_its_port() -> None:
    with AuthServer() as server:
        port = server.port
        assert server.address == f"127.0.0.1:{port}"
        assert server.url_udp == f"udp://127.0.0.1:{port}"
        assert server.url_tcp == f"tcp://127.0.0.1:{port}"
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))


def test_free_port_is_bindable_for_udp_and_tcp(free_port: int) -> None:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((HOST, free_port))


# ---------------------------------------------------------------------------- with dig


def dig(server: AuthServer, *args: str) -> str:
    binary = require_tool("dig")
    command = [binary, f"@{HOST}", "-p", str(server.port), "+tries=1", "+time=2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=15, check=True)
    return done.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("www.example.test", "A", "+short"), ["192.0.2.10"]),
        (("www.example.test", "AAAA", "+short"), ["2001:db8::10"]),
        (("allowed.example.test", "A", "+short"), ["blocked.example.test.", "192.0.2.66"]),
        (("printer.home.arpa", "A", "+short"), ["192.168.1.50"]),
    ],
    ids=["www-a", "www-aaaa", "cname", "home-arpa"],
)
def test_dig_sees_the_zone(
    auth_server: AuthServer, args: tuple[str, ...], expected: list[str]
) -> None:
    assert dig(auth_server, *args).split() == expected


def test_dig_sees_nxdomain(auth_server: AuthServer) -> None:
    out = dig(auth_server, "nope.example.test", "A")
    assert "status: NXDOMAIN" in out
    assert "SOA" in out


def test_dig_big_txt_over_tcp(auth_server: AuthServer) -> None:
    out = dig(auth_server, "+tcp", "+short", "big.example.test", "TXT")
    assert len(out.splitlines()) == 11
    assert auth_server.queries[0].transport == "tcp"


def test_dig_retries_truncated_udp_over_tcp(auth_server: AuthServer) -> None:
    out = dig(auth_server, "+noedns", "+short", "big.example.test", "TXT")
    assert len(out.splitlines()) == 11
    assert [q.transport for q in auth_server.queries] == ["udp", "tcp"]


def test_dig_dnssec_shows_rrsig_and_ad(auth_server: AuthServer) -> None:
    out = dig(auth_server, "+dnssec", "signed.example.test", "A")
    assert "RRSIG" in out
    flags_line = next(line for line in out.splitlines() if ";; flags:" in line)
    assert " ad" in flags_line.split(";")[2]


# ---------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    ("family", "address", "allowed"),
    [
        (socket.AF_INET, ("127.0.0.1", 53), True),
        (socket.AF_INET, ("127.0.0.3", 53), True),
        (socket.AF_INET, ("localhost", 53), True),
        (socket.AF_INET6, ("::1", 53, 0, 0), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 53, 0, 0), True),
        (socket.AF_UNIX, "/tmp/some.sock", True),
        (socket.AF_INET, ("192.0.2.1", 53), False),
        (socket.AF_INET, ("0.0.0.0", 53), False),
        (socket.AF_INET, ("8.8.8.8", 53), False),
        (socket.AF_INET, ("example.com", 53), False),
        (socket.AF_INET6, ("2001:db8::1", 53, 0, 0), False),
        (socket.AF_INET6, ("::ffff:192.0.2.1", 53, 0, 0), False),
    ],
    ids=lambda v: str(v) if not isinstance(v, bool) else ("allowed" if v else "refused"),
)
def test_loopback_target_table(family: int, address: object, allowed: bool) -> None:
    assert is_loopback_target(family, address) is allowed


def test_guard_refuses_sendto_before_the_packet_leaves() -> None:
    assert guard.installed
    with (
        guard.expecting_violation() as seen,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        with pytest.raises(NonLoopbackError, match="non-loopback address"):
            sock.sendto(b"\x42\x42", ("192.0.2.1", 53))
        # sendto() on an unbound socket binds it first; still port 0 means the kernel never saw it.
        assert sock.getsockname() == ("0.0.0.0", 0)
    assert len(seen) == 1


@pytest.mark.parametrize("method", ["connect", "connect_ex"])
def test_guard_refuses_tcp_connect_off_loopback(method: str) -> None:
    with (
        guard.expecting_violation() as seen,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
    ):
        with pytest.raises(AssertionError, match=r"192\.0\.2\.1"):
            getattr(sock, method)(("192.0.2.1", 53))
        assert sock.getsockname() == ("0.0.0.0", 0)
    assert len(seen) == 1


def test_guard_refuses_sendmsg_and_ipv6_off_loopback() -> None:
    with (
        guard.expecting_violation() as seen,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
    ):
        with pytest.raises(NonLoopbackError):
            sock.sendmsg([b"x"], [], 0, ("2001:db8::1", 53))
        with pytest.raises(NonLoopbackError):
            sock.sendto(b"x", 0, ("2001:db8::1", 53))
    assert len(seen) == 2


def test_guard_lets_loopback_and_unix_traffic_through(auth_server: AuthServer) -> None:
    assert udp_exchange(make_query("www.example.test"), auth_server.port) is not None
    left, right = socket.socketpair()
    with left, right:
        left.sendmsg([b"ok"])
        assert right.recv(2) == b"ok"


def test_guard_records_violations_swallowed_in_threads() -> None:
    def sloppy_thread() -> None:
        # Code under test might swallow the error; the autouse fixture must still see it.
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            contextlib.suppress(Exception),
        ):
            sock.sendto(b"x", ("192.0.2.1", 53))

    with guard.expecting_violation() as seen:
        worker = threading.Thread(target=sloppy_thread)
        worker.start()
        worker.join()
    assert seen and "192.0.2.1" in seen[0]


# ---------------------------------------------------------------------------- require_tool


def test_require_tool_skips_a_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        require_tool("no-such-tool-guardian")


def test_require_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        require_tool("no-such-tool-guardian")
