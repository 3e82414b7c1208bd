"""Who a local forwarder says is asking: the client MAC and address dnsmasq adds to a query.

What it decides: for a query from a trusted forwarder (dnsmasq on an OpenWrt router, with
``add-mac`` and ``add-subnet=32,128``), which device it was asked for: its MAC from dnsmasq's
option 65001 (``--add-mac``: the raw hardware address) or 65073 (``--add-mac=base64`` or
``--add-mac=text``: the Nominum device-id option, 8 base64 characters or ``aa:bb:cc:dd:ee:ff``),
and its address from EDNS Client Subnet (RFC 7871, option 8) when the prefix is the whole address.
What it reads: the raw bytes of the query's OPT record, with bounds, never the whole message:
the question name is walked label by label (at most 255 octets), at most two additional records
are looked at, and an option is only believed when it lies entirely inside its RDATA.
What it must never do: raise on any input, trust these options from anyone but a configured
forwarder (a child's laptop can put any MAC it likes in a query; the caller checks the source
address first, and dnsmasq must run with ``strip-mac`` and ``strip-subnet`` so it replaces what a
client sent instead of passing it on), or guess: a subnet shorter than the whole address, a MAC
of another length, an option given twice, or two MAC options that disagree all count as "not
said", and the query is then the forwarder's own.

Cost: :func:`identity_bytes` runs for every packet from a forwarder, so it only slices bytes;
the slice is the memo key of :class:`ForwardedClients`, and :func:`decode` (``ipaddress``,
``base64``) runs once per distinct device. The options are never forwarded upstream: the
upstream query is built from the question alone (``wire.build_upstream_query``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Iterable
from typing import Final, Generic, NamedTuple, TypeVar

from guardian_dns.clients import parse_mac

OPT_ECS: Final = 8  # RFC 7871 EDNS Client Subnet
OPT_MAC: Final = 65001  # dnsmasq --add-mac: the MAC as raw bytes
OPT_DEVICE_ID: Final = 65073  # dnsmasq --add-mac=base64|text (Nominum's device-id option)
_WANTED: Final = frozenset({OPT_ECS, OPT_MAC, OPT_DEVICE_ID})
_T_OPT: Final = 41
_MAX_NAME: Final = 255
_MEMO_MAX: Final = 65536


class Identity(NamedTuple):
    """What a forwarder said about the client: its address and MAC, each None if not said."""

    address: str | None
    mac: str | None

    def client(self, forwarder: str) -> str:
        """The client as logs, budgets and rate limits name it: address, else MAC, else the
        forwarder itself (a query dnsmasq sent on its own or for a device it has no MAC for)."""
        return self.address or self.mac or forwarder


NOBODY: Final = Identity(None, None)


def identity_bytes(data: bytes) -> bytes:
    """The client-identity options of a query, as found (code, length, value each), or b"".

    A cheap, bounded walk to the OPT record: b"" for anything without one or not well formed
    (the pipeline answers those with FORMERR anyway). Other options (cookies, padding) are left
    out, so the result names the device and nothing that changes per query.
    """
    end = len(data)
    if end < 12 + 1 + 4 + 11:
        return b""
    qd = (data[4] << 8) | data[5]
    ar = (data[10] << 8) | data[11]
    if qd != 1 or not ar or ar > 2 or data[6] | data[7] | data[8] | data[9]:
        return b""
    pos = 12
    limit = min(end, 12 + _MAX_NAME)
    while True:  # the question name: plain labels only, as parse_query requires
        if pos >= limit:
            return b""
        ln = data[pos]
        if ln == 0:
            break
        if ln > 63:
            return b""
        pos += ln + 1
    pos += 5  # the root label, QTYPE and QCLASS
    for _ in range(ar):
        if pos >= end:
            return b""
        if data[pos] == 0:  # root owner: the OPT record's, or another record's
            owner_end = pos + 1
        else:
            owner_end = _skip_name(data, pos, end)
            if owner_end < 0:
                return b""
        if owner_end + 10 > end:
            return b""
        rtype = (data[owner_end] << 8) | data[owner_end + 1]
        rdlen = (data[owner_end + 8] << 8) | data[owner_end + 9]
        start = owner_end + 10
        stop = start + rdlen
        if stop > end:
            return b""
        if rtype == _T_OPT:
            return _wanted_options(data, start, stop)
        pos = stop
    return b""


def _skip_name(data: bytes, pos: int, end: int) -> int:
    """Offset past a name that may end in a pointer; -1 when it is not one. Never follows."""
    for _ in range(128):
        if pos >= end:
            return -1
        ln = data[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= end else -1
        if ln > 63:
            return -1
        pos += ln + 1
    return -1


def _wanted_options(data: bytes, pos: int, stop: int) -> bytes:
    found = b""
    while pos + 4 <= stop:
        code = (data[pos] << 8) | data[pos + 1]
        size = (data[pos + 2] << 8) | data[pos + 3]
        nxt = pos + 4 + size
        if nxt > stop:
            return b""  # an option that runs past its RDATA: believe none of them
        if code in _WANTED:
            found += data[pos:nxt]
        pos = nxt
    return found


def decode(raw: bytes) -> Identity:
    """The identity in :func:`identity_bytes`'s result; ``NOBODY`` parts where nothing sure is
    said. Never raises."""
    seen: dict[int, bytes | None] = {}
    pos = 0
    while pos + 4 <= len(raw):
        code = (raw[pos] << 8) | raw[pos + 1]
        size = (raw[pos + 2] << 8) | raw[pos + 3]
        value = raw[pos + 4 : pos + 4 + size]
        pos += 4 + size
        # An option given twice is ambiguous; dnsmasq with strip-mac/strip-subnet sends one.
        seen[code] = None if code in seen else value
    address = _ecs_address(seen.get(OPT_ECS))
    macs = {m for m in (_raw_mac(seen.get(OPT_MAC)), _device_id_mac(seen.get(OPT_DEVICE_ID))) if m}
    mac = macs.pop() if len(macs) == 1 else None
    return Identity(address, mac)


def client_identity(data: bytes) -> Identity:
    """The identity a query carries (for tests and the ``explain`` side; the listener memoises
    :func:`identity_bytes` instead)."""
    raw = identity_bytes(data)
    return decode(raw) if raw else NOBODY


def _ecs_address(value: bytes | None) -> str | None:
    """The client address when the subnet is the whole address (``add-subnet=32,128``)."""
    if value is None or len(value) < 4:
        return None
    family = (value[0] << 8) | value[1]
    prefix = value[2]
    addr = value[4:]
    if family == 1 and prefix == 32 and len(addr) == 4:
        return str(ipaddress.IPv4Address(addr))
    if family == 2 and prefix == 128 and len(addr) == 16:
        v6 = ipaddress.IPv6Address(addr)
        return str(v6.ipv4_mapped or v6)
    return None  # a network, not a device; or not ECS as RFC 7871 writes it


def _canonical(mac: str) -> str | None:
    try:
        return parse_mac(mac)
    except ValueError:
        return None  # all-zero, multicast: never a device's own


def _raw_mac(value: bytes | None) -> str | None:
    if value is None or len(value) != 6:
        return None  # EUI-64 and other link types are not what groups list
    return _canonical(":".join(f"{b:02x}" for b in value))


def _device_id_mac(value: bytes | None) -> str | None:
    if value is None:
        return None
    if len(value) == 17:  # --add-mac=text
        try:
            return _canonical(value.decode("ascii"))
        except UnicodeDecodeError:
            return None
    if len(value) == 8:  # --add-mac=base64: six bytes, standard alphabet, no padding needed
        try:
            return _raw_mac(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return None
    return None


A = TypeVar("A")


class ForwardedClients(Generic[A]):
    """Queries from trusted forwarders: the client each names, and its admission, memoised.

    ``trusted`` are the forwarders' addresses as the socket reports them (``127.0.0.1``, ``::1``).
    ``classify(forwarder, identity)`` returns what the listener's gate decides for that client
    (its name for logs and budgets, and its admission); it runs once per device and forwarder,
    then :meth:`admit` is a slice and a dict look-up. :meth:`reset` forgets everything, and the
    gate calls it whenever it forgets its own memo (reload, neighbours, overrides).
    """

    def __init__(
        self, trusted: Iterable[str], classify: Callable[[str, Identity], tuple[str, A]]
    ) -> None:
        self.trusted: frozenset[str] = frozenset(str(ipaddress.ip_address(a)) for a in trusted)
        self._classify = classify
        self.memo: dict[tuple[str, bytes], tuple[str, A]] = {}

    def admit(self, forwarder: str, data: bytes) -> tuple[str, A]:
        """(client, admission) for a query that came from ``forwarder`` (one of ``trusted``)."""
        key = (forwarder, identity_bytes(data))
        hit = self.memo.get(key)
        if hit is None:
            who = decode(key[1]) if key[1] else NOBODY
            hit = self._classify(forwarder, who)
            if len(self.memo) >= _MEMO_MAX:
                self.memo = {}
            self.memo[key] = hit
        return hit

    def reset(self) -> None:
        self.memo = {}


__all__ = [
    "NOBODY",
    "OPT_DEVICE_ID",
    "OPT_ECS",
    "OPT_MAC",
    "ForwardedClients",
    "Identity",
    "client_identity",
    "decode",
    "identity_bytes",
]
