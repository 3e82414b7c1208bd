"""The ``guardian-dns`` command as a person runs it: verbs, exit codes, messages and signals.

Covers the README's "Using it" and docs/configuration.md: ``--help`` and bad command lines,
``check-config`` on every shipped config and on broken ones (every problem as
``file:line: field: message``, no side effects), ``serve`` from flags alone and with the
built-in defaults, a busy port, SIGTERM/SIGINT, and SIGHUP reloads that keep the old lists
serving when the new config or a list is bad (RELIABILITY.md 1.11, STYLE.md "Reload").
Every server is a real subprocess on loopback in front of the scriptable test upstream.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import free_port, wire
from tests.support.authserver import AuthServer
from tests.support.daemon import (
    REPO_ROOT,
    STOP_TIMEOUT,
    GuardianProcess,
    GuardianStartError,
    write_config,
)

pytestmark = pytest.mark.integration

WWW = "www.example.test"
WWW_ADDRESS = "192.0.2.10"
BLOCKED = "blocked.example.test"
EDE_BLOCKED = 15
VERBS = ("serve", "check-config")
CONFIG_DIR = REPO_ROOT / "config"
BUNDLED = REPO_ROOT / "blocklists"


# ---------------------------------------------------------------------------- helpers


def python_m() -> list[str]:
    return [sys.executable, "-m", "guardian_dns"]


def console_script() -> list[str]:
    path = shutil.which("guardian-dns")
    if path is None:
        pytest.skip("the guardian-dns console script is not on PATH (pip install -e .)")
    return [path]


@pytest.fixture(params=["python-m", "console-script"])
def cli(request: pytest.FixtureRequest) -> list[str]:
    """The command a user types: ``python -m guardian_dns`` or the installed ``guardian-dns``."""
    return python_m() if request.param == "python-m" else console_script()


def run(
    cmd: Sequence[str], *args: str, cwd: Path = REPO_ROOT, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def write_atomically(path: Path, text: str) -> None:
    """What an admin tool (or careful editor) does: write aside, then rename over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def hosts_names(path: Path, count: int) -> list[str]:
    """The first ``count`` real names of a bundled hosts file (``0.0.0.0 name`` lines)."""
    names = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2 and parts[0] == "0.0.0.0" and "." in parts[1]:
            names.append(parts[1].lower())
            if len(names) == count:
                break
    return names


def answer(port: int, name: str, ident: int = 0x4242) -> wire.Reply:
    reply = wire.udp_exchange(wire.make_query(name, id=ident, edns=1232), port, timeout=2)
    assert reply is not None, f"no answer for {name} within 2 s"
    parsed = wire.parse_reply(reply)
    assert parsed.id == ident
    return parsed


def is_blocked(port: int, name: str) -> bool:
    """True for the block answer (NXDOMAIN + EDE 15), False for a normal answer with addresses."""
    parsed = answer(port, name)
    ede = parsed.opt.ede_codes if parsed.opt is not None else ()
    if parsed.rcode_text == "NXDOMAIN" and EDE_BLOCKED in ede:
        return True
    if parsed.rcode_text == "NOERROR" and parsed.addresses():
        return False
    raise AssertionError(f"{name}: neither blocked nor answered: {parsed.message}")


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, f"a traceback reached the user:\n{stderr}"


