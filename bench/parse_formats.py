"""Lines per second of ``lists.parse_stream`` for every list format, on real lists.

Usage: python bench/parse_formats.py [--repeat N] [--data DIR] [--files] [--big]

Reads every file under ``../shared/data/blocklists`` (the shared data set beside this
repository; see its README), detects each file's format as "auto" would, and parses it
``--repeat`` times with a sink that only counts, keeping the best time: the figure is the parser,
not the disk (the file is in the page cache after the first run) and not the consumer. The data
set has no RPZ or regex list, so those two are generated from a real domains list into a
temporary directory and marked "synthetic". ``--big`` adds one ~2-million-line hosts file (all the
real hosts lists, repeated) and reports the peak memory Python allocated while streaming it.
Exits 0 with a message when the data set is absent (a user's clone has none).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardian_dns.lists import FORMATS, ListSummary, parse_stream  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "blocklists"
RPZ_SOURCE = "hagezi-dns-blocklists/3p/stevenblack.domains.txt"


class Counter:
    """The no-op-ish sink: it touches each call's lists once, as any consumer must."""

    def __init__(self) -> None:
        self.entries = 0

    def __call__(self, bn: list[str], bl: list[int], an: list[str], al: list[int]) -> None:
        self.entries += len(bn) + len(an)


def best_of(path: Path, fmt: str, repeat: int) -> tuple[float, ListSummary]:
    best = float("inf")
    summary = None
    for _ in range(repeat):
        sink = Counter()
        start = time.perf_counter()
        summary = parse_stream(path, fmt, sink)
        best = min(best, time.perf_counter() - start)
    assert summary is not None
    return best, summary


def domains_of(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.lower().rstrip("."))
    return names


def synthetic(data: Path, tmp: Path) -> list[tuple[Path, str]]:
    """An RPZ zone in HaGeZi's layout and a regex list, both built from a real domains list."""
    source = data / RPZ_SOURCE
    if not source.is_file():
        return []
    names = domains_of(source)
    rpz = tmp / "synthetic.rpz"
    with rpz.open("w", encoding="utf-8") as f:
        f.write("$TTL 300\n@ SOA localhost. root.localhost. 1 43200 3600 259200 300\n")
        f.write("  NS  localhost.\n")
        for name in names:
            f.write(f"{name} CNAME .\n*.{name} CNAME .\n")
    regex = tmp / "synthetic.regex"
    with regex.open("w", encoding="utf-8") as f:
        for name in names[:1000]:  # a regex list holds at most 1000 patterns
            f.write(f"(.*\\.)?{re.escape(name)}\n")
    return [(rpz, "rpz"), (regex, "regex")]


def big_hosts(data: Path, tmp: Path, target: int = 2_000_000) -> Path | None:
    hosts = [p for p in sorted(data.rglob("*")) if p.is_file() and detect(p) == "hosts"]
    if not hosts:
        return None
    path = tmp / "big.hosts"
    written = 0
    with path.open("wb") as out:
        while written < target:
            for p in hosts:
                chunk = p.read_bytes()
                out.write(chunk if chunk.endswith(b"\n") else chunk + b"\n")
                written += chunk.count(b"\n")
    return path


def detect(path: Path) -> str:
    return parse_stream(path, "auto").format


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per file; the best counts")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="blocklists directory")
    parser.add_argument("--files", action="store_true", help="also print a line per file")
    parser.add_argument("--big", action="store_true", help="add a ~2M-line hosts file")
    args = parser.parse_args()
    data: Path = args.data
    if not data.is_dir():
        print(f"no data set at {data}: nothing to measure (see ../shared/data/README.md)")
        return 0

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = [(p, detect(p)) for p in sorted(data.rglob("*")) if p.is_file()]
        files += synthetic(data, tmp)
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
        for path, fmt in files:
            seconds, summary = best_of(path, fmt, args.repeat)
            row = totals[fmt]
            row[0] += 1
            row[1] += summary.total_lines
            row[2] += summary.blocked + summary.allowed + len(summary.regexes)
            row[3] += seconds
            row[4] += summary.invalid
            if args.files:
                name = path.relative_to(data) if path.is_relative_to(data) else path.name
                rate = summary.total_lines / seconds
                print(f"  {fmt:9} {summary.total_lines:>9,} lines {rate:>12,.0f}/s  {name}")

        print(f"python {sys.version.split()[0]}, best of {args.repeat}, data {data}")
        print(
            f"{'format':10} {'files':>5} {'lines':>11} {'entries':>11} {'invalid':>8} "
            f"{'seconds':>8} {'lines/s':>12}"
        )
        for fmt in FORMATS:
            if fmt not in totals:
                print(f"{fmt:10} (no file)")
                continue
            n, lines, entries, seconds, invalid = totals[fmt]
            note = "  synthetic" if fmt in ("rpz", "regex") else ""
            print(
                f"{fmt:10} {n:>5} {lines:>11,.0f} {entries:>11,.0f} {invalid:>8,.0f} "
                f"{seconds:>8.3f} {lines / seconds:>12,.0f}{note}"
            )

        if args.big:
            path = big_hosts(data, tmp)
            if path is not None:
                seconds, summary = best_of(path, "hosts", 1)
                tracemalloc.start()
                parse_stream(path, "hosts", Counter())
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(
                    f"big hosts: {summary.total_lines:,} lines in {seconds:.2f} s = "
                    f"{summary.total_lines / seconds:,.0f} lines/s; "
                    f"peak traced memory {peak / 2**20:.1f} MiB"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
