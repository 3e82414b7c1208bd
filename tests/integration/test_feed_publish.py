"""``guardian-dns feed keygen`` and ``feed build`` as a publisher runs them, served as a client sees
it.

Every command is the real CLI in a subprocess (``python -m guardian_dns feed ...``) on a small list
directory in ``tmp_path``; the feed it builds is served by ``python -m http.server`` bound to
127.0.0.1 only and fetched over HTTP with urllib (no proxy), then checked the way a client checks
it: the signature with ``feedsign.verify`` and the published public key, every list's size and
SHA-256 as served, and gzip-compressed lists after gunzip. A bad list must stop the build with
exit code 1, name the file and line, and leave the feed already published untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from guardian_dns import feedsign
from tests.support.daemon import REPO_ROOT

pytestmark = pytest.mark.integration

ADULT = "# adult test list\n0.0.0.0 adult-one.test\n0.0.0.0 adult-two.test\n0.0.0.0 1.2.3.4\n"
GAMES = "games-one.test\ngames-two.test\n*.games-three.test\n"
MANIFEST_KEYS = ["format", "version", "serial", "issued", "expires", "lists"]
LIST_KEYS = [
    "name",
    "category",
    "format",
    "url",
    "size",
    "sha256",
    "encoding",
    "uncompressed_size",
    "entries",
]
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


@dataclass
class Run:
    code: int
    out: str
    err: str


def feed(*args: str | Path) -> Run:
    argv = [sys.executable, "-m", "guardian_dns", "feed", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=REPO_ROOT)
    return Run(done.returncode, done.stdout, done.stderr)


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 and a port of its choosing; yields its base URL.

    Ready when it prints its "Serving HTTP on ... port N" line, which it does after listen().
    """
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"port (\d+)", line)
        assert match, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# No proxy from the environment: the request must go to 127.0.0.1 and nowhere else.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> bytes:
    with _OPENER.open(url, timeout=10) as response:
        data: bytes = response.read()
        return data


@dataclass
class Publisher:
    root: Path

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def out(self) -> Path:
        return self.root / "www" / "feed"

    def keygen(self, *args: str) -> Run:
        return feed("keygen", "--out", self.keys, *args)

    def build(self, *args: str) -> Run:
        key = self.keys / "guardian-feed.key"
        return feed("build", "--lists", self.lists, "--key", key, "--out", self.out, *args)

    def trusted(self) -> list[feedsign.PublicKey]:
        pub = self.keys / "guardian-feed.pub"
        return [feedsign.PublicKey.parse(pub.read_text(), str(pub))]


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    p = Publisher(tmp_path)
    p.lists.mkdir()
    (p.lists / "adult.hosts").write_text(ADULT)
    (p.lists / "games.txt").write_text(GAMES)
    (p.lists / "games-extra.txt").write_text("more-games.test\n")
    (p.lists / "README.md").write_text("# not a list\n")
    (p.lists / "services").mkdir()
    (p.lists / "services" / "tiktok.txt").write_text("tiktok.test\n")
    r = p.keygen("--comment", "test publisher")
    assert r.code == 0, r.err
    return p


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- keygen ----------------------------------------------------------------------------------


def test_keygen_writes_a_private_secret_key_and_a_public_key(publisher: Publisher) -> None:
    secret = publisher.keys / "guardian-feed.key"
    pub = publisher.keys / "guardian-feed.pub"
    assert _mode(secret) == 0o600
    assert _mode(pub) == 0o644
    key = feedsign.SecretKey.parse(secret.read_text(), str(secret))
    assert key.comment == "test publisher"
    [trusted] = publisher.trusted()
    assert (trusted.key_id, trusted.key) == (key.key_id, key.public)


def test_keygen_refuses_to_replace_a_key_without_force(publisher: Publisher) -> None:
    secret = publisher.keys / "guardian-feed.key"
    before = secret.read_bytes()
    r = publisher.keygen()
    assert r.code == 1
    assert f"{secret}: exists; pass --force" in r.err
    assert r.out == ""
    assert secret.read_bytes() == before
    r = publisher.keygen("--force")
    assert r.code == 0, r.err
    assert secret.read_bytes() != before
    assert _mode(secret) == 0o600
    assert f"key id {publisher.trusted()[0].key_id_hex}" in r.out


