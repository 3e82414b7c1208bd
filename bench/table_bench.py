#!/usr/bin/env python3
"""Blocklists at scale: build time, memory, load time and lookup cost of the domain table.

Prints figures; it is not a test. Inputs are the real lists in ``../shared/data/blocklists/``
(every file, parsed by Guardian DNS's own parser with the format detected from the content): their
union is about 1.09 million names. The 100k and 1M sets are seeded random samples of the union;
the 2M set is the union plus synthetic names made from real ones (``s<hex>-<listed name>``, a
sibling of the real name: a new registrable domain for a two-label name), because no public
union of the lists here reaches 2 million.

Every measurement runs in a fresh child process so RSS figures are not polluted by the driver:

* build: parse + hash + write the table (``compile.build``), seconds, lines/s, peak RSS of the
  build above the interpreter's baseline, and that peak as a multiple of the table file;
* load: ``trie.load`` time, and the RSS added once every hot page (directory, CRCs, checks,
  combo indexes) is resident -- the worst case, as after days of queries -- and after 200k
  decisions (whichever is larger), per name;
* lookup: ``Filter.decide`` on 4-label names, hit (under a listed name) and miss, in µs
  (the full decision: walk, check, precedence, rule id; best of three passes of 100k names);
* start-up: ``guardian-dns serve`` from exec to ready (``--ready-fd``) with the saved table;
* ``--verify``: 2 million (or --verify-names) unlisted names looked up exactly: false positives
  (must be 0) and how many got past the CRC stage to the modulo-prime check.

Usage: python3 bench/table_bench.py [--sizes 100k,1m,2m] [--verify] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "blocklists"
SIZES = {"100k": 100_000, "1m": 1_000_000, "2m": 2_000_000}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- children -----------------------------------------------------------------------------------


def child_build(list_file: str, out: str) -> None:
    from guardian_dns import compile as compile_mod

    base = rss_kib()
    start = time.perf_counter()
    specs = [compile_mod.ListSpec(file=list_file, category="adult", format="domains")]
    reports = compile_mod.build(specs, out, "bench")
    seconds = time.perf_counter() - start
    peak = compile_mod.peak_rss_kib()  # VmHWM: ru_maxrss would include the forking driver
    print(
        json.dumps(
            {
                "seconds": seconds,
                "lines": reports[0].total_lines,
                "base_rss_kib": base,
                "peak_rss_kib": peak,
                "file_bytes": os.path.getsize(out),
            }
        )
    )


def _four_labels(names: list[str], rng: random.Random) -> list[str]:
    """Names of exactly four labels: the listed name's own labels plus random ones in front."""
    out = []
    for n in names:
        labels = n.split(".")
        if len(labels) >= 4:
            out.append(n)
        else:
            extra = [f"w{rng.randrange(1000)}" for _ in range(4 - len(labels))]
            out.append(".".join(extra + labels))
    return out


