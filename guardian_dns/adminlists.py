"""The administrator's own allow and block names: plain text files the CLI edits.

What it decides: what ``guardian-dns block/allow/remove`` write, and what the server reads back
from the same files (``AdminNames``), which policy.py merges into every group's own names.
What it reads: the admin directory: ``blocking.admin_dir``, else ``admin/`` beside the config
file (``<state_dir>/admin`` for the embedded config). One domain per line, ``# comment`` lines
and trailing comments allowed, kept as written:

  allow.txt               allowed for every group          (guardian-dns allow NAME)
  block.txt               blocked for every filtered group (guardian-dns block NAME)
  block.CATEGORY.txt      blocked for the groups that block CATEGORY  (block NAME --category C)
  group-G.allow.txt       allowed for group G              (allow NAME --group G)
  group-G.block.txt       blocked for group G              (block NAME --group G)

What it must never do: lose a line or a comment, or leave a half-written file. An edit takes the
directory's lock, re-reads the files, changes only the lines it adds or removes, and replaces
each changed file by rename (usage.write_atomically). A name that does not validate refuses the
whole edit: nothing is written. Why not the YAML: rewriting an administrator's config loses
comments and hand-added keys (Pi-hole and AdGuard Home both do); these files are ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

from guardian_dns.errors import GuardianError
from guardian_dns.lists import normalise_domain
from guardian_dns.usage import write_atomically

ADMIN_DIR: Final = "admin"
LOCK_FILE: Final = ".lock"
LOCK_TIMEOUT: Final = 10.0
FILE_MODE: Final = 0o664
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_FILE_RE: Final = re.compile(
    r"(?:(?P<action>allow|block)(?:\.(?P<category>[a-z0-9][a-z0-9_-]{0,31}))?"
    r"|group-(?P<group>[a-z0-9][a-z0-9_-]{0,31})\.(?P<gaction>allow|block))\.txt\Z"
)
T = TypeVar("T")


class AdminEditError(GuardianError):
    """An edit that cannot be made; nothing was written."""


@dataclass(frozen=True)
class Entry:
    """One name in one admin file, and where: for ``list`` and explain."""

    name: str
    action: str  # allow | block
    group: str | None  # None: every group
    category: str | None  # a block for the groups that block this category
    file: str
    line: int
    comment: str


@dataclass(frozen=True)
class AdminNames:
    """Everything in the admin directory, indexed the way policy.py merges it."""

    entries: tuple[Entry, ...] = ()
    fingerprint: tuple[tuple[str, int, int, int], ...] = ()
    problems: tuple[str, ...] = ()  # bad lines skipped, as file:line: message
    allow: frozenset[str] = field(init=False)
    block: frozenset[str] = field(init=False)
    category_blocks: dict[str, tuple[str, ...]] = field(init=False)  # name -> categories
    groups: dict[str, tuple[frozenset[str], frozenset[str]]] = field(init=False)

    def __post_init__(self) -> None:
        allow: set[str] = set()
        block: set[str] = set()
        cats: dict[str, list[str]] = {}
        groups: dict[str, tuple[set[str], set[str]]] = {}
        for e in self.entries:
            if e.group is not None:
                g = groups.setdefault(e.group, (set(), set()))
                (g[0] if e.action == "allow" else g[1]).add(e.name)
            elif e.category is not None:
                cats.setdefault(e.name, []).append(e.category)
            else:
                (allow if e.action == "allow" else block).add(e.name)
        object.__setattr__(self, "allow", frozenset(allow))
        object.__setattr__(self, "block", frozenset(block))
        object.__setattr__(self, "category_blocks", {n: tuple(c) for n, c in cats.items()})
        object.__setattr__(
            self,
            "groups",
            {g: (frozenset(a), frozenset(b)) for g, (a, b) in groups.items()},
        )


def file_name(action: str, group: str | None = None, category: str | None = None) -> str:
    if group is not None:
        return f"group-{group}.{action}.txt"
    if category is not None:
        return f"block.{category}.txt"
    return f"{action}.txt"


def _split(line: str) -> tuple[str, str]:
    """(name text, comment) of one line; either may be empty."""
    text, _, comment = line.partition("#")
    return text.strip(), comment.strip()


def fingerprint(directory: str) -> tuple[tuple[str, int, int, int], ...]:
    """What the server compares each second to notice an edit (names, inodes, mtimes, sizes)."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    for name in names:
        if _FILE_RE.match(name):
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(directory, name))
                out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def load(directory: str) -> AdminNames:
    """Read every admin file; a bad line is skipped and reported, never fatal."""
    entries: list[Entry] = []
    problems: list[str] = []
    for name, _ino, _mtime, _size in fingerprint(directory):
        m = _FILE_RE.match(name)
        assert m is not None
        action = m.group("action") or m.group("gaction")
        group, category = m.group("group"), m.group("category")
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        for i, line in enumerate(lines, 1):
            text, comment = _split(line)
            if not text:
                continue
            domain = normalise_domain(text)
            if domain is None:
                problems.append(f"{path}:{i}: {text!r} is not a domain name; skipped")
                continue
            entries.append(Entry(domain, action, group, category, path, i, comment))
    return AdminNames(tuple(entries), fingerprint(directory), tuple(problems))


