"""Upstream and cache safety (RELIABILITY.md section 4 C, R22-R32), end to end.

The real server runs as a subprocess (``GuardianProcess``) in front of the scriptable upstream on
loopback (``AuthServer``). The upstream's query log is the witness of what reached it: a test that
says "answered from the cache" checks that the upstream saw nothing new, never the server's word.

Most cases share one server and one upstream per module (each test uses names of its own, so the
shared cache cannot leak between tests); cases whose behaviour must be isolated -- a silent or
dead upstream, special budgets, serve-stale, TCP and TLS upstreams -- start fresh ones (about
0.2 s each). Time only passes by ``sleep`` where a TTL must really run down.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support import free_port, require_tool
from tests.support.authserver import FAKE_ADDRESS, POISON_ADDRESS, SOA_MINIMUM, AuthServer
from tests.support.daemon import GuardianProcess

pytestmark = pytest.mark.integration

HOST: Final = "127.0.0.1"
CLIENT_TIMEOUT: Final = 4.0  # longer than any server budget here: silence is a failure, not a wait
MARGIN: Final = 0.75  # scheduling slack on a busy 2-core CI box
EDE_STALE: Final = 3
EDE_BLOCKED: Final = 15
BLOCKLIST: Final = "blocked.example.test\n"
# A short budget so failure cases stay fast: 3 attempts of 0.5 s at most.
SHORT_BUDGET: Final = {"timeout": 1.5, "attempt_timeout": 0.5}
# Failover: one attempt (1 s) is wasted on the first server, well inside the budget.
FAILOVER_BUDGET: Final = {"timeout": 2.5, "attempt_timeout": 1.0}

PRIVATE_PREFIXES: Final = (
    "10.",
    "127.",
    "169.254.",
    "192.168.",
    "0.",
    "fd",
    "fe80",
)


# ---------------------------------------------------------------------------- clients


def ask(
    port: int,
    qname: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    do: bool = False,
    cd: bool = False,
    ad: bool = False,
    edns: bool = True,
    payload: int = 1232,
    timeout: float = CLIENT_TIMEOUT,
) -> dns.message.Message:
    """One query with dnspython; no answer within ``timeout`` fails the test (never silence)."""
    query = dns.message.make_query(
        qname, qtype, use_edns=0 if edns else False, payload=payload, want_dnssec=do
    )
    if cd:
        query.flags |= dns.flags.CD
    if ad:
        query.flags |= dns.flags.AD
    try:
        if tcp:
            return dns.query.tcp(query, HOST, port=port, timeout=timeout)
        return dns.query.udp(query, HOST, port=port, timeout=timeout)
    except dns.exception.Timeout:
        transport = "TCP" if tcp else "UDP"
        pytest.fail(f"no answer to {qname} {qtype} over {transport} within {timeout} s")


def timed_ask(
    port: int, qname: str, qtype: str = "A", *, tcp: bool = False
) -> tuple[dns.message.Message, float]:
    start = time.monotonic()
    reply = ask(port, qname, qtype, tcp=tcp)
    return reply, time.monotonic() - start


def udp_burst(
    port: int, queries: Sequence[dns.message.Message], *, spread: float, timeout: float = 5.0
) -> dict[int, dns.message.Message]:
    """Send ``queries`` (distinct IDs) from one socket, ``spread`` seconds apart; replies by ID."""
    replies: dict[int, dns.message.Message] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

        def drain(wait: float) -> None:
            sock.settimeout(wait)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                while True:
                    data = sock.recv(65535)
                    reply = dns.message.from_wire(data)
                    replies[reply.id] = reply
                    sock.settimeout(0)

        start = time.monotonic()
        for i, query in enumerate(queries):
            while (delay := start + i * spread - time.monotonic()) > 0:
                drain(delay)
            sock.sendto(query.to_wire(), (HOST, port))
        deadline = time.monotonic() + timeout
        while len(replies) < len(queries) and time.monotonic() < deadline:
            drain(max(0.001, deadline - time.monotonic()))
    return replies


def addresses(reply: dns.message.Message) -> list[str]:
    return [
        rdata.to_text()
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    ]


def rdtypes(reply: dns.message.Message, section: str = "answer") -> list[str]:
    return [dns.rdatatype.to_text(rrset.rdtype) for rrset in getattr(reply, section)]


def ede_codes(reply: dns.message.Message) -> list[int]:
    return [int(opt.code) for opt in reply.options if isinstance(opt, dns.edns.EDEOption)]


def rcode(reply: dns.message.Message) -> str:
    return dns.rcode.to_text(reply.rcode())


def shown(reply: dns.message.Message) -> str:
    """The reply as text, for assertion messages."""
    return "\n" + reply.to_text()


# ---------------------------------------------------------------------------- servers


def config_text(
    servers: Sequence[str],
    blocklist: Path,
    *,
    upstream: Mapping[str, object] | None = None,
    cache: Mapping[str, object] | None = None,
) -> str:
    lines = ["upstream:", "  servers:", *(f"    - {url!r}" for url in servers)]
    lines += [f"  {key}: {value}" for key, value in (upstream or {}).items()]
    if cache:
        lines += ["cache:", *(f"  {key}: {value}" for key, value in cache.items())]
    lines += [
        "metrics:",
        "  listen: 127.0.0.1:${METRICS_PORT}",
        "blocking:",
        "  lists:",
        f"    - file: {blocklist}",
        "      category: kids",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def blocklist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "kids.domains"
    path.write_text(BLOCKLIST, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def _shared_upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


@pytest.fixture(scope="module")
def _shared_guardian(_shared_upstream: AuthServer, blocklist: Path) -> Iterator[GuardianProcess]:
    with GuardianProcess(config_text([_shared_upstream.url_udp], blocklist)) as server:
        yield server


@pytest.fixture
def upstream(_shared_upstream: AuthServer) -> Iterator[AuthServer]:
    """The shared upstream, with no behaviours and an empty query log."""
    _shared_upstream.reset()
    yield _shared_upstream
    assert not _shared_upstream.errors, f"AuthServer internal errors: {_shared_upstream.errors}"


@pytest.fixture
def guardian(_shared_guardian: GuardianProcess, upstream: AuthServer) -> Iterator[GuardianProcess]:
    """The shared server (default config, one blocklist) in front of ``upstream``."""
    assert _shared_guardian.proc.poll() is None, (
        f"shared guardian_dns died in an earlier test; stderr:\n{_shared_guardian.stderr_text()}"
    )
    yield _shared_guardian
    code = _shared_guardian.proc.poll()
    assert code is None, (
        f"guardian_dns exited ({code}) during this test; stderr:\n{_shared_guardian.stderr_text()}"
    )


@pytest.fixture
def start_upstream() -> Iterator[Callable[[], AuthServer]]:
    """Fresh upstreams for one test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(AuthServer())