def child_load(table_file: str, list_file: str, verify: int) -> None:
    from guardian_dns import trie
    from guardian_dns.filter import BLOCK, PASS, Filter

    rng = random.Random(7)
    with open(list_file) as f:
        listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    listed4 = [n for n in listed if n.count(".") <= 3]
    sample = rng.sample(listed4, min(100_000, len(listed4)))
    del listed4
    hit_names = _four_labels(sample, rng)
    tlds = ["com", "net", "org", "de"]
    letters = "abcdefghijklmnop"
    miss_names = _four_labels(
        ["".join(rng.choices(letters, k=10)) + "." + rng.choice(tlds) for _ in sample], rng
    )
    del listed
    before = rss_kib()
    start = time.perf_counter()
    table = trie.load(table_file)
    load_s = time.perf_counter() - start
    after_load = rss_kib()
    # Fault in every hot page: what a server has resident after enough queries.
    for view in (table.directory, table.crcs, table.checks, table.vals):  # vals: often empty
        step = max(1, 4096 // view.itemsize)
        for i in range(0, len(view), step):
            view[i]
    after_touch = rss_kib()
    f = Filter(table, (1 << len(table.categories)) - 1, True)
    decide = f.decide
    for n in hit_names[:2000]:
        decide(n)
    hit_us = miss_us = float("inf")
    for _ in range(3):  # best of three: the machine is shared and noisy
        start = time.perf_counter()
        hits = sum(1 for n in hit_names if decide(n)[0] == BLOCK)
        hit_us = min(hit_us, (time.perf_counter() - start) / len(hit_names) * 1e6)
        start = time.perf_counter()
        misses = sum(1 for n in miss_names if decide(n)[0] == PASS)
        miss_us = min(miss_us, (time.perf_counter() - start) / len(miss_names) * 1e6)
    after_lookups = rss_kib()
    result = {
        "names": len(table),
        "rss_after_lookups_kib": after_lookups,
        "load_s": load_s,
        "rss_before_kib": before,
        "rss_after_load_kib": after_load,
        "rss_after_touch_kib": after_touch,
        "hit_us": hit_us,
        "miss_us": miss_us,
        "hit_blocked": hits,
        "miss_passed": misses,
        "probes": len(hit_names),
    }
    if verify:
        result.update(_verify(table, list_file, verify))
    print(json.dumps(result))


def _verify(table: object, list_file: str, count: int) -> dict[str, int]:
    """Exact lookups of unlisted names: every one must miss. Also counts CRC-stage collisions."""
    from guardian_dns import trie

    assert isinstance(table, trie.DomainTable)
    with open(list_file) as f:
        listed = {line.strip() for line in f}
    rng = random.Random(11)
    false_positive = 0
    crc_collisions = 0
    crcs = table.crcs
    d = table.directory
    shift = table.shift
    checked = 0
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    while checked < count:
        name = (
            "".join(rng.choices(alphabet, k=rng.randrange(3, 14)))
            + "."
            + rng.choice(("com", "net", "org", "de", "co.uk", "info", "ru", "xyz"))
        )
        if name in listed:
            continue
        checked += 1
        b = name.encode()
        c = trie.name_crc(b)
        bucket = c >> shift
        if any(crcs[i] & trie.LOW24 == c & trie.LOW24 for i in range(d[bucket], d[bucket + 1])):
            crc_collisions += 1
        entry = table.find(b)
        if entry >= 0 and any(table.combo_of(entry)[:4]):  # a rule, not a parent
            false_positive += 1
    return {
        "verified": checked,
        "false_positives": false_positive,
        "crc_collisions": crc_collisions,
    }


# --- driver ------------------------------------------------------------------------------------


def make_inputs(work: Path, sizes: list[str]) -> dict[str, Path]:
    from guardian_dns import lists

    union: set[str] = set()
    per_format: dict[str, list[float]] = {}
    files = sorted(
        p
        for p in DATA.rglob("*")
        if p.is_file() and "README" not in p.name and "LICENSE" not in p.name.upper()
    )
    got: list[str] = []

    def sink(b: list[str], bl: list[int], a: list[str], al: list[int]) -> None:
        got.extend(b)

    for path in files:
        got.clear()
        start = time.perf_counter()
        summary = lists.parse_stream(path, "auto", sink)
        seconds = time.perf_counter() - start
        stats = per_format.setdefault(summary.format, [0, 0.0])
        stats[0] += summary.total_lines
        stats[1] += seconds
        union.update(got)
    print(f"union of {len(files)} files in {DATA}: {len(union):,} distinct names")
    for fmt, (lines_n, secs) in sorted(per_format.items()):
        print(f"  parse {fmt:9s} {int(lines_n):>10,} lines  {lines_n / secs:>12,.0f} lines/s")
    names = sorted(union)
    rng = random.Random(42)
    rng.shuffle(names)
    out = {}
    for size in sizes:
        n = SIZES[size]
        chosen = names[:n]
        seen = set(chosen)
        i = 0
        while len(chosen) < n:  # synthetic names beyond the real union (2m only)
            base = names[i % len(names)]
            i += 1
            # A sibling, not a child: "s1f3a-www.example.com" beside "www.example.com", as a
            # new list entry usually is (children would make every real name a parent).
            name = f"s{i // len(names)}{rng.randrange(1 << 20):x}-{base}"
            if len(name.split(".", 1)[0]) > 63 or len(name) > 253 or name in seen:
                continue  # the parser would skip it as invalid (label > 63) or a repeat
            seen.add(name)
            chosen.append(name)
        path = work / f"domains_{size}.txt"
        path.write_text("\n".join(chosen) + "\n")
        out[size] = path
    return out


def run_child(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def startup(list_file: Path, state: Path) -> float:
    """Seconds from exec to ready for ``guardian-dns serve`` with the table already saved."""
    config = state / "bench.yaml"
    config.write_text(
        f"server:\n  state_dir: {state}\n"
        "upstream:\n  servers: ['udp://127.0.0.1:9']\n"
        "metrics:\n  enabled: false\n"
        f"blocking:\n  lists:\n    - file: {list_file}\n"
        "      category: adult\n      format: domains\n"
    )
    times = []
    for _ in range(2):  # the first run builds and saves; the second is the restart we measure
        proc, seconds = serve_until_ready(
            config, "--listen", "127.0.0.1:0", "--log-level", "warning"
        )
        times.append(seconds)
        proc.terminate()
        proc.wait(10)
    return times[1]


def serve_until_ready(
    config: Path, *args: str, **popen: Any
) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``guardian-dns serve --config CONFIG ARGS`` and wait for its --ready-fd line.

    Returns the process and the seconds from exec to ready; exits if it never became ready.
    """
    r, w = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guardian_dns",
            "serve",
            "--config",
            str(config),
            *args,
            "--ready-fd",
            str(w),
        ],
        pass_fds=(w,),
        cwd=ROOT,
        **popen,
    )
    os.close(w)
    with os.fdopen(r) as ready:
        line = ready.readline()
    seconds = time.perf_counter() - start
    if not line:
        proc.wait(10)
        raise SystemExit(f"guardian-dns did not start with {config}")
    return proc, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1m,2m")
    parser.add_argument("--verify", action="store_true", help="false-positive check at 2M")
    parser.add_argument("--verify-names", type=int, default=2_000_000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("child", nargs="*", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        if a.child[0] == "_build":
            child_build(a.child[1], a.child[2])
        else:
            child_load(a.child[1], a.child[2], int(a.child[3]))
        return 0
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the real lists live in ../shared beside the repo)")
        return 0
    sizes = a.sizes.split(",")
    work = a.work or Path(tempfile.mkdtemp(prefix="guardian-table-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(work, sizes)
    print()
    print(
        "| size | names | build s | lines/s | build peak MiB (above base) | peak / file |"
        " file MiB | load ms | RSS added MiB | B/name | hit µs | miss µs | start-up s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        table = work / f"table_{size}"
        b = run_child("_build", str(inputs[size]), str(table))
        verify = a.verify_names if (a.verify and size == sizes[-1]) else 0
        lo = run_child("_load", str(table), str(inputs[size]), str(verify))
        state = work / f"state_{size}"
        state.mkdir(exist_ok=True)
        up = startup(inputs[size], state)
        added = max(lo["rss_after_touch_kib"], lo["rss_after_lookups_kib"]) - lo["rss_before_kib"]
        peak_above = b["peak_rss_kib"] - b["base_rss_kib"]
        names = lo["names"]
        print(
            f"| {size} | {int(names):,} | {b['seconds']:.2f} | {b['lines'] / b['seconds']:,.0f} |"
            f" {peak_above / 1024:.1f} | {peak_above * 1024 / b['file_bytes']:.2f} |"
            f" {b['file_bytes'] / 2**20:.1f} | {lo['load_s'] * 1000:.1f} | {added / 1024:.1f} |"
            f" {added * 1024 / names:.1f} | {lo['hit_us']:.2f} | {lo['miss_us']:.2f} | {up:.2f} |"
        )
        assert lo["hit_blocked"] == lo["probes"], "a listed name was not blocked"
        assert lo["miss_passed"] == lo["probes"], "an unlisted name was blocked"
        if verify:
            print(
                f"  verify: {int(lo['verified']):,} unlisted names, "
                f"{int(lo['false_positives'])} false positives, "
                f"{int(lo['crc_collisions']):,} reached the modulo-prime check"
            )
    print(f"\nwork files: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
