"""Clients: which group's rules apply to the device that sent a query.

What it decides: for one client address, the group it belongs to (``None``: the default group, for
every device nobody listed), and whether the ``groups:`` and ``devices:`` sections put each device
in one group only. A group member is an IP address, a CIDR, a MAC address, or the name of a device
defined under ``devices:`` (a list of addresses, CIDRs and MACs: ``emma-tablet:
[aa:bb:cc:dd:ee:01]``).
What it reads: the member strings with the file and line they were written on (so an error can
name them), and the kernel's neighbour table -- ``/proc/net/arp``, or the output of ``ip neigh
show``, which also lists IPv6 neighbours -- mapping each client address on the LAN to its MAC.
What it must never do: touch the neighbour table on the query path (:class:`NeighbourWatcher`
re-reads it from a timer in a thread executor; :meth:`ClientMatcher.group_of` only looks in the
mapping it is handed), raise into that timer, or let a device be in two groups. The last is a
config error naming both lines: which rules a child gets must never depend on the order of a YAML
file.

Precedence, first match wins:

1. **MAC**, through the neighbour table (IPv4 and IPv6 addresses alike). The MAC names the device
   itself; its addresses are leases. DHCP may give a child's tablet a new IPv4 tomorrow, and IPv6
   privacy addresses (RFC 8981) change daily and are never written in any config. Both still map to
   the tablet's MAC, so it keeps its rules.
2. **Exact address** (a ``/32`` or ``/128`` CIDR is the same thing). An address says more than any
   network that contains it.
3. **Longest CIDR prefix.** Overlapping networks are allowed and the most specific one wins, so a
   school can put ``10.20.0.0/16`` in ``students`` and a staff laptop's ``10.20.5.7/32`` or the
   staff room's ``10.20.5.0/24`` in ``staff``. The same network in two groups is an error.
4. No match: the default group (``None``).

Spellings that mean the same device are the same member, for matching and for the "two groups"
check: MACs are compared in lower-case colon form (``AA-BB-CC-DD-EE-FF`` is
``aa:bb:cc:dd:ee:ff``); an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack
socket reports for an IPv4 client) is the IPv4 address, in the config and at lookup. A scoped
address from a socket (``fe80::1%eth0``) is looked up without its zone, as the kernel's table lists
it; in the config a zone is an error, because clients are matched by address alone.

What MAC matching cannot do, so nobody relies on it for more: the kernel only knows the MACs of
devices on the same link. A client behind another router shows that router's MAC (list such
clients by address). Addresses and MACs are claimed by a device, not proven: a child who changes a
device's MAC or address changes its group. Phones use a random MAC per Wi-Fi network (iOS "Private
Wi-Fi Address", Android "randomised MAC"); it is stable for one network, so list the one the device
shows for this network.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import subprocess
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from guardian_dns.errors import ConfigError, Problem

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Kind = Literal["address", "network", "mac", "device"]

# The neighbour source when the config names none: every Linux kernel has it, no tool needed. It
# lists IPv4 only; the source word "ip" (run `ip neigh show`) covers IPv6 too.
DEFAULT_NEIGHBOUR_SOURCE: Final = "/proc/net/arp"
IP_COMMAND_SOURCE: Final = "ip"
IP_NEIGH_ARGV: Final[tuple[str, ...]] = ("ip", "neigh", "show")
# `ip neigh show` answers in milliseconds from the kernel over netlink; a hang means something is
# badly wrong, and the timer thread must not be held for long.
COMMAND_TIMEOUT: Final = 2.0

_MAC_RE: Final = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}|[0-9a-f]{2}(?:-[0-9a-f]{2}){5}", re.I)
_MAC_FORMS: Final = "aa:bb:cc:dd:ee:ff or AA-BB-CC-DD-EE-FF"
_ZERO_MAC: Final = "00:00:00:00:00:00"
# /proc/net/arp flags (include/uapi/linux/if_arp.h): ATF_COM means the hardware address is known.
_ATF_COM: Final = 0x02
# `ip neigh` states whose entry names no device (an lladdr printed next to them is a stale guess).
_DEAD_STATES: Final = frozenset({"FAILED", "INCOMPLETE"})


# --- members: what a group lists --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One string written in the config, and where: the config loader fills these from YAML.

    ``field`` is the dotted path the administrator would look for (``groups.kids[2]``); it becomes
    the field of the :class:`~guardian_dns.errors.Problem` raised for this member.
    """

    text: str
    file: str = "<config>"
    line: int = 0
    field: str = ""

    @property
    def where(self) -> str:
        """``file:line``, or the file alone when there is no line (as Problem prints it)."""
        return f"{self.file}:{self.line}" if self.line else self.file

    def problem(self, message: str) -> Problem:
        return Problem(self.file, self.line, self.field, message)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A member string parsed: what kind of thing it names and its one canonical spelling.

    Two specs are equal exactly when they name the same thing, which is what the "same device in
    two groups" check compares: ``AA-BB-CC-DD-EE-01`` equals ``aa:bb:cc:dd:ee:01``,
    ``::ffff:192.0.2.1`` equals ``192.0.2.1``, ``192.0.2.1/32`` equals ``192.0.2.1``.
    """

    kind: Kind
    value: str

    @classmethod
    def from_text(cls, text: str, devices: Collection[str] | None = None) -> DeviceSpec:
        """Parse an address, CIDR, MAC or (when ``devices`` is given) a device name.

        ``devices`` is None for the entries of a device, which may not name other devices: one
        level keeps "which device is this" answerable by reading one line. Raises ValueError with
        a message meant for the administrator; the caller adds ``file:line: field:``.
        """
        s = text.strip()
        if not s:
            raise ValueError(f"empty member (expected {_expected(devices)})")
        if _MAC_RE.fullmatch(s):
            return cls("mac", _device_mac(s))
        if devices is not None and s in devices:
            # Names that read as addresses are refused in build(), so this cannot shadow one.
            return cls("device", s)
        if "/" in s:
            return _parse_network(s)
        if ":" in s or re.fullmatch(r"[0-9.]+", s):
            try:
                return cls("address", str(_unmap(_parse_ip(s, s))))
            except ValueError:
                if _looks_like_mac(s):
                    raise ValueError(_mac_error(s)) from None
                raise
        if _looks_like_mac(s):
            raise ValueError(_mac_error(s))
        if devices is not None:
            close = difflib.get_close_matches(s, list(devices), n=1)
            if close:
                raise ValueError(f"unknown device {s!r} (did you mean {close[0]!r}?)")
        raise ValueError(f"{s!r} is not {_expected(devices)}")

    def __str__(self) -> str:
        if self.kind == "device":
            return f"device {self.value!r}"
        return f"{'MAC' if self.kind == 'mac' else self.kind} {self.value}"


def _expected(devices: Collection[str] | None) -> str:
    what = "an IP address, a CIDR such as 192.168.1.0/24 or fd00::/64, a MAC address"
    if devices is None:
        return f"{what} ({_MAC_FORMS})"
    known = sorted(devices)
    names = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
    names = names or "none defined"
    return f"{what}, or a device defined under devices: ({names})"


def _parse_ip(text: str, whole: str) -> IPAddress:
    """One address, with the version-specific reason when it is not one (``ip_address`` only says
    "does not appear to be an IPv4 or IPv6 address", which helps nobody find the typo)."""
    if "%" in text:
        bare = text.split("%", 1)[0]
        raise ValueError(
            f"{whole!r}: write the address without the zone {text[len(bare) :]!r} "
            "(clients are matched by address alone)"
        )
    try:
        if ":" in text:
            return ipaddress.IPv6Address(text)
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise ValueError(f"{whole!r} is not an IP address: {exc}") from None


def _unmap(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 client it stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_network(text: str) -> DeviceSpec:
    address_text, _, prefix_text = text.partition("/")
    address = _parse_ip(address_text, text)
    if not (prefix_text.isascii() and prefix_text.isdigit()):
        raise ValueError(
            f"{text!r}: expected a prefix length after '/', such as /24 (IPv4) or /64 (IPv6)"
        )
    prefix = int(prefix_text)
    if prefix > address.max_prefixlen:
        raise ValueError(
            f"{text!r}: prefix /{prefix} is longer than an IPv{address.version} address "
            f"(at most /{address.max_prefixlen})"
        )
    network = ipaddress.ip_network((address, prefix), strict=False)
    if network.network_address != address:
        raise ValueError(
            f"{text!r} has host bits set: the network is {network} "
            f"(write that, or {address} alone for one device)"
        )
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    if network.prefixlen == network.max_prefixlen:
        return DeviceSpec("address", str(network.network_address))
    return DeviceSpec("network", str(network))


def _looks_like_mac(s: str) -> bool:
    """True for text that is not an address and can only have been meant as a MAC, so the
    administrator gets the MAC's problem rather than "not an IP address"."""
    if "::" in s or "." in s:
        return False
    if ":" in s:  # the caller found it is no IPv6 address; short groups with colons are a MAC
        return bool(re.fullmatch(r"[0-9A-Za-z]{1,2}(?:[:-][0-9A-Za-z]{1,2}){3,}", s))
    # Dashes alone also separate the words of device names ("tv-1"): only hex bytes count.
    return bool(re.fullmatch(r"[0-9A-Fa-f]{1,2}(?:-[0-9A-Fa-f]{1,2}){3,}", s))


