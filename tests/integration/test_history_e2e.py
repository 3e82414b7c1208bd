"""The query history end to end: the real server writes it, ``report`` and ``stats --since``
read it with the server stopped, in plain and anonymised mode (history.py, report.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.support.authserver import AuthServer
from tests.support.daemon import REPO_ROOT, GuardianProcess

pytestmark = pytest.mark.integration


def ask(port: int, name: str, source: str) -> None:
    q = dns.message.make_query(name, "A", use_edns=0, payload=1232)
    dns.query.udp(q, "127.0.0.1", port=port, source=source, timeout=4)


def report(config: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "guardian_dns", "report", "--config", str(config), "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("anonymise", [False, True])
def test_server_writes_history_that_report_reads(tmp_path: Path, anonymise: bool) -> None:
    (tmp_path / "adult.txt").write_text("adult.wild.example.test\n")
    with AuthServer() as up:
        cfg = tmp_path / "g.yaml"
        cfg.write_text(f"""\
server:
  state_dir: {tmp_path}/state
  allow_networks: [127.0.0.0/8]
upstream:
  servers: ["udp://127.0.0.1:{up.port}"]
blocking:
  lists:
    - {{file: adult.txt, category: adult}}
policy:
  timezone: Europe/London
  schedules:
    always: mon-sun 00:00-23:59
  groups:
    kids:
      clients: [127.0.0.2]
      block_categories: [adult]
      block: [annoying.wild.example.test]
query_log:
  flush_interval: 1
  anonymise: {str(anonymise).lower()}
""")
        with GuardianProcess(cfg) as server:
            ask(server.port, "adult.wild.example.test", "127.0.0.2")
            ask(server.port, "adult.wild.example.test", "127.0.0.2")  # packet cache hit
            ask(server.port, "annoying.wild.example.test", "127.0.0.2")
            ask(server.port, "plain.wild.example.test", "127.0.0.2")
            ask(server.port, "plain.wild.example.test", "127.0.0.3")
            deadline = time.monotonic() + 10
            hist = tmp_path / "state" / "history"
            while time.monotonic() < deadline and not list(hist.glob("*.jsonl")):
                time.sleep(0.2)
            assert list(hist.glob("*.jsonl")), "the timer never flushed"
            ask(server.port, "adult.wild.example.test", "127.0.0.3")  # default group: blocked too
    doc = report(cfg)
    assert doc["totals"] == {"queries": 6, "blocked": 4, "clients": 2}
    cats = {c["category"]: c["blocked"] for c in doc["categories"]}
    assert cats == {"adult": 3, "policy:group-block": 1}
    groups = {c["group"] for c in doc["clients"]}
    assert groups == {"kids", "default"}
    assert doc["anonymised"] is anonymise
    if anonymise:
        assert "127.0.0." not in json.dumps(doc)
    kids = report(cfg, "--group", "kids", "--client", "127.0.0.2")
    assert kids["totals"] == {"queries": 4, "blocked": 3, "clients": 1}
    # stats --since reads the same files, with the server stopped.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "guardian_dns", "stats", "--since", "1h", "--json"),
            *("--config", str(cfg)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["queries"], stats["blocked"]) == (6, 4)
    assert stats["top_blocked_categories"][0] == ["adult", 3]
