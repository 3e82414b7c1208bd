"""The feed client against a real HTTP(S) server on loopback (R40-R42 of RELIABILITY.md).

Every rejection is checked the way a parent would care about it: the lists in force before the
bad feed are still the ones in force after it (a blocked name stays blocked), the error names the
feed, the list and the reason, and the failure is counted. The SIGKILL and full-disk cases run
the real sync in a subprocess (``python -m guardian_dns.feed``) and kill or starve it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from guardian_dns import feed, feedsign
from guardian_dns.feed import FeedConfig, SyncResult, SyncState
from tests.support.feedserver import FeedServer, TestList, TlsFiles, make_tls, write_feed

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCKED = "blocked.example.test"

ADULT = f"{BLOCKED}\nporn.example\nadult-site.example\n"
GAMBLING = "0.0.0.0 casino.example\n0.0.0.0 poker.example\n"


def base_lists() -> list[TestList]:
    return [
        TestList("adult", ADULT),
        TestList("gambling", GAMBLING, category="gambling", format="hosts", gzip=True),
    ]


class Env:
    """One feed directory served on loopback, one client state directory, one signing key."""

    def __init__(
        self,
        tmp: Path,
        server: FeedServer,
        key: feedsign.SecretKey,
        tls: TlsFiles | None = None,
    ) -> None:
        self.tmp = tmp
        self.tls = tls
        self.root = tmp / "feed"
        self.state = str(tmp / "state")
        self.server = server
        self.key = key
        self.pub = key.public_key().to_text()
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy from the environment: loopback only

    def cfg(self, **kw: Any) -> FeedConfig:
        settings: dict[str, Any] = {
            "url": self.server.url,
            "keys": (self.pub,),
            "retries": 2,
            "backoff": 0.01,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
        }
        settings.update(kw)
        return FeedConfig(**settings)

    def publish(self, test_lists: Sequence[TestList], serial: int, **kw: Any) -> dict[str, Any]:
        kw.setdefault("key", self.key)
        return write_feed(self.root, test_lists, serial=serial, **kw)

    def sync(self, cfg: FeedConfig | None = None, **kw: Any) -> SyncResult:
        return feed.sync(cfg or self.cfg(), self.state, session=self.session, **kw)

    def list_path(self, doc: dict[str, Any], name: str) -> str:
        return "/" + next(item["url"] for item in doc["lists"] if item["name"] == name)

    def in_force(self) -> dict[str, bytes]:
        return {fl.name: Path(fl.path).read_bytes() for fl in feed.current_lists(self.state)}


@pytest.fixture(scope="module")
def key() -> feedsign.SecretKey:
    return feedsign.SecretKey.generate("test feed key")


@pytest.fixture
def env(tmp_path: Path, key: feedsign.SecretKey) -> Iterator[Env]:
    (tmp_path / "feed").mkdir()
    with FeedServer(tmp_path / "feed") as server:
        e = Env(tmp_path, server, key)
        yield e
        e.session.close()


@pytest.fixture
def synced(env: Env) -> Env:
    """Serial 1 (adult, gambling) in force."""
    env.publish(base_lists(), 1)
    result = env.sync()
    assert result.ok and result.serial == 1, result
    return env


def leftovers(state: str, *, staged: bool = True) -> list[str]:
    """Temporary files and partial sets under the feed directory, and (``staged``) downloads
    staged for a sync that has not finished."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(state, "feed")):
        for name in filenames + dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), state)
            debris = name.endswith(".tmp") or name.startswith(".partial-")
            if debris or (staged and "incoming" in rel):
                found.append(rel)
    return found


# --- the good path ---------------------------------------------------------------------------