def _mac_error(s: str) -> str:
    """Why ``s`` is not a MAC, precisely enough to fix it without looking anything up."""
    head = f"{s!r} is not a MAC address"
    if ":" in s and "-" in s:
        return f"{head}: it mixes ':' and '-' (expected {_MAC_FORMS})"
    parts = re.split(r"[:-]", s)
    bad = [p for p in parts if not re.fullmatch(r"[0-9A-Fa-f]{1,2}", p)]
    if bad:
        return f"{head}: {bad[0]!r} is not a hex byte (expected {_MAC_FORMS})"
    if len(parts) != 6:
        return f"{head}: it has {len(parts)} bytes, a MAC address has 6 (expected {_MAC_FORMS})"
    fixed = ":".join(p.lower().zfill(2) for p in parts)
    return f"{head}: each byte needs two hex digits (write {fixed})"


def _device_mac(text: str) -> str:
    """A MAC in its canonical form, refusing the ones no device has as its own."""
    mac = text.lower().replace("-", ":")
    if mac == _ZERO_MAC:
        raise ValueError(
            f"{text!r} is what the kernel shows for an incomplete entry, not a device's MAC address"
        )
    if int(mac[:2], 16) & 1:
        raise ValueError(
            f"{text!r} is a multicast or broadcast address, never a device's own MAC address"
        )
    return mac


