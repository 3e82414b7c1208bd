"""Direct subscriptions without a network: names, validation, the sanity checks, and ``fetch``
driven by a scripted session (the real HTTP server is in tests/integration/test_subscribe_http.py).

What must hold: a subscription's name is a safe file name, unique per URL; a bad URL or bound is
refused when the value is built; a copy with too few entries, mostly unusable lines or an HTML page
is refused, and so is a shrink beyond ``max_shrink`` unless forced; every refusal leaves the local
copy byte-identical and records the error; metadata round-trips, and a corrupt or stale metadata
file costs a conditional request, never an exception.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from guardian_dns import subscribe
from guardian_dns.subscribe import Counts, Subscription, check, fetch, local_copy, status

URL = "https://lists.example.test/hagezi/pro.txt"
T0 = 1_700_000_000.0


def domains(n: int, prefix: str = "ads") -> bytes:
    return "".join(f"{prefix}{i}.example.com\n" for i in range(n)).encode()


# --- a scripted session ------------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes, fail_after: int | None) -> None:
        self.body = body
        self.fail_after = fail_after

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        assert decode_content is False  # we gunzip ourselves, to check the gzip trailer
        end = len(self.body) if self.fail_after is None else self.fail_after
        for i in range(0, end, amt):
            yield self.body[i : min(i + amt, end)]
        if self.fail_after is not None:
            import urllib3

            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fail_after: int | None = None  # bytes sent before the connection breaks
    url: str | None = None  # the final URL after redirects


class _Response:
    def __init__(self, reply: Reply, url: str) -> None:
        self.status_code = reply.status
        headers = dict(reply.headers)
        if reply.status == 200 and reply.fail_after is None:
            headers.setdefault("Content-Length", str(len(reply.body)))
        self.headers = CaseInsensitiveDict(headers)
        self.url = reply.url or url
        self.raw = _Raw(reply.body, reply.fail_after)

    def close(self) -> None:
        pass


class Session:
    """Answers GETs from a script of replies (the last one repeats) and records the headers."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, str]] = []

    def get(self, url: str, *, headers: dict[str, str], **kwargs: Any) -> _Response:
        self.requests.append(dict(headers))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return _Response(reply, url)


def _fetch(
    sub: Subscription, state: Path, *replies: Reply, **kw: Any
) -> tuple[subscribe.FetchResult, Session]:
    session = Session(*replies)
    sleeps: list[float] = []
    kw.setdefault("now", lambda: T0)
    result = fetch(sub, state, session=session, sleep=sleeps.append, **kw)  # type: ignore[arg-type]
    return result, session


def _files(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "subscriptions").iterdir())


# --- names and validation ----------------------------------------------------------------------


def test_a_derived_name_is_a_safe_file_name_from_host_and_path() -> None:
    sub = Subscription("https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts", "ads")
    assert sub.name.startswith("raw.githubusercontent.com-stevenblack-hosts-master-hosts-")
    assert subscribe._NAME.fullmatch(sub.name)
    assert Subscription(sub.url, "other").name == sub.name  # stable: a restart finds its copy


@pytest.mark.parametrize(
    "url",
    [
        "https://example.test/list.txt?v=2",
        "https://example.test/list.txt?v=3",
        "https://example.test/list_txt",
        "http://example.test/list.txt",
        "https://EXAMPLE.test/list.txt",
    ],
)
def test_urls_that_share_a_slug_still_get_different_names(url: str) -> None:
    base = Subscription("https://example.test/list.txt", "ads")
    other = Subscription(url, "ads")
    assert other.name != base.name
    assert other.name.split("-")[:-1] == base.name.split("-")[:-1]  # only the hash tells them apart


def test_a_long_or_odd_url_still_gives_a_bounded_safe_name() -> None:
    url = "https://xn--bcher-kva.example/" + "a/" * 200 + "%2e%2e/..;$&?q=../../etc"
    sub = Subscription(url, "ads")
    assert subscribe._NAME.fullmatch(sub.name)
    assert "/" not in sub.name and ".." not in sub.name
    assert len(sub.name) <= 80