def test_first_sync_puts_the_signed_lists_in_force(env: Env) -> None:
    env.publish(base_lists(), 1)
    result = env.sync()
    assert result.ok and result.changed and result.serial == 1 and result.error is None
    assert {o.name: (o.source, o.entries) for o in result.lists} == {
        "adult": ("downloaded", 3),
        "gambling": ("downloaded", 2),
    }
    lists = feed.current_lists(env.state)
    assert [(fl.name, fl.category, fl.format, fl.serial) for fl in lists] == [
        ("adult", "adult", "domains", 1),
        ("gambling", "gambling", "hosts", 1),
    ]
    # The gzip list is stored decoded: the server's parser reads it as it reads any list.
    assert env.in_force() == {"adult": ADULT.encode(), "gambling": GAMBLING.encode()}
    for fl in lists:
        assert hashlib.sha256(Path(fl.path).read_bytes()).hexdigest() == fl.sha256
    assert leftovers(env.state) == []
    state = SyncState.load(env.state)
    assert state.serial == 1 and state.failures == 0 and state.last_error is None
    assert state.lists["adult"]["entries"] == 3


def test_an_unchanged_feed_costs_one_conditional_get(synced: Env) -> None:
    synced.server.clear_records()
    result = synced.sync()
    assert result.ok and not result.changed and result.serial == 1
    assert "304" in result.message
    (request,) = synced.server.records
    assert request.path == "/manifest.json" and request.status == 304
    assert request.headers.get("If-None-Match") and request.headers.get("If-Modified-Since")


def test_the_same_serial_again_is_nothing_to_do(synced: Env) -> None:
    # Without the validators (a server that ignores them, say), the serial alone decides.
    state = SyncState.load(synced.state)
    state.etag = state.last_modified = None
    state.save(synced.state)
    synced.server.clear_records()
    result = synced.sync()
    assert result.ok and not result.changed and "unchanged" in result.message
    assert synced.server.paths() == ["/manifest.json", "/manifest.json.minisig"]
    assert synced.server.records[0].status == 200


def test_a_forced_sync_skips_the_conditional_get_and_keeps_the_serial(synced: Env) -> None:
    synced.server.clear_records()
    result = synced.sync(force=True)
    assert result.ok and result.changed and result.serial == 1
    first = synced.server.records[0]
    assert first.path == "/manifest.json" and "If-None-Match" not in first.headers
    # Both lists were still intact locally, so neither was downloaded again.
    assert {o.source for o in result.lists} == {"reused"}
    assert [fl.serial for fl in feed.current_lists(synced.state)] == [1, 1]


def test_unchanged_lists_are_not_downloaded_again(synced: Env) -> None:
    old = {fl.name: fl for fl in feed.current_lists(synced.state)}
    changed = [TestList("adult", ADULT + "new.example\n"), base_lists()[1]]
    doc = synced.publish(changed, 2)
    synced.server.clear_records()
    result = synced.sync()
    assert result.ok and result.serial == 2
    assert {o.name: o.source for o in result.lists} == {"adult": "downloaded", "gambling": "reused"}
    assert synced.server.count(synced.list_path(doc, "gambling")) == 0
    assert synced.server.count(synced.list_path(doc, "adult")) == 1
    new = {fl.name: fl for fl in feed.current_lists(synced.state)}
    # The unchanged list is the same file (a hard link), the previous set is kept beside it.
    assert os.stat(new["gambling"].path).st_ino == os.stat(old["gambling"].path).st_ino
    assert new["gambling"].fetched_at == old["gambling"].fetched_at
    assert sorted(os.listdir(os.path.join(synced.state, "feed", "sets"))) == ["1", "2"]
    # A third serial: the set before the previous one is deleted.
    synced.publish([TestList("adult", ADULT + "third.example\n"), base_lists()[1]], 3)
    assert synced.sync().ok
    assert sorted(os.listdir(os.path.join(synced.state, "feed", "sets"))) == ["2", "3"]


def test_bad_lines_are_counted_and_skipped_not_fatal(env: Env) -> None:
    bad = (
        "\ufeffgood-one.example\r\n"
        f"{'a' * 64}.example\r\n"  # a label over 63 octets
        "*\r\n"
        "192.0.2.1\r\n"
        "good-two.example\r\n"
    )
    env.publish([TestList("adult", bad)], 1)
    result = env.sync()
    assert result.ok, result
    (outcome,) = result.lists
    assert (outcome.entries, outcome.invalid) == (2, 3)
    status = feed.status(env.state, env.cfg(), time.time())
    assert status["lists"][0]["invalid"] == 3 and status["lists"][0]["entries"] == 2


