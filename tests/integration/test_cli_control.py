"""The CLI's server verbs over the control socket, as an SSH session runs them.

The real server runs as a subprocess; ``guardian-dns status/reload/tail/stats/devices`` run as
subprocesses too (``subprocess.run``, no terminal), against the same config. What a script relies
on is checked: exit codes (0 running, 3 stopped, 1 error), ``--json`` that parses, and that what
the verbs report is what the server did (queries sent by the test, from its own addresses).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import dns.message
import dns.query
import pytest

from tests.support.authserver import AuthServer
from tests.support.daemon import REPO_ROOT, GuardianProcess

pytestmark = pytest.mark.integration

BLOCKED: Final = "games.wild.example.test"
ALLOWED: Final = "www.example.test"
KID: Final = "127.0.0.2"


def cli(config: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "guardian_dns", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ask(port: int, name: str, source: str = "127.0.0.1") -> None:
    query = dns.message.make_query(name, "A")
    dns.query.udp(query, "127.0.0.1", port=port, source=source, timeout=4.0)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, AuthServer]:
    (tmp_path / "games.txt").write_text(f"{BLOCKED}\n")
    upstream = AuthServer()
    upstream.start()
    config = tmp_path / "guardian.yaml"
    config.write_text(
        f"""
server:
  state_dir: {tmp_path / "state"}
upstream:
  servers: [{upstream.url_udp}]
metrics:
  enabled: false
blocking:
  lists:
    - file: games.txt
      category: games
policy:
  devices:
    kid-laptop: [{KID}]
  groups:
    kids:
      clients: [kid-laptop]
"""
    )
    return config, upstream


def test_the_server_verbs_report_what_the_server_did(setup: tuple[Path, AuthServer]) -> None:
    config, upstream = setup
    try:
        with GuardianProcess(config) as server:
            ask(server.port, BLOCKED, KID)
            ask(server.port, ALLOWED)
            done = cli(config, "status", "--json")
            assert done.returncode == 0, done.stderr
            status = json.loads(done.stdout)
            assert status["running"] and status["pid"] == server.pid
            assert status["queries"]["blocked"] == 1 and status["queries"]["resolved"] == 1
            groups = {c["group"] for c in status["policy"]["contexts"]}
            assert groups == {"default", "kids"}
            sock = Path(config.parent / "state" / "control.sock")
            assert stat.S_IMODE(sock.stat().st_mode) == 0o660, "only owner and admin group"

            done = cli(config, "tail", "--json", "-n", "5")
            records = [json.loads(line) for line in done.stdout.splitlines()]
            assert [(r["client"], r["reason"]) for r in records] == [
                (KID, "blocked"),
                ("127.0.0.1", "resolved"),
            ], done.stdout
            assert "games.txt:1 (games)" in records[0]["why"], "the rule that blocked it"

            # tail -f follows new queries as they are answered.
            follow = subprocess.Popen(
                [
                    *(sys.executable, "-m", "guardian_dns", "tail", "-f", "--blocked"),
                    *("-n", "0", "--json", "--config", str(config)),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
            )
            try:
                time.sleep(1.0)
                ask(server.port, ALLOWED)  # not blocked: not shown
                ask(server.port, "x." + BLOCKED, KID)
                assert follow.stdout is not None
                line = follow.stdout.readline()
                assert json.loads(line)["name"] == "x." + BLOCKED + ".", line
            finally:
                follow.terminate()
                follow.wait(5)

            done = cli(config, "stats", "--json")
            stats = json.loads(done.stdout)
            assert stats["since_start"]["blocked_by_category"]["games"] == 2, stats
            assert stats["recent"]["top_blocked_clients"][0] == [KID, 2]

            done = cli(config, "devices", "--json")
            devices = {d["client"]: d for d in json.loads(done.stdout)["devices"]}
            assert devices[KID]["group"] == "kids" and devices[KID]["blocked"] == 2
            assert devices[KID]["name"] == "kid-laptop", "the name the config gives it"
            assert devices["127.0.0.1"]["group"] == "default"

            done = cli(config, "reload")
            assert done.returncode == 0 and "generation 2" in done.stdout, done.stderr
            # A bad config: refused with the reason (file:line: field), exit 1, and the
            # generation in force keeps serving.
            good = config.read_text()
            config.write_text(good + "cache:\n  size: -5\n")
            done = cli(config, "reload", "--json")
            config.write_text(good)
            assert done.returncode == 1, done.stdout
            assert "cache.size" in done.stderr, done.stderr
            done = cli(config, "status", "--json")
            assert json.loads(done.stdout)["generation"] == 2
        for verb in ("status", "reload", "tail", "stats", "devices"):
            done = cli(config, verb)
            assert done.returncode == 3, (verb, done.stdout, done.stderr)
            assert "not running" in done.stderr
    finally:
        upstream.stop()