def test_a_given_name_is_kept_when_safe() -> None:
    assert Subscription(URL, "ads", name="hagezi-pro").name == "hagezi-pro"


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "-x", "a b", "x" * 129, "ü"])
def test_an_unsafe_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name:"):
        Subscription(URL, "ads", name=name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example.test/x"}, "https:// or http://"),
        ({"url": "file:///etc/hosts"}, "https:// or http://"),
        ({"url": "example.test/x"}, "https:// or http://"),
        ({"url": "https:///x"}, "no host"),
        ({"url": "https://user:pw@example.test/x"}, "credentials"),
        ({"url": "https://token@example.test/x"}, "credentials"),
        ({"url": "https://example.test:99999/x"}, "url:"),
        ({"url": "https://example.test/a b"}, "white space"),
        ({"category": ""}, "category"),
        ({"format": "adblock-plus"}, "unknown list format"),
        ({"min_lines": -1}, "min_lines"),
        ({"max_shrink": 1.5}, "max_shrink"),
        ({"max_shrink": -0.1}, "max_shrink"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": -1}, "read_timeout"),
        ({"total_timeout": float("nan")}, "total_timeout"),
        ({"retries": -1}, "retries"),
        ({"backoff": -1.0}, "backoff"),
    ],
)
def test_a_bad_subscription_is_refused_when_built(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"url": URL, "category": "ads", **kwargs}
    with pytest.raises(ValueError, match=message):
        Subscription(**args)


def test_plain_http_is_allowed_but_flagged() -> None:
    assert Subscription("http://mirror.example.test/ut1/adult.txt", "adult").plain_http
    assert not Subscription(URL, "ads").plain_http


def test_the_defaults_are_the_documented_ones() -> None:
    sub = Subscription(URL, "ads")
    assert (sub.format, sub.min_lines, sub.max_shrink, sub.max_bytes) == (None, 100, 0.5, 200 << 20)
    assert (sub.connect_timeout, sub.read_timeout, sub.retries, sub.backoff) == (10, 60, 3, 2.0)
    assert sub.ca_file is None


# --- the sanity checks -------------------------------------------------------------------------

SUB = Subscription(URL, "ads", min_lines=100, max_shrink=0.5)


@pytest.mark.parametrize(
    ("entries", "invalid", "previous", "force", "head", "code"),
    [
        (1000, 0, None, False, b"", None),  # first copy
        (1000, 3, 1000, False, b"", None),
        (100, 0, None, False, b"", None),  # exactly min_lines
        (99, 0, None, False, b"", "too_few"),
        (99, 0, None, True, b"", "too_few"),  # force waives the shrink check only
        (0, 0, 1000, True, b"", "too_few"),
        (500, 0, 1000, False, b"", None),  # a shrink of exactly max_shrink is allowed
        (499, 0, 1000, False, b"", "shrink"),
        (499, 0, 1000, True, b"", None),
        (5000, 0, 1000, False, b"", None),  # growth is never a problem
        (400, 401, None, False, b"", "parse"),  # mostly unusable: the wrong format, or garbage
        (400, 400, None, False, b"", None),
        (1000, 0, None, False, b"  <!DOCTYPE html>\n<html>", "parse"),
        (1000, 0, None, True, b"<HTML><head>", "parse"),
        (1000, 0, None, False, b"<?xml version='1.0'?><html", "parse"),
        (1000, 0, None, False, b"# <b>not html</b>\n", None),
    ],
)
def test_the_sanity_checks(
    entries: int, invalid: int, previous: int | None, force: bool, head: bytes, code: str | None
) -> None:
    problem = check(SUB, Counts(entries, invalid, "domains"), previous, force=force, head=head)
    assert (problem[0] if problem else None) == code
    if problem:
        assert URL in problem[1]


def test_max_shrink_zero_refuses_any_shrink_and_one_allows_all() -> None:
    strict = Subscription(URL, "ads", min_lines=0, max_shrink=0.0)
    lax = Subscription(URL, "ads", min_lines=0, max_shrink=1.0)
    assert check(strict, Counts(999, 0, "domains"), 1000) is not None
    assert check(strict, Counts(1000, 0, "domains"), 1000) is None
    assert check(lax, Counts(0, 0, "domains"), 1000) is None