def test_two_trusted_keys_during_a_rotation(env: Env, tmp_path: Path) -> None:
    new_key = feedsign.SecretKey.generate("next feed key")
    new_pub = tmp_path / "next.pub"
    new_pub.write_text(new_key.public_key().to_text())
    # One key inline (the base64 line alone), one as a file.
    cfg = env.cfg(keys=(env.key.public_key().to_base64(), str(new_pub)))
    env.publish(base_lists(), 1, key=env.key)
    assert env.sync(cfg).ok
    env.publish([TestList("adult", ADULT + "x.example\n"), base_lists()[1]], 2, key=new_key)
    result = env.sync(cfg)
    assert result.ok and result.serial == 2
    stranger = feedsign.SecretKey.generate("not trusted")
    env.publish(base_lists(), 3, key=stranger)
    result = env.sync(cfg)
    assert result.error == "signature" and "not trusted" in result.message
    assert result.serial == 2


def test_transient_server_errors_are_retried_with_backoff(synced: Env) -> None:
    synced.publish([TestList("adult", ADULT + "y.example\n"), base_lists()[1]], 2)
    synced.server.misbehave("/manifest.json", status=503, times=3)
    synced.server.clear_records()
    waits: list[float] = []
    result = synced.sync(synced.cfg(retries=4, backoff=2.0), sleep=waits.append)
    assert result.ok and result.serial == 2
    assert synced.server.count("/manifest.json") == 4
    # Full jitter: the n-th wait is drawn from [0, backoff * 2**n].
    assert len(waits) == 3 and all(0 <= w <= 2.0 * 2**n for n, w in enumerate(waits))


def test_retries_give_up_after_the_configured_number(synced: Env) -> None:
    synced.server.misbehave("/manifest.json", status=503)
    synced.server.clear_records()
    waits: list[float] = []
    result = synced.sync(synced.cfg(retries=3), sleep=waits.append, force=True)
    assert (result.error, result.serial) == ("http", 1)
    assert "HTTP 503" in result.message
    assert synced.server.count("/manifest.json") == 4 and len(waits) == 3


def test_sync_in_a_child_process(synced: Env) -> None:
    synced.publish([TestList("adult", ADULT + "child.example\n"), base_lists()[1]], 2)
    result = asyncio.run(feed.sync_in_child(synced.cfg(), synced.state, timeout=60))
    assert result.ok and result.serial == 2, result
    assert feed.current_lists(synced.state)[0].serial == 2


def test_the_bundled_blocklists_as_a_feed_built_by_the_publisher(env: Env) -> None:
    from guardian_dns import publish

    for compress in (False, True):
        built = publish.build_feed(
            str(REPO_ROOT / "blocklists"),
            str(env.root),
            publish.key_signer(env.key),
            check_keys=[env.key.public_key()],
            compress=compress,
        )
        result = env.sync()
        assert result.ok and result.serial == built.serial, result
        lists = {fl.name: fl for fl in feed.current_lists(env.state)}
        assert {b.name: b.entries for b in built.lists} == {
            name: fl.entries for name, fl in lists.items()
        }
        assert "adult" in lists and "gambling" in lists
        for b in built.lists:  # decoded, the lists are the publisher's files byte for byte
            assert Path(lists[b.name].path).read_bytes() == Path(b.source).read_bytes()


# --- HTTPS -----------------------------------------------------------------------------------


@pytest.fixture
def tls_env(tmp_path: Path, key: feedsign.SecretKey) -> Iterator[Env]:
    (tmp_path / "feed").mkdir()
    tls = make_tls(tmp_path)
    with FeedServer(tmp_path / "feed", tls=tls) as server:
        e = Env(tmp_path, server, key, tls)
        yield e
        e.session.close()


