"""Clients and groups: what an administrator writes under ``groups:``/``devices:`` puts each device
in exactly one group, a device keeps its group when its addresses change, and the kernel's
neighbour table is read in both formats without ever breaking the server.

Neighbour tables are injected as files written from realistic samples (``/proc/net/arp`` and
``ip neigh show`` output of a home router); nothing here depends on this machine's neighbours,
except one test that runs the real ``ip`` and checks only the types of what it returns.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from guardian_dns.clients import (
    ClientMatcher,
    DeviceSpec,
    Member,
    NeighbourTable,
    NeighbourWatcher,
    client_key,
    parse_mac,
)
from guardian_dns.errors import ConfigError
from tests.support import require_tool

FILE = "family.yaml"
TABLET = "aa:bb:cc:dd:ee:01"  # emma-tablet
LAPTOP = "aa:bb:cc:dd:ee:02"  # noah-laptop
PHONE = "aa:bb:cc:dd:ee:03"  # a parent's phone

# A home router's /proc/net/arp: complete entries, one still resolving (flags 0x0, zero MAC), one
# with a complete flag but a zero MAC, a permanent entry in capitals, and the upstream gateway.
PROC_NET_ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.20     0x1         0x2         aa:bb:cc:dd:ee:01     *        br-lan
192.168.1.31     0x1         0x0         00:00:00:00:00:00     *        br-lan
192.168.1.33     0x1         0x2         00:00:00:00:00:00     *        br-lan
192.168.1.40     0x1         0x6         AA:BB:CC:DD:EE:02     *        br-lan
192.168.1.41     0x1         0x0         aa:bb:cc:dd:ee:09     *        br-lan
100.64.0.1       0x1         0x2         02:11:22:33:44:55     *        wan
"""
PROC_NET_ARP_MAPPING = {
    "192.168.1.20": TABLET,
    "192.168.1.40": LAPTOP,
    "100.64.0.1": "02:11:22:33:44:55",
}

# `ip neigh show` on the same router: IPv4 and IPv6 (link-local, a privacy address, a ULA), a
# router flag, `ip -s` statistics, and entries with no usable MAC that must be skipped.
IP_NEIGH_SHOW = """\
192.168.1.20 dev br-lan lladdr aa:bb:cc:dd:ee:01 REACHABLE
192.168.1.31 dev br-lan  FAILED
192.168.1.32 dev br-lan  INCOMPLETE
192.168.1.50 dev br-lan lladdr aa:bb:cc:dd:ee:05 FAILED
192.168.1.60 dev br-lan lladdr aa:bb:cc:dd:ee:02 ref 1 used 12/12/9 probes 1 REACHABLE
100.64.0.1 dev wan lladdr 02:11:22:33:44:55 router STALE
fe80::a8bb:ccff:fedd:ee01 dev br-lan lladdr aa:bb:cc:dd:ee:01 STALE
2001:db8:1:0:5d2a:9f1e:3c4b:7a10 dev br-lan lladdr aa:bb:cc:dd:ee:01 DELAY
fd00::1 dev br-lan  FAILED
FD00:0:0::44 dev br-lan lladdr AA:BB:CC:DD:EE:03 PERMANENT
"""
IP_NEIGH_MAPPING = {
    "192.168.1.20": TABLET,
    "192.168.1.60": LAPTOP,
    "100.64.0.1": "02:11:22:33:44:55",
    "fe80::a8bb:ccff:fedd:ee01": TABLET,
    "2001:db8:1:0:5d2a:9f1e:3c4b:7a10": TABLET,
    "fd00::44": PHONE,
}

NO_NEIGHBOURS: Mapping[str, str] = {}


def m(text: str, line: int, field: str = "") -> Member:
    return Member(text, FILE, line, field)


def members(*items: tuple[str, int]) -> list[Member]:
    return [m(text, line) for text, line in items]


