"""Parental policies end to end: groups, MAC devices, schedules, budgets, overrides, safe search.

The real server runs as a subprocess in front of the tests' authoritative server on loopback.
Loopback source addresses stand for LAN devices (127.0.0.2 is a child's laptop, 127.0.0.4 a
parent's phone); a MAC member is matched through a neighbour-table file the test writes. Time is
the server's own clock started at a chosen instant (``GUARDIAN_DNS_FAKE_TIME``) and running at the
real rate, so a window that opens "at 21:00" opens a few real seconds into the test.

Blocked answers carry EDE 15 (Blocked); that, not the rcode, tells a block from an upstream
NXDOMAIN. Names under ``wild.example.test`` all exist upstream (a wildcard), so every list can
use names of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from guardian_dns.overrides import edit_overrides
from guardian_dns.usage import Overrides
from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess

pytestmark = pytest.mark.integration

TIMEOUT: Final = 4.0
EDE_BLOCKED: Final = 15
DEFAULT: Final = "127.0.0.1"
KID: Final = "127.0.0.2"
TEEN: Final = "127.0.0.3"
PARENT: Final = "127.0.0.4"
TABLET_FIRST: Final = "127.0.0.5"  # where the kids' tablet (a MAC member) is at first
TABLET_LATER: Final = "127.0.0.6"  # ... and after DHCP gives it another address
KID_TWO: Final = "127.0.0.7"
TABLET_MAC: Final = "02:00:00:00:00:05"
OTHER_MAC: Final = "02:00:00:00:00:99"

ADULT: Final = "adult.wild.example.test"
GAMES: Final = "games.wild.example.test"
PLAIN: Final = "plain.wild.example.test"
ADULT_OK: Final = "adult-ok.wild.example.test"  # listed as adult, allowed by the kids group


def ask(port: int, name: str, source: str, qtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, qtype, use_edns=0, payload=1232)
    return dns.query.udp(query, "127.0.0.1", port=port, source=source, timeout=TIMEOUT)


def is_blocked(reply: dns.message.Message) -> bool:
    return any(
        isinstance(opt, dns.edns.EDEOption) and int(opt.code) == EDE_BLOCKED
        for opt in reply.options
    )


def addresses(reply: dns.message.Message) -> list[str]:
    return [
        rdata.to_text()
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    ]


def cname_targets(reply: dns.message.Message) -> list[str]:
    return [
        rdata.to_text()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.CNAME
        for rdata in rrset
    ]


def min_ttl(reply: dns.message.Message) -> int:
    return min(rrset.ttl for rrset in reply.answer)


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def neighbour_file(path: Path, entries: dict[str, str]) -> None:
    """Write a /proc/net/arp-style table by rename, as the kernel's view changes at once."""
    lines = ["IP address       HW type     Flags       HW address            Mask     Device"]
    lines += [
        f"{ip:<16} 0x1         0x2         {mac}     *        eth0" for ip, mac in entries.items()
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


@pytest.fixture(scope="module")
def upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


def write_lists(directory: Path) -> None:
    (directory / "adult.txt").write_text(f"{ADULT}\n{ADULT_OK}\n")
    (directory / "games.txt").write_text(f"{GAMES}\n")


def config(directory: Path, upstream: AuthServer, policy: str, extra: str = "") -> Path:
    write_lists(directory)
    text = f"""
server:
  state_dir: {directory / "state"}
upstream:
  servers: [{upstream.url_udp}]
metrics:
  enabled: false
blocking:
  lists:
    - file: adult.txt
      category: adult
    - file: games.txt
      category: games
  block_categories: [adult]
{extra}
policy:
{policy}
"""
    path = directory / "guardian.yaml"
    path.write_text(text)
    return path


GROUPS: Final = """
  timezone: UTC
  neighbour_table: neighbours.txt
  neighbour_refresh: 1
  devices:
    tablet: [02:00:00:00:00:05]
  groups:
    kids:
      clients: [127.0.0.2, 127.0.0.7, tablet]
      block_categories: [adult, games]
      safe_search: strict
      block: [www.example.test]
      allow: [adult-ok.wild.example.test]
    teens:
      clients: [127.0.0.3/32]
      block_categories: [adult]
      safe_search: moderate
    parents:
      clients: [127.0.0.4]
      filtering: false
"""


@pytest.fixture(scope="module")
def family(
    tmp_path_factory: pytest.TempPathFactory, upstream: AuthServer
) -> Iterator[tuple[GuardianProcess, Path]]:
    directory = tmp_path_factory.mktemp("family")
    neighbour_file(directory / "neighbours.txt", {TABLET_FIRST: TABLET_MAC})
    with GuardianProcess(config(directory, upstream, GROUPS)) as server:
        yield server, directory


@pytest.mark.parametrize(
    ("source", "name", "blocked"),
    [
        (DEFAULT, GAMES, False),  # asked first: cached for the default group ...
        (KID, GAMES, True),  # ... which must not leak into the kids' answers
        (TEEN, GAMES, False),
        (PARENT, GAMES, False),
        (DEFAULT, ADULT, True),
        (KID, ADULT, True),
        (TEEN, ADULT, True),
        (PARENT, ADULT, False),  # filtering: false
        (KID, ADULT_OK, False),  # the group's own allow beats the list
        (DEFAULT, ADULT_OK, True),
        (KID, "www.example.test", True),  # the group's own block
        (TEEN, "www.example.test", False),
        (KID, "chain.example.test", True),  # a CNAME to a name the group blocks
        (DEFAULT, "chain.example.test", False),
        (KID_TWO, GAMES, True),
    ],
)
def test_each_group_gets_its_own_rules(
    family: tuple[GuardianProcess, Path], source: str, name: str, blocked: bool
) -> None:
    server, _ = family
    for attempt in range(2):  # the second answer comes from the caches: it must agree
        reply = ask(server.port, name, source)
        assert is_blocked(reply) == blocked, f"{source} {name} (attempt {attempt})\n{reply}"
        if not blocked:
            assert reply.rcode() == dns.rcode.NOERROR and addresses(reply), reply


def test_a_mac_member_keeps_its_group_when_its_address_changes(
    family: tuple[GuardianProcess, Path],
) -> None:
    server, directory = family
    assert is_blocked(ask(server.port, GAMES, TABLET_FIRST)), "the tablet is in kids by MAC"
    assert not is_blocked(ask(server.port, GAMES, TABLET_LATER)), "unknown address: default"
    neighbour_file(
        directory / "neighbours.txt", {TABLET_FIRST: OTHER_MAC, TABLET_LATER: TABLET_MAC}
    )
    wait_until(
        lambda: is_blocked(ask(server.port, GAMES, TABLET_LATER)),
        5.0,
        "the tablet's new address gets the kids' rules",
    )
    assert not is_blocked(ask(server.port, GAMES, TABLET_FIRST)), "the old address: default"


@pytest.mark.parametrize(
    ("source", "name", "target", "qtype", "address"),
    [
        (KID, "www.google.com", "forcesafesearch.google.com.", "A", "192.0.2.102"),
        (KID, "www.google.com", "forcesafesearch.google.com.", "AAAA", "2001:db8::102"),
        (TEEN, "www.google.com", "forcesafesearch.google.com.", "A", "192.0.2.102"),
        (KID, "www.youtube.com", "restrict.youtube.com.", "A", "192.0.2.104"),
        (TEEN, "www.youtube.com", "restrictmoderate.youtube.com.", "A", "192.0.2.105"),
    ],
)
def test_safe_search_answers_with_the_enforcement_name(
    family: tuple[GuardianProcess, Path],
    upstream: AuthServer,
    source: str,
    name: str,
    target: str,
    qtype: str,
    address: str,
) -> None:
    server, _ = family
    for attempt in range(3):  # resolved upstream, then from the caches
        reply = ask(server.port, name, source, qtype)
        assert reply.rcode() == dns.rcode.NOERROR, reply
        assert cname_targets(reply) == [target], f"attempt {attempt}\n{reply}"
        assert addresses(reply) == [address], f"attempt {attempt}\n{reply}"
        assert reply.answer[0].name.to_text() == name + ".", "the CNAME is owned by the question"
    assert upstream.count(target.rstrip("."), qtype) >= 1, "the target came from the upstream"


def test_safe_search_is_off_for_groups_without_it(family: tuple[GuardianProcess, Path]) -> None:
    server, _ = family
    for source, address in ((DEFAULT, "192.0.2.101"), (PARENT, "192.0.2.101")):
        reply = ask(server.port, "www.google.com", source)
        assert cname_targets(reply) == [] and addresses(reply) == [address], reply


# -- time: schedules, budgets and overrides, each on a server of its own ------------------------

BEDTIME: Final = """
  timezone: Europe/London
  schedules:
    bedtime: "mon-sun 21:00-21:01"
  groups:
    teens:
      clients: [127.0.0.3]
      block_categories: [adult]
      schedules:
        - during: bedtime
          block: ["*"]
          except: [www.example.test]
"""


def fake_time(iso: str) -> dict[str, str]:
    return {"GUARDIAN_DNS_FAKE_TIME": iso}


def test_a_window_opens_on_time_and_allowed_answers_do_not_outlive_it(
    tmp_path: Path, upstream: AuthServer
) -> None:
    # 2026-11-24 is a Tuesday; London is on GMT in November. The window opens 3 s after start.
    with GuardianProcess(
        config(tmp_path, upstream, BEDTIME), env=fake_time("2026-11-24T20:59:57+00:00")
    ) as server:
        started = time.monotonic()
        before = ask(server.port, PLAIN, TEEN)
        assert not is_blocked(before) and addresses(before), before
        assert min_ttl(before) <= 4, f"an allowed answer must expire by 21:00\n{before}"
        assert not is_blocked(ask(server.port, PLAIN, DEFAULT))
        time.sleep(max(0.0, 3.3 - (time.monotonic() - started)))
        during = ask(server.port, PLAIN, TEEN)
        assert is_blocked(during), f"bedtime blocks everything at 21:00\n{during}"
        assert not is_blocked(ask(server.port, "www.example.test", TEEN)), "the exception"
        assert not is_blocked(ask(server.port, PLAIN, DEFAULT)), "other groups are unaffected"


def test_a_window_closes_on_time(tmp_path: Path, upstream: AuthServer) -> None:
    with GuardianProcess(
        config(tmp_path, upstream, BEDTIME), env=fake_time("2026-11-24T21:00:57+00:00")
    ) as server:
        started = time.monotonic()
        assert is_blocked(ask(server.port, PLAIN, TEEN)), "inside the window"
        time.sleep(max(0.0, 3.3 - (time.monotonic() - started)))
        after = ask(server.port, PLAIN, TEEN)
        assert not is_blocked(after) and addresses(after), f"the window closed at 21:01\n{after}"


BUDGET: Final = """
  timezone: UTC
  groups:
    kids:
      clients: [127.0.0.2, 127.0.0.7]
      block_categories: [adult]
      budgets:
        games: 1
"""


def test_a_budget_is_spent_per_device_and_survives_a_restart(
    tmp_path: Path, upstream: AuthServer
) -> None:
    path = config(tmp_path, upstream, BUDGET)
    with GuardianProcess(path, env=fake_time("2026-11-24T20:59:58+00:00")) as server:
        started = time.monotonic()
        first = ask(server.port, GAMES, KID)
        assert not is_blocked(first), f"the first minute of games is granted\n{first}"
        assert not is_blocked(ask(server.port, GAMES, KID)), "the same minute, still granted"
        assert not is_blocked(ask(server.port, GAMES, DEFAULT)), "no budget outside kids"
        time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
        spent = ask(server.port, GAMES, KID)
        assert is_blocked(spent), f"the budget is spent in the second minute\n{spent}"
        assert not is_blocked(ask(server.port, PLAIN, KID)), "only games count"
        assert not is_blocked(ask(server.port, GAMES, KID_TWO)), "another device, own budget"
    # SIGTERM saved the tallies; the same day, the same child is still out of minutes.
    with GuardianProcess(path, env=fake_time("2026-11-24T21:05:00+00:00")) as server:
        assert is_blocked(ask(server.port, GAMES, KID)), "a restart must not refill a budget"
    with GuardianProcess(path, env=fake_time("2026-11-25T08:00:00+00:00")) as server:
        assert not is_blocked(ask(server.port, GAMES, KID)), "a new day, a new budget"


OVERRIDABLE: Final = """
  timezone: UTC
  groups:
    kids:
      clients: [127.0.0.2]
      block_categories: [adult, games]
"""


def add_override(
    state: Path, kind: str, target_kind: str, target: str, domain: str | None, minutes: float
) -> None:
    def change(overrides: Overrides) -> None:
        overrides.add(kind, target_kind, target, domain, time.time(), minutes)  # type: ignore[arg-type]

    state.mkdir(exist_ok=True)
    edit_overrides(str(state), time.time(), change)


def test_a_temporary_allow_takes_effect_and_expires(tmp_path: Path, upstream: AuthServer) -> None:
    with GuardianProcess(config(tmp_path, upstream, OVERRIDABLE)) as server:
        assert is_blocked(ask(server.port, GAMES, KID))
        add_override(tmp_path / "state", "allow", "group", "kids", "wild.example.test", 0.1)
        added = time.monotonic()
        wait_until(
            lambda: not is_blocked(ask(server.port, GAMES, KID)),
            2.5,
            "the allow is in force within a second or so",
        )
        assert is_blocked(ask(server.port, ADULT, DEFAULT)), "only the kids group is allowed"
        time.sleep(max(0.0, 6.3 - (time.monotonic() - added)))
        ended = ask(server.port, GAMES, KID)
        assert is_blocked(ended), f"the allow ended after 6 s\n{ended}\n{server.stderr_text()}"


def test_a_paused_device_is_unfiltered_and_the_pause_survives_a_restart(
    tmp_path: Path, upstream: AuthServer
) -> None:
    path = config(tmp_path, upstream, OVERRIDABLE)
    with GuardianProcess(path) as server:
        add_override(tmp_path / "state", "pause", "client", KID, None, 5)
        wait_until(
            lambda: not is_blocked(ask(server.port, ADULT, KID)),
            2.5,
            "the paused device is unfiltered",
        )
        assert is_blocked(ask(server.port, ADULT, DEFAULT)), "other clients are still filtered"
    with GuardianProcess(path) as server:
        assert not is_blocked(ask(server.port, ADULT, KID)), "the pause is on disk"
