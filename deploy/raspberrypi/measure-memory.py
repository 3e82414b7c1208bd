#!/usr/bin/env python3
"""Memory of the server with a big list: RSS at idle and under a short dnsperf load.

Prints the figures deploy/raspberrypi/README.md ("Memory") quotes. Everything runs on 127.0.0.1:
the upstream is the test suite's authoritative server (tests/support/authserver.py), queries
come from dnsperf at a fixed rate. Run it when no benchmark is running (the machine is shared).

    python3 deploy/raspberrypi/measure-memory.py --list /tmp/domains_2m.txt \
        [--cache-size 10000] [--qps 2000] [--seconds 10]

A 2-million-name list: ``bench/table_bench.py``'s ``make_inputs(work, ["2m"])``.
The query file is a mix: 30 % names from the list (blocked), 60 % distinct names that resolve
(forwarded, then cached: enough of them to fill the cache), 10 % a few popular names (cache hits).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support import free_port  # noqa: E402
from tests.support.authserver import AuthServer  # noqa: E402


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(config: Path, port: int, stderr: Path) -> tuple[subprocess.Popen[bytes], float]:
    r, w = os.pipe()
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "guardian_dns", "serve", "--config", str(config)),
            *("--listen", f"127.0.0.1:{port}", "--ready-fd", str(w)),
        ],
        pass_fds=(w,),
        cwd=REPO,
        stderr=stderr.open("wb"),
    )
    os.close(w)
    with os.fdopen(r) as ready:
        if not ready.readline().startswith("ready"):
            raise SystemExit(f"server did not start:\n{stderr.read_text()[-2000:]}")
    return proc, time.monotonic() - began


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True, type=Path)
    ap.add_argument("--cache-size", type=int, default=10000)
    ap.add_argument("--qps", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    names = [n for n in args.list.read_text().split("\n") if n]
    rng = random.Random(5)
    out: dict[str, object] = {"names": len(names), "cache_size": args.cache_size}
    with tempfile.TemporaryDirectory(prefix="guardian-mem-") as tmp, AuthServer() as upstream:
        work = Path(tmp)
        config = work / "guardian.yaml"
        config.write_text(
            f"server:\n  state_dir: {work / 'state'}\n  rate_limit: 0\n"
            f"upstream:\n  servers: ['{upstream.url_udp}']\n"
            f"cache:\n  size: {args.cache_size}\n"
            "metrics:\n  enabled: false\n"
            f"blocking:\n  lists:\n    - file: {args.list}\n"
            "      category: adult\n      format: domains\n"
        )
        total = args.qps * args.seconds
        queries = work / "queries.txt"
        lines = []
        for i in range(total):
            roll = rng.random()
            if roll < 0.3:
                lines.append(f"{rng.choice(names)} A")
            elif roll < 0.9:
                lines.append(f"q{i}.wild.example.test A")
            else:
                lines.append(f"p{rng.randrange(20)}.wild.example.test A")
        queries.write_text("\n".join(lines) + "\n")
        port = free_port()
        stderr = work / "stderr.log"
        # First start: no saved table, so the child builds it (its peak is in the log).
        proc, seconds = start(config, port, stderr)
        out["first_start_s"] = round(seconds, 1)
        found = re.search(r"builder peak RSS (\d+) MiB", stderr.read_text())
        out["builder_peak_mib"] = int(found.group(1)) if found else None
        table = next((work / "state").glob("*.table"), None) or next((work / "state").iterdir())
        out["table_file_mib"] = round(table.stat().st_size / 2**20, 1)
        proc.terminate()
        proc.wait(30)
        # The restart a Pi does every boot: the saved table is mapped.
        proc, seconds = start(config, port, stderr)
        out["restart_s"] = round(seconds, 2)
        out["idle_rss_mib"] = round(rss_mib(proc.pid), 1)
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib(proc.pid))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        done = subprocess.run(
            [
                *("dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries)),
                *("-l", str(args.seconds), "-Q", str(args.qps)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        stop.set()
        sampler.join()
        out["load_peak_rss_mib"] = round(peak[0], 1)
        out["after_load_rss_mib"] = round(rss_mib(proc.pid), 1)
        completed = re.search(r"Queries completed:\s+(\d+)", done.stdout)
        out["queries_completed"] = int(completed.group(1)) if completed else done.stdout[-500:]
        proc.terminate()
        proc.wait(30)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