def port_free(port: int) -> bool:
    """Both TCP (with SO_REUSEADDR, as our listeners) and UDP on 127.0.0.1 can take ``port``."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class ConfiglessGuardian(GuardianProcess):
    """``guardian-dns serve`` with flags only (no ``--config``), readiness still by event."""

    def __init__(self, *flags: str, listen: bool = True) -> None:
        super().__init__("", listen=listen)
        self.flags = flags
        self.with_listen = listen

    def start(self) -> None:
        try:
            super().start()
        except GuardianStartError as exc:
            # The probe in metrics_default_port_free can race with another process.
            if "127.0.0.1:9153" in str(exc) and "in use" in str(exc):
                pytest.skip("another process took 127.0.0.1:9153 (the default metrics address)")
            raise

    def command(self, ready_fd: int) -> list[str]:
        cmd = [*python_m(), "serve"]
        if self.with_listen:
            cmd += ["--listen", f"127.0.0.1:{self.port}"]
        return [*cmd, *self.flags, "--ready-fd", str(ready_fd)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


# ---------------------------------------------------------------------------- help, usage


def test_help_exits_0_and_lists_every_verb(cli: list[str]) -> None:
    result = run(cli, "--help")
    assert result.returncode == 0, result.stderr
    for verb in VERBS:
        assert verb in result.stdout, f"--help does not mention {verb!r}:\n{result.stdout}"


@pytest.mark.parametrize("verb", VERBS)
def test_verb_help_exits_0(cli: list[str], verb: str) -> None:
    result = run(cli, verb, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["frobnicate"], id="unknown-verb"),
        pytest.param(["--frobnicate"], id="unknown-global-flag"),
        pytest.param(["serve", "--frobnicate"], id="unknown-serve-flag"),
        pytest.param(["serve", "--log-level", "loud"], id="bad-log-level"),
        pytest.param(["check-config"], id="check-config-without-file"),
        pytest.param([], id="no-verb"),
    ],
)
def test_bad_command_line_exits_2_with_usage(cli: list[str], args: list[str]) -> None:
    result = run(cli, *args)
    assert result.returncode == 2, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert "usage:" in result.stderr
    no_traceback(result.stderr)


# ---------------------------------------------------------------------------- check-config


SHIPPED_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))


@pytest.mark.parametrize(
    "path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO_ROOT)) for p in SHIPPED_CONFIGS]
)
def test_check_config_accepts_every_shipped_config(path: Path) -> None:
    result = run(python_m(), "check-config", str(path))
    missing = re.findall(r"no such file: (\S+)", result.stderr)
    assert not missing, f"{path.name} names bundled lists that are missing: {missing}"
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    no_traceback(result.stderr)


def test_shipped_configs_were_found() -> None:
    names = {p.relative_to(REPO_ROOT).as_posix() for p in SHIPPED_CONFIGS}
    assert "config/guardian.yaml" in names
    assert any(n.startswith("config/examples/") for n in names), names


THREE_PROBLEMS = """\
server:
  lisen: ["127.0.0.1:5353"]
  acl_action: maybe
cache:
  size: true
"""
THREE_PROBLEMS_EXPECTED = [
    (2, "server.lisen"),
    (3, "server.acl_action"),
    (5, "cache.size"),
]


def test_check_config_reports_every_problem_as_file_line_field_message(
    cli: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(THREE_PROBLEMS, encoding="utf-8")
    result = run(cli, "check-config", str(config))
    assert result.returncode == 1, result.stderr
    found = re.findall(
        rf"^{re.escape(str(config))}:(\d+): ([\w.\[\]]+): \S.*$", result.stderr, re.M
    )
    assert [(int(line), field) for line, field in found] == THREE_PROBLEMS_EXPECTED, result.stderr
    assert result.stdout == "", "problems belong on stderr, not stdout"
    no_traceback(result.stderr)


@pytest.fixture(scope="module")
def running(
    upstream: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardianProcess]:
    config = write_config(tmp_path_factory.mktemp("running"), upstream.port)
    with GuardianProcess(config.read_text(encoding="utf-8")) as proc:
        yield proc


def snapshot_dir(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
    }


def test_check_config_binds_nothing_and_writes_nothing(
    running: GuardianProcess, upstream: AuthServer, tmp_path: Path
) -> None:
    """Run against the very ports a live server holds: binding any of them would fail."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "kids.txt").write_text(f"{BLOCKED}\n", encoding="utf-8")
    config = tmp_path / "guardian.yaml"
    config.write_text(
        f'server:\n  listen: ["127.0.0.1:{running.port}"]\n'
        f'upstream:\n  servers: ["udp://127.0.0.1:{upstream.port}"]\n'
        f'metrics:\n  listen: "127.0.0.1:{running.metrics_port}"\n'
        "blocking:\n  lists: [kids=lists/kids.txt]\n",
        encoding="utf-8",
    )
    before = snapshot_dir(tmp_path)
    result = run(python_m(), "check-config", str(config), cwd=tmp_path)
    assert result.returncode == 0, (
        f"check-config failed on ports held by a server:\n{result.stderr}"
    )
    assert snapshot_dir(tmp_path) == before, "check-config changed the config directory"
    assert wire.is_alive(running.port, timeout=0.5), "the running server stopped answering"


