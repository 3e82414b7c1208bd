"""``guardian-dns report`` as an administrator runs it over SSH, on history the writer produced.

The history files are written by the real ``HistoryWriter`` from a real ``QueryLog`` (records
stamped hours and days before now, so ``--since`` has something to cut); the report is the real
CLI in a subprocess with ``$STATE_DIRECTORY`` in ``tmp_path``. No server runs: the report must
work from the files alone. Checked: the text a person reads, CSV that the ``csv`` module parses,
JSON, the ``--group``/``--client``/``--since`` filters, pseudonyms, and the exit codes (0 also
when empty, 1 unreadable, 2 bad command line).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian_dns.history import HistoryWriter, history_dir
from guardian_dns.pipeline import R_BLOCKED, R_RESOLVED
from guardian_dns.querylog import QueryLog
from tests.support.daemon import REPO_ROOT
from tests.support.timezones import zone
from tests.support.wire import make_query

pytestmark = pytest.mark.integration

CONFIG = """\
policy:
  timezone: Europe/London
  groups:
    kids:
      clients: [192.168.1.16/28]
    parents:
      clients: [192.168.1.10]
"""
GROUPS = {"192.168.1.20": "kids", "192.168.1.21": "kids", "192.168.1.10": "parents"}
CATEGORIES = {0: "adult", 1: "games", -8: "policy:schedule"}
HOUR = 3600.0
DAY = 86400.0


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class School:
    config: Path
    state: Path
    now: float

    @property
    def history(self) -> Path:
        return Path(history_dir(str(self.state)))

    def run(self, *args: str, config: bool = True) -> Run:
        argv = [sys.executable, "-m", "guardian_dns", "report", *args]
        if config:
            argv += ["--config", str(self.config)]
        env = {**os.environ, "STATE_DIRECTORY": str(self.state), "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=60, cwd=self.config.parent
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def write_history(self, records: list[tuple[float, str, str, int, int]], **kw: Any) -> None:
        """Append records (seconds ago, client, name, reason, rule) and flush them to disk."""
        log = QueryLog(1000)
        writer = HistoryWriter(
            log,
            str(self.history),
            group_of=lambda ip: GROUPS.get(ip, "default"),
            category_of=CATEGORIES.__getitem__,
            tz=zone("Europe/London"),
            clock=lambda: self.now,
            monotonic=lambda: 5000.0,
            **kw,
        )
        for ago, client, name, reason, rule in records:
            log.append((5000.0 - ago, client, make_query(name), reason, rule))
        writer.flush()


RECORDS = [
    # seconds ago, client, name, reason, rule
    (HOUR, "192.168.1.20", "adult.test", R_BLOCKED, 0),
    (HOUR, "192.168.1.20", "adult.test", R_BLOCKED, 0),
    (HOUR, "192.168.1.20", "homework.test", R_RESOLVED, -1),
    (HOUR, "192.168.1.21", "games.test", R_BLOCKED, 1),
    (HOUR, "192.168.1.21", "games.test", R_BLOCKED, -8),
    (HOUR, "192.168.1.10", "news.test", R_RESOLVED, -1),
    (HOUR, "192.168.1.10", "adult.test", R_BLOCKED, 0),
    (2 * DAY, "192.168.1.20", "games.test", R_BLOCKED, 1),
    (10 * DAY, "192.168.1.20", "old.adult.test", R_BLOCKED, 0),
]


@pytest.fixture
def school(tmp_path: Path) -> School:
    config = tmp_path / "school.yaml"
    config.write_text(CONFIG)
    # Minute 30 of an hour: a record "an hour ago" is in the previous hour, never the same one.
    now = (time.time() // HOUR) * HOUR - HOUR + 30 * 60
    return School(config, tmp_path / "state", now)


def local_hour(school: School, ago: float) -> datetime:
    return datetime.fromtimestamp(school.now - ago, UTC).astimezone(zone("Europe/London"))


def test_the_text_report_shows_totals_categories_devices_names_and_hours(school: School) -> None:
    school.write_history(RECORDS)
    r = school.run("--since", "7d")
    assert r.code == 0, r.err
    assert r.err == ""
    out = r.out
    assert "8 queries from 3 device(s); 6 blocked (75.0%)" in out, out
    assert "old.adult.test" not in out, "--since 7d showed a record 10 days old"
    lines = out.splitlines()

    def section(title: str) -> list[str]:
        start = lines.index(title) + 2  # the title, then the column heads
        end = lines.index("", start) if "" in lines[start:] else len(lines)
        return [line.split() for line in lines[start:end]]

    assert section("Blocked attempts by category") == [
        ["adult", "3", "2"],
        ["games", "2", "2"],
        ["policy:schedule", "1", "1"],
    ]
    assert section("Devices with the most blocked attempts") == [
        ["192.168.1.20", "kids", "3", "4"],
        ["192.168.1.21", "kids", "2", "2"],
        ["192.168.1.10", "parents", "1", "2"],
    ]
    assert section("Most blocked names")[:2] == [
        ["adult.test", "adult", "3", "2"],
        ["games.test", "games", "2", "2"],
    ]
    hist = lines[lines.index("Blocked attempts by hour of day (local time)") + 1 :]
    assert len(hist) == 24
    recent = local_hour(school, HOUR).hour
    two_days = local_hour(school, 2 * DAY).hour
    by_hour = {int(line.split()[0]): line for line in hist}
    if recent != two_days:
        assert by_hour[recent].endswith(" 5") and "#" * 40 in by_hour[recent]
        assert by_hour[two_days].endswith(" 1")


def test_csv_has_one_row_per_hour_client_group_category_and_name(school: School) -> None:
    school.write_history(RECORDS)
    r = school.run("--since", "all", "--format", "csv")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert list(rows[0]) == ["hour", "client", "group", "category", "name", "count"]
    got = {(row["client"], row["category"], row["name"], row["count"]) for row in rows}
    assert got == {
        ("192.168.1.20", "adult", "old.adult.test", "1"),
        ("192.168.1.20", "games", "games.test", "1"),
        ("192.168.1.20", "adult", "adult.test", "2"),
        ("192.168.1.21", "games", "games.test", "1"),
        ("192.168.1.21", "policy:schedule", "games.test", "1"),
        ("192.168.1.10", "adult", "adult.test", "1"),
    }
    assert rows[0]["name"] == "old.adult.test", "not oldest hour first"
    assert rows[0]["hour"] == local_hour(school, 10 * DAY).replace(minute=0).isoformat(
        timespec="minutes"
    )
    assert all(row["group"] == GROUPS[row["client"]] for row in rows)


def test_json_has_the_same_figures_and_group_and_since_filter_them(school: School) -> None:
    school.write_history(RECORDS)
    doc = school.run("--json").json()
    assert doc["totals"] == {"queries": 8, "blocked": 6, "clients": 3}
    assert doc["categories"][0] == {"category": "adult", "blocked": 3, "clients": 2}
    assert doc["clients"][0] == {
        "client": "192.168.1.20",
        "group": "kids",
        "queries": 4,
        "blocked": 3,
    }
    assert doc["names"][0] == {
        "name": "adult.test",
        "category": "adult",
        "blocked": 3,
        "clients": 2,
    }
    assert sum(h["blocked"] for h in doc["hours_of_day"]) == 6
    assert [h["hour"] for h in doc["hours_of_day"]] == list(range(24))
    assert sum(d["blocked"] for d in doc["days"]) == 6
    assert (doc["zone"], doc["anonymised"], doc["lost"], doc["corrupt_lines"]) == (
        "Europe/London",
        False,
        0,
        0,
    )

    kids = school.run("--format", "json", "--group", "kids", "--since", "24h").json()
    assert kids["totals"] == {"queries": 5, "blocked": 4, "clients": 2}
    assert {c["client"] for c in kids["clients"]} == {"192.168.1.20", "192.168.1.21"}
    assert kids["group"] == "kids"

    one = school.run("--json", "--client", "192.168.1.10").json()
    assert one["totals"] == {"queries": 2, "blocked": 1, "clients": 1}

    top = school.run("--json", "--since", "all", "--top", "1").json()
    assert len(top["names"]) == 1 and len(top["clients"]) == 1
    assert top["totals"]["blocked"] == 7


def test_an_anonymised_history_shows_pseudonyms_and_finds_a_device_by_address(
    school: School,
) -> None:
    school.write_history(RECORDS, anonymise=True)
    r = school.run()
    assert r.code == 0, r.err
    assert "192.168.1." not in r.out
    assert "pseudonyms: the same device keeps the same pseudonym" in r.out
    doc = school.run("--json").json()
    assert doc["anonymised"] is True
    [first, *_] = doc["clients"]
    assert len(first["client"]) == 12 and first["group"] == "kids"
    by_address = school.run("--json", "--client", "192.168.1.20").json()
    by_pseudonym = school.run("--json", "--client", first["client"]).json()
    assert (
        by_address["totals"]
        == by_pseudonym["totals"]
        == {
            "queries": 4,
            "blocked": 3,
            "clients": 1,
        }
    )


def test_switching_anonymise_on_is_noted(school: School) -> None:
    school.write_history(RECORDS[:1])
    school.write_history(RECORDS[:1], anonymise=True)
    r = school.run()
    assert "note: query_log.anonymise changed during this period" in r.out


def test_a_name_a_device_made_up_cannot_drive_the_terminal_or_a_spreadsheet(
    school: School,
) -> None:
    hostile = "=hyperlink(1)\x1b[2j.test"  # blocked by a "block everything" schedule
    school.write_history([(HOUR, "192.168.1.20", hostile, R_BLOCKED, -8)])
    text = school.run()
    assert "\x1b" not in text.out
    assert "=hyperlink(1)\\x1b[2j.test" in text.out
    [row] = list(csv.DictReader(io.StringIO(school.run("--format", "csv").out)))
    assert row["name"] == "'=hyperlink(1)\\x1b[2j.test"
    assert school.run("--json").json()["names"][0]["name"] == hostile


def test_no_history_yet_is_not_an_error_and_says_why(school: School) -> None:
    r = school.run()
    assert r.code == 0, r.err
    assert f"no history in {school.history}" in r.out
    assert "query_log.history" in r.out
    doc = school.run("--json").json()
    assert doc["totals"] == {"queries": 0, "blocked": 0, "clients": 0}
    assert school.run("--format", "csv").out == "hour,client,group,category,name,count\n"


def test_a_period_with_nothing_in_it_says_so(school: School) -> None:
    school.write_history([(3 * DAY, "192.168.1.20", "adult.test", R_BLOCKED, 0)])
    r = school.run("--since", "24h")
    assert r.code == 0, r.err
    assert "no queries recorded in this period" in r.out


def test_a_damaged_line_is_skipped_with_a_note(school: School) -> None:
    school.write_history(RECORDS)
    [day_file, *_] = sorted(school.history.glob("*.jsonl"), reverse=True)
    with day_file.open("a") as f:
        f.write('{"v":1,"at":"20')
    r = school.run("--since", "all")
    assert r.code == 0, r.err
    assert "note: 1 unreadable line(s) skipped" in r.out
    assert "7 blocked" in r.out


def test_an_unreadable_history_exits_1_with_the_cause(school: School) -> None:
    school.state.mkdir()
    school.history.write_text("a file where the directory should be")
    r = school.run()
    assert r.code == 1
    assert r.out == ""
    assert f"guardian-dns report: cannot read {school.history}" in r.err
    assert "hint:" in r.err


def test_a_bad_config_exits_1(school: School) -> None:
    school.config.write_text("policy:\n  timezone: Nowhere/Land\n  nonsense: 1\n")
    r = school.run()
    assert r.code == 1
    assert "nonsense" in r.err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--since", "7x"), id="bad-span"),
        pytest.param(("--since", "2026-02-30"), id="bad-date"),
        pytest.param(("--format", "xml"), id="bad-format"),
        pytest.param(("--top", "-1"), id="bad-top"),
    ],
)
def test_a_bad_command_line_exits_2(school: School, args: tuple[str, ...]) -> None:
    r = school.run(*args)
    assert r.code == 2
    assert r.out == ""
    assert "guardian-dns report: error:" in r.err


def test_help_has_examples_and_exit_codes(school: School) -> None:
    r = school.run("--help", config=False)
    assert r.code == 0
    assert "guardian-dns report --since 24h --group kids" in r.out
    assert "exit codes: 0" in r.out
