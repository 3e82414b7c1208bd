"""Start the real Guardian DNS server as a subprocess for integration tests.

What it decides: the command line, the ports (free ones on 127.0.0.1) and when the server counts
as up -- when it writes a line starting with ``ready`` to the pipe given by ``--ready-fd``,
never after a sleep.
What it reads: the config text or file it is given, and the server's captured stderr/stdout.
What it must never do: leave a server running. Exit sends SIGTERM, then SIGKILL after 5 s, and
only to the PID it started.

The command is ``python -m guardian_dns serve --config FILE --listen 127.0.0.1:PORT
--ready-fd N [extra args]``. Config text may use ``string.Template`` placeholders, filled in
before the file is written: ``${DNS_PORT}``, ``${METRICS_PORT}`` (both free ports picked here) and
``${TMP}`` (the test's private directory).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from tests.support import free_port

__all__ = ["GuardianProcess", "GuardianStartError", "write_config"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
READY_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 5.0
RELOAD_TIMEOUT: Final = 10.0


class GuardianStartError(RuntimeError):
    """The server exited or stayed silent instead of signalling readiness."""


def write_config(
    tmp_path: Path,
    upstream_port: int,
    *,
    lists: Mapping[str, str | Path] | Sequence[str | Path] = (),
    extra_yaml: str = "",
    metrics_port: int | None = None,
    name: str = "guardian.yaml",
) -> Path:
    """Write a minimal config pointing at the test upstream on 127.0.0.1 and return its path.

    ``lists`` is either ``{category: file}`` or a sequence of files (category ``default``).
    ``metrics_port`` defaults to the ``${METRICS_PORT}`` placeholder, which GuardianProcess fills
    with a free port; ``extra_yaml`` is appended verbatim (more top-level sections).
    """
    if isinstance(lists, Mapping):
        entries = [(category, Path(path)) for category, path in lists.items()]
    else:
        entries = [("default", Path(path)) for path in lists]
    metrics = "${METRICS_PORT}" if metrics_port is None else str(metrics_port)
    lines = [
        "upstream:",
        "  servers:",
        f"    - udp://127.0.0.1:{upstream_port}",
        "metrics:",
        f"  listen: 127.0.0.1:{metrics}",
    ]
    if entries:
        lines += ["blocking:", "  lists:"]
        for category, path in entries:
            lines += [f"    - file: {path}", f"      category: {category}"]
    text = "\n".join(lines) + "\n"
    if extra_yaml:
        text += extra_yaml if extra_yaml.endswith("\n") else extra_yaml + "\n"
    config_path = tmp_path / name
    config_path.write_text(text, encoding="utf-8")
    return config_path


class GuardianProcess:
    """``with GuardianProcess(config) as server:`` -- the real server on ``server.port``.

    ``config`` is YAML text (a ``str``) or the ``Path`` of a file; either way placeholders are
    filled. Text is written to a private temporary directory; a file with placeholders is written
    filled next to the original (so relative list paths still work), one without is used as is.
    ``env`` adds variables on top of ``os.environ``. ``expect_exit_code`` is
    checked after SIGTERM on exit (None: not checked). ``listen=False`` leaves out ``--listen``
    (the config's own ``server.listen`` then applies; use ``${DNS_PORT}`` there).
    """

    def __init__(
        self,
        config: str | Path,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        expect_exit_code: int | None = 0,
        ready_timeout: float = READY_TIMEOUT,
        listen: bool = True,
    ) -> None:
        self._config = config
        self._extra_args = tuple(extra_args)
        self._env = env
        self.expect_exit_code = expect_exit_code
        self._ready_timeout = ready_timeout
        self._listen = listen
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.tmp_dir = Path()
        self.config_path = Path()
        self.port = 0
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._written_beside: Path | None = None  # a filled copy next to a caller's file
        self.returncode: int | None = None
        self.ready_line = ""

    # ---------------------------------------------------------------- properties

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("GuardianProcess is not running")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stderr_path(self) -> Path:
        return self.tmp_dir / "stderr.log"

    @property
    def stdout_path(self) -> Path:
        return self.tmp_dir / "stdout.log"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> GuardianProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            code = self.stop()
            if exc_type is None and self.expect_exit_code is not None:
                assert code == self.expect_exit_code, (
                    f"guardian_dns exited with {code} after SIGTERM "
                    f"(expected {self.expect_exit_code}); stderr:\n{self.stderr_text()}"
                )
        finally:
            self._cleanup()

    def command(self, ready_fd: int) -> list[str]:
        args = [sys.executable, "-m", "guardian_dns", "serve", "--config", str(self.config_path)]
        if self._listen:
            args += ["--listen", f"127.0.0.1:{self.port}"]
        args += ["--ready-fd", str(ready_fd), *self._extra_args]
        return args

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("GuardianProcess already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="guardian-test-")
        self.tmp_dir = Path(self._tmp.name)
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.config_path = self._write_config()

        env = {**os.environ, **(self._env or {})}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The saved domain table goes to the test's directory, never the developer's ~/.local.
        env.setdefault("XDG_STATE_HOME", str(self.tmp_dir / "state"))
        env.pop("STATE_DIRECTORY", None)

        read_fd, write_fd = os.pipe()
        try:
            with (
                self.stderr_path.open("wb") as stderr_file,
                self.stdout_path.open("wb") as stdout_file,
            ):
                self._proc = subprocess.Popen(
                    self.command(write_fd),
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout_file,
                    stderr=stderr_file,
                    env=env,
                    cwd=self.tmp_dir,
                )
            os.close(write_fd)  # only the child holds it now: EOF means the child is gone
            write_fd = -1
            self._wait_ready(read_fd)
        except BaseException:
            if write_fd >= 0:
                os.close(write_fd)
            with contextlib.suppress(AssertionError):
                self.stop()
            self._cleanup()
            raise
        finally:
            os.close(read_fd)

    def _write_config(self) -> Path:
        source = self._config
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        filled = string.Template(text).safe_substitute(
            DNS_PORT=str(self.port),
            METRICS_PORT=str(self.metrics_port),
            TMP=str(self.tmp_dir),
        )
        if isinstance(source, Path):
            if filled == text:
                return source  # used as is: its relative list paths keep working
            # Next to the original, so relative paths still resolve; the test owns that directory.
            path = source.with_name(f"{source.stem}.{self.port}{source.suffix}")
            self._written_beside = path
        else:
            path = self.tmp_dir / "guardian.yaml"
        path.write_text(filled, encoding="utf-8")
        return path

    def _wait_ready(self, read_fd: int) -> None:
        deadline = time.monotonic() + self._ready_timeout
        received = b""
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuardianStartError(
                    f"guardian_dns did not signal readiness within {self._ready_timeout} s; "
                    f"stderr:\n{self.stderr_text()}"
                )
            readable, _, _ = select.select([read_fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(read_fd, 64)
            if not chunk:
                code = self.proc.wait(timeout=STOP_TIMEOUT)
                raise GuardianStartError(
                    f"guardian_dns exited ({code}) before it was ready; "
                    f"stderr:\n{self.stderr_text()}"
                )
            received += chunk
        line = received.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        if line.split(" ", 1)[0] != "ready":
            raise GuardianStartError(f"unexpected readiness message {received!r}")
        self.ready_line = line  # "ready" plus whatever the server adds (its bound ports)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def reload(self, timeout: float = RELOAD_TIMEOUT) -> str:
        """SIGHUP, then wait until stderr gains a new line mentioning "reload"; return that line."""
        before = self._reload_lines()
        self.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self._reload_lines()
            if len(lines) > len(before):
                return lines[len(before)]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"guardian_dns exited ({self.proc.returncode}) during reload; "
                    f"stderr:\n{self.stderr_text()}"
                )
            time.sleep(0.02)  # polling a log file for an event, not waiting for readiness
        raise AssertionError(
            f"no new 'reload' line on stderr within {timeout} s; stderr:\n{self.stderr_text()}"
        )

    def _reload_lines(self) -> list[str]:
        """The server's own reload messages (not any line whose path mentions "reload")."""
        marks = ("reload complete", "reload failed", "reload:")
        return [line for line in self.stderr_text().splitlines() if any(m in line for m in marks)]

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; SIGKILL if still alive after ``timeout``. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
                self.returncode = proc.returncode
                self._proc = None
                raise AssertionError(
                    f"guardian_dns ignored SIGTERM for {timeout} s and was killed; "
                    f"stderr:\n{self.stderr_text()}"
                ) from None
        self.returncode = proc.returncode
        self._proc = None
        return self.returncode

    def _cleanup(self) -> None:
        if self._written_beside is not None:
            self._written_beside.unlink(missing_ok=True)
            self._written_beside = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