def test_count_uses_the_server_parser_and_names_the_url(tmp_path: Path) -> None:
    path = tmp_path / "l"
    path.write_bytes(b"0.0.0.0 a.example\n0.0.0.0 b.example c.example\n0.0.0.0 300.1.1\n")
    counts = subscribe.count(path, None, URL)
    assert (counts.entries, counts.invalid, counts.format) == (3, 1, "hosts")
    assert [p.file for p in counts.problems] == [URL]
    assert counts.problems[0].line == 3


# --- fetch, with a scripted session ------------------------------------------------------------


def test_before_any_fetch_there_is_no_local_copy_and_status_says_so(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads")
    assert local_copy(sub, tmp_path) is None
    st = status(sub, tmp_path, T0)
    assert st["local_copy"] is None and st["entries"] is None and st["age_seconds"] is None
    assert st["last_error"] is None and st["etag"] is False
    assert (st["url"], st["name"], st["category"]) == (URL, sub.name, "ads")


def test_a_first_fetch_writes_the_copy_and_metadata_that_round_trips(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    body = domains(50)
    headers = {"ETag": '"v1"', "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}
    result, session = _fetch(sub, tmp_path, Reply(body=body, headers=headers))
    assert result.ok and result.outcome == "updated" and result.changed
    assert (result.entries, result.invalid, result.format) == (50, 0, "domains")
    assert result.http_status == 200 and result.attempts == 1 and result.warnings == ()
    assert "If-None-Match" not in session.requests[0]
    assert session.requests[0]["Accept-Encoding"] == "gzip"
    copy = local_copy(sub, tmp_path)
    assert copy == result.path == tmp_path / "subscriptions" / f"{sub.name}.list"
    assert copy.read_bytes() == body
    assert _files(tmp_path) == [f"{sub.name}.json", f"{sub.name}.list", f"{sub.name}.lock"]

    meta = json.loads((tmp_path / "subscriptions" / f"{sub.name}.json").read_text())
    assert meta["url"] == URL and meta["etag"] == '"v1"'
    assert meta["last_modified"] == headers["Last-Modified"]
    assert meta["entries"] == 50 and meta["invalid"] == 0 and meta["format"] == "domains"
    assert meta["fetched_at"] == meta["checked_at"] == T0 and meta["last_error"] is None
    assert len(meta["sha256"]) == 64 and meta["size"] == len(body)

    st = status(sub, tmp_path, T0 + 90)
    assert st["entries"] == 50 and st["age_seconds"] == 90 and st["etag"] is True
    assert st["local_copy"] == str(copy) and st["last_error"] is None
    json.dumps(st)  # the CLI prints it as it is

    # The round trip: the next fetch asks conditionally with exactly what was saved.
    result, session = _fetch(sub, tmp_path, Reply(status=304), now=lambda: T0 + 100)
    assert result.outcome == "unchanged" and result.ok and result.http_status == 304
    assert result.entries == 50 and result.path == copy
    assert session.requests[0]["If-None-Match"] == '"v1"'
    assert session.requests[0]["If-Modified-Since"] == headers["Last-Modified"]
    assert copy.read_bytes() == body
    st = status(sub, tmp_path, T0 + 130)
    assert st["age_seconds"] == 30 and st["fetched_at"] == T0 and st["checked_at"] == T0 + 100


def test_a_shrink_is_refused_unless_forced_and_prev_keeps_the_last_copy(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10, max_shrink=0.5)
    big, small = domains(100), domains(40, "other")
    _fetch(sub, tmp_path, Reply(body=big, headers={"ETag": '"big"'}))
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    inode = copy.stat().st_ino

    result, _ = _fetch(sub, tmp_path, Reply(body=small), now=lambda: T0 + 5)
    assert not result.ok and result.outcome == "failed"
    assert result.error is not None and result.error.code == "shrink"
    assert URL in result.error.message and "40" in result.error.message
    assert result.entries == 100  # the copy still in force
    assert copy.read_bytes() == big and copy.stat().st_ino == inode
    assert not (copy.parent / f"{sub.name}.list.prev").exists()
    st = status(sub, tmp_path, T0 + 10)
    assert st["last_error"]["code"] == "shrink" and st["last_error"]["at"] == T0 + 5
    assert st["entries"] == 100 and st["etag"] is True  # the old copy's metadata is kept

    result, _ = _fetch(sub, tmp_path, Reply(body=small), force=True)
    assert result.ok and result.outcome == "updated" and result.entries == 40
    assert copy.read_bytes() == small
    assert (copy.parent / f"{sub.name}.list.prev").read_bytes() == big
    assert status(sub, tmp_path, T0)["last_error"] is None


def test_too_few_entries_are_refused_even_on_the_first_fetch(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads")
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(99)))
    assert result.error is not None and result.error.code == "too_few"
    assert local_copy(sub, tmp_path) is None and result.path is None
    assert status(sub, tmp_path, T0)["last_error"]["code"] == "too_few"


def test_a_captive_portal_page_is_refused(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=0)
    page = b"<!DOCTYPE html>\n<html><body>Log in to the hotel wifi</body></html>\n" * 50
    result, _ = _fetch(sub, tmp_path, Reply(body=page))
    assert result.error is not None and result.error.code == "parse"
    assert "HTML" in result.error.message


def test_the_wrong_format_is_refused_with_its_bad_lines(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", format="dnsmasq", min_lines=0)
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(200)))
    assert result.error is not None and result.error.code == "parse"
    assert result.problems and result.problems[0].file == URL and result.problems[0].line == 1


def test_bad_lines_are_skipped_with_url_and_line_and_the_rest_loads(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    bad = [f"{'a' * 64}.example", "*", "192.0.2.1", "bad..name.example"]
    body = "\ufeff" + "\r\n".join([*bad, *(f"ok{i}.example" for i in range(20))]) + "\r\n"
    result, _ = _fetch(sub, tmp_path, Reply(body=body.encode()))
    assert result.ok and result.entries == 20 and result.invalid == 4
    assert [(p.file, p.line) for p in result.problems] == [(URL, 1), (URL, 2), (URL, 3), (URL, 4)]
    copy = local_copy(sub, tmp_path)
    assert copy is not None and copy.read_bytes() == body.encode()  # stored as served


def test_an_identical_body_keeps_the_file_untouched(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    _fetch(sub, tmp_path, Reply(body=domains(20), headers={"ETag": '"a"'}))
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    before = copy.stat()
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(20), headers={"ETag": '"b"'}))
    assert result.outcome == "unchanged" and result.ok and result.http_status == 200
    after = copy.stat()
    # Same inode and mtime: the compiled table's fingerprint still matches, so no rebuild.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (copy.parent / f"{sub.name}.list.prev").exists()
    meta = json.loads((copy.parent / f"{sub.name}.json").read_text())
    assert meta["etag"] == '"b"'


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{not json", b"[]", b'{"version": 99, "etag": "x"}', b"\xff\xfe", b'{"version": 1}'],
)
def test_corrupt_metadata_means_no_etag_and_is_never_fatal(tmp_path: Path, garbage: bytes) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    _fetch(sub, tmp_path, Reply(body=domains(30), headers={"ETag": '"v1"'}))
    meta = tmp_path / "subscriptions" / f"{sub.name}.json"
    meta.write_bytes(garbage)
    st = status(sub, tmp_path, T0)  # never raises
    assert st["etag"] is False and st["local_copy"] is not None

    result, session = _fetch(sub, tmp_path, Reply(body=domains(30), headers={"ETag": '"v1"'}))
    assert "If-None-Match" not in session.requests[0]  # a 304 could vouch for nothing
    assert result.ok and result.entries == 30
    assert json.loads(meta.read_text())["etag"] == '"v1"'  # rewritten whole


def test_corrupt_metadata_still_protects_against_a_shrink(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    _fetch(sub, tmp_path, Reply(body=domains(100)))
    (tmp_path / "subscriptions" / f"{sub.name}.json").write_bytes(b"\0\0\0")
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(20)))
    assert result.error is not None and result.error.code == "shrink"  # counted from the file


