#!/usr/bin/env python3
"""A 2-million-name list rebuild while dnsperf keeps querying: lost queries and latency.

Prints figures; it is not a test. Steps, all on 127.0.0.1:

1. Write a 2M-name list (the same generator as ``bench/table_bench.py``: the union of the real
   lists in ``../shared/data/blocklists/`` plus synthetic names) and start ``guardian-dns serve``
   on it, with the test upstream (``tests/support/authserver.py``, a real DNS server on loopback)
   for the allowed names. The first start builds and saves the table.
2. Warm the cache with the allowed names, then run dnsperf at a fixed rate (``--qps``) for
   ``--seconds`` twice on the same server: once quietly (the baseline), once with the list file
   changed and SIGHUP sent after 3 s, so the whole table is rebuilt in a child process and
   swapped while queries flow. Query mix: 70 % cached allowed names, 30 % blocked names.
3. Report per run: sent, completed, lost, p50/p99/p99.9/max latency (from ``dnsperf -v``), and
   for the rebuild run the reload's duration from the server log.

With ``--feed`` the update arrives the way it does on a family's Pi: the list is published as a
signed feed (``guardian-dns feed build``, gzip) served by ``python -m http.server`` on loopback,
the server boots from the first serial, and 3 s into the second run the feed's second serial
(one name more) appears and ``guardian-dns sync`` is run: it downloads, verifies and parses the
2M-name list in its own process, writes the set and signals the server, which rebuilds its table
in a child and swaps it in. Everything competes for the same 2 CPUs as the queries.

Usage: python3 bench/rebuild_under_load.py [--qps 5000] [--seconds 20] [--size 2m] [--feed]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from table_bench import DATA, make_inputs, serve_until_ready  # noqa: E402

from tests.support.authserver import AuthServer  # noqa: E402


def dnsperf(port: int, queries: Path, qps: int, seconds: int, out: Path) -> dict[str, float]:
    with open(out, "w") as f:
        subprocess.run(
            [
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(port),
                "-d",
                str(queries),
                "-Q",
                str(qps),
                "-l",
                str(seconds),
                "-t",
                "2",
                "-c",
                "4",
                "-v",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            check=True,
        )
    lat: list[float] = []
    res: dict[str, float] = {}
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("> "):
            parts = line.split()
            if len(parts) == 5:
                lat.append(float(parts[4]))
            continue
        s = line.strip()
        for key in ("Queries sent:", "Queries completed:", "Queries lost:"):
            if s.startswith(key):
                res[key.split()[1].rstrip(":")] = int(s.split()[2])
    lat.sort()
    n = len(lat)
    for label, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        res[label + "_ms"] = lat[min(n - 1, int(q * n))] * 1000 if n else float("nan")
    res["max_ms"] = lat[-1] * 1000 if n else float("nan")
    return res


def cli(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "guardian_dns", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"guardian-dns {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def publish_feed(
    work: Path, list_file: Path, steps: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Two serials of a feed holding the big list (the second with one name more), the first
    served on loopback through a symlink the update flips; returns the web server and the
    config's feed section."""
    cli("feed", "keygen", "--out", str(work / "keys"))
    key = str(work / "keys" / "guardian-feed.key")
    for serial, extra in ((1, ""), (2, "feed-marker.example\n")):
        src = work / f"src{serial}"
        src.mkdir()
        target = src / "adult.txt"
        shutil.copyfile(list_file, target)
        if extra:
            with open(target, "a") as f:
                f.write(extra)
        started = time.monotonic()
        cli(
            *("feed", "build", "--lists", str(src), "--key", key),
            *("--out", str(work / f"feed{serial}"), "--serial", str(serial), "--gzip"),
        )
        steps.append(f"feed build serial {serial}: {time.monotonic() - started:.1f} s")
    www = work / "www"
    www.mkdir()
    (www / "feed").symlink_to(work / "feed1")
    web_port = 25389
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(web_port)],
        cwd=www,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    section = (
        f"feed:\n  url: http://127.0.0.1:{web_port}/feed/\n"
        f"  keys: [{work / 'keys' / 'guardian-feed.pub'}]\n  categories: [adult]\n"
        "  interval: 86400\n"
    )
    return web, section


