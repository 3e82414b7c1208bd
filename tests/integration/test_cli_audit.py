"""``guardian-dns audit``, and the entries every change verb leaves, as an admin over SSH sees them.

Every command is the real CLI in a subprocess (``python -m guardian_dns``), with the state
directory in ``tmp_path`` through ``$STATE_DIRECTORY``; ``$SUDO_USER`` and ``$SSH_CONNECTION``
are set as sudo and sshd set them. Checked: one entry per run of pause, allow and resume (refused
and failed runs too) with the user, the result and ``--comment``; what ``audit`` prints (a table,
JSON lines, ``--since``, ``--verb``) and its exit codes; a log that cannot be written warns but
never undoes or hides a change; a sync that changes the lists is audited. DNS traffic: none; the
sync test fetches a list from a loopback HTTP server.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import REPO_ROOT
from tests.support.feedserver import FeedServer

pytestmark = pytest.mark.integration

CONFIG = """\
policy:
  timezone: Europe/London
  groups:
    kids:
      clients: [192.168.1.64/28]
"""
SSH = {"SUDO_USER": "alice", "SSH_CONNECTION": "192.0.2.7 52144 192.0.2.1 22"}
ME = pwd.getpwuid(os.getuid()).pw_name


@dataclass
class Run:
    code: int
    out: str
    err: str

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


@dataclass
class Admin:
    config: Path
    state: Path

    @property
    def log(self) -> Path:
        return self.state / "audit" / "audit.jsonl"

    def run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        argv = [sys.executable, "-m", "guardian_dns", *args, "--config", str(self.config)]
        environ = {
            key: value
            for key, value in os.environ.items()
            if key not in ("SUDO_USER", "SSH_CONNECTION", "SSH_CLIENT")
        }
        environ |= {"STATE_DIRECTORY": str(self.state), "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=environ | (env or {}),
            timeout=60,
            cwd=self.config.parent,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def audit(self, *args: str) -> list[dict[str, Any]]:
        r = self.run("audit", "--json", *args)
        assert r.code == 0, r.err
        return r.entries()


@pytest.fixture
def admin(tmp_path: Path) -> Admin:
    config = tmp_path / "guardian.yaml"
    config.write_text(CONFIG)
    return Admin(config, tmp_path / "state")


def test_pause_allow_and_resume_each_leave_an_entry_with_the_comment(admin: Admin) -> None:
    assert admin.run("pause", "--group", "kids", "--for", "1h", "--comment", "trip").code == 0
    r = admin.run("allow", "youtube.com", "--for", "45m", "--group", "kids", "--comment", "hw")
    assert r.code == 0, r.err
    assert admin.run("resume", "--all", "--comment", "back home").code == 0
    pause, allow, resume = admin.audit("--since", "1h")
    assert (pause["verb"], pause["result"], pause["comment"]) == ("pause", "ok", "trip")
    assert pause["args"] == {"group": "kids", "for": "1h"}
    assert pause["detail"].startswith("paused group 'kids' until ")
    assert (allow["verb"], allow["result"], allow["comment"]) == ("allow", "ok", "hw")
    assert allow["args"] == {"names": ["youtube.com"], "group": "kids", "for": "45m"}
    assert (resume["verb"], resume["result"], resume["comment"]) == ("resume", "ok", "back home")
    assert resume["args"] == {"all": True}
    assert "allow youtube.com for group 'kids'" in resume["detail"]
    for entry in (pause, allow, resume):
        assert (entry["user"], entry["sudo_user"], entry["ssh"]) == (ME, None, None)
        assert isinstance(entry["time"], float) and entry["pid"] > 0
    assert pause["time"] <= allow["time"] <= resume["time"]


def test_a_refused_allow_is_audited_as_refused_and_changes_nothing(admin: Admin) -> None:
    assert admin.run("pause", "--group", "kids").code == 0
    overrides = (admin.state / "overrides.json").read_bytes()
    r = admin.run("allow", "https://bad.example/", "--for", "1h", "--group", "kids")
    assert r.code == 1 and "nothing was allowed" in r.err
    r = admin.run("allow", "ok.example", "--for", "1h", "--group", "kidz", "--comment", "typo")
    assert r.code == 1 and "no group 'kidz'" in r.err
    r = admin.run("resume", "deadbeef")
    assert r.code == 1
    assert (admin.state / "overrides.json").read_bytes() == overrides
    _, bad_name, bad_group, bad_id = admin.audit()
    assert (bad_name["verb"], bad_name["result"]) == ("allow", "refused")
    assert "is not a domain name" in bad_name["detail"]
    assert bad_name["args"]["names"] == ["https://bad.example/"]
    assert (bad_group["result"], bad_group["comment"]) == ("refused", "typo")
    assert "no group 'kidz'" in bad_group["detail"]
    assert (bad_id["verb"], bad_id["result"]) == ("resume", "refused")
    assert "deadbeef" in bad_id["detail"]


def test_a_damaged_state_file_is_audited_as_an_error(admin: Admin) -> None:
    admin.state.mkdir()
    (admin.state / "overrides.json").write_text("{")
    assert admin.run("pause", "--group", "kids").code == 1
    [entry] = admin.audit()
    assert entry["result"] == "error" and "overrides.json" in entry["detail"]


def test_sudo_and_ssh_are_reflected_in_the_entry_and_the_table(admin: Admin) -> None:
    r = admin.run("pause", "--group", "kids", "--comment", "bus", env=SSH)
    assert r.code == 0, r.err
    [entry] = admin.audit()
    assert (entry["user"], entry["sudo_user"], entry["ssh"]) == (ME, "alice", "192.0.2.7")
    r = admin.run("audit")
    assert r.code == 0, r.err
    header, row = r.out.splitlines()
    assert header.split() == ["TIME", "USER", "VERB", "ARGS", "RESULT", "COMMENT", "DETAIL"]
    who = "alice (sudo, ssh 192.0.2.7)" if ME == "root" else f"alice (sudo as {ME}, ssh 192.0.2.7)"
    assert who in row and "--for 15m --group kids" in row and " ok " in row and " bus " in row


def test_since_and_verb_choose_what_is_shown(admin: Admin) -> None:
    assert admin.run("pause", "--group", "kids").code == 0
    assert admin.run("allow", "a.example", "--for", "1h", "--group", "kids").code == 0
    assert [e["verb"] for e in admin.audit("--verb", "allow")] == ["allow"]
    assert len(admin.audit("--since", "1h")) == 2
    assert admin.audit("--since", "2099-01-01") == []
    r = admin.run("audit", "--since", "2099-01-01")
    assert (r.code, r.out.startswith("no audit entries in that time")) == (0, True)


def test_an_empty_log_exits_0(admin: Admin) -> None:
    r = admin.run("audit")
    assert r.code == 0 and "no audit entries" in r.out, r.err
    r = admin.run("audit", "--json")
    assert (r.code, r.out) == (0, "")


@pytest.mark.parametrize("since", ["yesterday", "7x", "2026-13-01"])
def test_a_bad_since_is_a_command_line_error(admin: Admin, since: str) -> None:
    r = admin.run("audit", "--since", since)
    assert r.code == 2 and "expected a time back such as 30m, 12h or 7d" in r.err


def test_an_unreadable_log_exits_1_with_a_hint(admin: Admin) -> None:
    admin.log.mkdir(parents=True)  # a directory where the log should be: unreadable even to root
    r = admin.run("audit")
    assert r.code == 1 and str(admin.log) in r.err and "hint:" in r.err


def test_a_damaged_line_is_skipped_with_a_warning(admin: Admin) -> None:
    assert admin.run("pause", "--group", "kids").code == 0
    with admin.log.open("a") as f:
        f.write("garbage\n")
    r = admin.run("audit", "--json")
    assert r.code == 0 and len(r.entries()) == 1
    assert "1 damaged line(s) skipped" in r.err


def test_a_log_that_cannot_be_written_warns_and_the_change_stands(admin: Admin) -> None:
    admin.state.mkdir()
    (admin.state / "audit").write_text("not a directory\n")
    r = admin.run("pause", "--group", "kids", "--json")
    assert r.code == 0
    assert "warning: change applied, but the audit log could not be written: " in r.err
    assert json.loads(r.out)["added"][0]["target"] == "kids", "stdout is still the result"
    [o] = json.loads((admin.state / "overrides.json").read_text())["overrides"]
    assert o["kind"] == "pause"
    r = admin.run("allow", "bad..name", "--for", "1h", "--group", "kids")
    assert r.code == 1 and "warning: the audit log could not be written" in r.err
    assert "change applied" not in r.err


def test_a_comment_longer_than_500_characters_is_a_command_line_error(admin: Admin) -> None:
    r = admin.run("pause", "--group", "kids", "--comment", "x" * 501)
    assert r.code == 2 and "at most 500 characters" in r.err
    assert not (admin.state / "overrides.json").exists()


def test_help_shows_examples(admin: Admin) -> None:
    r = admin.run("audit", "--help")
    assert r.code == 0 and "guardian-dns audit --since 7d" in r.out and "exit codes" in r.out
    r = admin.run("pause", "--help")
    assert "--comment TEXT" in r.out


def test_root_writes_the_log_as_the_owner_of_the_state_directory(
    admin: Admin, state_owned_by_nobody: Path
) -> None:
    admin.state = state_owned_by_nobody
    assert admin.run("pause", "--group", "kids").code == 0
    for path in (admin.log.parent, admin.log, admin.log.parent / "audit.lock"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534), path
    [entry] = admin.audit()
    assert entry["user"] == "root"


def test_a_sync_that_changes_the_lists_or_fails_is_audited(admin: Admin, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    filler = [f"0.0.0.0 filler{i}.example.org" for i in range(150)]
    (site / "hosts.txt").write_text("\n".join(filler) + "\n")
    with FeedServer(site) as web:
        url = f"{web.url.rstrip('/')}/hosts.txt"
        admin.config.write_text(f"blocking:\n  lists:\n    - url: {url}\n      category: ads\n")
        r = admin.run("sync")
        assert r.code == 0, r.err
        assert admin.run("sync").code == 0  # unchanged: nothing to audit
        (site / "hosts.txt").write_text("0.0.0.0 one.example.org\n")  # shrinks: refused
        assert admin.run("sync", "--now").code == 1
    changed, failed = admin.audit()
    assert (changed["verb"], changed["result"], changed["args"]) == ("sync", "ok", {})
    assert f"list {url}: updated, 150 entries" in changed["detail"]
    assert (failed["verb"], failed["result"], failed["args"]) == ("sync", "error", {"now": True})
    assert f"list {url}: failed: " in failed["detail"]
