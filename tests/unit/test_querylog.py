"""The query log ring buffer: fixed size, newest first, decoded only when read."""

from __future__ import annotations

import time

import pytest

from guardian_dns import wire
from guardian_dns.pipeline import R_BLOCKED, R_CACHED, R_RESOLVED, REASONS
from guardian_dns.querylog import QueryLog


def question(name: str, qtype: int = wire.T_A) -> bytes:
    """A query message as the pipeline stores it: header, wire name, QTYPE, QCLASS, OPT."""
    header = bytes.fromhex("abcd01000001000000000001")
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return header + wire.encode_name(name) + qtype.to_bytes(2, "big") + b"\x00\x01" + opt


def record(i: int, reason: int = R_RESOLVED) -> tuple[float, str, bytes, int, int]:
    return (time.monotonic(), f"192.0.2.{i % 250}", question(f"n{i}.example"), reason, i)


def test_recent_is_newest_first_with_decoded_names_types_and_reasons() -> None:
    log = QueryLog(8)
    log.append((time.monotonic(), "192.0.2.1", question("WWW.Example.test"), R_RESOLVED, -1))
    log.append((time.monotonic(), "192.0.2.2", question("ads.tracker.test", 28), R_BLOCKED, 7))
    log.append((time.monotonic(), "192.0.2.3", question(""), R_CACHED, -1))
    got = log.recent(REASONS)
    assert [(d.client, d.name, d.qtype, d.reason, d.rule) for d in got] == [
        ("192.0.2.3", ".", wire.T_A, "cached", -1),
        ("192.0.2.2", "ads.tracker.test.", wire.T_AAAA, "blocked", 7),
        ("192.0.2.1", "WWW.Example.test.", wire.T_A, "resolved", -1),  # case as sent
    ]
    wall = time.time()
    assert all(abs(d.time - wall) < 5 for d in got), "times are not wall-clock seconds"
    assert log.total == 3


@pytest.mark.parametrize("size", [1, 2, 5, 64])
@pytest.mark.parametrize("appended", [0, 1, 4, 5, 6, 130])
def test_the_buffer_wraps_at_its_size_and_keeps_the_newest(size: int, appended: int) -> None:
    log = QueryLog(size)
    for i in range(appended):
        log.append(record(i))
    kept = min(size, appended)
    got = log.recent(REASONS, limit=1000)
    assert [d.rule for d in got] == list(range(appended - 1, appended - 1 - kept, -1))
    assert [d.name for d in got] == [f"n{i}.example." for i in range(appended - 1, -1, -1)][:kept]
    assert log.total == appended
    assert len(log.recent(REASONS, limit=2)) == min(2, kept)


def test_size_one_holds_the_last_record_only() -> None:
    log = QueryLog(1)
    assert log.recent(REASONS) == []
    log.append(record(1, R_RESOLVED))
    log.append(record(2, R_BLOCKED))
    [only] = log.recent(REASONS)
    assert (only.name, only.reason, only.rule) == ("n2.example.", "blocked", 2)


def test_a_size_below_one_is_treated_as_one() -> None:
    log = QueryLog(0)
    log.append(record(1))
    assert [d.rule for d in log.recent(REASONS)] == [1]


def test_appending_never_grows_or_replaces_the_buffer() -> None:
    log = QueryLog(100)
    buf = log.buf
    for i in range(10_000):
        log.append(record(i))
    assert log.buf is buf, "append replaced the buffer list"
    assert len(buf) == 100, f"the buffer grew to {len(buf)} slots"
    assert 0 <= log.pos < 100
    assert log.total == 10_000
    # Every slot holds one of the 100 newest records; nothing older survives.
    assert sorted(rec[4] for rec in buf if rec is not None) == list(range(9_900, 10_000))


def test_reading_does_not_change_the_buffer() -> None:
    log = QueryLog(4)
    for i in range(6):
        log.append(record(i))
    before = (list(log.buf), log.pos, log.total)
    assert log.recent(REASONS) == log.recent(REASONS)
    assert (list(log.buf), log.pos, log.total) == before