def test_https_feed_with_a_ca_made_in_the_test(tls_env: Env) -> None:
    assert tls_env.tls is not None and tls_env.server.url.startswith("https://")
    tls_env.publish(base_lists(), 1)
    result = tls_env.sync(tls_env.cfg(ca_file=tls_env.tls.ca))
    assert result.ok and result.serial == 1, result


def test_https_with_an_untrusted_certificate_is_refused(tls_env: Env, tmp_path: Path) -> None:
    assert tls_env.tls is not None
    tls_env.publish(base_lists(), 1)
    assert tls_env.sync(tls_env.cfg(ca_file=tls_env.tls.ca)).ok
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")
    tls_env.publish([TestList("adult", ADULT + "z.example\n"), base_lists()[1]], 2)
    tls_env.server.clear_records()
    result = tls_env.sync(tls_env.cfg(ca_file=other.ca))
    assert result.error == "tls" and result.serial == 1
    assert feed.current_lists(tls_env.state)[0].serial == 1


# --- rejections: the old lists stay in force (R40, R41, R42) --------------------------------


def _flip_list(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), flip=5)


def _cut_list(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), cut_after=10)


def _cut_list_no_length(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), cut_after=10, no_length=True)


def _short_length(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), content_length=10)


def _long_length(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), content_length=10_000)


def _other_file(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), serve=env.list_path(doc, "gambling"))


def _same_size_other_bytes(env: Env, doc: dict[str, Any]) -> None:
    path = env.list_path(doc, "adult")
    size = next(i["size"] for i in doc["lists"] if i["name"] == "adult")
    env.server.misbehave(path, body=b"x" * size)


def _flip_manifest(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave("/manifest.json", flip=40)


def _server_error(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), status=500)


def _not_found(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), status=404)


def _stall(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), stall=30)


def _drip(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), drip=0.2)  # each byte within read_timeout


