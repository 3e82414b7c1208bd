"""The server behaves the same on uvloop (used when installed, as in production) and on the
standard library's event loop (``GUARDIAN_DNS_LOOP=asyncio``): the listeners use ``add_reader``
and protocol callbacks that both loops implement, but each loop has its own quirks. The same
goes for the UDP listener's two I/O paths (udpio.py): batched recvmmsg/sendmmsg, and one
recvfrom/sendto per datagram (``GUARDIAN_DNS_UDP_IO=plain``, what platforms without the batched
calls get)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wire
from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess, write_config

LOOPS = [
    pytest.param({"GUARDIAN_DNS_LOOP": "asyncio"}, id="asyncio"),
    pytest.param({"GUARDIAN_DNS_UDP_IO": "plain"}, id="plain-udp-io"),
]
try:
    import uvloop  # noqa: F401

    LOOPS.append(pytest.param({}, id="uvloop"))
except ImportError:  # pragma: no cover - the test extra installs it
    pass


@pytest.fixture(scope="module", params=LOOPS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GuardianProcess, AuthServer]]:
    with AuthServer() as upstream:
        tmp: Path = tmp_path_factory.mktemp("loop")
        listed = tmp / "list.txt"
        listed.write_text("blocked.example.test\n")
        config = write_config(tmp, upstream.port, lists={"test": listed})
        with GuardianProcess(config.read_text(), env=request.param) as proc:
            yield proc, upstream


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forwarded_cached_and_blocked_answers_on_each_loop(
    served: tuple[GuardianProcess, AuthServer], tcp: bool
) -> None:
    proc, upstream = served

    def ask(name: str, qtype: str = "A") -> wire.Reply:
        query = wire.make_query(name, qtype, edns=1232)
        if tcp:
            replies, _closed = wire.tcp_exchange([query], proc.port, expect=1)
            assert replies, f"no TCP answer for {name}"
            return wire.parse_reply(replies[0])
        raw = wire.udp_exchange(query, proc.port)
        assert raw is not None, f"no UDP answer for {name}"
        return wire.parse_reply(raw)

    qtype = "AAAA" if tcp else "A"
    first = ask("www.example.test", qtype)
    again = ask("www.example.test", qtype)
    assert first.rcode == 0 and first.addresses(), first.message
    assert again.addresses() == first.addresses()
    assert upstream.count("www.example.test", qtype) == 1, "the repeat was not cached"
    blocked = ask("x.blocked.example.test", qtype)
    assert blocked.rcode == 3
    assert blocked.opt is not None and 15 in blocked.opt.ede_codes
    assert upstream.count("x.blocked.example.test") == 0