def parse_mac(text: str) -> str:
    """``text`` as a device MAC in lower-case colon form; ValueError says why it is not one."""
    s = text.strip()
    if not _MAC_RE.fullmatch(s):
        raise ValueError(_mac_error(s) if _looks_like_mac(s) else f"{s!r} is not a MAC address")
    return _device_mac(s)


def client_key(ip: str) -> str:
    """The spelling of a client address used as a neighbour-table key and for matching.

    Drops an IPv6 zone (``fe80::1%eth0``: the kernel's table has none) and unmaps IPv4-mapped
    addresses; raises ValueError for text that is no address at all.
    """
    return str(_client_address(ip))


def _client_address(ip: str) -> IPAddress:
    return _unmap(ipaddress.ip_address(ip.split("%", 1)[0]))


# --- the matcher ----------------------------------------------------------------------------


class Rule(NamedTuple):
    """Why a client is in its group: what matched, and where the config says so.

    ``spec`` is the address, network or MAC that matched (never a device name). ``member`` is the
    group's entry that put it there: the address itself, or the name of a device. For a device,
    ``device_entry`` is the line under ``devices:`` that lists ``spec``. ``explain`` prints this.
    """

    group: str
    spec: DeviceSpec
    member: Member
    device_entry: Member | None = None

    def placement(self) -> str:
        """``group 'kids' (family.yaml:12)``, with the device line when it came from one."""
        where = self.member.where
        if self.device_entry is not None:
            where += f", device {self.member.text!r} at {self.device_entry.where}"
        return f"group {self.group!r} ({where})"

    def __str__(self) -> str:
        return f"{self.spec} in {self.placement()}"


# One table per IP version: (prefix length, {network number >> host bits: rule}), longest first.
_NetworkTables = tuple[tuple[int, dict[int, Rule]], ...]