def test_a_copy_replaced_by_hand_is_not_vouched_for_by_old_metadata(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    _fetch(sub, tmp_path, Reply(body=domains(30), headers={"ETag": '"v1"'}))
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    tmp = copy.with_name("by-hand")
    tmp.write_bytes(domains(31))
    os.replace(tmp, copy)
    assert status(sub, tmp_path, T0)["entries"] is None
    result, session = _fetch(sub, tmp_path, Reply(body=domains(30)))
    assert "If-None-Match" not in session.requests[0]
    assert result.outcome == "updated" and copy.read_bytes() == domains(30)


def test_metadata_of_another_url_is_not_used_for_its_etag(tmp_path: Path) -> None:
    old = Subscription(URL, "ads", name="mylist", min_lines=10)
    new = Subscription(URL + "?mirror=2", "ads", name="mylist", min_lines=10)
    _fetch(old, tmp_path, Reply(body=domains(30), headers={"ETag": '"v1"'}))
    _, session = _fetch(new, tmp_path, Reply(body=domains(30)))
    assert "If-None-Match" not in session.requests[0]


def test_a_gz_file_and_gzip_content_encoding_are_unpacked(tmp_path: Path) -> None:
    body = domains(300)
    sub = Subscription(URL + ".gz", "ads", min_lines=10)
    result, _ = _fetch(sub, tmp_path, Reply(body=gzip.compress(body)))
    assert result.ok and result.entries == 300
    copy = local_copy(sub, tmp_path)
    assert copy is not None and copy.read_bytes() == body

    sub2 = Subscription(URL, "ads", min_lines=10)
    enc = {"Content-Encoding": "gzip"}
    result, _ = _fetch(sub2, tmp_path, Reply(body=gzip.compress(body), headers=enc))
    assert result.ok and result.entries == 300
    # a .gz file served with Content-Encoding gzip as well: two layers
    sub3 = Subscription(URL + "?double", "ads", min_lines=10)
    result, _ = _fetch(sub3, tmp_path, Reply(body=gzip.compress(gzip.compress(body)), headers=enc))
    assert result.ok and result.entries == 300
    # several gzip members, as `cat a.gz b.gz` makes
    sub4 = Subscription(URL + "?members", "ads", min_lines=10)
    two = gzip.compress(body[:1000]) + gzip.compress(body[1000:])
    result, _ = _fetch(sub4, tmp_path, Reply(body=two))
    assert result.ok and result.entries == 300


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda b: gzip.compress(b)[:-20], "parse"),  # cut: the trailer is missing
        (lambda b: gzip.compress(b)[:-8] + b"\0\0\0\0" + gzip.compress(b)[-4:], "parse"),  # CRC
        (lambda b: gzip.compress(b) + b"trailing junk", "parse"),
        (lambda b: b"\x1f\x8b" + b"\0" * 100, "parse"),
    ],
)
def test_a_damaged_gzip_body_is_refused(
    tmp_path: Path, make: Callable[[bytes], bytes], code: str
) -> None:
    sub = Subscription(URL + ".gz", "ads", min_lines=10)
    result, _ = _fetch(sub, tmp_path, Reply(body=make(domains(300))))
    assert result.error is not None and result.error.code == code
    assert local_copy(sub, tmp_path) is None
    assert [n for n in _files(tmp_path) if n.endswith(".tmp")] == []


