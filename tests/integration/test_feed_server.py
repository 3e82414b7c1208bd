"""The feed end to end: the real publisher, a real HTTP feed on loopback, the real server.

``guardian-dns feed keygen`` and ``feed build`` publish a feed from list files; ``FeedServer``
(tests/support/feedserver.py) serves it on 127.0.0.1; ``guardian-dns serve`` is configured with
the feed's URL and public key. What a parent relies on is checked through DNS answers: the server
syncs by itself after start-up and blocks the feed's names; after a restart with the feed gone it
blocks them at once, from the last good set on disk; ``guardian-dns sync`` run by an
administrator puts a new serial in force in the running server; a tampered feed is refused and
the lists in force stay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import dns.edns
import dns.message
import dns.query
import pytest

from tests.support.authserver import AuthServer
from tests.support.daemon import REPO_ROOT, GuardianProcess
from tests.support.feedserver import FeedServer

pytestmark = pytest.mark.integration

FIRST: Final = "first.wild.example.test"  # in the feed's first serial
SECOND: Final = "second.wild.example.test"  # added by the second
EDE_BLOCKED: Final = 15


def cli(*args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    if state is not None:
        env["STATE_DIRECTORY"] = str(state)
    return subprocess.run(
        [sys.executable, "-m", "guardian_dns", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def blocked(port: int, name: str) -> bool:
    query = dns.message.make_query(name, "A", use_edns=0)
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=4.0)
    return any(
        isinstance(o, dns.edns.EDEOption) and int(o.code) == EDE_BLOCKED for o in reply.options
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def publish(tmp: Path, names: list[str], serial: int) -> Path:
    """Keys once, then a feed of one 'adult' list holding ``names`` (plus filler)."""
    keys, src, out = tmp / "keys", tmp / "src", tmp / "feed"
    if not (keys / "guardian-feed.key").exists():
        done = cli("feed", "keygen", "--out", str(keys))
        assert done.returncode == 0, done.stderr
    src.mkdir(exist_ok=True)
    filler = [f"filler{i}.example.org" for i in range(150)]
    (src / "adult.txt").write_text("\n".join(names + filler) + "\n")
    done = cli(
        *("feed", "build", "--lists", str(src), "--key", str(keys / "guardian-feed.key")),
        *("--out", str(out), "--serial", str(serial), "--gzip"),
    )
    assert done.returncode == 0, done.stderr
    return out


def config(tmp: Path, upstream: AuthServer, feed_url: str) -> Path:
    path = tmp / "guardian.yaml"
    path.write_text(
        f"""
server:
  state_dir: {tmp / "state"}
upstream:
  servers: [{upstream.url_udp}]
metrics:
  enabled: false
feed:
  url: {feed_url}
  keys: [keys/guardian-feed.pub]
  categories: [adult]
"""
    )
    return path


def test_the_server_syncs_boots_from_the_last_good_set_and_refuses_a_tampered_feed(
    tmp_path: Path,
) -> None:
    feed_dir = publish(tmp_path, [FIRST], serial=1)
    with AuthServer() as upstream:
        with FeedServer(feed_dir) as feed:
            path = config(tmp_path, upstream, feed.url)
            with GuardianProcess(path) as server:
                assert not blocked(server.port, FIRST), "nothing fetched yet: not blocked"
                wait_until(
                    lambda: blocked(server.port, FIRST),
                    20.0,
                    "the server syncs by itself after start-up and blocks the feed's names",
                )
                assert feed.count("/manifest.json") >= 1
                # A new serial, fetched by an administrator's `guardian-dns sync`, is put in
                # force in the running server (the CLI signals it).
                publish(tmp_path, [FIRST, SECOND], serial=2)
                done = cli("sync", "--config", str(path), "--json")
                assert done.returncode == 0, done.stderr
                report = json.loads(done.stdout)
                assert report["changed"] and report["feed"]["serial"] == 2, report
                assert "told to rebuild" in report["server"], report
                wait_until(lambda: blocked(server.port, SECOND), 20.0, "serial 2 in force")
                # A tampered list is refused; the set in force stays, and the CLI says why.
                publish(tmp_path, [FIRST], serial=3)
                listed = json.loads((feed_dir / "manifest.json").read_text())["lists"][0]
                feed.misbehave("/" + listed["url"], flip=100)
                done = cli("sync", "--config", str(path), "--json")
                assert done.returncode == 1, done.stdout
                report = json.loads(done.stdout)
                assert report["feed"]["error"] in ("sha256", "gzip", "size"), report
                assert "last good lists keep serving" in done.stderr
                assert blocked(server.port, SECOND), "serial 2 is still in force"
                shown = cli("lists", "--config", str(path), "--json")
                assert shown.returncode == 0, shown.stderr
                status = json.loads(shown.stdout)["feed"]
                assert status["serial"] == 2 and status["last_error"], status
                assert status["failures"] >= 1, "the failure is counted"
        # The feed is gone (a router booting with no network): the last good set is in force
        # before the first query is answered.
        with GuardianProcess(path) as server:
            assert blocked(server.port, FIRST) and blocked(server.port, SECOND)


def test_check_config_refuses_a_feed_without_a_usable_key(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("feed:\n  url: https://feed.example.org/guardian/\n  keys: [missing.pub]\n")
    done = cli("check-config", str(path))
    assert done.returncode == 1
    assert "feed.keys[0]" in done.stderr and "missing.pub" in done.stderr, done.stderr
    path.write_text("feed:\n  url: https://feed.example.org/guardian/\n")
    done = cli("check-config", str(path))
    assert done.returncode == 1 and "feed.keys" in done.stderr, done.stderr


def test_a_subscribed_url_is_fetched_by_the_server_and_kept_when_the_source_breaks(
    tmp_path: Path,
) -> None:
    """A ``blocking.lists`` entry with ``url:``: synced by the server itself, then in force."""
    site = tmp_path / "site"
    site.mkdir()
    filler = [f"0.0.0.0 filler{i}.example.org" for i in range(150)]
    (site / "hosts.txt").write_text("\n".join([f"0.0.0.0 {FIRST}", *filler]) + "\n")
    with AuthServer() as upstream, FeedServer(site) as web:
        path = tmp_path / "guardian.yaml"
        path.write_text(
            f"""
server:
  state_dir: {tmp_path / "state"}
upstream:
  servers: [{upstream.url_udp}]
metrics:
  enabled: false
blocking:
  lists:
    - url: {web.url.rstrip("/")}/hosts.txt
      category: adult
"""
        )
        with GuardianProcess(path) as server:
            wait_until(lambda: blocked(server.port, FIRST), 20.0, "the subscription is in force")
            # The source shrinks to a handful of lines: refused, the last good copy stays.
            (site / "hosts.txt").write_text(f"0.0.0.0 {SECOND}\n")
            done = cli("sync", "--config", str(path), "--json")
            assert done.returncode == 1, done.stdout
            report = json.loads(done.stdout)
            assert report["subscriptions"][0]["error"]["code"] == "too_few", report
            assert blocked(server.port, FIRST) and not blocked(server.port, SECOND)
