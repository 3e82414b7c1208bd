"""The feed client's pieces that need no server: the manifest contract, the configuration, the
interval with jitter, the key loading, the state file and the status of an empty state."""

from __future__ import annotations

import copy
import json
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardian_dns import feed, feedsign
from guardian_dns.feed import FeedConfig, FeedError, SyncResult, SyncState

SHA = "ab" * 32

GOOD: dict[str, Any] = {
    "format": "guardian-dns feed",
    "version": 1,
    "serial": 7,
    "issued": "2026-01-31T12:00:00Z",
    "expires": "2026-02-07T12:00:00.5Z",
    "lists": [
        {
            "name": "adult",
            "category": "adult",
            "format": "hosts",
            "url": "lists/adult.hosts.gz",
            "size": 10,
            "sha256": SHA,
            "encoding": "gzip",
            "uncompressed_size": 30,
            "entries": 2,
        },
        {
            "name": "scam_2",
            "category": "scam",
            "format": "domains",
            "url": "scam.txt",
            "size": 10,
            "sha256": SHA,
            "encoding": "identity",
            "uncompressed_size": 10,
            "entries": 1,
        },
    ],
}


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_a_good_manifest_parses() -> None:
    m = feed.parse_manifest(encoded(GOOD))
    assert m.serial == 7
    assert m.expires - m.issued == 7 * 86400 + 0.5
    assert [(e.name, e.encoding, e.uncompressed_size) for e in m.lists] == [
        ("adult", "gzip", 30),
        ("scam_2", "identity", 10),
    ]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return edit


_DELETE = object()

BAD_MANIFESTS = [
    ("unknown-key", _set("mirror", "x"), "unknown key(s) mirror"),
    ("missing-key", _set("expires", _DELETE), "missing key(s) expires"),
    ("unknown-list-key", _set("lists.0.mirror", "x"), "lists[0]: unknown key(s) mirror"),
    ("other-format", _set("format", "something else"), "format"),
    ("version-2", _set("version", 2), "only version 1"),
    ("serial-zero", _set("serial", 0), "serial"),
    ("serial-bool", _set("serial", True), "serial"),
    ("serial-string", _set("serial", "8"), "serial"),
    ("serial-over-2-63", _set("serial", 1 << 63), "above the limit"),
    ("time-not-utc", _set("issued", "2026-01-31T12:00:00+01:00"), "issued"),
    ("time-no-zone", _set("issued", "2026-01-31T12:00:00"), "issued"),
    ("time-impossible", _set("issued", "2026-02-30T12:00:00Z"), "issued"),
    ("expires-before-issued", _set("expires", "2026-01-01T00:00:00Z"), "not after"),
    ("no-lists", _set("lists", []), "non-empty"),
    ("name-with-slash", _set("lists.0.name", "a/b"), "name"),
    ("name-upper-case", _set("lists.0.name", "Adult"), "name"),
    ("duplicate-name", _set("lists.1.name", "adult"), "appears twice"),
    ("category-star", _set("lists.0.category", "*"), "category"),
    ("unknown-format", _set("lists.0.format", "csv"), "unknown list format"),
    ("format-auto", _set("lists.0.format", "auto"), "unknown list format"),
    ("url-dotdot", _set("lists.0.url", "lists/../../x"), "url"),
    ("url-absolute-path", _set("lists.0.url", "/etc/passwd"), "url"),
    ("url-scheme", _set("lists.0.url", "https://198.51.100.7/x"), "url"),
    ("url-host", _set("lists.0.url", "//198.51.100.7/x"), "url"),
    ("url-query", _set("lists.0.url", "x?y=1"), "url"),
    ("url-escape", _set("lists.0.url", "%2e%2e/x"), "url"),
    ("url-hidden", _set("lists.0.url", "lists/.x"), "url"),
    ("sha-upper", _set("lists.0.sha256", SHA.upper()), "sha256"),
    ("sha-short", _set("lists.0.sha256", SHA[:-2]), "sha256"),
    ("size-negative", _set("lists.0.size", -1), "size"),
    ("size-float", _set("lists.0.size", 1.5), "size"),
    ("encoding-br", _set("lists.0.encoding", "br"), "encoding"),
    ("identity-sizes-differ", _set("lists.1.uncompressed_size", 11), "uncompressed_size"),
]


@pytest.mark.parametrize(
    ("edit", "fragment"), [pytest.param(e, f, id=i) for i, e, f in BAD_MANIFESTS]
)
def test_a_bad_manifest_is_refused_saying_where(
    edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    doc = copy.deepcopy(GOOD)
    edit(doc)
    with pytest.raises(FeedError) as info:
        feed.parse_manifest(encoded(doc))
    assert info.value.code == "manifest"
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b'{"serial": 1, "serial": 2}', id="duplicate-key"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_manifest_that_is_not_a_json_object_is_refused(data: bytes) -> None:
    with pytest.raises(FeedError) as info:
        feed.parse_manifest(data)
    assert info.value.code == "manifest"


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"url": "ftp://example.test/feed/"}, "url", id="ftp"),
        pytest.param({"url": "feed/"}, "url", id="relative-url"),
        pytest.param({"keys": ()}, "keys", id="no-key"),
        pytest.param({"interval": 0}, "interval", id="zero-interval"),
        pytest.param({"interval": float("nan")}, "interval", id="nan-interval"),
        pytest.param({"jitter": 1.0}, "jitter", id="jitter-one"),
        pytest.param({"read_timeout": -1}, "read_timeout", id="negative-timeout"),
        pytest.param({"max_list_bytes": 0}, "max_list_bytes", id="zero-cap"),
        pytest.param({"retries": -1}, "retries", id="negative-retries"),
        pytest.param({"backoff": -0.5}, "backoff", id="negative-backoff"),
    ],
)
def test_a_bad_feed_config_names_the_field(changes: dict[str, Any], field: str) -> None:
    settings: dict[str, Any] = {"url": "https://feed.example.test/", "keys": ("k",), **changes}
    with pytest.raises(ValueError, match=f"^{field}:"):
        FeedConfig(**settings)


