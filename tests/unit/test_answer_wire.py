"""The forwarded-answer fast path (answer._addresses) builds exactly what the general path builds.

The usual reply, A or AAAA records owned by the question, is turned into a cache entry from the
upstream's bytes as they are (wire.Reply.simple_end). Every case here is built both ways, the
second time with the fast path switched off on the same parsed reply, and the two entries must
be identical: same bytes, TTL offsets, counts, expiry. Cases where the fast path must step
aside (a private address, another type, a clamp) are in the table too.
"""

from __future__ import annotations

import struct

import pytest

from guardian_dns import answer, wire
from guardian_dns.cache import KIND_FORWARDED, KIND_NEGATIVE, Entry

NOW = 1000.0
QNAME = b"\x03www\x07example\x03com\x00"


def _policy(**changes: object) -> answer.AnswerPolicy:
    base: dict[str, object] = {
        "min_ttl": 0,
        "max_ttl": 86400,
        "negative_max_ttl": 3600,
        "servfail_ttl": 5,
        "stale_max_age": 86400,
        "rebinding_protection": True,
        "local_suffixes": (".lan",),
        "local_names": frozenset({"lan"}),
        "pass_ad": False,
    }
    base.update(changes)
    return answer.AnswerPolicy(**base)  # type: ignore[arg-type]


def _reply(qname: bytes, qtype: int, records: list[tuple[int, int, bytes]]) -> bytes:
    """A NOERROR reply with ``(type, ttl, rdata)`` records owned by ``0xC00C``."""
    head = struct.pack("!HHHHHH", 0x4242, 0x8180, 1, len(records), 0, 0)
    body = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
        for rtype, ttl, rdata in records
    )
    return head + qname + struct.pack("!HH", qtype, 1) + body


def _both(
    data: bytes, qtype: int, pol: answer.AnswerPolicy, name: str = "www.example.com"
) -> tuple[Entry, Entry, bool]:
    """(entry from the fast path if it applies, entry from the general path, applied?)."""
    fast = wire.parse_reply(data)
    applied = bool(fast.simple_end)
    got, _chain = answer.forwarded(fast, qtype, False, False, pol, NOW, 1, name)
    general = wire.parse_reply(data)
    general.simple_end = 0
    want, _chain = answer.forwarded(general, qtype, False, False, pol, NOW, 1, name)
    return got, want, applied


def _same(a: Entry, b: Entry) -> None:
    for field in ("body", "ancount", "nscount", "rflags", "ttls", "expires", "kind", "opt"):
        assert getattr(a, field) == getattr(b, field), field


V4 = bytes([192, 0, 2, 10])
V4B = bytes([198, 51, 100, 7])
V6 = bytes.fromhex("20010db8000000000000000000000001")
PRIVATE_V4 = bytes([10, 0, 0, 1])
PRIVATE_V6 = bytes.fromhex("fd000000000000000000000000000001")


