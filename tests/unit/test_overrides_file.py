"""The overrides file: what ``guardian-dns pause/allow/resume`` write and the server reads.

A parent's "allow youtube.com for 45 minutes" must reach the server whole, survive a second admin
editing at the same moment, and never be thrown away because the file was damaged: reading never
changes anything on disk, an edit of a damaged file refuses and names it, and an edit that fails
halfway writes nothing. Instants are explicit Unix times; nothing reads the clock.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from guardian_dns.errors import GuardianError
from guardian_dns.overrides import (
    LOCK_FILE,
    OVERRIDES_FILE,
    OverridesFileError,
    client_target,
    edit_overrides,
    file_mark,
    read_overrides,
)
from guardian_dns.usage import FORMAT, VERSION, Budgets, Override, Overrides, UsageState

T0 = 1_795_550_000.0  # Tue 2026-11-24 19:53 UTC
REPO_ROOT = Path(__file__).resolve().parents[2]


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def add_pause(
    t: float = T0, minutes: float = 15, target: str = "kids"
) -> Callable[[Overrides], Override]:
    return lambda ov: ov.add("pause", "group", target, None, t, minutes, "mum")


def test_an_edit_round_trips_through_the_file(tmp_path: Path) -> None:
    def change(ov: Overrides) -> tuple[str, str]:
        pause = ov.add("pause", "group", "kids", None, T0, 15, "mum")
        allow = ov.add("allow", "client", "192.168.1.23", "youtube.com", T0, 45, "dad via ssh")
        return pause.id, allow.id

    pause_id, allow_id = edit_overrides(str(tmp_path), T0, change)
    overrides, error = read_overrides(str(tmp_path), T0 + 60)
    assert error is None
    assert [(o.id, o.kind, o.target, o.domain, o.who) for o in overrides.active(T0 + 60)] == [
        (pause_id, "pause", "kids", None, "mum"),
        (allow_id, "allow", "192.168.1.23", "youtube.com", "dad via ssh"),
    ]
    allow = overrides.get(allow_id)
    assert allow is not None and allow.expires == T0 + 45 * 60


def test_the_file_is_in_the_usage_state_format_with_no_budgets(tmp_path: Path) -> None:
    edit_overrides(str(tmp_path), T0, add_pause())
    doc = json.loads((tmp_path / OVERRIDES_FILE).read_bytes())
    assert doc["format"] == FORMAT
    assert doc["version"] == VERSION
    assert doc["budgets"] == []
    assert len(doc["overrides"]) == 1
    # The server's own loader reads it too.
    state = UsageState(str(tmp_path / OVERRIDES_FILE), Budgets(ZoneInfo("UTC"), {}), Overrides())
    assert state.load(T0) is True
    assert len(state.overrides) == 1


def test_no_file_means_no_overrides_and_reading_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    overrides, error = read_overrides(str(missing), T0)
    assert (len(overrides), error) == (0, None)
    assert file_mark(str(missing)) is None
    assert not missing.exists()
    overrides, error = read_overrides(str(tmp_path), T0)
    assert (len(overrides), error) == (0, None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(b'{"format": "something else"}', "format", id="foreign-format"),
        pytest.param(
            json.dumps(
                {"format": FORMAT, "version": 99, "saved": T0, "budgets": [], "overrides": []}
            ).encode(),
            "version 99",
            id="newer-version",
        ),
        pytest.param(
            json.dumps(
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "saved": T0,
                    "budgets": [
                        {
                            "client": "tablet",
                            "key": "games",
                            "group": "kids",
                            "minute": T0,
                            "granted": True,
                            "used": 3,
                        }
                    ],
                    "overrides": [],
                }
            ).encode(),
            "is it usage.json",
            id="a-usage-file-with-budgets",
        ),
    ],
)
def test_a_damaged_file_is_reported_by_name_and_left_exactly_as_it_was(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / OVERRIDES_FILE
    path.write_bytes(content)
    before = listing(tmp_path)
    mark = file_mark(str(tmp_path))

    overrides, error = read_overrides(str(tmp_path), T0)
    assert len(overrides) == 0
    assert error is not None
    assert str(path) in error and reason in error
    assert listing(tmp_path) == before  # nothing moved aside, created or rewritten
    assert file_mark(str(tmp_path)) == mark

    with pytest.raises(OverridesFileError) as raised:
        edit_overrides(str(tmp_path), T0, add_pause())
    assert isinstance(raised.value, GuardianError)
    assert str(path) in str(raised.value) and reason in str(raised.value)
    assert path.read_bytes() == content


def test_a_change_that_raises_writes_nothing(tmp_path: Path) -> None:
    def broken(ov: Overrides) -> None:
        ov.add("pause", "group", "kids", None, T0, 15)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        edit_overrides(str(tmp_path), T0, broken)
    assert not (tmp_path / OVERRIDES_FILE).exists()

    edit_overrides(str(tmp_path), T0, add_pause())
    before = (tmp_path / OVERRIDES_FILE).read_bytes()
    mark = file_mark(str(tmp_path))
    with pytest.raises(ValueError):
        edit_overrides(str(tmp_path), T0, lambda ov: ov.add("allow", "group", "kids", "x", T0, 5))
    assert (tmp_path / OVERRIDES_FILE).read_bytes() == before
    assert file_mark(str(tmp_path)) == mark


def test_ended_overrides_are_dropped_when_read_and_when_written(tmp_path: Path) -> None:
    edit_overrides(str(tmp_path), T0, add_pause(minutes=10))
    edit_overrides(str(tmp_path), T0, add_pause(minutes=60, target="teens"))
    assert len(read_overrides(str(tmp_path), T0 + 9 * 60)[0]) == 2
    assert len(read_overrides(str(tmp_path), T0 + 10 * 60)[0]) == 1  # [created, expires)

    # An edit that changes nothing still rewrites the file without the ended one.
    edit_overrides(str(tmp_path), T0 + 11 * 60, lambda ov: None)
    doc = json.loads((tmp_path / OVERRIDES_FILE).read_bytes())
    assert [o["target"] for o in doc["overrides"]] == ["teens"]


def test_an_edit_that_changes_nothing_leaves_the_file_alone(tmp_path: Path) -> None:
    edit_overrides(str(tmp_path), T0, add_pause())
    mark = file_mark(str(tmp_path))
    assert edit_overrides(str(tmp_path), T0 + 1, lambda ov: len(ov)) == 1
    assert file_mark(str(tmp_path)) == mark
    # Nor does an empty edit create a file the server would then poll.
    empty = tmp_path / "empty"
    edit_overrides(str(empty), T0, lambda ov: None)
    assert not (empty / OVERRIDES_FILE).exists()


def test_every_edit_changes_the_mark_the_server_polls(tmp_path: Path) -> None:
    assert file_mark(str(tmp_path)) is None
    edit_overrides(str(tmp_path), T0, add_pause())
    first = file_mark(str(tmp_path))
    assert first is not None
    st = os.stat(tmp_path / OVERRIDES_FILE)
    assert first == (st.st_ino, st.st_mtime_ns, st.st_size)
    read_overrides(str(tmp_path), T0)
    assert file_mark(str(tmp_path)) == first
    edit_overrides(str(tmp_path), T0, add_pause(target="teens"))
    assert file_mark(str(tmp_path)) not in (None, first)


def test_the_lock_file_is_created_group_writable(tmp_path: Path) -> None:
    edit_overrides(str(tmp_path / "state"), T0, add_pause())
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / LOCK_FILE).st_mode)
    assert mode == 0o660


def test_an_edit_removes_temporaries_a_crashed_edit_left_but_a_read_does_not(
    tmp_path: Path,
) -> None:
    stale = tmp_path / f".{OVERRIDES_FILE}-crashed.tmp"
    stale.write_bytes(b"half")
    read_overrides(str(tmp_path), T0)
    assert stale.exists()
    edit_overrides(str(tmp_path), T0, add_pause())
    assert not stale.exists()


EDITOR = """
import sys, time
from guardian_dns.overrides import edit_overrides