# ---------------------------------------------------------------------------- serve


@pytest.fixture
def metrics_default_port_free() -> None:
    """Without --config the metrics listen on the default 127.0.0.1:9153; no flag changes it."""
    if not port_free(9153):
        pytest.skip("127.0.0.1:9153 (the default metrics address) is in use on this machine")


@pytest.mark.usefixtures("metrics_default_port_free")
def test_serve_with_flags_only_answers_and_blocks(upstream: AuthServer, tmp_path: Path) -> None:
    blocklist = tmp_path / "kids.txt"
    blocklist.write_text(f"{BLOCKED}\n", encoding="utf-8")
    with ConfiglessGuardian(
        "--upstream", upstream.url_udp, "--blocklist", f"homework={blocklist}"
    ) as proc:
        www = answer(proc.port, WWW)
        assert (www.rcode_text, www.addresses()) == ("NOERROR", [WWW_ADDRESS])
        blocked = answer(proc.port, BLOCKED)
        assert blocked.rcode_text == "NXDOMAIN"
        assert blocked.opt is not None
        assert [(code, text) for code, text in blocked.opt.ede if code == EDE_BLOCKED], blocked
        assert any("homework" in (text or "") for _, text in blocked.opt.ede), (
            f"the block answer does not name the category: {blocked.opt.ede}"
        )


@pytest.mark.usefixtures("metrics_default_port_free")
def test_serve_without_config_blocks_the_bundled_lists(upstream: AuthServer) -> None:
    """default_config(): the four bundled lists are in force with only --listen/--upstream."""
    names = hosts_names(BUNDLED / "adult.hosts", 3) + hosts_names(BUNDLED / "gambling.hosts", 3)
    assert len(names) == 6, f"blocklists/ is missing or empty: {sorted(BUNDLED.glob('*'))}"
    with ConfiglessGuardian("--upstream", upstream.url_udp) as proc:
        assert proc.ready_line == f"ready 127.0.0.1:{proc.port}", proc.ready_line
        not_blocked = [n for n in names if not is_blocked(proc.port, n)]
        assert not_blocked == [], f"bundled names not blocked by the default config: {not_blocked}"
        assert not is_blocked(proc.port, WWW)


def test_serve_with_no_flags_listens_on_loopback_5353() -> None:
    """The README's first command. No DNS query is sent: the default upstream is off the machine."""
    if not (port_free(5353) and port_free(9153)):
        pytest.skip("127.0.0.1:5353 or :9153 is in use; the flag-only tests cover the defaults")
    with ConfiglessGuardian(listen=False) as proc:
        assert proc.ready_line == "ready 127.0.0.1:5353", proc.ready_line


@pytest.mark.parametrize("held", ["dns-udp", "dns-tcp", "metrics"])
def test_serve_on_a_busy_port_exits_1_with_one_line(tmp_path: Path, held: str) -> None:
    holder = socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM if held == "dns-udp" else socket.SOCK_STREAM
    )
    try:
        holder.bind(("127.0.0.1", 0))
        if held != "dns-udp":
            holder.listen()
        busy = holder.getsockname()[1]
        dns_port = busy if held != "metrics" else free_port()
        metrics_port = busy if held == "metrics" else free_port()
        config = tmp_path / "guardian.yaml"
        config.write_text(
            f"blocking:\n  lists: []\nmetrics:\n  listen: 127.0.0.1:{metrics_port}\n",
            encoding="utf-8",
        )
        result = run(
            python_m(),
            "serve",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{dns_port}",
            "--upstream",
            "udp://127.0.0.1:9",
        )
    finally:
        holder.close()
    assert result.returncode == 1, f"exit {result.returncode}; stderr:\n{result.stderr}"
    no_traceback(result.stderr)
    lines = result.stderr.strip().splitlines()
    causes = [line for line in lines if f"127.0.0.1:{busy}" in line]
    assert len(causes) == 1, f"expected one line naming 127.0.0.1:{busy}:\n{result.stderr}"
    assert "in use" in causes[0].lower(), causes[0]
    assert lines[-1] == causes[0], f"the cause is not the last word:\n{result.stderr}"


