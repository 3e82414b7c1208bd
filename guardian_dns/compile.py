"""From the configured lists to a domain table in force: reuse the saved one, or build it aside.

What it decides: whether the table saved in the state directory still matches the lists (same
files, sizes, modification times, categories, formats and actions), and otherwise builds a new
one, in a child process when the server is running, so the query path never waits for a parse.
What it reads: the list files (through ``guardian_dns.lists``) and the saved table.
What it must never do: leave the server without a table: a saved table that is corrupt, foreign
or stale is reported and rebuilt; a build that fails leaves the caller's current table serving;
a state directory that cannot be written costs the fast restart, never the filtering.

Why a child process: parsing and hashing two million names is several seconds of pure Python
holding the GIL; in a thread it would stall every query for that long, in a child it costs the
server nothing but the final ``mmap``. The child is ``python -m guardian_dns.compile``: it gets
the list specification as JSON on stdin, writes the table, and prints a JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from guardian_dns import lists as lists_mod
from guardian_dns import regexrules, trie
from guardian_dns.errors import ListError, Problem

log = logging.getLogger(__name__)

TABLE_FILE: Final = "domains.table"
WARNINGS_KEPT: Final = 20  # per list, in the table's metadata: enough to show, not a flood
SCHEMA: Final = 1  # bump when what a fingerprint covers changes
# Smaller than the parser's defaults: the build's peak memory is the builder's arrays plus the
# parser's working set, which is about ten times the read block (measured on 100k names: +11.6
# MiB at 1 MiB blocks, +3.7 MiB at 256 KiB, with no loss of speed: 2.8M lines/s either way).
PARSE_CHUNK_LINES: Final = 4096
PARSE_BLOCK_BYTES: Final = 1 << 18


@dataclass(frozen=True)
class ListSpec:
    """One list as the builder needs it (the fields of ``config.ListConfig``)."""

    file: str
    category: str = "default"  # "*" for an allowlist that allows every category
    format: str = "auto"
    action: str = "block"
    admin: bool = False
    allow_tld: bool = False


@dataclass(frozen=True)
class ListReport:
    """What one list contributed, for the log, metrics and ``check-config``."""

    source: str
    category: str
    format: str
    action: str
    total_lines: int
    blocked: int
    allowed: int
    invalid: int
    ignored_modifiers: int
    regexes: int
    warnings: tuple[Problem, ...]


@dataclass(frozen=True)
class Result:
    """A table in force and how it got there."""

    table: trie.DomainTable
    reports: tuple[ListReport, ...]
    built: bool  # False: loaded from the state directory without parsing
    seconds: float  # build or load time as seen by the caller
    peak_rss_kib: int  # of the process that built it (0 when loaded)


def specs_of(lists: Sequence[Any]) -> tuple[ListSpec, ...]:
    """``ListSpec``s from ``config.ListConfig``s (or anything with the same fields)."""
    return tuple(
        ListSpec(
            file=lc.file,
            category=lc.category,
            format=lc.format,
            action=lc.action,
            admin=lc.admin,
            allow_tld=lc.allow_tld,
        )
        for lc in lists
    )


def state_dir(configured: str | None, base_dir: str = ".") -> str:
    """Where tables are saved: the configured directory, else systemd's, else the user's."""
    if configured:
        return os.path.abspath(os.path.join(base_dir, configured))
    systemd = os.environ.get("STATE_DIRECTORY")  # StateDirectory= sets it (colon-separated)
    if systemd:
        return systemd.split(":")[0]
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(xdg, "guardian-dns")


def fingerprint(specs: Sequence[ListSpec]) -> str:
    """What a saved table must match: every spec and its file's identity (not its bytes).

    Size, modification time and inode rather than a hash of the content, because hashing 50 MB
    of lists would cost more than the table load it is meant to avoid. Every writer we have
    (the feed, the admin CLI) replaces a list by rename, which changes the inode and mtime.
    Raises ListError for a list that cannot be found.
    """
    parts: list[Any] = [SCHEMA, trie.VERSION]
    for spec in specs:
        try:
            st = os.stat(spec.file)
        except OSError as exc:
            raise ListError(Problem(spec.file, 0, "", f"cannot read: {exc.strerror}")) from None
        parts.append([asdict(spec), st.st_size, st.st_mtime_ns, st.st_ino])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _report_json(r: ListReport) -> dict[str, Any]:
    d = asdict(r)
    d["warnings"] = [[w.file, w.line, w.field, w.message] for w in r.warnings]
    return d


def _report_from_json(d: dict[str, Any]) -> ListReport:
    warnings = tuple(Problem(*w) for w in d.get("warnings", ()))
    return ListReport(**{**d, "warnings": warnings})


class _Sink:
    """Feeds one list's chunks to the builder: an allowlist's entries allow, and so do a
    blocklist's adblock ``@@`` entries."""

    def __init__(self, builder: trie.TableBuilder, index: int, allow_list: bool) -> None:
        self.add = builder.add
        self.index = index
        self.allow_list = allow_list

    def __call__(
        self, blocked: list[str], block_lines: list[int], allowed: list[str], allow_lines: list[int]
    ) -> None:
        if blocked:
            self.add(blocked, block_lines, self.index, allow=self.allow_list)
        if allowed:
            self.add(allowed, allow_lines, self.index, allow=True)