def _no_signature(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave("/manifest.json.minisig", status=404)


def _content_encoding(env: Env, doc: dict[str, Any]) -> None:
    env.server.misbehave(env.list_path(doc, "adult"), headers={"Content-Encoding": "gzip"})


def _nothing(env: Env, doc: dict[str, Any]) -> None:
    pass


NEW_ADULT = ADULT + "added.example\n"
CHANGED = [TestList("adult", NEW_ADULT), TestList("gambling", GAMBLING, "gambling", "hosts")]

# (id, lists of serial 2, publish keyword arguments, server misbehaviour, code, list named)
REJECTIONS: list[tuple[str, list[TestList], dict[str, Any], Any, str, str | None]] = [
    ("flipped-byte-in-a-list", CHANGED, {}, _flip_list, "sha256", "adult"),
    ("flipped-byte-in-the-manifest", CHANGED, {}, _flip_manifest, "signature", None),
    (
        "signed-by-another-key",
        CHANGED,
        {"key": feedsign.SecretKey.generate("attacker")},
        _nothing,
        "signature",
        None,
    ),
    ("no-signature", CHANGED, {}, _no_signature, "http", None),
    ("body-cut-mid-stream", CHANGED, {}, _cut_list, "network", "adult"),
    ("body-cut-without-length", CHANGED, {}, _cut_list_no_length, "size", "adult"),
    ("content-length-too-short", CHANGED, {}, _short_length, "size", "adult"),
    ("content-length-too-long", CHANGED, {}, _long_length, "size", "adult"),
    ("another-file-served", CHANGED, {}, _other_file, "size", "adult"),
    ("same-size-other-bytes", CHANGED, {}, _same_size_other_bytes, "sha256", "adult"),
    ("http-500-after-retries", CHANGED, {}, _server_error, "http", "adult"),
    ("http-404", CHANGED, {}, _not_found, "http", "adult"),
    ("stalled-server", CHANGED, {}, _stall, "network", "adult"),
    ("server-drips-bytes", CHANGED, {}, _drip, "network", "adult"),
    ("content-encoding", CHANGED, {}, _content_encoding, "http", "adult"),
    (
        "expired",
        CHANGED,
        {"issued": time.time() - 8 * 86400, "expires": time.time() - 3600},
        _nothing,
        "expired",
        None,
    ),
    ("issued-in-the-future", CHANGED, {"issued": time.time() + 86400}, _nothing, "future", None),
    ("unknown-manifest-key", CHANGED, {"extra": {"mirror": "x"}}, _nothing, "manifest", None),
    (
        "list-url-escapes-the-feed",
        [TestList("adult", NEW_ADULT, entry={"url": "../secret"})],
        {},
        _nothing,
        "manifest",
        None,
    ),
    (
        "absolute-list-url",
        [TestList("adult", NEW_ADULT, entry={"url": "http://198.51.100.7/x"})],
        {},
        _nothing,
        "manifest",
        None,
    ),
    (
        "no-valid-entry",
        [TestList("adult", "not a domain\n192.0.2.1\n*\n")],
        {},
        _nothing,
        "parse",
        "adult",
    ),
    (
        "uncompressed-size-lies",
        [TestList("adult", NEW_ADULT, gzip=True, entry={"uncompressed_size": 5})],
        {},
        _nothing,
        "too_large",
        "adult",
    ),
    (
        "not-gzip",
        [TestList("adult", NEW_ADULT, gzip=True, served=b"\x1f\x8bnot gzip at all")],
        {},
        _nothing,
        "gzip",
        "adult",
    ),
    (
        "truncated-gzip",
        [TestList("adult", NEW_ADULT, gzip=True, served=gzip.compress(NEW_ADULT.encode())[:-12])],
        {},
        _nothing,
        "gzip",
        "adult",
    ),
]


@pytest.mark.parametrize(
    ("lists", "publish_kw", "misbehave", "code", "list_name"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
def test_bad_feed_keeps_last_good_lists(
    synced: Env,
    lists: list[TestList],
    publish_kw: dict[str, Any],
    misbehave: Any,
    code: str,
    list_name: str | None,
) -> None:
    before = synced.in_force()
    doc = synced.publish(lists, 2, **publish_kw)
    misbehave(synced, doc)
    start = time.monotonic()
    result = synced.sync(synced.cfg(read_timeout=0.5))
    assert not result.ok and not result.changed
    assert (result.error, result.list_name) == (code, list_name), result
    assert result.url == synced.server.url + "manifest.json"  # the error names the feed
    assert result.serial == 1
    assert time.monotonic() - start < 10
    # The lists in force are byte for byte the old ones: a blocked name stays blocked.
    assert synced.in_force() == before
    assert BLOCKED in before["adult"].decode()
    state = SyncState.load(synced.state)
    assert state.failures == 1 and state.serial == 1
    assert state.last_error is not None and state.last_error["error"] == code
    status = feed.status(synced.state, synced.cfg(), time.time())
    assert status["last_error"]["error"] == code and status["serial"] == 1
    assert any(code in w for w in status["warnings"])
    # Once the feed is right again, the next sync puts it in force and leaves nothing behind.
    synced.server.behave()
    synced.publish(CHANGED, 3)
    result = synced.sync()
    assert result.ok and result.serial == 3, result
    assert leftovers(synced.state) == []
    assert SyncState.load(synced.state).failures == 0


def test_a_cut_connection_is_retried_before_it_fails(synced: Env) -> None:
    doc = synced.publish(CHANGED, 2)
    path = synced.list_path(doc, "adult")
    synced.server.misbehave(path, cut_after=10, times=2)
    synced.server.clear_records()
    result = synced.sync(synced.cfg(retries=2))
    assert result.ok and result.serial == 2, result
    assert synced.server.count(path) == 3


def test_rollback_to_a_lower_serial_is_refused(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.publish(base_lists(), 5)
    assert env.sync().ok
    before = env.in_force()
    env.publish(CHANGED, 4)  # validly signed, but older than what we hold: a replay
    result = env.sync()
    assert (result.error, result.serial) == ("rollback", 5)
    assert env.in_force() == before
    assert any("ROLLBACK" in r.message and r.levelname == "ERROR" for r in caplog.records)
    # Even if the set in force were lost, state.json keeps the serial already accepted.
    state = SyncState.load(env.state)
    assert state.serial == 5


def test_rollback_is_refused_even_without_state_json(env: Env) -> None:
    env.publish(base_lists(), 5)
    assert env.sync().ok
    os.unlink(os.path.join(env.state, "feed", "state.json"))
    env.publish(CHANGED, 4)
    assert env.sync().error == "rollback"


def test_a_304_to_a_plain_get_is_an_error(synced: Env) -> None:
    synced.server.misbehave("/manifest.json", status=304)
    result = synced.sync(force=True)
    assert result.error == "http" and result.serial == 1


# --- size caps: the download stops at the cap (R42) ------------------------------------------

CAP = 256 * 1024


def big_domains(n: int, tag: str) -> str:
    return "".join(f"host-{i}-{tag}.example\n" for i in range(n))


def test_a_list_announced_ten_times_the_cap_is_not_downloaded(synced: Env) -> None:
    text = big_domains(10 * CAP // 24, "big")
    assert len(text) > 10 * CAP * 0.9
    doc = synced.publish([TestList("adult", text)], 2)
    synced.server.clear_records()
    result = synced.sync(synced.cfg(max_list_bytes=CAP))
    assert (result.error, result.list_name) == ("too_large", "adult")
    assert synced.server.count(synced.list_path(doc, "adult")) == 0
    assert feed.current_lists(synced.state)[0].serial == 1


def test_a_body_ten_times_the_cap_is_cut_at_the_announced_size(synced: Env) -> None:
    cap = 4 * 1024 * 1024
    doc = synced.publish([TestList("adult", big_domains(1000, "small"))], 2)
    path = synced.list_path(doc, "adult")
    huge = b"endless.example\n" * (10 * cap // 16)  # ten times the cap, no Content-Length
    synced.server.misbehave(path, body=huge, no_length=True)
    result = synced.sync(synced.cfg(max_list_bytes=cap))
    assert (result.error, result.list_name) == ("size", "adult")
    assert "longer than" in result.message
    (request,) = synced.server.requests_for(path)
    assert synced.server.wait_done(request)  # the handler sees the hang-up on a write
    assert request.bytes_sent < len(huge) // 2
    assert feed.current_lists(synced.state)[0].serial == 1


def test_a_manifest_over_its_cap_is_refused(synced: Env) -> None:
    synced.publish(CHANGED, 2)
    synced.server.misbehave("/manifest.json", body=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    result = synced.sync(synced.cfg(max_manifest_bytes=1024 * 1024))
    assert result.error == "too_large" and result.serial == 1


def test_a_gzip_bomb_is_stopped_at_the_cap(synced: Env) -> None:
    bomb = gzip.compress(b"a" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in about 64 KiB
    assert len(bomb) < CAP
    lst = TestList("adult", NEW_ADULT, gzip=True, served=bomb)
    synced.publish([lst], 2)
    start = time.monotonic()
    result = synced.sync(synced.cfg(max_list_bytes=CAP))
    assert (result.error, result.list_name) == ("too_large", "adult"), result
    assert time.monotonic() - start < 5
    assert feed.current_lists(synced.state)[0].serial == 1
    assert leftovers(synced.state, staged=False) == []


# --- resumable, and robust on disk -----------------------------------------------------------


def test_a_cut_sync_resumes_without_downloading_finished_lists(synced: Env) -> None:
    three = [
        TestList("adult", NEW_ADULT),
        TestList("gambling", GAMBLING + "0.0.0.0 slots.example\n", "gambling", "hosts"),
        TestList("scam", "scam.example\n", category="scam"),
    ]
    doc = synced.publish(three, 2)
    synced.server.misbehave(synced.list_path(doc, "scam"), status=404)
    first = synced.sync()
    assert (first.error, first.list_name) == ("http", "scam")
    synced.server.behave()
    synced.server.clear_records()
    result = synced.sync()
    assert result.ok and result.serial == 2, result
    assert {o.name: o.source for o in result.lists} == {
        "adult": "resumed",
        "gambling": "resumed",
        "scam": "downloaded",
    }
    assert synced.server.count(synced.list_path(doc, "adult")) == 0
    assert synced.server.count(synced.list_path(doc, "scam")) == 1
    assert leftovers(synced.state) == []


def test_a_corrupt_pointer_falls_back_to_the_newest_complete_set(synced: Env) -> None:
    synced.publish(CHANGED, 2)
    assert synced.sync().ok
    pointer = Path(synced.state, "feed", "current")
    for garbage in (b"", b"{not json", b'{"set": "../../etc"}', b'{"set": "99"}'):
        pointer.write_bytes(garbage)
        lists = feed.current_lists(synced.state)
        assert [fl.serial for fl in lists] == [2, 2]
    # A damaged file in the newest set: the fallback verifies hashes and takes the previous one.
    pointer.write_bytes(b"")
    adult = Path(synced.state, "feed", "sets", "2", "adult.list")
    data = adult.read_bytes()
    adult.write_bytes(data[:-2] + b"x\n")
    assert [fl.serial for fl in feed.current_lists(synced.state)] == [1, 1]
    # A damaged file named by an intact pointer (a different size) is caught as well.
    pointer.write_bytes(json.dumps({"set": "2", "serial": 2, "previous": "1"}).encode())
    adult.write_bytes(data + b"extra.example\n")
    assert [fl.serial for fl in feed.current_lists(synced.state)] == [1, 1]
    # The next sync repairs the pointer and rebuilds what is damaged.
    adult.write_bytes(data[:-2] + b"x\n")
    pointer.write_bytes(b"garbage")
    synced.publish(CHANGED, 3)
    result = synced.sync()
    assert result.ok and result.serial == 3
    assert json.loads(pointer.read_bytes())["set"] == "3"
    assert Path(feed.current_lists(synced.state)[0].path).read_bytes() == NEW_ADULT.encode()


def test_no_feed_on_disk_means_no_feed_lists_and_a_warning(env: Env) -> None:
    assert feed.current_lists(env.state) == []
    status = feed.status(env.state, env.cfg(), time.time())
    assert status["serial"] is None and status["stale"]
    assert "no feed lists" in status["warnings"][0]


def test_an_unreachable_feed_keeps_the_lists_and_turns_stale(synced: Env) -> None:
    cfg = synced.cfg(url="http://127.0.0.1:9/", retries=0, max_age_warning=3600)
    result = synced.sync(cfg)
    assert result.error == "network" and result.serial == 1
    assert feed.current_lists(synced.state)[0].serial == 1
    status = feed.status(synced.state, cfg, time.time() + 2 * 3600)
    assert status["stale"] and status["serial"] == 1
    assert any("last confirmed" in w for w in status["warnings"])


# --- a killed sync and a full disk: subprocesses -----------------------------------------------


def child_sync(cfg: FeedConfig, state: str, *, fsize: int | None = None) -> subprocess.Popen[bytes]:
    """``python -m guardian_dns.feed`` on ``cfg``; with ``fsize``, RLIMIT_FSIZE and SIGXFSZ
    ignored, so a write past the limit fails with EFBIG as a full disk fails with ENOSPC."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_PROXY"] = "127.0.0.1"
    with tempfile.TemporaryFile() as request:
        request.write(json.dumps({"config": cfg.to_json(), "state_dir": state}).encode())
        request.seek(0)
        return subprocess.Popen(
            [sys.executable, "-m", "guardian_dns.feed"],
            stdin=request,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
            preexec_fn=limit,
        )


def big_lists(tag: str, n: int = 20000) -> list[TestList]:
    return [
        TestList("adult", f"{BLOCKED}\n" + big_domains(n, f"a{tag}")),
        TestList("gambling", big_domains(n, f"g{tag}"), category="gambling", gzip=True),
        TestList("scam", big_domains(n, f"s{tag}"), category="scam"),
    ]


def expected_hashes(test_lists: Sequence[TestList]) -> dict[str, str]:
    return {
        tl.name: hashlib.sha256(
            tl.text.encode() if isinstance(tl.text, str) else tl.text
        ).hexdigest()
        for tl in test_lists
    }


def assert_complete(state: str, allowed: dict[int, dict[str, str]]) -> int:
    """current_lists is one complete set of an allowed serial, every byte as published."""
    lists = feed.current_lists(state)
    assert lists, "no lists in force"
    serials = {fl.serial for fl in lists}
    assert len(serials) == 1
    serial = serials.pop()
    assert serial in allowed
    got = {fl.name: hashlib.sha256(Path(fl.path).read_bytes()).hexdigest() for fl in lists}
    assert got == allowed[serial]
    return serial


def test_sigkill_at_random_moments_never_leaves_an_incomplete_set(env: Env) -> None:
    rng = random.Random(20)
    cfg = env.cfg(read_timeout=5.0)
    published = {1: big_lists("1")}
    env.publish(published[1], 1)
    assert env.sync(cfg).ok
    hashes = {1: expected_hashes(published[1])}
    # Calibrate: how long a whole sync takes after the child asked for the manifest.
    published[2] = big_lists("2")
    env.publish(published[2], 2)
    hashes[2] = expected_hashes(published[2])
    env.server.clear_records()
    proc = child_sync(cfg, env.state)
    assert env.server.wait_for_request("/manifest.json", timeout=30)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    window = time.monotonic() - t0
    assert proc.returncode == 0, err.decode()
    assert_complete(env.state, {2: hashes[2]})

    serial = 2
    outcomes = {"old": 0, "new": 0, "alive": 0, "debris": 0, "partial": 0}
    for _ in range(20):
        serial += 1
        published[serial] = big_lists(str(serial))
        hashes[serial] = expected_hashes(published[serial])
        env.publish(published[serial], serial)
        env.server.clear_records()
        proc = child_sync(cfg, env.state)
        assert env.server.wait_for_request("/manifest.json", timeout=30)
        time.sleep(rng.uniform(0, window))
        if proc.poll() is None:
            outcomes["alive"] += 1
        proc.kill()  # SIGKILL, to the one PID we started
        proc.communicate(timeout=30)
        got = assert_complete(env.state, {serial - 1: hashes[serial - 1], serial: hashes[serial]})
        outcomes["old" if got == serial - 1 else "new"] += 1
        debris = leftovers(env.state)
        outcomes["debris"] += bool(debris)  # killed with a write under way
        outcomes["partial"] += any(".partial-" in d or d.endswith(".tmp") for d in debris)
        # The next sync finishes the job and leaves no temporary behind.
        result = env.sync(cfg)
        assert result.ok and result.serial == serial, result
        assert_complete(env.state, {serial: hashes[serial]})
        assert leftovers(env.state) == []
        assert len(os.listdir(os.path.join(env.state, "feed", "sets"))) <= 2
    print(f"SIGKILL outcomes over 20 kills: {outcomes} (window {window:.2f} s)")
    assert outcomes["alive"] >= 5  # kills really hit a running sync
    assert outcomes["debris"] >= 1  # and some of them a sync in the middle of writing


def test_a_full_disk_keeps_the_old_set_and_says_disk(env: Env) -> None:
    env.publish(big_lists("1", 5000), 1)
    assert env.sync().ok
    before = env.in_force()
    env.publish(big_lists("2", 20000), 2)  # about 500 KB per list: over the 256 KiB limit
    proc = child_sync(env.cfg(), env.state, fsize=256 * 1024)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err.decode()
    result = SyncResult.from_json(json.loads(out))
    assert result.error == "disk" and result.serial == 1, result
    assert "too large" in result.message.lower() or "space" in result.message.lower()
    assert env.in_force() == before
    state = SyncState.load(env.state)
    assert state.last_error is not None and state.last_error["error"] == "disk"
    # With room again, the next sync succeeds and no partial file is left anywhere.
    result = env.sync()
    assert result.ok and result.serial == 2
    assert leftovers(env.state) == []