# ---------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_signal_exits_0_within_5_seconds(
    upstream: AuthServer, tmp_path: Path, sig: signal.Signals
) -> None:
    config = write_config(tmp_path, upstream.port).read_text(encoding="utf-8")
    with GuardianProcess(config) as proc:
        # An open idle TCP connection (idle timeout 10 s) must not hold up the exit.
        with socket.create_connection(("127.0.0.1", proc.port), timeout=2):
            assert wire.is_alive(proc.port, timeout=0.5)
            start = time.monotonic()
            proc.send_signal(sig)
            try:
                code = proc.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {STOP_TIMEOUT} s after {sig.name}")
            elapsed = time.monotonic() - start
        assert code == 0, f"exit {code} after {sig.name}; stderr:\n{proc.stderr_text()}"
        assert elapsed < STOP_TIMEOUT
        no_traceback(proc.stderr_text())


# ---------------------------------------------------------------------------- SIGHUP reload


ADDED = "added.wild.example.test"  # resolves upstream (192.0.2.50) until it is listed
REMOVED = "removed.wild.example.test"
GOOD_LIST = f"{BLOCKED}\n{REMOVED}\n"


class Reloading:
    """The reload server, its files as first written, and a way back to them."""

    def __init__(self, proc: GuardianProcess, list_path: Path, adult_name: str) -> None:
        self.proc = proc
        self.list_path = list_path
        self.config_path = proc.config_path
        self.good_config = proc.config_path.read_text(encoding="utf-8")
        self.adult_name = adult_name

    def restore(self) -> None:
        write_atomically(self.list_path, GOOD_LIST)
        write_atomically(self.config_path, self.good_config)
        line = self.proc.reload()
        assert "reload complete" in line, f"restoring the good files did not reload: {line}"

    def log_since(self, marker: int) -> str:
        return self.proc.stderr_text()[marker:]

    def assert_old_lists_serve(self) -> None:
        port = self.proc.port
        assert is_blocked(port, BLOCKED), f"{BLOCKED} is no longer blocked"
        assert is_blocked(port, REMOVED), f"{REMOVED} is no longer blocked"
        assert is_blocked(port, self.adult_name), f"bundled {self.adult_name} no longer blocked"
        assert not is_blocked(port, WWW)


@pytest.fixture(scope="module")
def reload_server(
    upstream: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reloading]:
    lists = tmp_path_factory.mktemp("reload-lists")
    list_path = lists / "kids.txt"
    list_path.write_text(GOOD_LIST, encoding="utf-8")
    # The bundled adult list too, so that a reload has real work to do while queries arrive.
    config = write_config(
        lists,
        upstream.port,
        lists={"kids": list_path, "adult": BUNDLED / "adult.hosts"},
    ).read_text(encoding="utf-8")
    with GuardianProcess(config) as proc:
        yield Reloading(proc, list_path, hosts_names(BUNDLED / "adult.hosts", 1)[0])


@pytest.fixture
def reloading(reload_server: Reloading) -> Iterator[Reloading]:
    """The shared reload server, put back to its good files after each test."""
    reload_server.assert_old_lists_serve()
    yield reload_server
    reload_server.restore()


def test_reload_blocks_an_added_name_and_unblocks_a_removed_one(reloading: Reloading) -> None:
    port = reloading.proc.port
    assert not is_blocked(port, ADDED)  # answered and cached before the change
    assert is_blocked(port, REMOVED)
    write_atomically(reloading.list_path, f"{BLOCKED}\n{ADDED}\n")
    line = reloading.proc.reload()
    assert "reload complete" in line, line
    assert is_blocked(port, ADDED), f"{ADDED} was added to the list but is not blocked"
    assert not is_blocked(port, REMOVED), f"{REMOVED} was removed from the list but is blocked"
    assert is_blocked(port, BLOCKED)