@pytest.mark.parametrize(
    ("qtype", "records", "pol", "name", "kind"),
    [
        pytest.param(wire.T_A, [(1, 300, V4)], _policy(), None, KIND_FORWARDED, id="one-A"),
        pytest.param(
            wire.T_A, [(1, 300, V4), (1, 60, V4B)], _policy(), None, KIND_FORWARDED, id="two-A"
        ),
        pytest.param(wire.T_AAAA, [(28, 3600, V6)], _policy(), None, KIND_FORWARDED, id="AAAA"),
        pytest.param(
            wire.T_A, [(1, 200000, V4)], _policy(), None, KIND_FORWARDED, id="ttl-above-max"
        ),
        pytest.param(
            wire.T_A, [(1, 5, V4)], _policy(min_ttl=30), None, KIND_FORWARDED, id="ttl-below-min"
        ),
        pytest.param(
            wire.T_A, [(1, 0x80000001, V4)], _policy(), None, KIND_FORWARDED, id="ttl-top-bit"
        ),
        pytest.param(
            wire.T_A,
            [(1, 300, V4), (1, 300, PRIVATE_V4)],
            _policy(),
            None,
            KIND_FORWARDED,
            id="private-A-stripped",
        ),
        pytest.param(
            wire.T_A,
            [(1, 300, PRIVATE_V4)],
            _policy(),
            None,
            KIND_NEGATIVE,
            id="only-private-A",
        ),
        pytest.param(
            wire.T_AAAA,
            [(28, 300, PRIVATE_V6)],
            _policy(),
            None,
            KIND_NEGATIVE,
            id="private-AAAA",
        ),
        pytest.param(
            wire.T_A,
            [(1, 300, PRIVATE_V4)],
            _policy(),
            "printer.lan",
            KIND_FORWARDED,
            id="private-A-of-a-local-name",
        ),
        pytest.param(
            wire.T_A,
            [(1, 300, PRIVATE_V4)],
            _policy(rebinding_protection=False),
            None,
            KIND_FORWARDED,
            id="private-A-protection-off",
        ),
        pytest.param(wire.T_AAAA, [(1, 300, V4)], _policy(), None, KIND_NEGATIVE, id="A-for-AAAA"),
    ],
)
def test_fast_path_builds_the_same_entry_as_the_general_path(
    qtype: int,
    records: list[tuple[int, int, bytes]],
    pol: answer.AnswerPolicy,
    name: str | None,
    kind: int,
) -> None:
    data = _reply(QNAME, qtype, records)
    got, want, applied = _both(data, qtype, pol, name or "www.example.com")
    assert applied, "an all-A/AAAA answer section is the simple case"
    _same(got, want)
    assert got.kind == kind
    # Every TTL in the body is at its recorded offset, as the cache will patch it.
    for off, ttl in got.ttls:
        assert struct.unpack_from("!I", got.body, off)[0] == ttl


def test_clamped_ttls_are_written_into_the_bytes() -> None:
    data = _reply(QNAME, wire.T_A, [(1, 200000, V4), (1, 0x80000001, V4B)])
    got, _want, _applied = _both(data, wire.T_A, _policy(max_ttl=3600))
    assert [ttl for _off, ttl in got.ttls] == [3600, 0]
    assert got.expires == NOW  # the smaller TTL: 0


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([(5, 300, b"\x03cdn\xc0\x10")], id="CNAME"),
        pytest.param([(16, 300, b"\x02hi")], id="TXT"),
        pytest.param([(1, 300, b"\x01\x02\x03")], id="A-of-3-bytes"),
    ],
)
def test_other_sections_take_the_full_parser(records: list[tuple[int, int, bytes]]) -> None:
    data = _reply(QNAME, wire.T_A, records)
    if records[0][0] == 1:
        with pytest.raises(wire.WireError):
            wire.parse_reply(data)
        return
    rep = wire.parse_reply(data)
    assert rep.simple_end == 0
    assert len(rep.answer) == 1


def test_a_truncated_simple_section_is_still_rejected() -> None:
    data = _reply(QNAME, wire.T_A, [(1, 300, V4), (1, 300, V4B)])
    with pytest.raises(wire.WireError):
        wire.parse_reply(data[:-2])


def test_the_answer_list_is_parsed_when_asked_for() -> None:
    data = _reply(QNAME, wire.T_AAAA, [(28, 300, V6), (28, 60, V6)])
    rep = wire.parse_reply(data)
    assert rep.simple_end == len(data)
    assert rep.answer == [(QNAME, 28, 1, 300, V6), (QNAME, 28, 1, 60, V6)]


@pytest.mark.parametrize(
    ("records", "used"),
    [
        pytest.param([(1, 300, V4), (1, 60, V4B)], True, id="public-A"),
        pytest.param([(1, 300, V4), (1, 300, PRIVATE_V4)], False, id="a-private-A"),
        pytest.param([(28, 300, V6)], False, id="AAAA-for-A"),
    ],
)
def test_the_fast_path_is_taken_only_where_it_may_be(
    records: list[tuple[int, int, bytes]], used: bool
) -> None:
    data = _reply(QNAME, wire.T_A, records)
    rep = wire.parse_reply(data)
    built = answer._addresses(rep, wire.T_A, False, False, _policy(), NOW, 1, "www.example.com")
    assert (built is not None) == used
    if built is not None:
        assert built.body == data[rep.an_pos :]  # the upstream's bytes, as they were