def check_name(text: str) -> str:
    """The normalised domain, or AdminEditError saying why ``text`` cannot be one."""
    domain = normalise_domain(text)
    if domain is None or "." not in domain:
        raise AdminEditError(f"{text!r} is not a domain name (e.g. example.com)")
    return domain


def check_label(kind: str, text: str) -> str:
    if not _NAME_RE.match(text):
        raise AdminEditError(f"{kind} {text!r}: up to 32 lowercase letters, digits, '-' and '_'")
    return text


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    os.makedirs(directory, mode=0o775, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                raise AdminEditError(f"{path}: another edit has held the lock for 10 s")
            time.sleep(0.02)
        yield
    finally:
        os.close(fd)


class Edit:
    """The files of the admin directory as text lines, changed in memory, written at the end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lines: dict[str, list[str]] = {}
        self._changed: set[str] = set()

    def lines(self, name: str) -> list[str]:
        if name not in self._lines:
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    self._lines[name] = f.read().splitlines()
            except FileNotFoundError:
                self._lines[name] = []
        return self._lines[name]

    def names(self, name: str) -> list[str]:
        out = []
        for line in self.lines(name):
            text, _ = _split(line)
            domain = normalise_domain(text) if text else None
            if domain:
                out.append(domain)
        return out

    def add(self, name: str, domain: str, comment: str | None) -> bool:
        """Append ``domain`` (False if the file already has it: nothing changes)."""
        if domain in self.names(name):
            return False
        line = domain if not comment else f"{domain}  # {comment}"
        self.lines(name).append(line)
        self._changed.add(name)
        return True

    def remove(self, name: str, domain: str) -> int:
        """Drop every line naming ``domain`` (comment lines and other names stay)."""
        kept, removed = [], 0
        for line in self.lines(name):
            text, _ = _split(line)
            if text and normalise_domain(text) == domain:
                removed += 1
                continue
            kept.append(line)
        if removed:
            self._lines[name] = kept
            self._changed.add(name)
        return removed

    def files(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if _FILE_RE.match(n))
        except FileNotFoundError:
            return []

    def write(self) -> list[str]:
        written = []
        for name in sorted(self._changed):
            data = "".join(line + "\n" for line in self._lines[name]).encode()
            path = os.path.join(self.directory, name)
            write_atomically(path, data)
            with contextlib.suppress(OSError):
                os.chmod(path, FILE_MODE)
            written.append(path)
        return written


def edit(directory: str, change: Callable[[Edit], T]) -> T:
    """Run ``change`` on the files under the directory's lock; write only if it returns."""
    with _locked(directory):
        e = Edit(directory)
        result = change(e)
        e.write()
    return result


__all__ = [
    "ADMIN_DIR",
    "AdminEditError",
    "AdminNames",
    "Edit",
    "Entry",
    "check_label",
    "check_name",
    "edit",
    "file_name",
    "fingerprint",
    "load",
]
