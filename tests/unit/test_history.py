"""The query history: what a flush takes from the ring buffer and what lands on disk.

Each test feeds a real ``QueryLog`` with real query messages (``tests.support.wire.make_query``)
stamped at chosen local times (Europe/London; the clock and the monotonic clock are injected, so
hours are exact), flushes a ``HistoryWriter`` into ``tmp_path`` and reads the files back, raw and
through ``read_history`` (what ``guardian-dns report`` uses).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from guardian_dns.config import load_config_text
from guardian_dns.filter import BLOCK
from guardian_dns.history import (
    SECRET_FILE,
    HistoryError,
    HistoryWriter,
    pseudonym,
    question_name,
    read_history,
    rule_category,
)
from guardian_dns.pipeline import R_BLOCKED, R_CACHED, R_REFUSED, R_RESOLVED
from guardian_dns.policy import RULE_BUDGET_SPENT, RULE_GROUP_BLOCK, RULE_WINDOW_BLOCK
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import build_snapshot
from tests.support.timezones import local, zone
from tests.support.wire import make_query

MONO = 1000.0  # the records' clock (the event loop's) at every collect
CATEGORIES = {0: "adult", 1: "games", RULE_WINDOW_BLOCK: "policy:schedule"}
GROUPS = {"192.168.1.20": "kids", "192.168.1.21": "kids", "192.168.1.10": "parents"}


class Rig:
    """A query log, a writer on it, and a wall clock set to a local time in London."""

    def __init__(self, directory: Path, size: int = 1000, **kw: Any) -> None:
        self.tz = zone("Europe/London")
        self.log = QueryLog(size)
        self.directory = directory
        self.now = local(self.tz, "2026-03-02 14:30")
        self.mono = MONO
        self.group_calls: list[str] = []
        self.category_calls: list[int] = []
        self.writer = self.make_writer(**kw)

    def make_writer(self, **kw: Any) -> HistoryWriter:
        def group_of(ip: str) -> str:
            self.group_calls.append(ip)
            return GROUPS.get(ip, "default")

        def category_of(rule: int) -> str:
            self.category_calls.append(rule)
            return CATEGORIES[rule]

        return HistoryWriter(
            self.log,
            str(self.directory),
            group_of=group_of,
            category_of=category_of,
            tz=self.tz,
            clock=lambda: self.now,
            monotonic=lambda: self.mono,
            **kw,
        )

    def at(self, when: str) -> float:
        """The record time (monotonic) of a local time, as the next collect will read it."""
        return self.mono - (self.now - local(self.tz, when))

    def add(
        self,
        when: str,
        client: str,
        name: str,
        reason: int = R_RESOLVED,
        rule: int = -1,
        qtype: str = "A",
    ) -> None:
        self.log.append((self.at(when), client, make_query(name, qtype, edns=1232), reason, rule))

    def block(self, when: str, client: str, name: str, rule: int = 0) -> None:
        self.add(when, client, name, R_BLOCKED, rule)

    def lines(self, day: str = "2026-03-02") -> list[dict[str, Any]]:
        path = self.directory / f"{day}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "history")


def totals_of(
    directory: Path, since: float = 0.0, **kw: Any
) -> dict[tuple[str, str, str], list[int]]:
    return read_history(str(directory), since, **kw).totals


# --- what a flush stores ------------------------------------------------------------------------


def test_a_flush_stores_hourly_totals_and_the_blocked_names_only(rig: Rig) -> None:
    rig.add("2026-03-02 13:10", "192.168.1.20", "homework.test")
    rig.add("2026-03-02 14:05", "192.168.1.20", "homework.test")
    rig.add("2026-03-02 14:06", "192.168.1.20", "maths.test", R_CACHED)
    rig.block("2026-03-02 14:07", "192.168.1.20", "WWW.Adult.Test", rule=0)
    rig.block("2026-03-02 14:08", "192.168.1.20", "www.adult.test.", rule=0)
    rig.block("2026-03-02 14:09", "192.168.1.20", "games.test", rule=1)
    rig.add("2026-03-02 14:10", "192.168.1.10", "news.test")
    rig.block("2026-03-02 14:11", "192.168.1.21", "games.test", rule=RULE_WINDOW_BLOCK)
    rig.add("2026-03-02 14:12", "192.168.1.21", "version.bind", R_REFUSED)

    batch = rig.writer.flush()

    assert (batch.records, batch.lost) == (9, 0)
    [line] = rig.lines()
    assert (line["v"], line["lost"], line["anonymised"]) == (1, 0, False)
    assert line["at"] == "2026-03-02T14:30:00+00:00"
    assert line["hours"] == [
        {
            "hour": "2026-03-02T13:00+00:00",
            "totals": [["192.168.1.20", "kids", 1, 0]],
            "blocked": [],
        },
        {
            "hour": "2026-03-02T14:00+00:00",
            "totals": [
                ["192.168.1.10", "parents", 1, 0],
                ["192.168.1.20", "kids", 5, 3],
                ["192.168.1.21", "kids", 2, 1],
            ],
            "blocked": [
                ["192.168.1.20", "kids", "adult", "www.adult.test", 2],
                ["192.168.1.20", "kids", "games", "games.test", 1],
                ["192.168.1.21", "kids", "policy:schedule", "games.test", 1],
            ],
        },
    ]
    raw = (rig.directory / "2026-03-02.jsonl").read_text()
    for allowed in ("homework", "maths", "news", "version.bind"):
        assert allowed not in raw, f"an allowed name ({allowed}) was stored"


def test_group_and_category_are_asked_once_per_client_and_rule_not_per_record(rig: Rig) -> None:
    for minute in range(10, 40):
        rig.block(f"2026-03-02 14:{minute:02d}", "192.168.1.20", f"n{minute % 3}.adult.test")
        rig.add(f"2026-03-02 13:{minute:02d}", "192.168.1.21", "ok.test")
    rig.writer.flush()
    assert sorted(rig.group_calls) == ["192.168.1.20", "192.168.1.21"]
    assert rig.category_calls == [0]


def test_a_second_flush_takes_only_what_was_appended_since_the_first(rig: Rig) -> None:
    rig.block("2026-03-02 14:01", "192.168.1.20", "adult.test")
    rig.writer.flush()
    path = rig.directory / "2026-03-02.jsonl"
    before = path.read_bytes()

    assert rig.writer.flush().records == 0
    assert path.read_bytes() == before, "an empty flush wrote to the SD card"

    rig.block("2026-03-02 14:20", "192.168.1.20", "adult.test")
    rig.add("2026-03-02 14:21", "192.168.1.20", "ok.test")
    assert rig.writer.flush().records == 2
    assert len(rig.lines()) == 2
    history = read_history(str(rig.directory), 0.0)
    assert history.totals == {("2026-03-02T14:00+00:00", "192.168.1.20", "kids"): [3, 2]}
    key = ("2026-03-02T14:00+00:00", "192.168.1.20", "kids", "adult", "adult.test")
    assert history.blocked == {key: 2}
    assert rig.writer.records == 3
    assert rig.writer.batches == 2


def test_what_was_logged_before_the_writer_started_is_not_counted(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "history")
    rig.add("2026-03-02 14:01", "192.168.1.20", "ok.test")
    rig.writer = rig.make_writer()
    rig.add("2026-03-02 14:02", "192.168.1.20", "ok.test")
    assert rig.writer.flush().records == 1


# --- the ring buffer wrapped ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appended", "lost"),
    [
        pytest.param(3, 0, id="less-than-the-buffer"),
        pytest.param(4, 0, id="exactly-the-buffer"),
        pytest.param(5, 1, id="one-overwritten"),
        pytest.param(23, 19, id="wrapped-many-times"),
    ],
)
def test_records_overwritten_before_a_flush_are_counted_as_lost(
    tmp_path: Path, appended: int, lost: int
) -> None:
    rig = Rig(tmp_path / "history", size=4)
    for i in range(appended):
        rig.block(f"2026-03-02 14:{i:02d}", "192.168.1.20", f"n{i}.adult.test")
    batch = rig.writer.flush()
    assert (batch.records, batch.lost, rig.writer.lost) == (appended - lost, lost, lost)
    [line] = rig.lines()
    assert line["lost"] == lost
    names = [row[3] for row in line["hours"][0]["blocked"]]
    kept = [f"n{i}.adult.test" for i in range(lost, appended)]
    assert sorted(names) == sorted(kept), "not the newest records"
    assert read_history(str(rig.directory), 0.0).lost == lost


def test_a_flush_after_the_buffer_wrapped_reads_the_new_records_in_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "history", size=4)
    for i in range(3):
        rig.add(f"2026-03-02 13:{i:02d}", "192.168.1.20", "ok.test")
    rig.writer.flush()
    for i in range(3):  # slots 3, 0, 1: across the end of the buffer
        rig.block(f"2026-03-02 14:{i:02d}", "192.168.1.21", f"n{i}.adult.test")
    batch = rig.writer.flush()
    assert (batch.records, batch.lost) == (3, 0)
    last = rig.lines()[-1]
    assert [h["hour"] for h in last["hours"]] == ["2026-03-02T14:00+00:00"]
    assert last["hours"][0]["totals"] == [["192.168.1.21", "kids", 3, 3]]


def test_frequent_reads_keep_a_small_buffer_from_wrapping_between_writes(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "history", size=4, flush_interval=300.0)
    path = rig.directory / "2026-03-02.jsonl"
    for tick in range(5):  # 15 queries through a 4-record buffer, read every 5 s
        for i in range(3):
            rig.block(f"2026-03-02 14:{tick * 3 + i:02d}", "192.168.1.20", "adult.test")
        assert rig.writer.tick() is None, "a batch before flush_interval passed"
        rig.mono += 5.0
        rig.now += 5.0
    assert not path.exists(), "written before flush_interval"
    rig.mono += 300.0
    rig.now += 300.0
    batch = rig.writer.tick()
    assert batch is not None
    assert (batch.records, batch.lost) == (15, 0)
    batch.write()
    [line] = rig.lines()
    assert line["hours"][0]["blocked"] == [["192.168.1.20", "kids", "adult", "adult.test", 15]]
    assert rig.writer.tick() is None, "the next batch is due flush_interval later"


# --- days, hours and retention --------------------------------------------------------------------


def test_a_batch_across_midnight_goes_to_the_file_of_each_day(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "history")
    rig.now = local(rig.tz, "2026-03-03 00:04")
    rig.block("2026-03-02 23:58", "192.168.1.20", "late.adult.test")
    rig.block("2026-03-03 00:02", "192.168.1.20", "early.adult.test")
    rig.writer.flush()
    [day1] = rig.lines("2026-03-02")
    [day2] = rig.lines("2026-03-03")
    assert [h["hour"] for h in day1["hours"]] == ["2026-03-02T23:00+00:00"]
    assert [h["hour"] for h in day2["hours"]] == ["2026-03-03T00:00+00:00"]


def test_the_hour_repeated_when_clocks_go_back_stays_two_hours(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "history")
    tz = rig.tz
    rig.now = local(tz, "2026-10-25 02:30")
    first = local(tz, "2026-10-25 01:30", fold=0)  # BST
    second = local(tz, "2026-10-25 01:30", fold=1)  # GMT, an hour later
    for t in (first, second, second):
        q = make_query("adult.test")
        rig.log.append((MONO - (rig.now - t), "192.168.1.20", q, R_BLOCKED, 0))
    rig.writer.flush()
    [line] = rig.lines("2026-10-25")
    assert [(h["hour"], h["totals"][0][2]) for h in line["hours"]] == [
        ("2026-10-25T01:00+01:00", 1),
        ("2026-10-25T01:00+00:00", 2),
    ]


def test_hours_follow_the_wall_clock_when_it_is_stepped(rig: Rig) -> None:
    """A Pi without a clock chip boots in 1970-ish time and NTP corrects it later."""
    rig.now = 86400.0 * 3  # the clock before NTP
    rig.log.append((MONO - 10, "192.168.1.20", make_query("ok.test"), R_RESOLVED, -1))
    rig.writer.flush()
    rig.now = local(rig.tz, "2026-03-02 14:30")  # stepped
    rig.log.append((MONO - 10, "192.168.1.20", make_query("ok.test"), R_RESOLVED, -1))
    rig.writer.flush()
    [line] = rig.lines()
    assert line["hours"][0]["hour"] == "2026-03-02T14:00+00:00"


def test_retention_deletes_day_files_older_than_the_limit_at_flush_time(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    directory.mkdir()
    for name in ("2026-01-29.jsonl", "2026-01-30.jsonl", "2026-01-31.jsonl", "2026-03-01.jsonl"):
        (directory / name).write_text("")
    (directory / "notes.txt").write_text("not ours")
    (directory / "2026-13-01.jsonl").write_text("not a date")
    rig = Rig(directory, retention_days=30)
    rig.add("2026-03-02 14:01", "192.168.1.20", "ok.test")
    rig.writer.flush()
    assert sorted(os.listdir(directory)) == [
        "2026-01-31.jsonl",  # 30 days before 2026-03-02: kept
        "2026-03-01.jsonl",
        "2026-03-02.jsonl",
        "2026-13-01.jsonl",
        "notes.txt",
    ]


def test_a_retention_below_one_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="retention_days"):
        Rig(tmp_path / "history", retention_days=0)


# --- anonymised -----------------------------------------------------------------------------------


def test_anonymised_clients_keep_a_stable_pseudonym_and_the_secret_is_private(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "history"
    rig = Rig(directory, anonymise=True)
    secret_path = directory / SECRET_FILE
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    rig.block("2026-03-02 14:01", "192.168.1.20", "adult.test")
    rig.block("2026-03-02 14:02", "192.168.1.21", "adult.test")
    rig.writer.flush()
    secret = secret_path.read_bytes()

    again = Rig(directory, anonymise=True)  # a restart: same secret, same pseudonyms
    assert secret_path.read_bytes() == secret
    again.block("2026-03-02 14:03", "192.168.1.20", "adult.test")
    again.writer.flush()

    lines = again.lines()
    raw = (directory / "2026-03-02.jsonl").read_text()
    assert "192.168.1." not in raw, "an address was stored in anonymised mode"
    first = {tuple(r[:2]) for r in lines[0]["hours"][0]["blocked"]}
    second = {tuple(r[:2]) for r in lines[1]["hours"][0]["blocked"]}
    [(p20, group)] = second
    assert group == "kids", "the group is looked up with the real address"
    assert len(first) == 2 and (p20, "kids") in first, "the same device changed pseudonym"
    assert len(p20) == 12 and int(p20, 16) >= 0
    assert all(line["anonymised"] for line in lines)
    assert p20 == pseudonym(bytes.fromhex(secret.decode().strip()), "192.168.1.20")
    assert read_history(str(directory), 0.0).anonymised


def test_a_new_secret_gives_new_pseudonyms(tmp_path: Path) -> None:
    one = Rig(tmp_path / "one", anonymise=True)
    two = Rig(tmp_path / "two", anonymise=True)
    for rig in (one, two):
        rig.block("2026-03-02 14:01", "192.168.1.20", "adult.test")
        rig.writer.flush()
    assert one.lines()[0]["hours"][0]["totals"][0][0] != two.lines()[0]["hours"][0]["totals"][0][0]


def test_a_loosened_secret_file_is_made_private_again(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    Rig(directory, anonymise=True)
    os.chmod(directory / SECRET_FILE, 0o644)
    Rig(directory, anonymise=True)
    assert stat.S_IMODE((directory / SECRET_FILE).stat().st_mode) == 0o600


def test_a_secret_file_that_is_not_a_secret_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    directory.mkdir()
    (directory / SECRET_FILE).write_text("hello\n")
    with pytest.raises(HistoryError, match="not a history secret"):
        Rig(directory, anonymise=True)


# --- damaged files, failing callables -------------------------------------------------------------


def test_a_line_cut_short_is_skipped_and_the_next_flush_starts_a_new_line(rig: Rig) -> None:
    rig.block("2026-03-02 14:01", "192.168.1.20", "adult.test")
    rig.writer.flush()
    path = rig.directory / "2026-03-02.jsonl"
    with path.open("a") as f:
        f.write('{"v":1,"at":"2026-03-02T14:10:00+00:00","hours":[{"hour":"2026-03-0')  # power cut
    rig.block("2026-03-02 14:20", "192.168.1.20", "adult.test")
    rig.writer.flush()
    with path.open("a") as f:
        f.write("garbage\n")
        f.write('{"v":1,"at":"2026-03-02T14:40:00+00:00","lost":0,"hours":[{"hour":"x"}]}\n')
        f.write('{"v":99,"at":"2026-03-02T14:40:00+00:00","lost":0,"hours":[]}\n')
        f.write(
            '{"v":1,"at":"2026-03-02T14:40:00+00:00","lost":0,"hours":[{"hour":'
            '"2026-03-02T14:00+00:00","totals":[["192.168.1.20","kids",-5,0]],"blocked":[]}]}\n'
        )
    history = read_history(str(rig.directory), 0.0)
    assert history.corrupt == 5
    assert history.lines == 7
    assert history.totals == {("2026-03-02T14:00+00:00", "192.168.1.20", "kids"): [2, 2]}


def test_a_client_no_group_matches_and_a_rule_no_list_has_do_not_lose_the_batch(rig: Rig) -> None:
    def broken(_: object) -> str:
        raise ValueError("cannot place it")

    rig.writer.group_of = broken
    rig.writer.category_of = broken
    rig.block("2026-03-02 14:01", "fe80::1%eth0", "adult.test", rule=77)
    rig.writer.flush()
    [line] = rig.lines()
    assert line["hours"][0]["blocked"] == [["fe80::1%eth0", "?", "unknown", "adult.test", 1]]


def test_a_failed_write_raises_and_is_counted(rig: Rig) -> None:
    (rig.directory / "2026-03-02.jsonl").mkdir()  # the day file cannot be opened
    rig.add("2026-03-02 14:01", "192.168.1.20", "ok.test")
    with pytest.raises(OSError):
        rig.writer.flush()
    assert rig.writer.write_errors == 1


# --- reading: filters -----------------------------------------------------------------------------


def test_read_history_filters_by_group_client_and_since(rig: Rig) -> None:
    rig.block("2026-03-02 12:10", "192.168.1.20", "adult.test")
    rig.block("2026-03-02 14:10", "192.168.1.20", "adult.test")
    rig.block("2026-03-02 14:11", "192.168.1.10", "games.test", rule=1)
    rig.writer.flush()
    d = rig.directory
    assert set(totals_of(d, group="parents")) == {
        ("2026-03-02T14:00+00:00", "192.168.1.10", "parents")
    }
    assert {k[0] for k in totals_of(d, clients=frozenset({"192.168.1.20"}))} == {
        "2026-03-02T12:00+00:00",
        "2026-03-02T14:00+00:00",
    }
    # An hour is in when it ends after --since: 13:30 keeps 14:00-15:00, drops 12:00-13:00.
    since = local(rig.tz, "2026-03-02 13:30")
    assert {k[0] for k in totals_of(d, since)} == {"2026-03-02T14:00+00:00"}
    assert read_history(str(d / "missing"), 0.0).files == 0


# --- categories from a real snapshot --------------------------------------------------------------


def test_rule_category_names_the_list_category_of_a_real_block(tmp_path: Path) -> None:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\n")
    config = load_config_text(
        "blocking:\n"
        "  lists:\n"
        "    - {file: adult.txt, category: adult}\n"
        "    - {file: games.txt, category: games}\n",
        base_dir=str(tmp_path),
    )
    snap = build_snapshot(config, 1)
    for name, category in (("www.adult.test", "adult"), ("games.test", "games")):
        verdict, rule, _mask = snap.filter.decide(name)
        assert verdict == BLOCK
        assert rule_category(snap, rule) == category
    assert rule_category(snap, 4095) == "unknown"


@pytest.mark.parametrize(
    ("rule", "category"),
    [
        pytest.param(RULE_GROUP_BLOCK, "policy:group-block", id="group-block"),
        pytest.param(RULE_WINDOW_BLOCK, "policy:schedule", id="schedule"),
        pytest.param(RULE_BUDGET_SPENT, "policy:time-budget", id="budget"),
        pytest.param(-11, "policy:safe-search", id="safe-search"),
        pytest.param(-2, "policy:bypass-protection", id="bypass"),
        pytest.param(-1, "policy", id="no-rule"),
    ],
)
def test_blocks_no_list_made_are_policy_categories_by_cause(rule: int, category: str) -> None:
    assert rule_category(None, rule) == category  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("WWW.Example.TEST", "www.example.test", id="lower-case"),
        pytest.param("example.test.", "example.test", id="no-trailing-dot"),
        pytest.param("", ".", id="root"),
    ],
)
def test_question_name_reads_the_name_as_blocked(name: str, expected: str) -> None:
    assert question_name(make_query(name, edns=1232)) == expected