def test_a_gzip_bomb_stops_at_the_unpacked_cap(tmp_path: Path) -> None:
    bomb = gzip.compress(b"a" * (64 << 20))  # about 64 KiB on the wire
    sub = Subscription(URL + ".gz", "ads", max_bytes=1 << 20)
    result, _ = _fetch(sub, tmp_path, Reply(body=bomb))
    assert result.error is not None and result.error.code == "too_large"
    assert "unpacked" in result.error.message
    assert [n for n in _files(tmp_path) if n.endswith(".tmp")] == []


def test_a_content_length_over_the_cap_is_refused_before_the_body(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", max_bytes=1000)
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(10), headers={"Content-Length": "5000"}))
    assert result.error is not None and result.error.code == "too_large"
    assert "5000" in result.error.message and result.http_status == 200


def test_5xx_and_429_are_retried_with_full_jitter_and_4xx_is_not(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10, retries=3, backoff=2.0)
    session = Session(Reply(503), Reply(429), Reply(body=domains(20)))
    sleeps: list[float] = []
    result = fetch(sub, tmp_path, session=session, sleep=sleeps.append)  # type: ignore[arg-type]
    assert result.ok and result.attempts == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 2.0 and 0 <= sleeps[1] <= 4.0

    session = Session(Reply(404))
    sleeps.clear()
    result = fetch(sub, tmp_path, session=session, sleep=sleeps.append)  # type: ignore[arg-type]
    assert result.error is not None and result.error.code == "http"
    assert "404" in result.error.message and URL in result.error.message
    assert result.attempts == 1 and sleeps == [] and result.http_status == 404

    session = Session(Reply(500))
    result = fetch(sub, tmp_path, session=session, sleep=sleeps.append)  # type: ignore[arg-type]
    assert result.error is not None and result.error.code == "http"
    assert result.attempts == 4 and len(session.requests) == 4 and result.http_status == 500


