"""edns_client: the device a local dnsmasq names in a query (add-mac, add-subnet), bounded."""

from __future__ import annotations

import base64
import ipaddress
import random
import struct

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord, EDNSOption

from guardian_dns import edns_client
from guardian_dns.edns_client import NOBODY, ForwardedClients, Identity

MAC = "02:11:22:33:44:55"
MAC_BYTES = bytes.fromhex("021122334455")


def query(*options: tuple[int, bytes], name: str = "www.example.com") -> bytes:
    """A query as dnsmasq forwards it: the question, then one OPT carrying ``options``."""
    q = DNSRecord.question(name, "A")
    q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(code, data) for code, data in options]))
    return bytes(q.pack())


def ecs(address: str, prefix: int) -> tuple[int, bytes]:
    """RFC 7871 section 6: family, source prefix, scope prefix 0, the prefix's octets only."""
    if ":" in address:
        family, raw = 2, ipaddress.IPv6Address(address).packed
    else:
        family, raw = 1, bytes(int(x) for x in address.split("."))
    return edns_client.OPT_ECS, struct.pack("!HBB", family, prefix, 0) + raw[: (prefix + 7) // 8]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([(edns_client.OPT_MAC, MAC_BYTES)], Identity(None, MAC)),
        ([(edns_client.OPT_DEVICE_ID, MAC.encode())], Identity(None, MAC)),
        ([(edns_client.OPT_DEVICE_ID, b"AhEiM0RV")], Identity(None, MAC)),
        ([ecs("192.168.1.23", 32)], Identity("192.168.1.23", None)),
        ([ecs("2001:db8::23", 128)], Identity("2001:db8::23", None)),
        ([ecs("::ffff:192.168.1.23", 128)], Identity("192.168.1.23", None)),
        (
            [(edns_client.OPT_MAC, MAC_BYTES), ecs("192.168.1.23", 32)],
            Identity("192.168.1.23", MAC),
        ),
        (
            [(10, b"\x01" * 8), (edns_client.OPT_MAC, MAC_BYTES), (12, b"\x00" * 40)],
            Identity(None, MAC),
        ),
        ([], NOBODY),
    ],
    ids=[
        "add-mac",
        "add-mac=text",
        "add-mac=base64",
        "add-subnet ipv4 /32",
        "add-subnet ipv6 /128",
        "add-subnet ipv4-mapped",
        "mac and subnet",
        "among cookie and padding",
        "opt without options",
    ],
)
def test_what_dnsmasq_adds_names_the_device(
    options: list[tuple[int, bytes]], expected: Identity
) -> None:
    assert edns_client.client_identity(query(*options)) == expected


@pytest.mark.parametrize(
    "options",
    [
        [ecs("192.168.1.0", 24)],
        [ecs("2001:db8::", 64)],
        [ecs("0.0.0.0", 0)],
        [(edns_client.OPT_ECS, b"\x00\x01\x20")],
        [(edns_client.OPT_ECS, struct.pack("!HBB", 1, 32, 0) + b"\x0a\x00\x00")],
        [(edns_client.OPT_ECS, struct.pack("!HBB", 3, 32, 0) + b"\x0a\x00\x00\x01")],
        [(edns_client.OPT_MAC, bytes(6))],
        [(edns_client.OPT_MAC, bytes.fromhex("ffffffffffff"))],
        [(edns_client.OPT_MAC, bytes.fromhex("0111223344"))],
        [(edns_client.OPT_MAC, bytes.fromhex("0211223344556677"))],
        [(edns_client.OPT_DEVICE_ID, b"device-1234")],
        [(edns_client.OPT_DEVICE_ID, b"AhEiM0R=")],
        [(edns_client.OPT_DEVICE_ID, b"02:11:22:33:44:zz")],
        [(edns_client.OPT_DEVICE_ID, "02:11:22:33:44:5\u00e9".encode())],
        [(edns_client.OPT_MAC, MAC_BYTES), (edns_client.OPT_MAC, MAC_BYTES)],
        [(edns_client.OPT_MAC, MAC_BYTES), (edns_client.OPT_DEVICE_ID, b"02:11:22:33:44:66")],
    ],
    ids=[
        "subnet /24 is a network",
        "subnet /64 is a network",
        "subnet /0 says nobody",
        "ecs too short",
        "ecs address shorter than its prefix",
        "ecs unknown family",
        "all-zero mac",
        "broadcast mac",
        "five-byte mac",
        "eui-64",
        "device id that is no mac",
        "base64 with padding is not six bytes",
        "text with a bad digit",
        "text not ascii",
        "mac option twice",
        "two macs that disagree",
    ],
)
def test_anything_unsure_is_not_believed(options: list[tuple[int, bytes]]) -> None:
    who = edns_client.client_identity(query(*options))
    assert who.mac is None
    if options[0][0] == edns_client.OPT_ECS:
        assert who.address is None


