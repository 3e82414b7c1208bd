"""Same-run A/B of Guardian DNS source trees: qps and CPU per query, interleaved.

    python3 bench/ab.py TREE_A TREE_B [...]   [--files "cached blocked mix"] [--reps 3]
    python3 bench/ab.py . .:bench/family.yaml  # one tree, two configs: what policies cost

Each TREE is a checkout (``git worktree add /tmp/a HEAD~1``), optionally followed by
``:CONFIG``, a config file relative to the tree (default ``bench/bench.yaml`` of this checkout);
the list is always the harness's (``--blocklist``). For every repetition and tree, in
turn, it starts ``python3 -m guardian_dns serve`` from that tree pinned to CPU 0, warms the
cache, and runs dnsperf (pinned to CPU 1) on each query file, printing qps and the server's
user and system CPU microseconds per query (from /proc). The medians and their ratio to the
first tree come last. Interleaving is what makes the ratios trustworthy on a shared machine.

Inputs come from the shared harness (``../shared/bench/setup.sh`` prepares them in
``~/.cache/guardian-bench``): its NSD upstream config, lists and query files. Everything talks
to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

WORK = Path(os.environ.get("GD_BENCH_WORK", Path.home() / ".cache/guardian-bench/work"))
PORT = "25353"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def dnsperf(queries: Path, *extra: str) -> str:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", PORT, "-d", str(queries)]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, check=False).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="TREE or TREE:CONFIG")
    ap.add_argument("--files", default="cached blocked mix")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", default="6")
    ap.add_argument("--size", default="100k", help="list size prepared by the harness")
    args = ap.parse_args()
    files = args.files.split()
    upstream = subprocess.Popen(
        ["taskset", "-c", "1", "nsd", "-d", "-c", str(WORK / "upstream/nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    targets = []
    for spec in args.trees:
        tree_text, _, config_text = spec.partition(":")
        tree = Path(tree_text).resolve()
        config = tree / config_text if config_text else Path(__file__).parent / "bench.yaml"
        label = tree.name + (f":{Path(config_text).stem}" if config_text else "")
        targets.append((label, tree, config))
    qps: dict[tuple[str, str], list[float]] = {}
    try:
        for rep in range(args.reps):
            for label, tree, config in targets:
                state = "/tmp/gd-ab-state-" + label.replace(":", "-")
                env = dict(os.environ, STATE_DIRECTORY=state)
                server = subprocess.Popen(
                    [
                        *("taskset", "-c", "0", "python3", "-m", "guardian_dns", "serve"),
                        *("--config", str(config)),
                        *("--listen", f"127.0.0.1:{PORT}", "--upstream", "udp://127.0.0.1:25300"),
                        *("--blocklist", f"bench={WORK / 'lists' / f'domains_{args.size}.txt'}"),
                    ],
                    env=env,
                    cwd=tree,
                )
                try:
                    for _ in range(300):
                        dig = ("dig", "+short", "+tries=1", "+time=1", "-p", PORT, "@127.0.0.1")
                        probe = subprocess.run(
                            [*dig, "gdbench-probe-blocked.com"],
                            capture_output=True,
                            text=True,
                            check=False,
                        )
                        if probe.stdout.strip():
                            break
                        time.sleep(0.2)
                    dnsperf(WORK / "queries/warm.txt", "-n", "1", "-q", "100")
                    for name in files:
                        user0, sys0 = cpu_seconds(server.pid)
                        out = dnsperf(
                            WORK / f"queries/{name}.txt", "-l", args.seconds, "-q", "100", "-t", "2"
                        )
                        user1, sys1 = cpu_seconds(server.pid)
                        done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
                        rate = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
                        qps.setdefault((name, label), []).append(rate)
                        print(
                            f"rep {rep} {label:12s} {name:8s} {rate:9.0f} qps  "
                            f"user {1e6 * (user1 - user0) / done:6.2f} us  "
                            f"sys {1e6 * (sys1 - sys0) / done:6.2f} us per query",
                            flush=True,
                        )
                    status = Path(f"/proc/{server.pid}/status").read_text()
                    peak = re.search(r"VmHWM:\s+(\d+)", status)
                    rss = re.search(r"VmRSS:\s+(\d+)", status)
                    if peak and rss:
                        print(
                            f"rep {rep} {label:12s} RSS {int(rss.group(1)) / 1024:.1f} MiB, "
                            f"peak {int(peak.group(1)) / 1024:.1f} MiB",
                            flush=True,
                        )
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait()
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait()
    for name in files:
        base = statistics.median(qps[(name, targets[0][0])])
        shown = "  ".join(
            f"{t}={statistics.median(qps[(name, t)]):.0f} "
            f"({statistics.median(qps[(name, t)]) / base:.2f})"
            for t, _tree, _config in targets
        )
        print(f"median {name:8s} {shown}")


if __name__ == "__main__":
    main()