class ClientMatcher:
    """Groups' members, indexed for lookup. Immutable once built; lives in the config snapshot."""

    __slots__ = ("_addresses", "_groups", "_macs", "_networks")

    def __init__(
        self,
        groups: Sequence[str],
        macs: Mapping[str, Rule],
        addresses: Mapping[IPAddress, Rule],
        networks: Mapping[int, _NetworkTables],
    ) -> None:
        """Use :meth:`build`; this takes tables already checked for conflicts."""
        self._groups = tuple(groups)
        self._macs = dict(macs)
        self._addresses = dict(addresses)
        self._networks = {4: networks.get(4, ()), 6: networks.get(6, ())}

    @classmethod
    def build(
        cls,
        groups: Mapping[str, Sequence[Member]],
        devices: Mapping[str, Sequence[Member]] | None = None,
    ) -> ClientMatcher:
        """Index every group's members; ConfigError lists every problem at once, by file and line.

        Problems: a member that is not an address, CIDR, MAC or defined device; a bad entry under
        a device; and the same address, MAC, CIDR or device in two groups, reported at the later
        line and naming both. Repeating a member within one group is harmless and allowed.
        """
        devices = devices or {}
        problems: list[Problem] = []
        device_specs = {
            name: _parse_device(name, entries, problems) for name, entries in devices.items()
        }
        owners: dict[DeviceSpec, Rule] = {}

        def claim(rule: Rule) -> bool:
            first = owners.setdefault(rule.spec, rule)
            if first is rule:
                return True
            if first.group != rule.group:
                problems.append(
                    rule.member.problem(
                        f"{rule.spec} is in {first.placement()} and {rule.placement()}; "
                        "a device may be in one group only"
                    )
                )
            return False

        for group, members in groups.items():
            for member in members:
                try:
                    spec = DeviceSpec.from_text(member.text, devices)
                except ValueError as exc:
                    problems.append(member.problem(str(exc)))
                    continue
                # A device is claimed by name first, so one device in two groups is one problem,
                # not one per address it lists; a repeat within its own group adds nothing.
                if not claim(Rule(group, spec, member)):
                    continue
                if spec.kind != "device":
                    continue
                if not devices[spec.value]:
                    problems.append(
                        member.problem(f"device {spec.value!r} lists no address, CIDR or MAC")
                    )
                for device_spec, entry in device_specs[spec.value]:
                    claim(Rule(group, device_spec, member, entry))
        if problems:
            raise ConfigError(sorted(problems, key=lambda p: (p.file, p.line)))
        return cls._index(groups, owners.values())

    @classmethod
    def _index(cls, groups: Iterable[str], rules: Iterable[Rule]) -> ClientMatcher:
        macs: dict[str, Rule] = {}
        addresses: dict[IPAddress, Rule] = {}
        by_prefix: dict[int, dict[int, dict[int, Rule]]] = {4: {}, 6: {}}
        for rule in rules:
            kind, value = rule.spec.kind, rule.spec.value
            if kind == "mac":
                macs[value] = rule
            elif kind == "address":
                addresses[ipaddress.ip_address(value)] = rule
            elif kind == "network":
                net = ipaddress.ip_network(value)
                host_bits = net.max_prefixlen - net.prefixlen
                table = by_prefix[net.version].setdefault(net.prefixlen, {})
                table[int(net.network_address) >> host_bits] = rule
        networks = {
            version: tuple(sorted(tables.items(), reverse=True))
            for version, tables in by_prefix.items()
        }
        return cls(tuple(groups), macs, addresses, networks)

    @property
    def groups(self) -> tuple[str, ...]:
        """The group names, in config order."""
        return self._groups

    @property
    def uses_macs(self) -> bool:
        """Whether any member is a MAC: without one the server need not watch the neighbours."""
        return bool(self._macs)

    def match(self, ip: str, neighbours: Mapping[str, str]) -> Rule | None:
        """The rule that puts client ``ip`` in its group, or None for the default group.

        ``neighbours`` maps client addresses to MACs, both spelled as :class:`NeighbourTable`
        returns them. Cost: two dict look-ups plus one per distinct prefix length in the config;
        no scan over members. ValueError if ``ip`` is not an address.
        """
        address = _client_address(ip)
        if self._macs:
            mac = neighbours.get(str(address))
            if mac is not None:
                rule = self._macs.get(mac)
                if rule is not None:
                    return rule
        rule = self._addresses.get(address)
        if rule is not None:
            return rule
        number, bits = int(address), address.max_prefixlen
        for prefix, table in self._networks[address.version]:
            rule = table.get(number >> (bits - prefix))
            if rule is not None:
                return rule
        return None

    def group_of(self, ip: str, neighbours: Mapping[str, str]) -> str | None:
        """The group of client ``ip`` (MAC, then address, then longest prefix), None for default.

        The listener memoises the answer per address and drops the memo whenever
        :meth:`NeighbourWatcher.refresh` reports a change, so a device that moved keeps its group.
        """
        rule = self.match(ip, neighbours)
        return None if rule is None else rule.group

    def match_mac(self, mac: str) -> Rule | None:
        """The rule for a device given by MAC (``explain --client MAC``); None: default group."""
        return self._macs.get(parse_mac(mac))