def build(specs: Sequence[ListSpec], out: str, fp: str = "") -> tuple[ListReport, ...]:
    """Parse every list and write the table to ``out`` (atomically). Raises ListError.

    Lists are streamed chunk by chunk into the builder, which keeps integers only, so the peak
    memory is the builder's arrays plus one chunk of names, whatever the size of the lists.
    """
    builder = trie.TableBuilder()
    reports: list[ListReport] = []
    regexes: list[list[Any]] = []
    for spec in specs:
        category = None if spec.category == "*" else spec.category
        try:
            index = builder.add_list(
                spec.file, category, admin=spec.admin, action=spec.action, format=spec.format
            )
        except ValueError as exc:
            raise ListError(Problem(spec.file, 0, "category", str(exc))) from None
        allow_list = spec.action == "allow"
        sink = _Sink(builder, index, allow_list)
        summary = lists_mod.parse_stream(
            spec.file,
            spec.format,
            sink,
            allow_tld=spec.allow_tld,
            chunk_lines=PARSE_CHUNK_LINES,
            block_bytes=PARSE_BLOCK_BYTES,
        )
        warnings = list(summary.warnings[:WARNINGS_KEPT])
        invalid = summary.invalid
        if summary.regexes:
            good, problems = regexrules.checked(summary)
            if allow_list or category is None:
                problems = [Problem(spec.file, 0, "action", "regex lists can only block")]
                good = []
            for pattern, line in good:
                regexes.append([pattern, builder.category_bit(category or ""), index, line])
            warnings = (problems + warnings)[:WARNINGS_KEPT]
            invalid += len(problems)
        reports.append(
            ListReport(
                source=spec.file,
                category=spec.category,
                format=summary.format,
                action=spec.action,
                total_lines=summary.total_lines,
                blocked=summary.blocked,
                allowed=summary.allowed,
                invalid=invalid,
                ignored_modifiers=summary.ignored_modifiers,
                regexes=len(summary.regexes),
                warnings=tuple(warnings),
            )
        )
    meta = {
        "fingerprint": fp,
        "regexes": regexes,
        "reports": [_report_json(r) for r in reports],
        "built": time.time(),
    }
    builder.write(out, meta)
    return tuple(reports)


def _reports_of(table: trie.DomainTable) -> tuple[ListReport, ...]:
    return tuple(_report_from_json(d) for d in table.meta.get("reports", ()))


def load_saved(directory: str, fp: str) -> trie.DomainTable | None:
    """The saved table if it is valid and matches ``fp``; otherwise None, with the reason logged."""
    path = os.path.join(directory, TABLE_FILE)
    if not os.path.exists(path):
        return None
    try:
        table = trie.load(path)
    except trie.TableError as exc:
        log.warning("saved domain table rejected, rebuilding from the lists: %s", exc)
        return None
    if table.meta.get("fingerprint") != fp:
        log.info("lists changed since %s was saved; rebuilding", path)
        return None
    return table