directory, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # start together
for i in range(count):
    def change(ov, i=i):
        o = ov.add("allow", "group", target, f"site{i}.{target}.test", 1795550000.0, 60)
        time.sleep(0.002)  # hold the lock a moment: the other editor must wait, not overwrite
        return o.id
    print(edit_overrides(directory, 1795550000.0, change), flush=True)
"""


def test_two_processes_editing_at_once_both_land(tmp_path: Path) -> None:
    count = 25
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    editors = [
        subprocess.Popen(
            [sys.executable, "-c", EDITOR, str(tmp_path), target, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for target in ("kids", "teens")
    ]
    for p in editors:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ids: list[str] = []
    for p in editors:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        ids += out.split()
    overrides, error = read_overrides(str(tmp_path), 1795550000.0)
    assert error is None
    assert len(ids) == 2 * count
    assert sorted(o.id for o in overrides.active(1795550000.0)) == sorted(ids)


def test_a_held_lock_makes_an_edit_wait_then_refuse_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardian_dns import overrides as overrides_mod

    monkeypatch.setattr(overrides_mod, "LOCK_TIMEOUT", 0.2)
    edit_overrides(str(tmp_path), T0, add_pause())
    before = (tmp_path / OVERRIDES_FILE).read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            "f = open(sys.argv[1], 'r+')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n",
            str(tmp_path / LOCK_FILE),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        start = time.monotonic()
        with pytest.raises(OverridesFileError, match="held the lock"):
            edit_overrides(str(tmp_path), T0, add_pause(target="teens"))
        assert time.monotonic() - start >= 0.2
    finally:
        holder.communicate("done\n", timeout=10)
    assert (tmp_path / OVERRIDES_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("text", "target"),
    [
        pytest.param("192.168.1.23", "192.168.1.23", id="ipv4"),
        pytest.param(" 192.168.1.23 ", "192.168.1.23", id="spaces"),
        pytest.param("::ffff:192.168.1.23", "192.168.1.23", id="ipv4-mapped"),
        pytest.param("FD00::23", "fd00::23", id="ipv6-lower-case"),
        pytest.param("fe80::1%eth0", "fe80::1", id="ipv6-zone-dropped"),
        pytest.param("AA-BB-CC-DD-EE-01", "aa:bb:cc:dd:ee:01", id="mac-dashes"),
        pytest.param("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:01", id="mac"),
    ],
)
def test_a_client_is_named_the_way_the_server_looks_it_up(text: str, target: str) -> None:
    assert client_target(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("emma-tablet", "not an IP address", id="a-device-name"),
        pytest.param("192.168.1.0/24", "not an IP address", id="a-network"),
        pytest.param("aa:bb:cc:dd:ee", "has 5 bytes", id="short-mac"),
        pytest.param("01:00:5e:00:00:01", "multicast", id="multicast-mac"),
    ],
)
def test_a_client_that_is_no_address_or_mac_is_refused_with_the_reason(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client_target(text)