def test_two_mac_options_that_agree_are_one_mac() -> None:
    data = query((edns_client.OPT_MAC, MAC_BYTES), (edns_client.OPT_DEVICE_ID, MAC.encode()))
    assert edns_client.client_identity(data) == Identity(None, MAC)


def test_the_memo_key_ignores_options_that_change_per_query() -> None:
    a = query((10, b"\x01" * 8), (edns_client.OPT_MAC, MAC_BYTES))
    b = query((10, b"\x02" * 8), (edns_client.OPT_MAC, MAC_BYTES), (12, b"\x00" * 7))
    assert edns_client.identity_bytes(a) == edns_client.identity_bytes(b) != b""


def test_no_opt_record_costs_nothing() -> None:
    plain = bytes(DNSRecord.question("www.example.com", "A").pack())
    assert edns_client.identity_bytes(plain) == b""
    assert edns_client.client_identity(plain) is NOBODY


def test_opt_after_another_additional_record_is_found() -> None:
    q = DNSRecord.question("www.example.com", "A")
    data = bytearray(q.pack())
    # A record with a compressed owner (pointer to the question), then the OPT.
    other = b"\xc0\x0c" + struct.pack("!HHIH", QTYPE.TXT, 1, 0, 2) + b"\x01x"
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 10) + struct.pack("!HH", 65001, 6)
    data[10:12] = b"\x00\x02"
    data += other + opt + MAC_BYTES
    assert edns_client.client_identity(bytes(data)) == Identity(None, MAC)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-3],  # the option's value runs past the message
        lambda d: d[:-9] + b"\x00\x20" + d[-7:],  # RDLENGTH shorter than the option inside
        lambda d: d[:12] + b"\xc0\x0c" + d[12:],  # a compression pointer in the question
        lambda d: d[:4] + b"\x00\x02" + d[6:],  # two questions
        lambda d: d[:6] + b"\x00\x01" + d[8:],  # an answer in a query
        lambda d: d[:10] + b"\x00\x03" + d[12:],  # more additional records than allowed
        lambda d: d[:12] + b"\x40" + d[13:],  # a reserved label type
    ],
    ids=[
        "truncated",
        "option past rdata",
        "pointer in question",
        "two questions",
        "answer section",
        "three additionals",
        "label type",
    ],
)
def test_malformed_queries_name_nobody(mutate: object) -> None:
    data = query((edns_client.OPT_MAC, MAC_BYTES))
    assert callable(mutate)
    assert edns_client.client_identity(mutate(data)) == NOBODY


def test_random_bytes_never_raise() -> None:
    rng = random.Random(8)
    seed = query((edns_client.OPT_MAC, MAC_BYTES), ecs("10.0.0.7", 32), (10, b"c" * 8))
    for _ in range(20000):
        data = bytearray(seed)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        edns_client.client_identity(bytes(data))
    for n in range(64):
        edns_client.client_identity(bytes(rng.randrange(256) for _ in range(n)))


def test_base64_form_is_dnsmasqs_encoding() -> None:
    # dnsmasq encodes the six bytes as two groups of three: exactly standard base64.
    assert base64.b64encode(MAC_BYTES) == b"AhEiM0RV"


# --- ForwardedClients: the listener's memo ------------------------------------------------------


def test_each_device_is_classified_once_and_forgotten_on_reset() -> None:
    calls: list[tuple[str, Identity]] = []

    def classify(forwarder: str, who: Identity) -> tuple[str, str]:
        calls.append((forwarder, who))
        return who.client(forwarder), f"ctx-{who.mac}"

    fwd = ForwardedClients(["127.0.0.1", "0:0::1"], classify)
    assert fwd.trusted == {"127.0.0.1", "::1"}
    a = query((10, b"\x01" * 8), (edns_client.OPT_MAC, MAC_BYTES), ecs("192.168.1.23", 32))
    b = query((10, b"\x09" * 8), (edns_client.OPT_MAC, MAC_BYTES), ecs("192.168.1.23", 32))
    assert fwd.admit("127.0.0.1", a) == ("192.168.1.23", f"ctx-{MAC}")
    assert fwd.admit("127.0.0.1", b) == ("192.168.1.23", f"ctx-{MAC}")
    assert len(calls) == 1
    other = query((edns_client.OPT_MAC, bytes.fromhex("021122334466")))
    assert fwd.admit("127.0.0.1", other) == ("02:11:22:33:44:66", "ctx-02:11:22:33:44:66")
    plain = bytes(DNSRecord.question("example.com").pack())
    assert fwd.admit("::1", plain) == ("::1", "ctx-None")  # the forwarder's own query
    assert len(calls) == 3
    fwd.reset()
    fwd.admit("127.0.0.1", a)
    assert len(calls) == 4


def test_identity_names_the_client_for_logs_and_budgets() -> None:
    assert Identity("192.168.1.23", MAC).client("127.0.0.1") == "192.168.1.23"
    assert Identity(None, MAC).client("127.0.0.1") == MAC
    assert NOBODY.client("127.0.0.1") == "127.0.0.1"
