"""The saved domain table across restarts: reused, rejected when damaged, rebuilt when lists change.

Real server processes, a real state directory, real files; the client is dnspython over UDP.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess, write_config

BLOCKED = "blocked-by-table.example"


def _rcode(server: GuardianProcess, name: str) -> int:
    reply = dns.query.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=server.port, timeout=3
    )
    return reply.rcode()


def _config(tmp_path: Path, upstream: AuthServer, state: Path | str) -> Path:
    lists = tmp_path / "adult.txt"
    if not lists.exists():
        lists.write_text(f"# test list\n{BLOCKED}\nother.example\n")
    return write_config(
        tmp_path,
        upstream.port,
        lists={"adult": lists},
        extra_yaml=f"server:\n  state_dir: {state}\n",
    )


def test_a_restart_reuses_the_saved_table(tmp_path: Path, auth_server: AuthServer) -> None:
    state = tmp_path / "state"
    config = _config(tmp_path, auth_server, state)
    with GuardianProcess(config) as first:
        assert _rcode(first, "www." + BLOCKED) == dns.rcode.NXDOMAIN
        assert "domain table built" in first.stderr_text()
    assert (state / "domains.table").is_file()
    # No temporary file left: only the table and the query history's day files.
    assert sorted(p.name for p in state.iterdir()) == ["domains.table", "history"]
    assert all(p.suffix == ".jsonl" for p in (state / "history").iterdir())
    with GuardianProcess(config) as second:
        assert _rcode(second, BLOCKED) == dns.rcode.NXDOMAIN
        assert "domain table loaded from the state directory" in second.stderr_text()


def test_a_damaged_saved_table_is_reported_and_rebuilt(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    state = tmp_path / "state"
    config = _config(tmp_path, auth_server, state)
    with GuardianProcess(config):
        pass
    saved = state / "domains.table"
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(data)
    with GuardianProcess(config) as server:
        assert _rcode(server, BLOCKED) == dns.rcode.NXDOMAIN
        log = server.stderr_text()
    assert "saved domain table rejected, rebuilding from the lists" in log
    assert "checksum mismatch" in log
    assert "domain table built" in log


def test_a_foreign_file_in_place_of_the_table_is_rebuilt(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "domains.table").write_bytes(b"<html>captive portal</html>" * 10)
    with GuardianProcess(_config(tmp_path, auth_server, state)) as server:
        assert _rcode(server, BLOCKED) == dns.rcode.NXDOMAIN
        assert "not a Guardian DNS table" in server.stderr_text()


def test_a_changed_list_is_rebuilt_on_restart(tmp_path: Path, auth_server: AuthServer) -> None:
    state = tmp_path / "state"
    config = _config(tmp_path, auth_server, state)
    with GuardianProcess(config):
        pass
    lists = tmp_path / "adult.txt"
    lists.write_text(lists.read_text() + "added-later.example\n")
    with GuardianProcess(config) as server:
        assert _rcode(server, "added-later.example") == dns.rcode.NXDOMAIN
        assert "lists changed since" in server.stderr_text()


def test_an_unusable_state_directory_costs_the_fast_restart_not_the_filtering(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with GuardianProcess(_config(tmp_path, auth_server, blocker / "state")) as server:
        assert _rcode(server, BLOCKED) == dns.rcode.NXDOMAIN
        assert "unusable" in server.stderr_text()


def test_queries_are_answered_while_a_reload_rebuilds_the_table(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    """The rebuild runs in a child process: the server answers from the old table meanwhile."""
    lists = tmp_path / "adult.txt"
    # Big enough that the build takes a noticeable time in the child.
    lists.write_text(BLOCKED + "\n" + "".join(f"n{i}.bulk.example\n" for i in range(300_000)))
    config = _config(tmp_path, auth_server, tmp_path / "state")
    with GuardianProcess(config) as server:
        with open(lists, "a") as f:
            f.write("added-by-reload.example\n")
        server.send_signal(signal.SIGHUP)
        answered = 0
        deadline = time.monotonic() + 60
        while "reload complete" not in server.stderr_text():
            assert time.monotonic() < deadline, server.stderr_text()
            assert _rcode(server, BLOCKED) == dns.rcode.NXDOMAIN  # old table, still in force
            answered += 1
        assert answered >= 5, "the reload finished too fast to show anything"
        assert _rcode(server, "added-by-reload.example") == dns.rcode.NXDOMAIN
        assert os.path.exists(tmp_path / "state" / "domains.table")


def test_a_reload_keeps_cached_answers_that_still_pass_and_blocks_newly_listed_ones(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    config = _config(tmp_path, auth_server, tmp_path / "state")
    with GuardianProcess(config) as server:
        assert _rcode(server, "www.example.test") == dns.rcode.NOERROR
        assert _rcode(server, "chain.example.test") == dns.rcode.NOERROR
        assert auth_server.count("www.example.test", "A") == 1
        lists = tmp_path / "adult.txt"
        lists.write_text(lists.read_text() + "chain.example.test\n")
        line = server.reload()
        assert "reload complete" in line, server.stderr_text()
        # Still allowed: answered from the cache kept across the reload, not asked again.
        assert _rcode(server, "www.example.test") == dns.rcode.NOERROR
        assert auth_server.count("www.example.test", "A") == 1
        # Newly listed: the cached answer must not outlive the change.
        assert _rcode(server, "chain.example.test") == dns.rcode.NXDOMAIN


def test_invalid_lines_are_counted_per_list_in_the_metrics(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    lists = tmp_path / "adult.txt"
    lists.write_text(
        f"{BLOCKED}\n"
        "192.0.2.1\n"  # an IP address
        "com\n" + "a" * 64 + ".example\n"  # a bare TLD  # a label over 63 octets
        "fine.example\n"
    )
    allow = tmp_path / "allow.txt"
    allow.write_text("ok.example\n")
    config = write_config(
        tmp_path,
        auth_server.port,
        extra_yaml=(
            f"server:\n  state_dir: {tmp_path / 'state'}\n"
            "blocking:\n  lists:\n"
            f"    - {{file: {lists}, category: adult}}\n"
            f"    - {{file: {allow}, action: allow}}\n"
        ),
    )
    with GuardianProcess(config) as server:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert (
        'guardian_dns_list_invalid_lines{action="block",category="adult",list="adult.txt"} 3.0'
        in body
    ), body
    assert 'guardian_dns_list_domains{action="block",category="adult",list="adult.txt"} 2.0' in body
    assert 'guardian_dns_list_domains{action="allow",category="*",list="allow.txt"} 1.0' in body


def test_bad_lines_are_logged_when_built_and_summed_up_on_a_restart(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    (tmp_path / "adult.txt").write_text(f"{BLOCKED}\n192.0.2.7\n")
    config = _config(tmp_path, auth_server, tmp_path / "state")
    with GuardianProcess(config) as first:
        assert _rcode(first, BLOCKED) == dns.rcode.NXDOMAIN
        log = first.stderr_text()
    assert "skipped bad line:" in log and "adult.txt:2" in log
    with GuardianProcess(config) as second:
        assert _rcode(second, BLOCKED) == dns.rcode.NXDOMAIN
        log = second.stderr_text()
    assert "skipped bad line:" not in log
    assert "adult.txt: 1 bad lines skipped (guardian-dns check-config lists them)" in log