def test_retry_after_is_honoured_up_to_the_cap(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10, backoff=0.0)
    session = Session(Reply(429, headers={"Retry-After": "7"}), Reply(body=domains(20)))
    sleeps: list[float] = []
    fetch(sub, tmp_path, session=session, sleep=sleeps.append)  # type: ignore[arg-type]
    assert sleeps == [7.0]
    session = Session(Reply(503, headers={"Retry-After": "86400"}), Reply(body=domains(20)))
    sleeps.clear()
    fetch(sub, tmp_path, session=session, sleep=sleeps.append)  # type: ignore[arg-type]
    assert sleeps == [subscribe.MAX_BACKOFF]


def test_a_broken_connection_is_retried_then_reported(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10, retries=1, backoff=0)
    result, session = _fetch(sub, tmp_path, Reply(body=domains(50), fail_after=100))
    assert result.error is not None and result.error.code == "http"
    assert "after 100 bytes" in result.error.message and result.attempts == 2
    assert len(session.requests) == 2
    assert local_copy(sub, tmp_path) is None


def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    reply = Reply(body=domains(20), url="http://evil.example.test/list.txt")
    result, _ = _fetch(sub, tmp_path, reply)
    assert result.error is not None and result.error.code == "http"
    assert "plain http" in result.error.message


def test_a_plain_http_subscription_warns_in_its_result(tmp_path: Path) -> None:
    sub = Subscription("http://mirror.example.test/list.txt", "ads", min_lines=10)
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(20)))
    assert result.ok and any("no integrity" in w for w in result.warnings)
    assert status(sub, tmp_path, T0)["plain_http"] is True


def test_a_full_disk_keeps_the_old_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = Subscription(URL, "ads", min_lines=10)
    _fetch(sub, tmp_path, Reply(body=domains(20)))
    copy = local_copy(sub, tmp_path)
    assert copy is not None

    real_replace = os.replace

    def full(src: str, dst: str) -> None:
        if str(dst).endswith(".list"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(25)))
    assert result.error is not None and result.error.code == "disk"
    assert "No space left" in result.error.message and URL in result.error.message
    assert copy.read_bytes() == domains(20)
    assert [n for n in _files(tmp_path) if n.endswith(".tmp")] == []


def test_an_unusable_state_directory_is_a_disk_error_not_an_exception(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    result, _ = _fetch(Subscription(URL, "ads"), blocker, Reply(body=domains(200)))
    assert result.error is not None and result.error.code == "disk"
    assert result.path is None


def test_stale_temporaries_of_this_subscription_only_are_removed(tmp_path: Path) -> None:
    sub = Subscription(URL, "ads", name="a", min_lines=10)
    directory = tmp_path / "subscriptions"
    directory.mkdir()
    mine = [".a.list-abc123_x.tmp", ".a.json-zz9.tmp", ".a.list.prev-q1w2e3.tmp"]
    theirs = [".a.list-foo.list-abc12345.tmp", ".b.list-abc12345.tmp", "a.list.tmp"]
    for n in mine + theirs:
        (directory / n).write_bytes(b"partial")
    result, _ = _fetch(sub, tmp_path, Reply(body=domains(20)))
    assert result.ok
    left = set(_files(tmp_path))
    assert not left & set(mine)
    assert set(theirs) <= left


def test_every_error_code_is_documented() -> None:
    for code in subscribe.ERROR_CODES:
        assert f"``{code}``" in (subscribe.__doc__ or "")
