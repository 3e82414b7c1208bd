"""Load with a real load generator: dnsperf at a fixed rate while malformed packets arrive on the
side (RELIABILITY.md's whole-suite soak check, scaled down to a few seconds for CI): no valid
query is lost, the server stays up, and its memory does not grow with the abuse."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.support import require_tool, wire
from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess, write_config

SECONDS = 4
RATE = 2000  # queries per second: the same as the full soak check, for fewer seconds


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _malformed_sender(port: int, stop: threading.Event) -> int:
    """About 1% of the valid rate: runts, QR=1, pointer loops, bad labels, wrong counts."""
    junk = [
        bytes.fromhex("4242010000010000000000"),
        wire.unhex("42428100000100000000000003777777076578616d706c6504746573740000010001"),
        bytes.fromhex("424201000001000000000000c00c00010001"),
        bytes.fromhex("424201000001000000000000") + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
        bytes.fromhex("424201000002000000000000"),
    ]
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.is_set():
            sock.sendto(junk[sent % len(junk)], ("127.0.0.1", port))
            sent += 1
            stop.wait(1 / (RATE / 100))
    return sent


def test_dnsperf_at_2000_qps_with_malformed_traffic_loses_nothing(tmp_path: Path) -> None:
    dnsperf = require_tool("dnsperf", "dnsperf")
    names = tmp_path / "queries.txt"
    lines = []
    for i in range(400):
        lines.append(f"w{i}.wild.example.test A")  # forwarded once, then cached
        lines.append("www.example.test AAAA")  # cached
        lines.append(f"x{i}.blocked.example.test A")  # blocked
    names.write_text("\n".join(lines) + "\n")
    listed = tmp_path / "list.txt"
    listed.write_text("blocked.example.test\n")
    with AuthServer() as upstream:
        config = write_config(tmp_path, upstream.port, lists={"test": listed})
        with GuardianProcess(config.read_text()) as proc:
            before = rss_kib(proc.pid)
            stop = threading.Event()
            junk: list[int] = []
            side = threading.Thread(target=lambda: junk.append(_malformed_sender(proc.port, stop)))
            side.start()
            start = time.monotonic()
            try:
                out = subprocess.run(
                    [
                        dnsperf,
                        "-s",
                        "127.0.0.1",
                        "-p",
                        str(proc.port),
                        "-d",
                        str(names),
                        "-l",
                        str(SECONDS),
                        "-Q",
                        str(RATE),
                        "-t",
                        "2",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=SECONDS + 30,
                    check=True,
                ).stdout
            finally:
                stop.set()
                side.join()
            assert time.monotonic() - start < SECONDS + 10
            sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            assert sent >= RATE * SECONDS * 0.9, out
            assert lost == 0 and done == sent, out
            assert "NOERROR" in out and "NXDOMAIN" in out, out
            assert "SERVFAIL" not in out, out
            assert junk and junk[0] > 50, "the malformed side traffic did not run"
            assert wire.is_alive(proc.port)
            growth = rss_kib(proc.pid) - before
            assert growth < 10 * 1024, f"RSS grew by {growth} KiB under load"
            assert "Traceback" not in proc.stderr_text()
