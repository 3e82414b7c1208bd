"""sd_notify: the datagrams systemd reads, sent to real AF_UNIX sockets (path and abstract)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardian_dns import notify


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2.0)
    with sock:
        yield sock, {notify.ENV: str(path)}


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    name = f"guardian-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    with sock:
        yield sock, {notify.ENV: "@" + name}


def fields(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reaches_a_path_socket(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = path_socket
    assert notify.ready("serving 12 domains", environ=env)
    assert fields(sock) == ["READY=1", "STATUS=serving 12 domains"]


def test_ready_reaches_an_abstract_socket(
    abstract_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = abstract_socket
    assert notify.ready(environ=env)
    assert fields(sock) == ["READY=1"]


def test_reloading_carries_the_monotonic_time_of_the_request(
    path_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading(environ=env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = fields(sock)
    assert got[0] == "RELOADING=1"
    assert got[1].startswith("MONOTONIC_USEC=")
    assert before <= int(got[1].split("=", 1)[1]) <= after
    assert got[2] == "STATUS=reloading"


def test_stopping_and_status(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = path_socket
    assert notify.stopping(environ=env)
    assert fields(sock) == ["STOPPING=1", "STATUS=stopping"]
    assert notify.status("reload failed:\nbad line", environ=env)
    assert fields(sock) == ["STATUS=reload failed: bad line"]  # one line, whatever it is given


def test_a_long_status_is_cut_to_one_short_line(
    path_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = path_socket
    assert notify.status("x" * 5000, environ=env)
    (line,) = fields(sock)
    assert line.startswith("STATUS=xxx") and line.endswith("...") and len(line) < 500


@pytest.mark.parametrize(
    "value",
    [None, "", "relative/path.sock", "@", "vsock:2:1234"],
    ids=["unset", "empty", "relative", "bare-at", "vsock"],
)
def test_outside_systemd_every_call_is_a_quiet_no_op(value: str | None) -> None:
    env = {} if value is None else {notify.ENV: value}
    assert notify.socket_address(env) is None
    assert notify.ready(environ=env) is False
    assert notify.reloading(environ=env) is False
    assert notify.stopping(environ=env) is False


def test_a_vanished_socket_loses_the_message_not_the_server(tmp_path: Path) -> None:
    env = {notify.ENV: str(tmp_path / "gone.sock")}
    assert notify.ready(environ=env) is False  # no exception


def test_the_process_environment_is_read_by_default(
    path_socket: tuple[socket.socket, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, env = path_socket
    monkeypatch.setenv(notify.ENV, env[notify.ENV])
    assert notify.ready()
    assert fields(sock) == ["READY=1"]