@pytest.fixture
def start_guardian(blocklist: Path) -> Iterator[Callable[..., GuardianProcess]]:
    """Fresh servers for one test: ``start_guardian(servers, upstream={...}, cache={...})``."""
    with contextlib.ExitStack() as stack:

        def start(servers: Sequence[str], **sections: Mapping[str, object]) -> GuardianProcess:
            return stack.enter_context(GuardianProcess(config_text(servers, blocklist, **sections)))

        yield start


# ---------------------------------------------------------------------------- R22 IDs and ports


def test_upstream_queries_use_random_ids_and_many_source_ports(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R22: 500 distinct names -> >= 490 distinct IDs, >= 200 source ports, no sequence."""
    names = [f"r22-{i}.wild.example.test" for i in range(500)]
    queries = [dns.message.make_query(name, "A") for name in names]
    for i, query in enumerate(queries):
        query.id = i + 1  # the client's IDs are sequential; the upstream's must not be
    replies = udp_burst(guardian.port, queries, spread=0.002, timeout=5.0)
    assert len(replies) == len(names), f"only {len(replies)} of {len(names)} queries answered"

    logged = [q for q in upstream.queries if q.qname.endswith(".wild.example.test")]
    assert len(logged) == len(names), f"upstream saw {len(logged)} queries, expected {len(names)}"
    ids = [q.id for q in logged]
    ports = [q.source_port for q in logged]
    assert len(set(ids)) >= 490, f"only {len(set(ids))} distinct upstream query IDs of 500"
    assert len(set(ports)) >= 200, (
        f"upstream queries came from only {len(set(ports))} distinct source ports for 500 "
        f"queries (RFC 5452 wants a random port per query; R22 asks for >= 200)"
    )
    steps = [(b - a) % 65536 for a, b in itertools.pairwise(ids)]
    assert max(steps.count(s) for s in set(steps)) <= 5, f"upstream IDs follow a pattern: {ids}"


# ---------------------------------------------------------------------------- R23 spoofed replies


@pytest.mark.parametrize(
    "fakes",
    [("id",), ("qname",), ("qtype",), ("port",), ("id", "qname", "qtype", "port")],
    ids=["wrong-id", "wrong-qname", "wrong-qtype", "other-source-port", "all-four"],
)
def test_spoofed_replies_before_the_real_one_are_ignored_and_never_cached(
    start_upstream: Callable[[], AuthServer],
    start_guardian: Callable[..., GuardianProcess],
    fakes: tuple[str, ...],
) -> None:
    """R23: fakes carry 203.0.113.99; the client gets 192.0.2.10, now and from the cache."""
    upstream = start_upstream()
    upstream.set_behaviour("www.example.test", wrong_first=fakes, delay=0.05)
    server = start_guardian([upstream.url_udp])

    first = ask(server.port, "www.example.test")
    assert rcode(first) == "NOERROR", shown(first)
    assert addresses(first) == ["192.0.2.10"], f"fakes {fakes} reached the client:{shown(first)}"

    again = ask(server.port, "www.example.test")
    assert FAKE_ADDRESS not in addresses(again), f"a fake was cached:{shown(again)}"
    assert addresses(again) == ["192.0.2.10"], shown(again)
    assert upstream.count("www.example.test", "A") == 1, "the repeat should come from the cache"

    # The qtype fake claimed to answer AAAA: that question must still go to the upstream.
    aaaa = ask(server.port, "www.example.test", "AAAA")
    assert addresses(aaaa) == ["2001:db8::10"], f"a fake answered AAAA:{shown(aaaa)}"
    assert upstream.count("www.example.test", "AAAA") == 1


# ---------------------------------------------------------------------------- R24 poisoned sections


def test_poisoned_additional_and_authority_records_are_never_returned_or_cached(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R24: bank.example A 203.0.113.66 and example. NS evil. ride along with a real answer."""
    upstream.set_behaviour("poison.example.test", poison=True)
    reply = ask(guardian.port, "poison.example.test")
    assert addresses(reply) == ["192.0.2.40"], shown(reply)
    text = reply.to_text()
    assert POISON_ADDRESS not in text and "evil" not in text, (
        f"poison passed through:{shown(reply)}"
    )

    for qname, qtype in (("bank.example", "A"), ("example", "NS")):
        later = ask(guardian.port, qname, qtype)
        assert POISON_ADDRESS not in later.to_text(), f"{qname} answered from poison:{shown(later)}"
        assert "evil" not in later.to_text(), f"{qname} answered from poison:{shown(later)}"
        assert upstream.count(qname, qtype) == 1, (
            f"{qname} {qtype} never reached the upstream: it was answered from poisoned data"
        )


# ---------------------------------------------------------------------------- R25 pointer loop


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_reply_with_self_pointing_owner_name_gives_servfail_quickly(
    guardian: GuardianProcess, upstream: AuthServer, tcp: bool
) -> None:
    """R25: the ANSWER owner is a compression pointer to itself -> SERVFAIL within 2 s."""
    qname = f"r25-{'tcp' if tcp else 'udp'}.wild.example.test"
    upstream.set_behaviour(qname, answer_loop=True)
    reply, elapsed = timed_ask(guardian.port, qname, tcp=tcp)
    assert rcode(reply) == "SERVFAIL", shown(reply)
    assert elapsed <= 2.0, f"SERVFAIL took {elapsed:.2f} s (R25: within 2 s)"
    assert upstream.count(qname) >= 1


# ---------------------------------------------------------------------------- R26 silent upstream


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_silent_upstream_gives_servfail_within_the_budget_and_recovers(
    start_upstream: Callable[[], AuthServer],
    start_guardian: Callable[..., GuardianProcess],
    tcp: bool,
) -> None:
    """R26: the upstream says nothing -> SERVFAIL within upstream.timeout; bounded retries."""
    upstream = start_upstream()
    server = start_guardian([upstream.url_udp], upstream=SHORT_BUDGET)
    upstream.stop_answering()

    reply, elapsed = timed_ask(server.port, "www.example.test", tcp=tcp)
    assert rcode(reply) == "SERVFAIL", shown(reply)
    budget = float(SHORT_BUDGET["timeout"])
    assert elapsed <= budget + MARGIN, f"SERVFAIL after {elapsed:.2f} s (budget {budget} s)"
    attempts = upstream.count("www.example.test")
    max_attempts = round(budget / float(SHORT_BUDGET["attempt_timeout"]))
    assert 1 <= attempts <= max_attempts, f"{attempts} upstream attempts (at most {max_attempts})"

    upstream.start_answering()
    after, elapsed = timed_ask(server.port, "ns1.example.test", tcp=tcp)
    assert addresses(after) == ["192.0.2.53"], f"the next query failed:{shown(after)}"
    assert elapsed < 1.0, f"the next query took {elapsed:.2f} s"


# ---------------------------------------------------------------------------- R27 TC upstream


def test_truncated_upstream_answer_is_retried_over_tcp_and_never_cached(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R27, small answer: the upstream sets TC over UDP; the client still gets the records."""
    qname = "r27.wild.example.test"
    upstream.set_behaviour(qname, truncate=True)
    reply = ask(guardian.port, qname)
    assert not reply.flags & dns.flags.TC, shown(reply)
    assert addresses(reply) == ["192.0.2.50"], shown(reply)
    transports = [q.transport for q in upstream.queries if q.qname == qname]
    assert transports == ["udp", "tcp"], f"upstream saw {transports}: expected a TCP retry"

    again = ask(guardian.port, qname)
    assert addresses(again) == ["192.0.2.50"], (
        f"the cached answer is not the full one:{shown(again)}"
    )
    assert upstream.count(qname) == 2, "the repeat should come from the cache"


# How a UDP client sees the big TXT answer (about 2.8 KB): TC and no partial RRset.
SMALL_UDP_BUFFERS: Final = [
    ("EDNS 4096", True, 4096),
    ("EDNS 512", True, 512),
    ("no EDNS", False, 512),
]


def test_big_truncated_upstream_answer_is_full_over_tcp_and_tc_over_udp(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R27, big TXT: full over TCP; TC with no records for small UDP buffers; cached complete."""
    upstream.set_behaviour("big.example.test", truncate=True)
    full = ask(guardian.port, "big.example.test", "TXT", tcp=True)
    assert rcode(full) == "NOERROR" and not full.flags & dns.flags.TC, shown(full)
    assert sum(len(rrset) for rrset in full.answer) == 11, f"not all 11 TXT records:{shown(full)}"
    transports = [q.transport for q in upstream.queries if q.qname == "big.example.test"]
    assert transports == ["udp", "tcp"], f"upstream saw {transports}: expected a TCP retry"

    for label, edns, payload in SMALL_UDP_BUFFERS:
        reply = ask(guardian.port, "big.example.test", "TXT", edns=edns, payload=payload)
        assert reply.flags & dns.flags.TC, f"{label}: too big for UDP but no TC:{shown(reply)}"
        assert not reply.answer, f"{label}: a truncated reply with a partial RRset:{shown(reply)}"

    again = ask(guardian.port, "big.example.test", "TXT", tcp=True)
    assert sum(len(rrset) for rrset in again.answer) == 11, f"cached incomplete:{shown(again)}"
    assert upstream.count("big.example.test") == 2, "the repeats should come from the cache"


# ---------------------------------------------------------------------------- R28 SERVFAIL cached


def test_upstream_servfail_is_cached_so_a_burst_does_not_hammer_it(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R28: 100 queries for a SERVFAILing name within 1 s -> 100 SERVFAILs, <= 3 upstream."""
    qname = "r28.wild.example.test"
    upstream.set_behaviour(qname, servfail=True)
    queries = [dns.message.make_query(qname, "A") for _ in range(100)]
    for i, query in enumerate(queries):
        query.id = 0x1000 + i
    replies = udp_burst(guardian.port, queries, spread=0.01)
    assert len(replies) == 100, f"only {len(replies)} of 100 queries were answered"
    rcodes = {rcode(r) for r in replies.values()}
    assert rcodes == {"SERVFAIL"}, f"rcodes {rcodes}"
    assert upstream.count(qname) <= 3, f"{upstream.count(qname)} upstream queries for {qname}"


# ---------------------------------------------------------------------------- R29 serve-stale


def test_expired_answer_is_served_stale_when_the_upstream_dies(
    start_upstream: Callable[[], AuthServer], start_guardian: Callable[..., GuardianProcess]
) -> None:
    """R29: TTL 2 cached, upstream then silent -> stale answer, TTL 30, EDE 3, within 1.8 s."""
    client_timeout = 0.5
    upstream = start_upstream()
    upstream.set_behaviour("www.example.test", ttl=2)
    server = start_guardian(
        [upstream.url_udp], upstream=SHORT_BUDGET, cache={"stale_client_timeout": client_timeout}
    )
    fresh = ask(server.port, "www.example.test")
    assert addresses(fresh) == ["192.0.2.10"] and fresh.answer[0].ttl <= 2, shown(fresh)

    time.sleep(2.3)  # the TTL must really run out
    upstream.stop_answering()
    reply, elapsed = timed_ask(server.port, "www.example.test")
    assert rcode(reply) == "NOERROR", f"no stale answer:{shown(reply)}"
    assert addresses(reply) == ["192.0.2.10"], shown(reply)
    assert reply.answer[0].ttl == 30, f"stale TTL {reply.answer[0].ttl}, expected 30"
    assert EDE_STALE in ede_codes(reply), f"no EDE 3 (Stale Answer):{shown(reply)}"
    assert elapsed <= min(1.8, client_timeout + MARGIN), (
        f"stale answer after {elapsed:.2f} s (stale_client_timeout {client_timeout} s, RFC 8767 "
        f"1.8 s)"
    )
    assert upstream.count("www.example.test") >= 2, "the expired entry was never refreshed"


# ---------------------------------------------------------------------------- R30 rebinding


@pytest.mark.parametrize(
    ("qname", "qtype", "expected", "max_upstream"),
    [
        ("rebind.example.test", "A", ["192.0.2.20"], 1),
        # Nothing is left: the empty answer is cached for the stripped records' TTL.
        ("rebind.example.test", "AAAA", [], 1),
        ("printer.home.arpa", "A", ["192.168.1.50"], 1),
    ],
    ids=["public-name-A-private-stripped", "public-name-AAAA-all-private", "local-domain-passes"],
)
def test_private_addresses_for_public_names_are_stripped_also_from_the_cache(
    guardian: GuardianProcess,
    upstream: AuthServer,
    qname: str,
    qtype: str,
    expected: list[str],
    max_upstream: int,
) -> None:
    """R30: 192.168/16, 10/8, 127/8, 169.254/16, 0/8, fd00::/8, fe80::/10 never reach clients."""
    first = ask(guardian.port, qname, qtype)
    cached = ask(guardian.port, qname, qtype, tcp=True)
    for label, reply in (("first", first), ("repeat", cached)):
        assert rcode(reply) == "NOERROR", f"{label}:{shown(reply)}"
        assert sorted(addresses(reply)) == sorted(expected), f"{label}:{shown(reply)}"
        if not qname.endswith(".home.arpa"):
            leaked = [a for a in addresses(reply) if a.startswith(PRIVATE_PREFIXES)]
            assert not leaked, f"{label}: private addresses {leaked} for a public name"
    assert upstream.count(qname, qtype) <= max_upstream, "the repeat was not served from the cache"


# ---------------------------------------------------------------------------- R31 DNSSEC bits


def test_do_bit_is_passed_upstream_and_rrsigs_only_reach_clients_that_set_it(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R31: DO=1 -> upstream sees DO=1, RRSIG and AD back; DO=0 afterwards -> no RRSIG, no AD."""
    with_do = ask(guardian.port, "signed.example.test", do=True)
    logged = [q for q in upstream.queries if q.qname == "signed.example.test"]
    assert [q.do_bit for q in logged] == [True], (
        f"upstream saw DO bits {[q.do_bit for q in logged]}"
    )
    assert rdtypes(with_do) == ["A", "RRSIG"], f"DO=1 reply without its RRSIG:{shown(with_do)}"
    assert with_do.ednsflags & dns.flags.DO, f"DO not echoed:{shown(with_do)}"
    assert with_do.flags & dns.flags.AD, (
        f"DO=1 via a loopback upstream that set AD:{shown(with_do)}"
    )

    cached_do = ask(guardian.port, "signed.example.test", do=True, tcp=True)
    assert rdtypes(cached_do) == ["A", "RRSIG"], shown(cached_do)

    for label, reply in (
        ("DO=0", ask(guardian.port, "signed.example.test")),
        ("DO=0 AD=1", ask(guardian.port, "signed.example.test", ad=True)),
        ("DO=0 cached", ask(guardian.port, "signed.example.test", tcp=True)),
    ):
        assert rdtypes(reply) == ["A"], f"{label}: DNSSEC records for a DO=0 client:{shown(reply)}"
        if label != "DO=0 AD=1":
            assert not reply.flags & dns.flags.AD, f"{label}: AD without DO or AD:{shown(reply)}"
    assert upstream.count("signed.example.test") == 2, "expected one upstream query per DO value"


@pytest.mark.parametrize("cd", [True, False], ids=["cd-set", "cd-clear"])
def test_cd_bit_is_passed_to_the_upstream(
    guardian: GuardianProcess, upstream: AuthServer, cd: bool
) -> None:
    """R31: CD reaches the upstream (RFC 4035 3.2.2) and is copied into the reply."""
    qname = f"r31-cd-{int(cd)}.wild.example.test"
    reply = ask(guardian.port, qname, cd=cd)
    assert addresses(reply) == ["192.0.2.50"], shown(reply)
    logged = [q.cd for q in upstream.queries if q.qname == qname]
    assert logged == [cd], f"upstream saw CD {logged}, the client sent CD={cd}"
    assert bool(reply.flags & dns.flags.CD) == cd, f"CD not copied:{shown(reply)}"


# ---------------------------------------------------------------------------- R32 CNAME inspection


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"], ids=["udp", "tcp"])
def test_cname_into_a_blocked_name_is_blocked(
    guardian: GuardianProcess, upstream: AuthServer, transport: str
) -> None:
    """R32: allowed.example.test CNAME blocked.example.test (listed) -> blocked, EDE 15 (dig)."""
    dig = require_tool("dig")
    result = subprocess.run(
        [
            *(dig, f"@{HOST}", "-p", str(guardian.port), "allowed.example.test", "A", transport),
            *("+tries=1", "+time=4", "+noall", "+comments", "+answer"),
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"dig failed ({result.returncode}): {result.stderr}{out}"
    assert "status: NXDOMAIN" in out, f"the CNAME into a blocked name was not blocked:\n{out}"
    assert "EDE: 15 (Blocked)" in out, f"no EDE 15 in:\n{out}"
    assert "192.0.2.66" not in out, f"the blocked name's address leaked:\n{out}"

    reply = ask(guardian.port, "allowed.example.test", tcp=transport == "+tcp")
    assert rcode(reply) == "NXDOMAIN" and EDE_BLOCKED in ede_codes(reply), shown(reply)
    assert upstream.count("blocked.example.test") == 0, "a listed name was forwarded"


def test_cname_into_an_allowed_name_is_answered(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """R32 control: chain.example.test CNAME www.example.test passes with the whole chain."""
    reply = ask(guardian.port, "chain.example.test")
    assert rcode(reply) == "NOERROR", shown(reply)
    assert rdtypes(reply) == ["CNAME", "A"], shown(reply)
    assert addresses(reply) == ["192.0.2.10"], shown(reply)
    assert not ede_codes(reply), shown(reply)


# ---------------------------------------------------------------------------- coalescing, TTLs


def test_concurrent_identical_queries_share_one_upstream_query(
    guardian: GuardianProcess, upstream: AuthServer
) -> None:
    """RFC 5452 section 5: 50 clients asking for one slow name -> 1 upstream query, 50 answers."""
    qname = "coalesce.wild.example.test"
    upstream.set_behaviour(qname, delay=0.3)
    queries = [dns.message.make_query(qname, "A") for _ in range(50)]
    for i, query in enumerate(queries):
        query.id = 0x2000 + i
    replies = udp_burst(guardian.port, queries, spread=0.0)
    assert len(replies) == 50, f"only {len(replies)} of 50 answered"
    assert {tuple(addresses(r)) for r in replies.values()} == {("192.0.2.50",)}
    assert upstream.count(qname) == 1, f"{upstream.count(qname)} upstream queries, expected 1"


def test_cached_answer_ttl_counts_down(guardian: GuardianProcess, upstream: AuthServer) -> None:
    """A cache hit about 2 s later shows a TTL lower by the entry's age, not the original one."""
    first = ask(guardian.port, "ttl.wild.example.test")
    time.sleep(2.1)  # the TTL must really run down
    later = ask(guardian.port, "ttl.wild.example.test")
    before, after = first.answer[0].ttl, later.answer[0].ttl
    assert before <= 300, shown(first)
    assert before - 5 <= after <= before - 1, f"TTL {before} then {after} about 2 s later"
    assert upstream.count("ttl.wild.example.test") == 1, "the repeat should come from the cache"


@pytest.mark.parametrize(
    ("qname", "qtype", "expected_rcode"),
    [("missing.example.test", "A", "NXDOMAIN"), ("ns1.example.test", "TXT", "NOERROR")],
    ids=["nxdomain", "nodata"],
)
def test_negative_answers_are_cached_within_the_soa_minimum(
    guardian: GuardianProcess, upstream: AuthServer, qname: str, qtype: str, expected_rcode: str
) -> None:
    """RFC 2308: NXDOMAIN / NODATA cached for min(SOA TTL, SOA MINIMUM = 60)."""
    for label, tcp in (("first", False), ("cached repeat", True)):
        reply = ask(guardian.port, qname, qtype, tcp=tcp)
        assert rcode(reply) == expected_rcode and not reply.answer, f"{label}:{shown(reply)}"
        assert rdtypes(reply, "authority") == ["SOA"], f"{label}: no SOA:{shown(reply)}"
        ttl = reply.authority[0].ttl
        assert 0 < ttl <= SOA_MINIMUM, f"{label}: negative TTL {ttl} (SOA minimum {SOA_MINIMUM})"
    assert upstream.count(qname, qtype) == 1, "the negative answer was not cached"


# ---------------------------------------------------------------------------- failover, transports


@pytest.mark.parametrize("first_kind", ["silent", "dead-port"])
def test_failing_first_upstream_fails_over_to_the_second_within_the_budget(
    start_upstream: Callable[[], AuthServer],
    start_guardian: Callable[..., GuardianProcess],
    first_kind: str,
) -> None:
    """Section 1.8: the first upstream times out or refuses; the second answers in time."""
    second = start_upstream()
    silent = None
    if first_kind == "silent":
        silent = start_upstream()
        silent.stop_answering()
        first_url = silent.url_udp
    else:
        first_url = f"udp://{HOST}:{free_port()}"  # nothing listens there
    server = start_guardian([first_url, second.url_udp], upstream=FAILOVER_BUDGET)
    attempt = float(FAILOVER_BUDGET["attempt_timeout"])

    reply, elapsed = timed_ask(server.port, "www.example.test")
    assert addresses(reply) == ["192.0.2.10"], f"no failover:{shown(reply)}"
    assert elapsed <= attempt + MARGIN, (
        f"failover answer after {elapsed:.2f} s (attempt {attempt} s)"
    )
    assert second.count("www.example.test") == 1
    if silent is not None:
        assert silent.count("www.example.test") >= 1, "the first upstream was never tried"

    # The failed server is now marked down: the next name goes straight to the second one.
    reply, elapsed = timed_ask(server.port, "ns1.example.test")
    assert addresses(reply) == ["192.0.2.53"], shown(reply)
    if silent is not None:
        assert silent.count("ns1.example.test") == 0, "a server marked down was asked first"
    assert elapsed < attempt, f"{elapsed:.2f} s: the down upstream was waited on again"


def test_tcp_upstream_answers_small_and_big_questions(
    start_upstream: Callable[[], AuthServer], start_guardian: Callable[..., GuardianProcess]
) -> None:
    upstream = start_upstream()
    server = start_guardian([upstream.url_tcp])
    small = ask(server.port, "www.example.test")
    assert addresses(small) == ["192.0.2.10"], shown(small)
    big = ask(server.port, "big.example.test", "TXT", tcp=True)
    assert sum(len(rrset) for rrset in big.answer) == 11, shown(big)
    transports = {q.transport for q in upstream.queries}
    assert transports == {"tcp"}, f"a tcp:// upstream was asked over {transports}"


# ---------------------------------------------------------------------------- DNS over TLS


class TlsProxy:
    """A DoT front for the AuthServer: TLS on one loopback port, plain DNS over TCP behind it.

    One thread accepts; each connection gets a thread that relays one length-framed message at a
    time (read a query, forward it, relay the reply), which is all a DNS client needs.
    """

    def __init__(self, cert: Path, key: Path, target_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.target_port = target_port
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshakes_failed = 0
        self._stopping = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="TlsProxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(raw)
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    @staticmethod
    def _read_exact(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _relay(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshakes_failed += 1
            raw.close()
            return
        with self._lock:
            self._conns.append(tls)  # wrap_socket took over the descriptor of ``raw``
        try:
            with tls, socket.create_connection((HOST, self.target_port), timeout=10) as back:
                while not self._stopping:
                    (length,) = struct.unpack("!H", self._read_exact(tls, 2))
                    back.sendall(struct.pack("!H", length) + self._read_exact(tls, length))
                    (length,) = struct.unpack("!H", self._read_exact(back, 2))
                    tls.sendall(struct.pack("!H", length) + self._read_exact(back, length))
        except (OSError, ConnectionError):
            pass

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for test.example, made with the openssl CLI."""
    openssl = require_tool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"),
            *("-subj", "/CN=test.example", "-addext", "subjectAltName=DNS:test.example"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.mark.parametrize(
    ("server_name", "works"),
    [("test.example", True), ("wrong.example", False)],
    ids=["matching-name-answers", "wrong-name-servfail"],
)
def test_dns_over_tls_upstream_checks_the_certificate_name(
    start_upstream: Callable[[], AuthServer],
    start_guardian: Callable[..., GuardianProcess],
    tls_cert: tuple[Path, Path],
    server_name: str,
    works: bool,
) -> None:
    upstream = start_upstream()
    cert, key = tls_cert
    proxy = TlsProxy(cert, key, upstream.port)
    try:
        server = start_guardian(
            [f"tls://{HOST}:{proxy.port}#{server_name}"],
            upstream={**SHORT_BUDGET, "tls_ca_file": str(cert)},
        )
        reply, elapsed = timed_ask(server.port, "www.example.test")
    finally:
        proxy.close()
    if works:
        assert addresses(reply) == ["192.0.2.10"], shown(reply)
        assert [q.transport for q in upstream.queries] == ["tcp"], "the query did not go via TLS"
    else:
        assert rcode(reply) == "SERVFAIL", f"certificate for test.example accepted:{shown(reply)}"
        assert upstream.count() == 0, "a query went out over an unverified TLS connection"
        assert proxy.handshakes_failed >= 1
        assert elapsed <= float(SHORT_BUDGET["timeout"]) + MARGIN