BROKEN_CONFIGS = {
    # name: (text appended to the good config, the line the error must name, relative to the end)
    "yaml-syntax-error": ("cache:\n  size: 100\n bad: indentation\n", 3),
    "unknown-key": ("cache:\n  sise: 100\n", 2),
    "unknown-section": ("blocking_typo: 1\n", 1),
    "bad-value": ("cache:\n  size: -5\n", 2),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_bad_config_on_reload_keeps_the_old_lists(reloading: Reloading, case: str) -> None:
    appended, line_from_end = BROKEN_CONFIGS[case]
    good = (
        reloading.good_config
        if reloading.good_config.endswith("\n")
        else reloading.good_config + "\n"
    )
    broken = good + appended
    bad_line = len(broken.splitlines()) - len(appended.splitlines()) + line_from_end
    write_atomically(reloading.list_path, f"{BLOCKED}\n{ADDED}\n")  # must not take effect
    write_atomically(reloading.config_path, broken)
    marker = len(reloading.proc.stderr_text())
    line = reloading.proc.reload()
    assert "reload failed" in line, f"a broken config reloaded: {line}"
    where = f"{reloading.config_path}:{bad_line}:"
    assert where in reloading.log_since(marker), (
        f"the reload error does not name {where}:\n{reloading.log_since(marker)}"
    )
    reloading.assert_old_lists_serve()
    assert not is_blocked(reloading.proc.port, ADDED), "the new list leaked in with a bad config"


@pytest.mark.parametrize("how", ["deleted", "chmod-000"])
def test_unreadable_list_on_reload_keeps_the_old_lists(reloading: Reloading, how: str) -> None:
    if how == "chmod-000":
        if os.geteuid() == 0:
            pytest.skip("running as root: chmod 000 does not stop root from reading")
        reloading.list_path.chmod(0)
    else:
        reloading.list_path.unlink()
    marker = len(reloading.proc.stderr_text())
    try:
        line = reloading.proc.reload()
    finally:
        if how == "chmod-000":
            reloading.list_path.chmod(0o644)
    assert "reload failed" in line, f"a reload with an unreadable list succeeded: {line}"
    assert str(reloading.list_path) in reloading.log_since(marker), reloading.log_since(marker)
    reloading.assert_old_lists_serve()


def test_queries_are_answered_during_five_reloads(reloading: Reloading) -> None:
    port = reloading.proc.port
    stop = threading.Event()
    outcomes: list[str] = []

    def ask() -> None:
        names = [(WWW, False), (BLOCKED, True), (reloading.adult_name, True)]
        i = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            while not stop.is_set():
                name, expect_blocked = names[i % len(names)]
                ident = i & 0xFFFF
                sock.sendto(wire.make_query(name, id=ident, edns=1232), ("127.0.0.1", port))
                try:
                    while True:
                        data = sock.recv(4096)
                        if data[:2] == ident.to_bytes(2, "big"):
                            break
                except TimeoutError:
                    outcomes.append(f"lost: {name}")
                    i += 1
                    continue
                parsed = wire.parse_reply(data)
                blocked = parsed.rcode_text == "NXDOMAIN"
                answered = parsed.rcode_text == "NOERROR" and bool(parsed.addresses())
                ok = blocked if expect_blocked else answered
                outcomes.append("ok" if ok else f"wrong: {name} {parsed.rcode_text}")
                i += 1

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        for n in range(5):
            if n % 2:
                write_atomically(reloading.list_path, GOOD_LIST + f"extra{n}.example.test\n")
            line = reloading.proc.reload()
            assert "reload complete" in line, line
    finally:
        stop.set()
        asker.join(timeout=5)
    problems = [o for o in outcomes if o != "ok"]
    assert len(outcomes) >= 20, f"only {len(outcomes)} queries were sent during the reloads"
    assert problems == [], f"{len(problems)} of {len(outcomes)} went wrong: {problems[:10]}"
