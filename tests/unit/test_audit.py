"""The audit log on disk: one whole JSON line per change, locked, rotated, read back oldest first.

Real files in ``tmp_path`` and real processes for the concurrent writers; the clock is injected
through ``record(now=...)``.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian_dns import audit


@pytest.fixture(autouse=True)
def _no_admin_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SUDO_USER", "SSH_CONNECTION", "SSH_CLIENT"):
        monkeypatch.delenv(var, raising=False)


def lines(state: Path, name: str = "audit.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "audit" / name).read_text().splitlines()]


def test_an_entry_holds_who_what_when_why_and_how_it_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.7 52144 192.0.2.1 22")
    args = {"names": ["youtube.com"], "group": "kids", "for": "45m"}
    warning = audit.record(
        str(tmp_path), "allow", args, "ok", "allowed youtube.com", "homework", now=1_800_000_000.5
    )
    assert warning is None
    [entry] = lines(tmp_path)
    assert entry == {
        "time": 1_800_000_000.5,
        "iso": datetime.fromtimestamp(1_800_000_000.5).astimezone().isoformat("T", "seconds"),
        "verb": "allow",
        "args": args,
        "result": "ok",
        "detail": "allowed youtube.com",
        "user": audit.identity({})[0],
        "sudo_user": "alice",
        "ssh": "192.0.2.7",
        "comment": "homework",
        "pid": os.getpid(),
    }
    assert list(audit.read(str(tmp_path))) == [entry]


@pytest.mark.parametrize(
    ("environ", "sudo_user", "ssh"),
    [
        pytest.param({}, None, None, id="local-login"),
        pytest.param({"SUDO_USER": "bob"}, "bob", None, id="sudo"),
        pytest.param({"SSH_CLIENT": "2001:db8::7 52144 22"}, None, "2001:db8::7", id="ssh-client"),
        pytest.param(
            {"SSH_CONNECTION": "192.0.2.7 1 192.0.2.1 22", "SSH_CLIENT": "192.0.2.8 1 22"},
            None,
            "192.0.2.7",
            id="ssh-connection-first",
        ),
        pytest.param({"SSH_CONNECTION": "not-an-address 1 2 3"}, None, None, id="ssh-garbage"),
        pytest.param({"SUDO_USER": ""}, None, None, id="empty-sudo-user"),
    ],
)
def test_identity_comes_from_the_uid_sudo_and_ssh(
    environ: dict[str, str], sudo_user: str | None, ssh: str | None
) -> None:
    user, got_sudo, got_ssh = audit.identity(environ)
    assert user and (got_sudo, got_ssh) == (sudo_user, ssh)


def test_the_directory_is_0750_and_the_files_0640_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        assert audit.record(str(tmp_path / "state"), "pause", {}, "ok", "x") is None
    finally:
        os.umask(old)
    directory = tmp_path / "state" / "audit"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    for name in ("audit.jsonl", "audit.lock"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o640, name


def test_rotation_keeps_n_files_each_under_the_size_and_drops_the_oldest(tmp_path: Path) -> None:
    state = str(tmp_path)
    for i in range(60):
        written = audit.record(state, "pause", {"i": i}, "ok", "x" * 50, max_bytes=1000, keep=3)
        assert written is None
    names = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3", "audit.lock"]
    for name in names[:-1]:
        assert 0 < (tmp_path / "audit" / name).stat().st_size <= 1000, name
    kept = [e["args"]["i"] for e in audit.read(state)]
    # Oldest first, one run of the most recent entries, ending with the last one written.
    assert kept == list(range(60 - len(kept), 60)) and len(kept) < 60
    assert lines(tmp_path, "audit.jsonl.3")[0]["args"]["i"] == kept[0]


def _writer(state: str, worker: int, count: int) -> None:
    for seq in range(count):
        warning = audit.record(
            state, "pause", {"worker": worker, "seq": seq}, "ok", "y" * 100, max_bytes=8192
        )
        assert warning is None, warning


def test_concurrent_writers_all_land_whole_and_in_order(tmp_path: Path) -> None:
    workers, count = 4, 40
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    entries = audit.read(str(tmp_path))
    seen = [(e["args"]["worker"], e["args"]["seq"]) for e in entries]
    assert entries.skipped == 0, "every line is one whole entry"
    assert sorted(seen) == [(w, s) for w in range(workers) for s in range(count)]
    for w in range(workers):  # oldest first across the rotated files
        assert [s for ww, s in seen if ww == w] == list(range(count))
    assert len(list((tmp_path / "audit").glob("audit.jsonl.*"))) >= 2, "it rotated meanwhile"


def test_since_keeps_the_recent_entries_and_skips_older_files(tmp_path: Path) -> None:
    state = str(tmp_path)
    for t in (1000.0, 2000.0, 3000.0):
        audit.record(state, "pause", {}, "ok", str(t), now=t, max_bytes=1, keep=5)
    # Each entry is in a file of its own; the oldest file was last written long ago.
    os.utime(tmp_path / "audit" / "audit.jsonl.2", (1000.0, 1000.0))
    assert [e["time"] for e in audit.read(state, since=2000.0)] == [2000.0, 3000.0]
    assert [e["time"] for e in audit.read(state, since=None)] == [1000.0, 2000.0, 3000.0]
    assert list(audit.read(state, since=3000.5)) == []


def test_a_damaged_line_is_skipped_and_counted_and_the_next_entry_is_whole(
    tmp_path: Path,
) -> None:
    state = str(tmp_path)
    audit.record(state, "pause", {}, "ok", "first", now=1.0)
    with open(tmp_path / "audit" / "audit.jsonl", "ab") as f:
        f.write(b"not json\n[1, 2]\n" + b'{"time": "yesterday", "verb": "x", "result": "ok"}\n')
        f.write(b'\xff\xfe\n{"time": 2.0, "verb": "allow", "res')  # a writer died mid-line
    audit.record(state, "resume", {}, "ok", "last", now=3.0)
    entries = audit.read(state)
    assert [e["detail"] for e in entries] == ["first", "last"]
    assert entries.skipped == 5


def test_no_log_is_no_entries(tmp_path: Path) -> None:
    entries = audit.read(str(tmp_path / "never-written"))
    assert list(entries) == [] and entries.skipped == 0


def test_a_log_that_cannot_be_opened_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "audit" / "audit.jsonl").mkdir(parents=True)  # unreadable even for root
    with pytest.raises(audit.AuditLogError, match=r"audit\.jsonl: cannot read"):
        audit.read(str(tmp_path))


def test_a_log_that_cannot_be_written_is_a_warning_never_an_exception(tmp_path: Path) -> None:
    (tmp_path / "audit").write_text("a file where the directory should be\n")
    warning = audit.record(str(tmp_path), "pause", {}, "ok", "paused")
    assert warning is not None
    assert warning.startswith("the audit log could not be written: ")
    assert str(tmp_path / "audit") in warning


@pytest.fixture
def held_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(audit, "LOCK_TIMEOUT", 0.2)
    (tmp_path / "audit").mkdir()
    fd = os.open(tmp_path / "audit" / "audit.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.usefixtures("held_lock")
def test_a_stuck_writer_holding_the_lock_is_a_warning_not_a_hang(tmp_path: Path) -> None:
    warning = audit.record(str(tmp_path), "pause", {}, "ok", "paused")
    assert warning is not None and "held the lock" in warning
    assert not (tmp_path / "audit" / "audit.jsonl").exists()


def test_long_details_and_comments_are_cut(tmp_path: Path) -> None:
    audit.record(str(tmp_path), "pause", {}, "refused", "d" * 2000, "c" * 2000)
    [entry] = lines(tmp_path)
    assert len(entry["detail"]) == audit.MAX_DETAIL and entry["detail"].endswith("...")
    assert len(entry["comment"]) == audit.MAX_COMMENT


def test_a_result_outside_ok_refused_error_is_a_callers_bug(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of ok, refused, error"):
        audit.record(str(tmp_path), "pause", {}, "maybe", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30m", 100_000.0 - 1800, id="minutes"),
        pytest.param("12h", 100_000.0 - 12 * 3600, id="hours"),
        pytest.param("7d", 100_000.0 - 7 * 86400, id="days"),
        pytest.param("1w", 100_000.0 - 7 * 86400, id="weeks"),
        pytest.param("1d12h", 100_000.0 - 36 * 3600, id="combined"),
        pytest.param("2026-11-01", datetime(2026, 11, 1).astimezone().timestamp(), id="local-date"),
        pytest.param(
            "2026-11-01 18:00",
            datetime(2026, 11, 1, 18).astimezone().timestamp(),
            id="local-time",
        ),
        pytest.param(
            "2026-11-01T18:00+01:00",
            datetime(2026, 11, 1, 17, tzinfo=UTC).timestamp(),
            id="with-offset",
        ),
    ],
)
def test_since_takes_a_time_back_or_a_date(text: str, expected: float) -> None:
    assert audit.parse_since(text, 100_000.0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "", "7", "-1d", "2026-13-01"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected a time back"):
        audit.parse_since(text, 100_000.0)


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        pytest.param({"user": "bob"}, "bob", id="local"),
        pytest.param({"user": "root", "sudo_user": "alice"}, "alice (sudo)", id="sudo"),
        pytest.param({"user": "svc", "sudo_user": "alice"}, "alice (sudo as svc)", id="sudo-u"),
        pytest.param(
            {"user": "root", "sudo_user": "alice", "ssh": "192.0.2.7"},
            "alice (sudo, ssh 192.0.2.7)",
            id="sudo-over-ssh",
        ),
        pytest.param({"user": "bob", "ssh": "192.0.2.7"}, "bob (ssh 192.0.2.7)", id="ssh"),
    ],
)
def test_the_user_column_says_how_they_came_in(entry: dict[str, Any], shown: str) -> None:
    assert audit.user_text(entry) == shown


def test_args_read_like_the_command_line() -> None:
    args = {"for": "1h30m", "group": "kids", "names": ["a.test", "b.test"], "all": True}
    assert audit.args_text(args) == "a.test b.test --for 1h30m --group kids --all"
    assert audit.duration_text(5400.0) == "1h30m" and audit.duration_text(86400) == "1d"