@pytest.mark.parametrize(
    ("url", "manifest"),
    [
        ("https://f.example.test/feed", "https://f.example.test/feed/manifest.json"),
        ("https://f.example.test/feed/", "https://f.example.test/feed/manifest.json"),
        ("http://f.example.test:8080/", "http://f.example.test:8080/manifest.json"),
        ("https://f.example.test/x/feed.json", "https://f.example.test/x/feed.json"),
    ],
)
def test_the_manifest_url(url: str, manifest: str) -> None:
    assert FeedConfig(url=url, keys=("k",)).manifest_url() == manifest


def test_a_config_survives_the_trip_to_the_child_process() -> None:
    cfg = FeedConfig(url="https://f.example.test/", keys=("a", "b"), ca_file="/x.pem", retries=1)
    assert FeedConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_next_delay_spreads_a_campus_around_the_interval() -> None:
    cfg = FeedConfig(url="https://f.example.test/", keys=("k",), interval=3600, jitter=0.2)
    rng = random.Random(1)
    delays = [feed.next_delay(cfg, rng) for _ in range(2000)]
    assert min(delays) >= 3600 * 0.8 and max(delays) <= 3600 * 1.2
    assert abs(statistics.mean(delays) - 3600) < 30
    assert statistics.pstdev(delays) > 150  # spread out, not all at the same second
    still = FeedConfig(url="https://f.example.test/", keys=("k",), interval=60, jitter=0)
    assert feed.next_delay(still, rng) == 60


# --- keys ----------------------------------------------------------------------------------------


def test_keys_load_from_a_file_inline_text_or_the_base64_line(tmp_path: Path) -> None:
    a, b, c = (feedsign.SecretKey.generate(f"k{i}").public_key() for i in range(3))
    path = tmp_path / "a.pub"
    path.write_text(a.to_text())
    keys = feed.load_keys([str(path), b.to_text(), c.to_base64()])
    assert [k.key_id for k in keys] == [a.key_id, b.key_id, c.key_id]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(lambda tmp: str(tmp / "missing.pub"), "cannot read", id="missing-file"),
        pytest.param(
            lambda tmp: feedsign.SecretKey.generate("s").to_text(), "secret key", id="secret-key"
        ),
        pytest.param(lambda tmp: "untrusted comment: x\nnot base64!", "base64", id="garbage"),
    ],
)
def test_a_bad_trusted_key_is_a_key_error(
    tmp_path: Path, make: Callable[[Path], str], fragment: str
) -> None:
    with pytest.raises(FeedError) as info:
        feed.load_keys([make(tmp_path)])
    assert info.value.code == "key" and fragment in info.value.message


# --- results, state, status ----------------------------------------------------------------------


def test_a_result_survives_the_trip_from_the_child_process() -> None:
    result = SyncResult(
        ok=True,
        changed=True,
        url="https://f.example.test/manifest.json",
        serial=3,
        message="serial 3 in force",
        lists=(feed.ListOutcome("adult", "reused", 10, 1, 0),),
        seconds=0.5,
    )
    assert SyncResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_feed_error_names_the_feed_and_the_list() -> None:
    exc = FeedError("sha256", "digest differs", "https://f.example.test/manifest.json", "adult")
    assert (
        str(exc) == "feed https://f.example.test/manifest.json: list adult: sha256: digest differs"
    )


def test_every_error_code_is_declared() -> None:
    source = Path(feed.__file__).read_text()
    used = set(re.findall(r'(?:FeedError|_Transient)\(\s*"([a-z_0-9]+)"', source))
    used |= set(re.findall(r'None, "([a-z_]+)", None', source))
    assert len(used) >= 15 and used <= set(feed.ERROR_CODES), used - set(feed.ERROR_CODES)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"{broken", id="corrupt"),
        pytest.param(b'{"version": 99}', id="other-version"),
        pytest.param(b'["a list"]', id="not-an-object"),
    ],
)
def test_an_unreadable_state_file_starts_afresh(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "feed").mkdir()
        (tmp_path / "feed" / "state.json").write_bytes(content)
    assert SyncState.load(str(tmp_path)) == SyncState()


def test_the_state_file_round_trips(tmp_path: Path) -> None:
    state = SyncState(url="u", serial=4, etag='"e"', last_success=1.0, failures=2)
    state.lists["adult"] = {"entries": 3, "sha256": SHA}
    state.save(str(tmp_path))
    assert SyncState.load(str(tmp_path)) == state
    assert [p.name for p in (tmp_path / "feed").iterdir()] == ["state.json"]


def test_status_with_nothing_on_disk_warns(tmp_path: Path) -> None:
    cfg = FeedConfig(url="https://f.example.test/", keys=("k",))
    assert feed.current_lists(str(tmp_path)) == []
    status = feed.status(str(tmp_path), cfg, time.time())
    assert status["source"] == "https://f.example.test/manifest.json"
    assert status["serial"] is None and status["stale"] and status["lists"] == []
    assert status["warnings"] == [
        "no feed lists on disk yet: only the configured lists are enforced"
    ]
    json.dumps(status)  # --json prints it as it is


def test_importing_the_feed_module_does_not_import_requests() -> None:
    code = "import sys, guardian_dns.feed; print('requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