def config_error(
    groups: Mapping[str, Sequence[Member]], devices: Mapping[str, Sequence[Member]] | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        ClientMatcher.build(groups, devices)
    return caught.value


# --- member parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("192.168.1.20", "address", "192.168.1.20"),
        ("fd00::20", "address", "fd00::20"),
        ("FD00:0:0::20", "address", "fd00::20"),
        ("::ffff:192.0.2.1", "address", "192.0.2.1"),
        ("192.168.1.0/24", "network", "192.168.1.0/24"),
        ("fd00::/64", "network", "fd00::/64"),
        ("192.168.1.7/32", "address", "192.168.1.7"),
        ("fd00::7/128", "address", "fd00::7"),
        ("::ffff:10.0.0.0/104", "network", "10.0.0.0/8"),
        ("0.0.0.0/0", "network", "0.0.0.0/0"),
        ("aa:bb:cc:dd:ee:ff", "mac", "aa:bb:cc:dd:ee:ff"),
        ("AA-BB-CC-DD-EE-FF", "mac", "aa:bb:cc:dd:ee:ff"),
        ("Aa:bB:cc:DD:ee:Ff", "mac", "aa:bb:cc:dd:ee:ff"),
        (" 192.168.1.20 ", "address", "192.168.1.20"),
        ("emma-tablet", "device", "emma-tablet"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_member_form_parses_to_one_spelling(text: str, kind: str, value: str) -> None:
    spec = DeviceSpec.from_text(text, {"emma-tablet"})
    assert (spec.kind, spec.value) == (kind, value)


@pytest.mark.parametrize(
    ("text", "devices", "expected"),
    [
        ("", {"emma-tablet"}, "empty member"),
        ("192.168.1.300", None, "Octet 300 (> 255)"),
        ("192.168.001.1", None, "Leading zeros"),
        ("fd00::1::2", None, "At most one '::'"),
        ("fd00:1:2", None, "Exactly 8 parts"),
        ("192.168.1.5/24", None, "host bits set: the network is 192.168.1.0/24"),
        ("10.0.0.0/33", None, "prefix /33 is longer than an IPv4 address (at most /32)"),
        ("fd00::/129", None, "prefix /129 is longer than an IPv6 address (at most /128)"),
        ("10.0.0.0/255.0.0.0", None, "expected a prefix length after '/'"),
        ("10.0.0.999/8", None, "Octet 999"),
        ("aa:bb:cc:dd:ee", None, "it has 5 bytes, a MAC address has 6"),
        ("aa-bb-cc-dd-ee-ff-00", None, "it has 7 bytes"),
        ("aa:bb:cc:dd:ee:gg", None, "'gg' is not a hex byte"),
        ("aa:bb-cc:dd:ee:ff", None, "mixes ':' and '-'"),
        ("a:b:c:d:e:f", None, "two hex digits (write 0a:0b:0c:0d:0e:0f)"),
        ("00:00:00:00:00:00", None, "incomplete entry"),
        ("ff:ff:ff:ff:ff:ff", None, "multicast or broadcast"),
        ("01:00:5e:00:00:fb", None, "multicast or broadcast"),
        ("fe80::1%eth0", None, "without the zone '%eth0'"),
        ("emma-tabet", {"emma-tablet"}, "unknown device 'emma-tabet' (did you mean 'emma-tab"),
        ("tv-1", {"emma-tablet"}, "or a device defined under devices: (emma-tablet)"),
        ("emma-tablet", None, "is not an IP address, a CIDR"),
        ("aabb.ccdd.eeff", None, "is not an IP address, a CIDR"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_member_says_precisely_what_is_wrong(
    text: str, devices: set[str] | None, expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        DeviceSpec.from_text(text, devices)
    assert expected in str(caught.value)


def test_parse_mac_and_client_key_normalise_what_the_kernel_and_sockets_report() -> None:
    assert parse_mac("AA-BB-CC-DD-EE-01") == TABLET
    with pytest.raises(ValueError, match="not a MAC address"):
        parse_mac("192.168.1.20")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("fe80::1%eth0") == "fe80::1"
    assert client_key("FD00:0::1") == "fd00::1"
    with pytest.raises(ValueError):
        client_key("not-an-address")


# --- one group per device ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kids_member", "adults_member", "devices", "thing"),
    [
        ("192.168.1.20", "192.168.1.20", None, "address 192.168.1.20"),
        ("192.168.1.20", "192.168.1.20/32", None, "address 192.168.1.20"),
        ("192.0.2.1", "::ffff:192.0.2.1", None, "address 192.0.2.1"),
        ("fd00::20", "FD00:0::20", None, "address fd00::20"),
        (TABLET, "AA-BB-CC-DD-EE-01", None, f"MAC {TABLET}"),
        ("10.1.0.0/16", "10.1.0.0/16", None, "network 10.1.0.0/16"),
        ("emma-tablet", "emma-tablet", {"emma-tablet": [m(TABLET, 4)]}, "device 'emma-tablet'"),
    ],
    ids=["ip", "ip-and-/32", "ip-and-mapped", "ipv6", "mac-two-spellings", "cidr", "device"],
)
def test_one_device_in_two_groups_is_an_error_naming_both_lines(
    kids_member: str,
    adults_member: str,
    devices: Mapping[str, Sequence[Member]] | None,
    thing: str,
) -> None:
    groups = {
        "kids": [m(kids_member, 12, "groups.kids.clients[0]")],
        "adults": [m(adults_member, 20, "groups.adults.clients[0]")],
    }
    error = config_error(groups, devices)
    [problem] = error.problems
    # Reported at the later line, so the editor jumps to the entry most likely to be the mistake.
    assert (problem.file, problem.line, problem.field) == (FILE, 20, "groups.adults.clients[0]")
    assert problem.message == (
        f"{thing} is in group 'kids' (family.yaml:12) and group 'adults' (family.yaml:20); "
        "a device may be in one group only"
    )


def test_a_devices_mac_listed_directly_in_another_group_names_the_device_line() -> None:
    devices = {"emma-tablet": [m("192.168.1.20", 3), m(TABLET, 4)]}
    groups = {"kids": [m("emma-tablet", 12)], "adults": [m("AA-BB-CC-DD-EE-01", 20)]}
    [problem] = config_error(groups, devices).problems
    assert problem.line == 20
    assert problem.message == (
        f"MAC {TABLET} is in group 'kids' (family.yaml:12, device 'emma-tablet' at "
        "family.yaml:4) and group 'adults' (family.yaml:20); a device may be in one group only"
    )


def test_two_devices_sharing_a_mac_in_different_groups_is_an_error() -> None:
    devices = {"emma-tablet": [m(TABLET, 4)], "old-tablet": [m(TABLET, 6)]}
    groups = {"kids": [m("emma-tablet", 12)], "adults": [m("old-tablet", 20)]}
    [problem] = config_error(groups, devices).problems
    assert "device 'emma-tablet' at family.yaml:4" in problem.message
    assert "device 'old-tablet' at family.yaml:6" in problem.message


def test_every_problem_is_reported_at_once_sorted_by_line() -> None:
    devices = {"emma-tablet": [m(TABLET, 4), m("aa:bb:cc:dd:ee", 5)]}
    groups = {
        "kids": members(("emma-tablet", 12), ("192.168.1.0/24", 13), ("192.168.1.300", 14)),
        "adults": members(("192.168.1.0/24", 20), ("emma-tablet", 21), ("emma-tabet", 22)),
    }
    error = config_error(groups, devices)
    assert [p.line for p in error.problems] == [5, 14, 20, 21, 22]
    assert "device 'emma-tablet': 'aa:bb:cc:dd:ee' is not a MAC address" in str(error)
    # Every line of the message reads file:line: field: message.
    assert all(line.startswith("family.yaml:") for line in str(error).splitlines())


def test_a_device_listing_nothing_or_named_like_an_address_is_an_error() -> None:
    devices = {"empty": [], "10.0.0.9": [m(TABLET, 4)]}
    groups = {"kids": [m("empty", 12)]}
    messages = [p.message for p in config_error(groups, devices).problems]
    assert messages == [
        "device name '10.0.0.9' reads as an address; give the device a name",
        "device 'empty' lists no address, CIDR or MAC",
    ]


def test_repeats_within_one_group_and_overlapping_networks_are_allowed() -> None:
    devices = {"emma-tablet": [m(TABLET, 4)]}
    groups = {
        "kids": members(("emma-tablet", 12), (TABLET, 13), ("emma-tablet", 14)),
        "students": members(("10.20.0.0/16", 30), ("10.20.0.0/16", 31)),
        "staff": members(("10.20.5.0/24", 40), ("10.20.9.7/32", 41)),
    }
    matcher = ClientMatcher.build(groups, devices)
    assert matcher.groups == ("kids", "students", "staff")
    assert matcher.uses_macs


# --- which group a client is in ---------------------------------------------------------------


@pytest.fixture
def school_and_family() -> ClientMatcher:
    devices = {
        "emma-tablet": [m(TABLET, 4)],
        "noah-laptop": [m(LAPTOP, 5), m("192.168.1.60", 6)],
    }
    groups = {
        "kids": members(("emma-tablet", 12), ("fd00:1::/64", 13)),
        "teens": members(("noah-laptop", 15), ("192.168.1.20", 16), ("fd00:1::20", 17)),
        "students": members(("10.20.0.0/16", 30), ("10.0.0.0/8", 31)),
        "staff": members(("10.20.5.0/24", 40), ("10.20.9.7/32", 41)),
        "adults": members((PHONE, 50), ("fd00::/16", 51)),
    }
    return ClientMatcher.build(groups, devices)


@pytest.mark.parametrize(
    ("ip", "neighbours", "group"),
    [
        # MAC beats the exact address: .20 is listed for teens, but the tablet holds it now.
        ("192.168.1.20", {"192.168.1.20": TABLET}, "kids"),
        ("192.168.1.20", NO_NEIGHBOURS, "teens"),
        # A MAC nobody listed decides nothing: the address still does.
        ("192.168.1.20", {"192.168.1.20": "aa:bb:cc:dd:ee:99"}, "teens"),
        ("192.168.1.60", NO_NEIGHBOURS, "teens"),
        ("192.168.1.61", NO_NEIGHBOURS, None),
        # Longest prefix: /32 inside /24 inside /16 inside /8.
        ("10.20.9.7", NO_NEIGHBOURS, "staff"),
        ("10.20.5.200", NO_NEIGHBOURS, "staff"),
        ("10.20.77.1", NO_NEIGHBOURS, "students"),
        ("10.99.0.1", NO_NEIGHBOURS, "students"),
        # The MAC wins over a network too.
        ("10.20.5.200", {"10.20.5.200": PHONE}, "adults"),
        ("172.16.0.1", NO_NEIGHBOURS, None),
        # IPv6: exact address over /64 over /16, and MACs through IPv6 neighbours.
        ("fd00:1::20", NO_NEIGHBOURS, "teens"),
        ("fd00:1::21", NO_NEIGHBOURS, "kids"),
        ("fd00:2::1", NO_NEIGHBOURS, "adults"),
        ("2001:db8::1", NO_NEIGHBOURS, None),
        ("fd00:1::20", {"fd00:1::20": TABLET}, "kids"),
        # A dual-stack socket reports IPv4 clients as mapped addresses; a link-local with a zone.
        ("::ffff:10.20.9.7", NO_NEIGHBOURS, "staff"),
        ("::ffff:192.168.1.77", {"192.168.1.77": TABLET}, "kids"),
        ("fe80::a8bb:ccff:fedd:ee01%br-lan", {"fe80::a8bb:ccff:fedd:ee01": TABLET}, "kids"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_group_precedence_is_mac_then_address_then_longest_prefix(
    school_and_family: ClientMatcher, ip: str, neighbours: Mapping[str, str], group: str | None
) -> None:
    assert school_and_family.group_of(ip, neighbours) == group


def test_match_says_which_line_put_the_client_in_its_group(
    school_and_family: ClientMatcher,
) -> None:
    rule = school_and_family.match("192.168.1.99", {"192.168.1.99": LAPTOP})
    assert rule is not None
    assert str(rule) == (
        f"MAC {LAPTOP} in group 'teens' (family.yaml:15, device 'noah-laptop' at family.yaml:5)"
    )
    rule = school_and_family.match("10.20.5.1", NO_NEIGHBOURS)
    assert str(rule) == "network 10.20.5.0/24 in group 'staff' (family.yaml:40)"
    by_mac = school_and_family.match_mac("AA-BB-CC-DD-EE-03")
    assert by_mac is not None and by_mac.group == "adults"
    assert school_and_family.match_mac("aa:bb:cc:dd:ee:99") is None


def test_no_groups_puts_everyone_in_the_default_group() -> None:
    matcher = ClientMatcher.build({})
    assert matcher.group_of("192.168.1.20", {"192.168.1.20": TABLET}) is None
    assert not matcher.uses_macs


def test_a_device_keeps_its_group_when_dhcp_gives_it_a_new_address(
    school_and_family: ClientMatcher, tmp_path: Path
) -> None:
    arp = tmp_path / "arp"
    arp.write_text(PROC_NET_ARP)
    watcher = NeighbourWatcher(arp, interval=5)
    assert watcher.refresh()
    assert school_and_family.group_of("192.168.1.20", watcher.mapping) == "kids"
    # Next day: the tablet's lease is .57 and a visitor's phone got .20.
    moved = PROC_NET_ARP.replace("192.168.1.20 ", "192.168.1.57 ").replace(
        "100.64.0.1       0x1         0x2         02:11:22:33:44:55     *        wan\n",
        "100.64.0.1       0x1         0x2         02:11:22:33:44:55     *        wan\n"
        "192.168.1.20     0x1         0x2         3c:22:fb:00:00:07     *        br-lan\n",
    )
    arp.write_text(moved)
    assert watcher.refresh()
    assert school_and_family.group_of("192.168.1.57", watcher.mapping) == "kids"
    # The visitor is not a kid just because the address was the tablet's; teens lists .20 itself.
    assert school_and_family.group_of("192.168.1.20", watcher.mapping) == "teens"


def test_an_ipv6_privacy_address_gets_the_group_of_its_devices_mac(
    school_and_family: ClientMatcher, tmp_path: Path
) -> None:
    neigh = tmp_path / "neigh"
    neigh.write_text(IP_NEIGH_SHOW)
    watcher = NeighbourWatcher(str(neigh), interval=5)
    watcher.refresh()
    # Written nowhere in the config: only the neighbour table ties it to the tablet.
    assert school_and_family.group_of("2001:db8:1:0:5d2a:9f1e:3c4b:7a10", watcher.mapping) == "kids"
    assert school_and_family.group_of("2001:db8:1:0:5d2a:9f1e:3c4b:7a11", watcher.mapping) is None


# --- the neighbour table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROC_NET_ARP, PROC_NET_ARP_MAPPING),
        (IP_NEIGH_SHOW, IP_NEIGH_MAPPING),
        (PROC_NET_ARP.splitlines(keepends=True)[0], {}),
        ("", {}),
        ("Deleted 192.168.1.20 dev br-lan lladdr aa:bb:cc:dd:ee:01 STALE\nnot a table\n", {}),
    ],
    ids=["proc-net-arp", "ip-neigh", "header-only", "empty", "no-entries"],
)
def test_both_neighbour_formats_are_read_and_dead_entries_skipped(
    tmp_path: Path, text: str, expected: dict[str, str]
) -> None:
    path = tmp_path / "neighbours"
    path.write_text(text)
    assert NeighbourTable.read_file(path) == expected


def test_an_address_listed_twice_keeps_its_first_mac(tmp_path: Path) -> None:
    path = tmp_path / "neigh"
    path.write_text(
        "fe80::1 dev br-lan lladdr aa:bb:cc:dd:ee:01 STALE\n"
        "fe80::1 dev wlan1 lladdr aa:bb:cc:dd:ee:02 STALE\n"
    )
    assert NeighbourTable.read_file(path) == {"fe80::1": TABLET}


def test_the_watcher_reports_a_changed_file_and_nothing_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "arp"
    path.write_text(PROC_NET_ARP)
    watcher = NeighbourWatcher(path, interval=10)
    assert watcher.mapping == {}
    assert watcher.refresh() is True
    assert watcher.mapping == PROC_NET_ARP_MAPPING
    assert watcher.refresh() is False

    # Touched but the same entries (the kernel rewrote a state column): not a change.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert watcher.refresh() is False

    # Replaced by rename, as a writer should: a new inode, new entries.
    new = tmp_path / "arp.new"
    new.write_text(PROC_NET_ARP.replace("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:07"))
    new.replace(path)
    assert watcher.refresh() is True
    assert watcher.mapping["192.168.1.20"] == "aa:bb:cc:dd:ee:07"
    assert watcher.refresh() is False


def test_the_watcher_does_not_reread_a_file_whose_stamp_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "arp"
    path.write_text(PROC_NET_ARP)
    watcher = NeighbourWatcher(path, interval=10)
    watcher.refresh()
    # Same size, same inode, mtime put back: the documented blind spot shows the file went unread.
    stat = path.stat()
    path.write_text(PROC_NET_ARP.replace("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:07"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert watcher.refresh() is False
    assert watcher.mapping["192.168.1.20"] == TABLET


def test_an_unreadable_source_keeps_the_last_mapping_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "arp"
    path.write_text(PROC_NET_ARP)
    watcher = NeighbourWatcher(path, interval=10)
    watcher.refresh()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="guardian_dns.clients"):
        assert watcher.refresh() is False
        assert watcher.refresh() is False
    assert watcher.mapping == PROC_NET_ARP_MAPPING
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    path.write_text(IP_NEIGH_SHOW)
    assert watcher.refresh() is True
    assert watcher.mapping == IP_NEIGH_MAPPING


@pytest.mark.parametrize(
    ("source", "described"),
    [(None, "/proc/net/arp"), ("ip", "ip neigh show"), (Path("ip"), "ip"), ("/tmp/n", "/tmp/n")],
    ids=["default", "ip-word", "file-named-ip", "file"],
)
def test_the_watcher_source_is_a_file_or_the_word_ip(
    source: str | Path | None, described: str
) -> None:
    assert NeighbourWatcher(source, interval=30).source == described


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_the_watcher_refuses_an_interval_that_is_not_a_positive_number(interval: float) -> None:
    with pytest.raises(ValueError, match="positive number"):
        NeighbourWatcher(None, interval)


def test_read_command_without_the_binary_returns_nothing_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="guardian_dns.clients"):
        assert NeighbourTable.read_command(argv=("/nonexistent/ip",)) == {}
    assert "/nonexistent/ip not found" in caplog.text


@pytest.mark.parametrize(
    ("script", "timeout", "expected"),
    [
        (f"print({IP_NEIGH_SHOW!r})", 10.0, IP_NEIGH_MAPPING),
        ("import sys; sys.exit('RTNETLINK answers: Operation not permitted')", 10.0, {}),
        ("import time; time.sleep(10)", 0.3, {}),
    ],
    ids=["output-parsed", "failing-command", "hanging-command"],
)
def test_read_command_parses_output_and_never_raises(
    script: str, timeout: float, expected: dict[str, str]
) -> None:
    assert NeighbourTable.read_command((sys.executable, "-c", script), timeout=timeout) == expected


def test_the_real_ip_neigh_returns_addresses_and_macs() -> None:
    require_tool("ip", "iproute2")
    table = NeighbourTable.read_command()
    # This machine's neighbours are whatever they are: only the shape is checked.
    assert isinstance(table, dict)
    for ip, mac in table.items():
        assert client_key(ip) == ip
        ipaddress.ip_address(ip)
        assert parse_mac(mac) == mac