def sync(config: Path, work: Path) -> None:
    cli("sync", "--config", str(config), cwd=work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--size", default="2m")
    parser.add_argument("--feed", action="store_true", help="deliver the update as a signed feed")
    a = parser.parse_args()
    if not DATA.is_dir() or not shutil.which("dnsperf"):
        print(f"skipped: needs {DATA} and dnsperf")
        return 0
    work = Path(tempfile.mkdtemp(prefix="guardian-rebuild-bench-"))
    list_file = make_inputs(work, [a.size])[a.size]
    rng = random.Random(5)
    with open(list_file) as f:
        blocked = [line.strip() for line in f if line.strip()]
    blocked = rng.sample(blocked, 20000)
    allowed = [f"n{i}.wild.example.test" for i in range(2000)]
    mix = work / "mix.txt"
    with open(mix, "w") as f:
        for _ in range(200_000):
            name = rng.choice(allowed) if rng.random() < 0.7 else rng.choice(blocked)
            f.write(f"{name} A\n")
    warm = work / "warm.txt"
    warm.write_text("".join(f"{n} A\n" for n in allowed))
    web: subprocess.Popen[bytes] | None = None
    feed_steps: list[str] = []
    with AuthServer() as upstream:
        port = 25390
        config = work / "bench.yaml"
        lists_yaml = (
            f"blocking:\n  lists:\n    - file: {list_file}\n      category: adult\n"
            "      format: domains\n"
        )
        if a.feed:
            web, lists_yaml = publish_feed(work, list_file, feed_steps)
        config.write_text(
            f"server:\n  listen: ['127.0.0.1:{port}']\n  state_dir: {work / 'state'}\n"
            "  rate_limit: 0\n"
            f"upstream:\n  servers: ['{upstream.url_udp}']\n"
            "metrics:\n  enabled: false\n"
            "cache:\n  size: 50000\n" + lists_yaml
        )
        if a.feed:
            started = time.monotonic()
            sync(config, work)
            feed_steps.append(f"first sync (serial 1): {time.monotonic() - started:.1f} s")
        log_path = work / "server.log"
        log = open(log_path, "w")  # noqa: SIM115 - the server writes it until the end
        server, seconds = serve_until_ready(config, stderr=log, stdout=log)
        print(f"{a.size} list, first start (build + save): {seconds:.1f} s")
        try:
            subprocess.run(
                ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(warm), "-n", "1"],
                capture_output=True,
                check=True,
            )
            base = dnsperf(port, mix, a.qps, a.seconds, work / "quiet.out")

            def rebuild() -> None:
                time.sleep(3)
                if a.feed:
                    (work / "www" / "feed").unlink()
                    (work / "www" / "feed").symlink_to(work / "feed2")
                    started = time.monotonic()
                    sync(config, work)
                    feed_steps.append(
                        f"sync of serial 2 during the run (download, verify, parse, write, "
                        f"signal): {time.monotonic() - started:.1f} s"
                    )
                    return
                with open(list_file, "a") as f:
                    f.write("rebuild-marker.example\n")
                server.send_signal(signal.SIGHUP)

            t = threading.Thread(target=rebuild)
            t.start()
            during = dnsperf(port, mix, a.qps, a.seconds, work / "rebuild.out")
            t.join()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
            log.close()
            if web is not None:
                web.terminate()
                web.wait()
    text = log_path.read_text()
    reload_line = re.findall(r"reload complete.*", text) or re.findall(r"reload failed.*", text)
    table_lines = re.findall(r"domain table built.*", text)
    print(f"qps {a.qps}, {a.seconds} s per run, 70 % cached / 30 % blocked, dnsperf -c 4\n")
    print("| run | sent | completed | lost | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, res in (("quiet", base), ("during rebuild", during)):
        print(
            f"| {label} | {res['sent']:,} | {res['completed']:,} | {res['lost']:,} |"
            f" {res['p50_ms']:.3f} | {res['p99_ms']:.3f} | {res['p999_ms']:.3f} |"
            f" {res['max_ms']:.3f} |"
        )
    print()
    for line in (*table_lines[-1:], *reload_line):
        print("server log:", line)
    for step in feed_steps:
        print("feed:", step)
    print(f"work files: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
