"""``guardian-dns pause|allow|resume|overrides|explain`` as a parent types them.

Every command is the real CLI in a subprocess (``python -m guardian_dns``), with the state
directory in ``tmp_path`` through ``$STATE_DIRECTORY`` (what systemd's ``StateDirectory=`` sets),
so nothing touches the developer's home. Checked: what lands in ``overrides.json``, what stdout
says (text and ``--json``), the exit codes (0 done, 1 refused, 2 bad command line), and that a
refused edit leaves the file byte-for-byte as it was. No DNS traffic at all.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import REPO_ROOT

pytestmark = pytest.mark.integration

CONFIG = """\
blocking:
  lists:
    - {file: adult.txt, category: adult}
    - {file: games.txt, category: games}
policy:
  timezone: Europe/London
  schedules:
    bedtime: mon-fri 21:00-07:00
  groups:
    kids:
      clients: [192.168.1.64/28, aa:bb:cc:dd:ee:01]
      block_categories: [adult, games]
      schedules:
        - during: bedtime
          block: "*"
          except: [khanacademy.org]
    parents:
      clients: [192.168.1.10]
      filtering: false
"""
KIDS_LINE = 10
BEDTIME_RULE_LINE = 14


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Family:
    config: Path
    state: Path

    @property
    def file(self) -> Path:
        return self.state / "overrides.json"

    def run(self, *args: str, config: bool = True, env: dict[str, str] | None = None) -> Run:
        argv = [sys.executable, "-m", "guardian_dns", *args]
        if config:
            argv += ["--config", str(self.config)]
        environ = {
            **os.environ,
            "STATE_DIRECTORY": str(self.state),
            "PYTHONPATH": str(REPO_ROOT),
            **(env or {}),
        }
        done = subprocess.run(
            argv, capture_output=True, text=True, env=environ, timeout=60, cwd=self.config.parent
        )
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def family(tmp_path: Path) -> Family:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\nroblox.test\n")
    config = tmp_path / "family.yaml"
    config.write_text(CONFIG)
    return Family(config, tmp_path / "state")


# --- pause -------------------------------------------------------------------------------------


def test_pause_a_group_for_the_default_15_minutes(family: Family) -> None:
    r = family.run("pause", "--group", "kids", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    [added] = doc["added"]
    assert (added["kind"], added["target_kind"], added["target"]) == ("pause", "group", "kids")
    assert added["expires"] - added["created"] == pytest.approx(15 * 60)
    assert doc["file"] == str(family.file)
    saved = json.loads(family.file.read_text())
    assert [o["id"] for o in saved["overrides"]] == [added["id"]]
    assert saved["budgets"] == []


def test_pause_says_until_when_and_how_to_end_it(family: Family) -> None:
    r = family.run("pause", "--client", "AA-BB-CC-DD-EE-01", "--for", "1h30m", "--who", "dad")
    assert r.code == 0, r.err
    [o] = json.loads(family.file.read_text())["overrides"]
    assert (o["target_kind"], o["target"], o["who"]) == ("client", "aa:bb:cc:dd:ee:01", "dad")
    assert o["expires"] - o["created"] == pytest.approx(90 * 60)
    assert "paused filtering for client 'aa:bb:cc:dd:ee:01' until" in r.out
    assert "in 1 h 30 min" in r.out
    assert f"guardian-dns resume {o['id']} --config {family.config}" in r.out


def test_a_second_pause_of_the_same_target_replaces_the_first(family: Family) -> None:
    first = family.run("pause", "--group", "kids", "--json").json()["added"][0]["id"]
    r = family.run("pause", "--group", "kids", "--for", "2h", "--json")
    assert r.json()["replaced"] == [first]
    saved = json.loads(family.file.read_text())["overrides"]
    assert [o["id"] for o in saved] == [r.json()["added"][0]["id"]]


def test_who_defaults_to_the_sudo_user_and_says_ssh(family: Family) -> None:
    env = {"SUDO_USER": "mum", "SSH_CONNECTION": "192.168.1.10 50000 192.168.1.2 22"}
    r = family.run("pause", "--group", "kids", "--json", env=env)
    assert r.json()["added"][0]["who"] == "mum via ssh"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--for", "30s"], "at least 1 minute"),
        (["--for", "8d"], "at most 7 days"),
        (["--for", "soon"], "expected a duration"),
    ],
)
def test_a_bad_duration_is_a_command_line_error(
    family: Family, args: list[str], message: str
) -> None:
    r = family.run("pause", "--group", "kids", *args)
    assert r.code == 2
    assert message in r.err
    assert not family.file.exists()


def test_pause_needs_exactly_one_target(family: Family) -> None:
    assert family.run("pause").code == 2
    assert family.run("pause", "--group", "kids", "--client", "192.168.1.70").code == 2
    r = family.run("pause", "--client", "emma-tablet")
    assert r.code == 2 and "not an IP address" in r.err


def test_an_unknown_group_is_refused_with_a_suggestion(family: Family) -> None:
    r = family.run("pause", "--group", "kidz")
    assert r.code == 1
    assert "no group 'kidz'" in r.err and "did you mean 'kids'?" in r.err
    assert not family.file.exists()
    # The default group always exists, in the config or not.
    assert family.run("pause", "--group", "default").code == 0


# --- allow -------------------------------------------------------------------------------------


def test_allow_names_for_a_while(family: Family) -> None:
    r = family.run(
        "allow", "YouTube.com.", "khanacademy.org", "--for", "45m", "--group", "kids", "--json"
    )
    assert r.code == 0, r.err
    added = r.json()["added"]
    assert [o["domain"] for o in added] == ["youtube.com", "khanacademy.org"]
    assert all(o["expires"] - o["created"] == pytest.approx(45 * 60) for o in added)
    text = family.run("allow", "roblox.test", "--for", "10m", "--client", "192.168.1.70")
    assert text.code == 0
    assert "allowed roblox.test for client '192.168.1.70' until" in text.out


def test_allow_without_for_is_a_permanent_admin_allow_not_an_override(family: Family) -> None:
    r = family.run("allow", "youtube.com", "--group", "kids")
    assert r.code == 0, r.err
    assert "group-kids.allow.txt" in r.out
    assert not family.file.exists(), "no temporary override was written"
    r = family.run("allow", "youtube.com", "--client", "192.168.1.70")
    assert r.code == 2 and "permanent allow is for a group" in r.err


def test_one_bad_name_refuses_the_whole_allow_and_leaves_the_file_as_it_was(
    family: Family,
) -> None:
    assert family.run("pause", "--group", "kids").code == 0
    before = family.file.read_bytes()
    r = family.run(
        "allow", "youtube.com", "https://bad.example/", "--for", "45m", "--group", "kids"
    )
    assert r.code == 1
    assert "'https://bad.example/' is not a domain name" in r.err
    assert "nothing was allowed" in r.err
    assert family.file.read_bytes() == before


# --- overrides and resume ---------------------------------------------------------------------


def test_overrides_lists_what_is_in_force(family: Family) -> None:
    empty = family.run("overrides")
    assert (empty.code, empty.out.strip()) == (0, "no pauses or temporary allows in force")
    assert family.run("overrides", "--json").json()["overrides"] == []
    pause = family.run("pause", "--group", "kids", "--who", "mum", "--json").json()["added"][0]
    allow = family.run(
        "allow", "youtube.com", "--for", "2h", "--client", "192.168.1.70", "--json"
    ).json()["added"][0]
    r = family.run("overrides")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "TARGET", "DOMAIN", "ENDS", "WHO"]
    assert lines[1].startswith(pause["id"]) and "group kids" in lines[1] and "mum" in lines[1]
    assert "in 15 min" in lines[1]
    assert lines[2].startswith(allow["id"]) and "youtube.com" in lines[2]
    doc = family.run("overrides", "--json").json()
    assert [o["id"] for o in doc["overrides"]] == [pause["id"], allow["id"]]
    assert 0 < doc["overrides"][0]["remaining_seconds"] <= 15 * 60
    assert doc["overrides"][0]["expires_local"].endswith("+00:00")  # London in winter: GMT


def test_resume_by_id_ends_just_that_one(family: Family) -> None:
    keep = family.run("pause", "--group", "parents", "--json").json()["added"][0]["id"]
    end = family.run("pause", "--group", "kids", "--json").json()["added"][0]["id"]
    r = family.run("resume", end)
    assert r.code == 0, r.err
    assert r.out.startswith(f"ended {end}: pause for group 'kids'")
    assert [o["id"] for o in json.loads(family.file.read_text())["overrides"]] == [keep]


def test_resume_by_target_and_all(family: Family) -> None:
    family.run("pause", "--group", "kids")
    family.run("allow", "a.test", "b.test", "--for", "1h", "--group", "kids")
    family.run("allow", "c.test", "--for", "1h", "--client", "192.168.1.70")
    r = family.run("resume", "--group", "kids", "--json")
    assert r.code == 0
    assert sorted(o["domain"] or "-" for o in r.json()["ended"]) == ["-", "a.test", "b.test"]
    r = family.run("resume", "--all", "--json")
    assert [o["domain"] for o in r.json()["ended"]] == ["c.test"]
    assert json.loads(family.file.read_text())["overrides"] == []


def test_resume_of_something_not_in_force_is_refused_and_changes_nothing(
    family: Family,
) -> None:
    known = family.run("pause", "--group", "kids", "--json").json()["added"][0]["id"]
    before = family.file.read_bytes()
    r = family.run("resume", known, "deadbeef")
    assert r.code == 1
    assert "no override in force with id deadbeef" in r.err
    assert family.file.read_bytes() == before  # all or nothing: the known one still runs
    r = family.run("resume", "--client", "192.168.1.99")
    assert (r.code, "no pause or allow for client '192.168.1.99'" in r.err) == (1, True)
    assert family.file.read_bytes() == before


def test_resume_needs_one_way_of_choosing(family: Family) -> None:
    assert family.run("resume").code == 2
    assert family.run("resume", "abcd1234", "--all").code == 2
    assert family.run("resume", "--group", "kids", "--all").code == 2


def test_a_damaged_overrides_file_is_named_and_never_replaced(family: Family) -> None:
    family.state.mkdir()
    family.file.write_bytes(b'{"format": "guardian-dns usage", "version": 1, "overrides": [')
    before = family.file.read_bytes()
    for args in (["pause", "--group", "kids"], ["resume", "--all"], ["overrides"]):
        r = family.run(*args)
        assert r.code == 1, args
        assert str(family.file) in r.err and "not JSON" in r.err
    assert family.file.read_bytes() == before
    # The audit log records the failed runs; nothing else was written beside the file.
    assert sorted(p.name for p in family.state.iterdir()) == [
        "audit",
        "overrides.json",
        "overrides.lock",
    ]


def test_without_config_the_embedded_default_and_state_directory_are_used(
    family: Family,
) -> None:
    r = family.run("pause", "--group", "default", "--json", config=False)
    assert r.code == 0, r.err
    assert r.json()["file"] == str(family.file)
    assert family.run("pause", "--group", "kids", config=False).code == 1  # not in the default


def test_a_configured_state_dir_wins_over_the_environment(family: Family) -> None:
    family.config.write_text("server:\n  state_dir: mine\n" + CONFIG)
    r = family.run("pause", "--group", "kids", "--json")
    assert r.json()["file"] == str(family.config.parent / "mine" / "overrides.json")


def test_root_edits_belong_to_the_owner_of_the_state_directory(
    family: Family, state_owned_by_nobody: Path
) -> None:
    family.state = state_owned_by_nobody
    r = family.run("pause", "--group", "kids")
    assert r.code == 0, r.err
    for name in ("overrides.json", "overrides.lock"):
        st = os.stat(state_owned_by_nobody / name)
        assert (st.st_uid, st.st_gid) == (65534, 65534), name
    assert family.run("resume", "--all").code == 0


# --- explain -----------------------------------------------------------------------------------


def test_explain_at_bedtime(family: Family) -> None:
    r = family.run(
        "explain", "WWW.Games.Test.", "--client", "192.168.1.70", "--at", "2026-11-24 21:30"
    )
    assert r.code == 0, r.err
    assert r.out.startswith("www.games.test for client 192.168.1.70 at Tue 2026-11-24 21:30 GMT")
    assert f"group      kids ({family.config}:{KIDS_LINE}; the client's group)" in r.out
    assert f"bedtime is active until Wed 2026-11-25 07:00 GMT ({family.config}:" in r.out
    assert f"games.test: block [games] in {family.config.parent / 'games.txt'}:1" in r.out
    assert "answer     BLOCKED: schedule blocks everything 'bedtime'" in r.out


@pytest.mark.parametrize(
    ("args", "verdict", "rule"),
    [
        ("games.test --group kids --at '2026-11-24 12:00'", "blocked", "games.txt:1"),
        ("khanacademy.org --group kids --at '2026-11-24 22:00'", "allowed", "schedule exception"),
        ("adult.test --client 192.168.1.10 --at '2026-11-24 22:00'", "allowed", "filtering: false"),
        ("adult.test --client aa:bb:cc:dd:ee:01 --at '2026-11-24 12:00'", "blocked", "adult.txt:1"),
        ("example.org --at '2026-11-24 22:00'", "allowed", "not listed"),
    ],
)
def test_explain_json(family: Family, args: str, verdict: str, rule: str) -> None:
    r = family.run("explain", *shlex.split(args), "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["verdict"] == verdict
    assert rule in doc["rule"]
    assert doc["timezone"] == "Europe/London"


def test_explain_applies_the_overrides_the_cli_wrote(family: Family) -> None:
    family.run("allow", "games.test", "--for", "1h", "--group", "kids")
    doc = family.run("explain", "www.games.test", "--group", "kids", "--json").json()
    assert (doc["verdict"], doc["rule"], doc["matched"]) == (
        "allowed",
        "temporary allow",
        "games.test",
    )
    assert [o["domain"] for o in doc["overrides"]] == ["games.test"]
    family.run("resume", "--all")
    doc = family.run("explain", "www.games.test", "--group", "kids", "--json").json()
    assert doc["overrides"] == []


def test_explain_notes_an_unreadable_overrides_file_and_still_answers(family: Family) -> None:
    family.state.mkdir()
    family.file.write_text("garbage")
    r = family.run("explain", "games.test", "--group", "kids", "--json")
    assert r.code == 0
    assert any("overrides not applied" in n and str(family.file) in n for n in r.json()["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad name"], "is not a domain name"),
        (["x.test", "--at", "tonight"], "--at 'tonight'"),
        (["x.test", "--group", "kidz"], "did you mean 'kids'?"),
        (["x.test", "--client", "emma"], "not an IP address"),
    ],
)
def test_explain_refuses_bad_arguments_with_exit_2(
    family: Family, args: list[str], message: str
) -> None:
    r = family.run("explain", *args)
    assert (r.code, r.out) == (2, "")
    assert message in r.err


def test_explain_with_a_broken_config_or_list_is_an_error(family: Family) -> None:
    (family.config.parent / "games.txt").unlink()
    r = family.run("explain", "x.test")
    assert r.code == 1
    assert "games.txt" in r.err
    family.config.write_text("policy:\n  groups:\n    kids:\n      bogus: 1\n")
    r = family.run("explain", "x.test")
    assert r.code == 1
    assert f"{family.config}:4" in r.err


@pytest.mark.parametrize("verb", ["pause", "allow", "resume", "overrides", "explain"])
def test_every_policy_verb_has_help_with_examples(family: Family, verb: str) -> None:
    r = family.run(verb, "--help", config=False)
    assert r.code == 0
    assert "examples:" in r.out and f"guardian-dns {verb}" in r.out and "exit codes" in r.out