def _output_path(directory: str) -> tuple[str, bool]:
    """A fresh path for a new table, and whether it is in the state directory (persistent)."""
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        if os.access(directory, os.W_OK | os.X_OK):
            return os.path.join(directory, f".domains-{os.getpid()}-{time.monotonic_ns()}"), True
    except OSError as exc:
        log.warning(
            "state directory %s unusable (%s): the table will not survive a restart",
            directory,
            exc.strerror,
        )
    tmp = tempfile.mkdtemp(prefix="guardian-dns-")
    return os.path.join(tmp, TABLE_FILE), False


def _adopt(out: str, directory: str, persistent: bool) -> trie.DomainTable:
    """Map a freshly built table, then move it into place (the mapping survives the rename)."""
    table = trie.load(out)
    if persistent:
        os.replace(out, os.path.join(directory, TABLE_FILE))
    else:
        os.unlink(out)
        os.rmdir(os.path.dirname(out))
    return table


def table_in_process(specs: Sequence[ListSpec], directory: str | None) -> Result:
    """Load or build the table in this process (start-up of tools and tests; blocks)."""
    start = time.monotonic()
    fp = fingerprint(specs)
    if directory is not None:
        saved = load_saved(directory, fp)
        if saved is not None:
            return Result(saved, _reports_of(saved), False, time.monotonic() - start, 0)
    if directory is None:  # not saved: a private temporary directory, removed once mapped
        out, persistent = os.path.join(tempfile.mkdtemp(prefix="guardian-dns-"), TABLE_FILE), False
    else:
        out, persistent = _output_path(directory)
    try:
        build(specs, out, fp)
    except BaseException:
        _discard(out)
        raise
    table = _adopt(out, directory or "", persistent)
    peak = peak_rss_kib()
    return Result(table, _reports_of(table), True, time.monotonic() - start, peak)


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec, so a
    child would report the size of the server that forked it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _discard(out: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(out)


async def table_in_child(specs: Sequence[ListSpec], directory: str) -> Result:
    """Load the saved table, or build one in a child process while this loop keeps serving.

    Raises ListError (with the child's reason) when the lists cannot be built.
    """
    start = time.monotonic()
    fp = fingerprint(specs)
    saved = load_saved(directory, fp)
    if saved is not None:
        return Result(saved, _reports_of(saved), False, time.monotonic() - start, 0)
    out, persistent = _output_path(directory)
    request = json.dumps({"out": out, "fingerprint": fp, "lists": [asdict(s) for s in specs]})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "guardian_dns.compile",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await proc.communicate(request.encode())
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        _discard(out)
        raise
    try:
        reply = json.loads(stdout or b"{}")
    except ValueError:
        reply = {}
    if proc.returncode != 0 or "error" in reply:
        _discard(out)
        if "error" in reply:
            raise ListError(Problem(*reply["error"]))
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ListError(
            Problem("<list builder>", 0, "", f"exited with {proc.returncode}: {tail[0]}")
        )
    table = await asyncio.get_running_loop().run_in_executor(
        None, _adopt, out, directory, persistent
    )
    return Result(
        table, _reports_of(table), True, time.monotonic() - start, int(reply.get("peak_rss_kib", 0))
    )


def main() -> int:
    """The child: JSON request on stdin, table written to its "out", JSON reply on stdout."""
    # Background work beside a server answering queries on the same (often two) cores: yield
    # the CPU to it. A rebuild then takes a little longer; the queries' tail latency does not.
    with contextlib.suppress(OSError):
        os.nice(10)
    request = json.load(sys.stdin)
    specs = [ListSpec(**d) for d in request["lists"]]
    start = time.monotonic()
    try:
        reports = build(specs, request["out"], request.get("fingerprint", ""))
    except ListError as exc:
        p = exc.problem
        json.dump({"error": [p.file, p.line, p.field, p.message]}, sys.stdout)
        return 1
    json.dump(
        {
            "seconds": time.monotonic() - start,
            "peak_rss_kib": peak_rss_kib(),
            "lists": len(reports),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "TABLE_FILE",
    "ListReport",
    "ListSpec",
    "Result",
    "build",
    "fingerprint",
    "load_saved",
    "specs_of",
    "state_dir",
    "table_in_child",
    "table_in_process",
]