# --- build and serve -------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["identity", "gzip"])
def test_a_built_feed_served_by_http_server_verifies(publisher: Publisher, compress: bool) -> None:
    args = ["--category", "games-extra.txt=games"] + (["--gzip"] if compress else [])
    r = publisher.build(*args)
    assert r.code == 0, r.err
    # Bad lines are reported with file:line, and do not stop the build.
    assert f"warning: {publisher.lists / 'adult.hosts'}:4: skipped '1.2.3.4'" in r.err
    assert "services/: subdirectory skipped" in r.err
    assert "README.md: skipped" in r.err

    with http_server(publisher.out) as base:
        manifest = fetch(base + "manifest.json")
        signature = fetch(base + "manifest.json.minisig")
        verified = feedsign.verify(manifest, signature, publisher.trusted())
        doc = json.loads(manifest)
        served = {item["name"]: fetch(base + item["url"]) for item in doc["lists"]}

    assert list(doc) == MANIFEST_KEYS
    assert (doc["format"], doc["version"]) == ("guardian-dns feed", 1)
    assert f"serial:{doc['serial']}" in verified.trusted_comment
    assert TIME_RE.match(doc["issued"]) and TIME_RE.match(doc["expires"])
    issued = datetime.fromisoformat(doc["issued"])
    expires = datetime.fromisoformat(doc["expires"])
    assert (expires - issued).days == 7
    assert doc["serial"] >= int(issued.timestamp())

    by_name = {item["name"]: item for item in doc["lists"]}
    assert sorted(by_name) == ["adult", "games", "games-extra"]
    expected = {
        "adult": ("adult", "hosts", ADULT, 2, "adult.hosts"),
        "games": ("games", "domains", GAMES, 3, "games.txt"),
        "games-extra": ("games", "domains", "more-games.test\n", 1, "games-extra.txt"),
    }
    for name, item in by_name.items():
        category, fmt, text, entries, filename = expected[name]
        assert list(item) == LIST_KEYS
        body = served[name]
        assert (item["category"], item["format"], item["entries"]) == (category, fmt, entries)
        assert item["size"] == len(body)
        assert item["sha256"] == hashlib.sha256(body).hexdigest()
        if compress:
            assert (item["url"], item["encoding"]) == (f"lists/{filename}.gz", "gzip")
            body = gzip.decompress(body)
        else:
            assert (item["url"], item["encoding"]) == (f"lists/{filename}", "identity")
        assert body == text.encode()
        assert item["uncompressed_size"] == len(body)


def test_minisign_verifies_a_built_feed(publisher: Publisher) -> None:
    from tests.support import require_tool

    minisign = require_tool("minisign", "minisign")
    assert publisher.build().code == 0
    done = subprocess.run(
        [minisign, "-V", "-p", publisher.keys / "guardian-feed.pub", "-m", "manifest.json"],
        cwd=publisher.out,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_rebuild_raises_the_serial_and_removes_dropped_lists(publisher: Publisher) -> None:
    r = publisher.build("--gzip")
    assert r.code == 0, r.err
    first = json.loads((publisher.out / "manifest.json").read_bytes())
    (publisher.lists / "games-extra.txt").unlink()
    r = publisher.build()
    assert r.code == 0, r.err
    second = json.loads((publisher.out / "manifest.json").read_bytes())
    assert second["serial"] > first["serial"]
    published = sorted(p.name for p in (publisher.out / "lists").iterdir())
    assert published == ["adult.hosts", "games.txt"]  # the .gz files of the first build are gone
    feedsign.verify(
        (publisher.out / "manifest.json").read_bytes(),
        (publisher.out / "manifest.json.minisig").read_text(),
        publisher.trusted(),
    )
    # Nothing half-written is left beside the feed: only the build lock.
    beside = sorted(p.name for p in publisher.out.parent.iterdir())
    assert beside == [".feed.build-lock", "feed"]


def test_an_explicit_serial_must_go_up(publisher: Publisher) -> None:
    assert publisher.build("--serial", "100").code == 0
    r = publisher.build("--serial", "100")
    assert r.code == 1
    assert "--serial 100: not above the previous serial 100" in r.err
    assert publisher.build("--serial", "101").code == 0
    doc = json.loads((publisher.out / "manifest.json").read_bytes())
    assert doc["serial"] == 101


def test_a_bad_list_stops_the_build_and_keeps_the_published_feed(publisher: Publisher) -> None:
    assert publisher.build().code == 0
    before = {p: p.read_bytes() for p in publisher.out.rglob("*") if p.is_file()}
    (publisher.lists / "scam.txt").write_text("# only bad lines\n10.0.0.1\nnot a name at all\n")
    r = publisher.build()
    assert r.code == 1
    assert r.out == ""
    bad = publisher.lists / "scam.txt"
    assert f"guardian-dns feed build: {bad}: no valid entries (3 lines, 2 bad)" in r.err
    assert f"first: {bad}:2: skipped '10.0.0.1'" in r.err
    after = {p: p.read_bytes() for p in publisher.out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in publisher.out.parent.iterdir()) == [".feed.build-lock", "feed"]


def test_a_list_name_that_cannot_be_published_is_named(publisher: Publisher) -> None:
    (publisher.lists / "Adult Extra.txt").write_text("x.test\n")
    r = publisher.build()
    assert r.code == 1
    assert f"{publisher.lists / 'Adult Extra.txt'}: the file name before the first '.'" in r.err
    assert not publisher.out.exists()


def test_a_public_key_is_not_a_signing_key(publisher: Publisher) -> None:
    pub = publisher.keys / "guardian-feed.pub"
    r = feed("build", "--lists", publisher.lists, "--key", pub, "--out", publisher.out)
    assert r.code == 1
    assert f"{pub}: this is a public key; signing needs the secret key" in r.err


def test_the_stock_minisign_tool_can_sign_the_build(publisher: Publisher) -> None:
    from tests.support import require_tool

    minisign = require_tool("minisign", "minisign")
    sec, pub = publisher.root / "mini.key", publisher.root / "mini.pub"
    done = subprocess.run(
        [minisign, "-G", "-W", "-p", pub, "-s", sec], capture_output=True, timeout=30
    )
    assert done.returncode == 0
    r = feed(
        "build", "--lists", publisher.lists, "--key", sec, "--out", publisher.out,
        "--minisign", "--pub", pub,
    )  # fmt: skip
    assert r.code == 0, r.err
    trusted = [feedsign.PublicKey.parse(pub.read_text(), str(pub))]
    got = feedsign.verify(
        (publisher.out / "manifest.json").read_bytes(),
        (publisher.out / "manifest.json.minisig").read_text(),
        trusted,
    )
    assert got.key_id_hex in r.out
