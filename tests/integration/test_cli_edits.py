"""The administrator's permanent edits over SSH: block, allow, remove, list, as subprocesses.

The real server runs with a config file in the test's directory, so the admin files are
``<tmp>/admin/*.txt``; the CLI runs as a script would (``subprocess.run``). Checked: an edit
takes effect in the running server within about a second without a restart, comments and order
survive, a bad edit changes nothing (byte for byte), two admins editing at once both land,
``explain`` and ``list`` show the rule, and Pi-hole's ``-b``/``-w`` work with a hint.
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

pytestmark = pytest.mark.integration

LISTED: Final = "listed.wild.example.test"  # in the games list
OTHER: Final = "other.wild.example.test"  # in no list
KID: Final = "127.0.0.2"
EDE_BLOCKED: Final = 15


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardian_dns", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        timeout=60,
        check=False,
    )


def blocked(port: int, name: str, source: str = "127.0.0.1") -> bool:
    query = dns.message.make_query(name, "A", use_edns=0)
    reply = dns.query.udp(query, "127.0.0.1", port=port, source=source, timeout=4.0)
    return any(
        isinstance(o, dns.edns.EDEOption) and int(o.code) == EDE_BLOCKED for o in reply.options
    )


def soon(check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.txt"))}


@pytest.fixture
def running(tmp_path: Path) -> object:
    (tmp_path / "games.txt").write_text(f"{LISTED}\n")
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
  groups:
    kids:
      clients: [{KID}]
"""
    )
    try:
        with GuardianProcess(config) as server:
            yield config, server
    finally:
        upstream.stop()


def test_edits_take_effect_within_a_second_and_lose_nothing(running: object) -> None:
    config, server = running  # type: ignore[misc]
    admin = config.parent / "admin"
    admin.mkdir()
    (admin / "block.txt").write_text("# our own blocks\nkeep.example  # agreed in March\n")
    before = (admin / "block.txt").read_bytes()

    done = cli(config, "block", OTHER, "--comment", "seen in the report")
    assert done.returncode == 0, done.stderr
    soon(lambda: blocked(server.port, OTHER), "the block is in force")
    assert blocked(server.port, OTHER, KID), "for every group"
    text = (admin / "block.txt").read_bytes()
    assert text.startswith(before), "comments and order kept"
    assert text.endswith(f"{OTHER}  # seen in the report\n".encode())

    # A group's own allow beats the list for that group only.
    done = cli(config, "allow", LISTED, "--group", "kids")
    assert done.returncode == 0, done.stderr
    soon(lambda: not blocked(server.port, LISTED, KID), "the kids' allow is in force")
    assert blocked(server.port, LISTED), "still blocked for the default group"

    # explain shows the administrator's rule.
    done = cli(config, "explain", OTHER, "--json")
    assert done.returncode == 0, done.stderr
    assert "administrator's block" in done.stdout, done.stdout

    # list shows where each entry is.
    done = cli(config, "list", "--json")
    entries = json.loads(done.stdout)["entries"]
    assert {(e["name"], e["action"], e["group"]) for e in entries} == {
        ("keep.example", "block", None),
        (OTHER, "block", None),
        (LISTED, "allow", "kids"),
    }
    assert all(":" in e["where"] for e in entries)

    # remove takes it away again.
    done = cli(config, "remove", OTHER)
    assert done.returncode == 0, done.stderr
    soon(lambda: not blocked(server.port, OTHER), "the removal is in force")
    assert b"keep.example  # agreed in March" in (admin / "block.txt").read_bytes()


def test_a_bad_edit_changes_nothing(running: object) -> None:
    config, _server = running  # type: ignore[misc]
    admin = config.parent / "admin"
    assert cli(config, "block", "first.example").returncode == 0
    before = snapshot_files(admin)
    for args in (
        ("block", "fine.example", "not a name!"),
        ("block", "fine.example", "--group", "kdis"),
        ("block", "fine.example", "--category", "gmaes"),
        ("allow", "1.2.3.4"),
    ):
        done = cli(config, *args)
        assert done.returncode == 1, (args, done.stdout)
        assert "nothing was changed" in done.stderr, done.stderr
        assert snapshot_files(admin) == before, args
    done = cli(config, "block", "x.example", "--group", "kdis")
    assert "did you mean 'kids'" in done.stderr


def test_two_admins_editing_at_once_both_land(running: object) -> None:
    config, _server = running  # type: ignore[misc]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "guardian_dns", "block", "--config", str(config)]
            + [f"a{who}-{i}.example" for i in range(15)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for who in range(2)
    ]
    for p in procs:
        assert p.wait(60) == 0
    names = (config.parent / "admin" / "block.txt").read_text().split()
    assert sorted(names) == sorted(f"a{w}-{i}.example" for w in range(2) for i in range(15))


def test_pihole_flags_work_with_a_hint(running: object) -> None:
    config, server = running  # type: ignore[misc]
    done = cli(config, "-b", OTHER)
    assert done.returncode == 0, done.stderr
    assert "guardian-dns block" in done.stderr, "the hint names our verb"
    soon(lambda: blocked(server.port, OTHER), "the block is in force")
    done = cli(config, "-w", OTHER)
    assert done.returncode == 0 and "guardian-dns allow" in done.stderr
    assert cli(config, "deny", "third.example").returncode == 0


def test_a_temporary_block_applies_to_its_group_and_ends_on_resume(running: object) -> None:
    config, server = running  # type: ignore[misc]
    done = cli(config, "block", OTHER, "--for", "2h", "--group", "kids", "--json")
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)["added"]
    assert [(o["kind"], o["target"], o["domain"]) for o in added] == [("block", "kids", OTHER)]
    soon(lambda: blocked(server.port, OTHER, KID), "the temporary block is in force")
    assert not blocked(server.port, OTHER), "only for the kids"
    shown = json.loads(cli(config, "overrides", "--json").stdout)
    assert any(o["kind"] == "block" and o["domain"] == OTHER for o in shown["overrides"]), shown
    assert cli(config, "resume", added[0]["id"]).returncode == 0
    soon(lambda: not blocked(server.port, OTHER, KID), "resume ends it")


def test_every_change_and_refusal_is_audited(running: object) -> None:
    config, _server = running  # type: ignore[misc]
    assert cli(config, "block", OTHER, "--comment", "from the weekly report").returncode == 0
    assert cli(config, "block", "not a name").returncode == 1
    assert cli(config, "allow", LISTED, "--group", "kids").returncode == 0
    assert cli(config, "remove", OTHER).returncode == 0
    done = cli(config, "audit", "--json", "--since", "1h")
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    seen = [(e["verb"], e["result"]) for e in entries]
    assert seen == [("block", "ok"), ("block", "refused"), ("allow", "ok"), ("remove", "ok")], seen
    assert entries[0]["comment"] == "from the weekly report"
    assert entries[0]["user"], "who made the change"