def _parse_device(
    name: str, entries: Sequence[Member], problems: list[Problem]
) -> list[tuple[DeviceSpec, Member]]:
    """A device's entries parsed; bad ones become problems at their own lines and are dropped."""
    try:
        DeviceSpec.from_text(name)
    except ValueError:
        pass
    else:
        if entries:  # a name that reads as an address could never be referenced as a name
            problems.append(
                entries[0].problem(
                    f"device name {name!r} reads as an address; give the device a name"
                )
            )
    specs: list[tuple[DeviceSpec, Member]] = []
    for entry in entries:
        try:
            specs.append((DeviceSpec.from_text(entry.text), entry))
        except ValueError as exc:
            problems.append(entry.problem(f"device {name!r}: {exc}"))
    return specs


# --- the neighbour table ---------------------------------------------------------------------


class NeighbourTable:
    """Readers of the kernel's IP -> MAC table; stateless, so the watcher and tests share them.

    Both formats are accepted and told apart by the header ``/proc/net/arp`` always has. Keys are
    spelled by :func:`client_key`, MACs in lower-case colon form; entries without a usable MAC
    (incomplete, failed, all-zero, multicast) are skipped, never guessed. An address listed twice
    (a link-local address seen on two interfaces) keeps its first MAC.
    """

    @staticmethod
    def parse(text: str) -> dict[str, str]:
        lines = text.splitlines()
        first = next((line for line in lines if line.strip()), "")
        if first.lstrip().startswith("IP address"):
            return _parse_proc_arp(lines)
        return _parse_ip_neigh(lines)

    @staticmethod
    def read_file(path: str | os.PathLike[str]) -> dict[str, str]:
        """Parse a neighbour-table file of either format; OSError if it cannot be read."""
        with open(path, encoding="utf-8", errors="replace") as f:
            return NeighbourTable.parse(f.read())

    @staticmethod
    def read_command(
        argv: Sequence[str] = IP_NEIGH_ARGV, timeout: float = COMMAND_TIMEOUT
    ) -> dict[str, str]:
        """Run ``argv`` (no shell) and parse its output; {} and a warning when it fails.

        Never raises: a missing ``ip`` or a kernel that refuses must cost the MAC rules, not the
        server.
        """
        text, error = _run(argv, timeout)
        if text is None:
            log.warning("neighbour table: %s; MAC members match nothing", error)
            return {}
        return NeighbourTable.parse(text)


def _run(argv: Sequence[str], timeout: float) -> tuple[str | None, str]:
    """(output, "") or (None, why not)."""
    command = " ".join(argv)
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return None, f"{argv[0]} not found (Debian: apt-get install iproute2)"
    except subprocess.TimeoutExpired:
        return None, f"{command!r} did not finish within {timeout:g} s"
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        return None, f"cannot run {command!r}: {exc}"
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[0] if done.stderr.strip() else "no message"
        return None, f"{command!r} exited with status {done.returncode}: {reason}"
    return done.stdout, ""


def _neighbour_entry(ip: str, hw: str) -> tuple[str, str] | None:
    try:
        return client_key(ip), parse_mac(hw)
    except ValueError:
        return None


def _parse_proc_arp(lines: list[str]) -> dict[str, str]:
    """``IP address  HW type  Flags  HW address  Mask  Device``, one header line then entries."""
    table: dict[str, str] = {}
    rows = (line.split() for line in lines)
    next((row for row in rows if row), None)  # the header
    for row in rows:
        if len(row) < 4:
            continue
        try:
            flags = int(row[2], 16)
        except ValueError:
            continue
        if not flags & _ATF_COM:  # 0x0: still resolving, the HW address column is zeros
            continue
        entry = _neighbour_entry(row[0], row[3])
        if entry is not None:
            table.setdefault(*entry)
    return table


def _parse_ip_neigh(lines: list[str]) -> dict[str, str]:
    """``ADDR dev DEV lladdr MAC [router] [ref N used A/B/C probes N] STATE``, one per line."""
    table: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if "lladdr" not in words[1:-1] or _DEAD_STATES.intersection(words):
            continue
        entry = _neighbour_entry(words[0], words[words.index("lladdr") + 1])
        if entry is not None:  # None also for lines that are not entries ("Deleted ...", errors)
            table.setdefault(*entry)
    return table


class NeighbourWatcher:
    """The current IP -> MAC mapping from one source, re-read by :meth:`refresh`.

    ``source`` is a file path (either format), the word ``ip`` to run ``ip neigh show`` (which
    covers IPv6; write ``./ip`` for a file of that name), or None for ``/proc/net/arp``.
    ``interval`` is how often the server's timer calls :meth:`refresh`, in seconds.

    Thread-safety: :meth:`refresh` runs in an executor thread while the event loop reads
    :attr:`mapping`. A refresh builds a new dict and swaps one reference; a dict is never changed
    once published, so a reader sees the old mapping or the new one, never half of each.
    """

    def __init__(
        self, source: str | os.PathLike[str] | None = None, interval: float = 30.0
    ) -> None:
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ValueError(
                f"neighbour refresh interval must be a positive number, got {interval}"
            )
        self.interval = float(interval)
        command = source == IP_COMMAND_SOURCE  # a Path("ip") is a file, only the word is the tool
        self._path = None if command else Path(source or DEFAULT_NEIGHBOUR_SOURCE)
        self._lock = threading.Lock()  # one refresh at a time, should the timer ever overlap
        self._stamp: tuple[int, int, int, int] | None = None
        self._current: dict[str, str] = {}
        self._mapping: Mapping[str, str] = MappingProxyType(self._current)
        self._failing = False

    @property
    def source(self) -> str:
        """What is read, as a log line would name it."""
        return " ".join(IP_NEIGH_ARGV) if self._path is None else str(self._path)

    @property
    def mapping(self) -> Mapping[str, str]:
        """Client address -> MAC, as of the last refresh that read something; empty before."""
        return self._mapping

    def refresh(self) -> bool:
        """Re-read the source; True when the mapping changed. Never raises.

        A file whose inode, mtime and size are unchanged is not re-read (a rewrite in place
        within one mtime tick and of the same size goes unseen until the next change; replacing
        the file by rename is always seen). Files that report size 0 -- ``/proc`` ones -- are
        always read. A source that cannot be read keeps the last mapping and warns once, until it
        reads again: stale MACs are likelier right than none, and a timer must not fill the log.
        """
        with self._lock:
            fresh = self._read()
            if fresh is None or fresh == self._current:
                return False
            self._current = fresh
            self._mapping = MappingProxyType(fresh)
            log.debug("neighbour table %s: %d entries", self.source, len(fresh))
            return True

    def _read(self) -> dict[str, str] | None:
        if self._path is None:
            text, error = _run(IP_NEIGH_ARGV, COMMAND_TIMEOUT)
            if text is None:
                self._failed(error)
                return None
        else:
            try:
                st = os.stat(self._path)
                stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
                if st.st_size and stamp == self._stamp:
                    return None
                with open(self._path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError as exc:
                self._failed(f"cannot read: {exc.strerror or exc}")
                return None
            self._stamp = stamp  # taken before the read: a write during it is seen next time
        if self._failing:
            self._failing = False
            log.info("neighbour table %s: readable again", self.source)
        return NeighbourTable.parse(text)

    def _failed(self, error: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "neighbour table %s: %s; keeping the last %d entries until it can be read",
                self.source,
                error,
                len(self._current),
            )
