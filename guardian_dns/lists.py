"""Blocklist parsing: hosts, plain-domain and adblock files into normalised domain names.

What it decides: which lines of a list block which domain (lower case, punycode, no trailing dot),
which adblock ``@@`` lines allow one, and which lines are unusable and why (``file:line``).
What it reads: one list file (or its text), nothing else; it keeps no state between calls.
What it must never do: give up on a list because of a bad line (a bad line is a warning, the rest
still blocks), guess a domain out of a line it does not understand, or touch the network.

Lists run to millions of lines and are parsed again on every reload, so each format has one tight
loop whose common case (an already lower-case ASCII name) costs a strip and one regular-expression
match; everything unusual (upper case, trailing dots, IDN, errors) goes to the slow path, which is
also the one place that explains what is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from encodings.idna import ToASCII
from typing import Final

from guardian_dns.errors import ListError, Problem

FORMATS: Final[tuple[str, ...]] = ("hosts", "domains", "adblock")
DETECT_LINES: Final = 200  # non-comment lines looked at by detect_format

MAX_NAME: Final = 253  # RFC 1035 2.3.4, in presentation form without the trailing dot
MAX_LABEL: Final = 63
SHOWN: Final = 80  # characters of a bad line quoted in its warning

# A usable name in its final form: two or more labels of 1..63 [a-z0-9_-], last label not all
# digits (that would be an IPv4 address or not a domain at all). Underscores and leading hyphens
# occur in real lists and in real DNS, so they are accepted. The length limit is checked apart.
_DOMAIN: Final = r"(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+(?:\Z|[\^\s]))[a-z0-9_-]{1,63}"
_fast_domain: Final = re.compile(_DOMAIN).fullmatch
# The common line of each format, already final: one match and no further work.
_fast_hosts: Final = re.compile(r"(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]+(" + _DOMAIN + ")").fullmatch
_fast_adblock: Final = re.compile(r"\|\|(" + _DOMAIN + r")\^").fullmatch
_LABEL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")

# Names every stock hosts file carries for the machine itself; they are not blocks, so they are
# skipped without a warning.
_HOSTS_DEFAULTS: Final = frozenset(
    {"localhost", "localhost.localdomain", "broadcasthost", "local", "0.0.0.0"}
)
# Adblock lines that are about pages, not names: element hiding, scriptlets, HTML filtering.
_COSMETIC: Final = ("##", "#@#", "#?#", "#$#", "#%#", "$$", "$@$")
# Characters that make an adblock rule about URLs or patterns rather than one whole name.
_NOT_A_NAME: Final = frozenset("|^/*:?=&")


@dataclass(frozen=True)
class ParsedList:
    """One list after parsing: what it blocks and allows, and what was wrong with it.

    ``lines[i]`` is the line of the first occurrence of ``domains[i]``, so "why is this blocked"
    can point at the line an administrator would edit.
    """

    source: str
    format: str
    domains: tuple[str, ...]
    allows: tuple[str, ...]
    lines: tuple[int, ...]
    warnings: tuple[Problem, ...]
    total_lines: int
    ignored_modifiers: int


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%lo0: a zone is still an address
    except ValueError:
        return False
    return True


def _normalise(text: str) -> tuple[str | None, str]:
    """The slow path: (domain, "") or (None, why not). Only reached by unusual or bad names."""
    name = text.strip().lower()
    if name.endswith("."):
        name = name[:-1]  # one trailing dot is the absolute form; a second one is an empty label
    if not name:
        return None, "empty name"
    if name == "*":
        return None, "'*' alone would block every name"
    if (name[-1].isdigit() or ":" in name) and _is_ip(name):  # the guard spares an exception
        return None, "an IP address, not a domain name"
    if not name.isascii():
        if "\ufffd" in name:
            return None, "not UTF-8 text"
        labels = []
        for label in name.split("."):
            if label.isascii():
                labels.append(label)
                continue
            try:
                labels.append(ToASCII(label).decode("ascii"))  # per label: errors name it
            except UnicodeError as exc:
                return None, f"label {_shown(label)} is not a valid internationalised name ({exc})"
        name = ".".join(labels)
    labels = name.split(".")
    for label in labels:
        if not label:
            return None, "empty label (two dots in a row, or a leading dot)"
        if len(label) > MAX_LABEL:
            return None, f"label of {len(label)} characters (the limit is {MAX_LABEL})"
        bad = set(label) - _LABEL_CHARS
        if bad:
            return None, f"character {min(bad)!r} is not allowed in a domain name"
    if len(name) > MAX_NAME:
        return None, f"name of {len(name)} characters (the limit is {MAX_NAME})"
    if len(labels) == 1:
        return None, "a single label would block a whole top-level domain"
    if labels[-1].isdigit():
        return None, "the last label is all digits, so this is not a domain name"
    return name, ""


def normalise_domain(text: str) -> str | None:
    """The form lists and lookups share, or None when ``text`` must not be blocked as a name.

    Upper case, a trailing dot and Unicode (IDNA 2003, as Python's ``idna`` codec does it) are
    folded; wildcards are not, because only the domains format gives ``*.`` a meaning.
    """
    if len(text) <= MAX_NAME and _fast_domain(text):
        return text
    return _normalise(text)[0]


def _vote(line: str) -> str | None:
    """The format one line looks like, or None for a comment, a blank or a header."""
    s = line.strip().lstrip("\ufeff")
    if not s or s[0] in "#!":
        return "adblock" if s.startswith(_COSMETIC) else None
    if s[0] == "[":
        return "adblock" if s.lower().startswith("[adblock") else None
    if s.startswith(("||", "@@", "|", "/")) or "^" in s:
        return "adblock"
    parts = s.split()
    if len(parts) >= 2 and _is_ip(parts[0]):
        return "hosts"
    return "domains"


def detect_format(lines: Iterable[str]) -> str:
    """The format most of the first lines are written in; "domains" when nothing says otherwise.

    A majority rather than the first line, because hosts files often open with a few
    ``127.0.0.1 localhost`` lines and lists sometimes carry a stray line of another syntax.
    """
    votes = {"hosts": 0, "adblock": 0, "domains": 0}
    seen = 0
    for line in lines:
        kind = _vote(line)
        if kind is None:
            continue
        votes[kind] += 1
        seen += 1
        if seen >= DETECT_LINES:
            break
    if not seen:
        return "domains"
    # Ties go to hosts: its parser also takes a line that is a bare name, so mixed files lose least.
    return max(("hosts", "adblock", "domains"), key=lambda kind: votes[kind])


class _Collector:
    """Accumulates one parse; a dict keeps first-seen order and the first line in one step."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: dict[str, int] = {}
        self.allows: dict[str, None] = {}
        self.warnings: list[Problem] = []
        self.ignored_modifiers = 0

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Problem(self.source, line, "", message))

    def name(self, text: str, line: int) -> str | None:
        """Slow path for one name: the normalised name, or None after warning about it."""
        name, why = _normalise(text)
        if name is None:
            self.warn(line, f"skipped {_shown(text)}: {why}")
        return name


def _parse_domains(lines: list[str], out: _Collector) -> None:
    seen = out.seen
    add = seen.setdefault
    fast = _fast_domain
    for n, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or s[0] == "#" or s[0] == "!":
            continue
        if len(s) <= MAX_NAME and fast(s):
            add(s, n)
            continue
        if "#" in s:  # an inline comment
            s = s[: s.index("#")].rstrip()
        if s.startswith("*."):
            s = s[2:]  # every entry blocks its subdomains anyway
            if len(s) <= MAX_NAME and fast(s):
                add(s, n)
                continue
        elif len(s.split()) > 1:
            out.warn(n, f"skipped {_shown(s)}: more than one word on a line of a domains list")
            continue
        name = out.name(s, n)
        if name is not None:
            add(name, n)


def _parse_hosts(lines: list[str], out: _Collector) -> None:
    seen = out.seen
    add = seen.setdefault
    fast = _fast_hosts
    defaults = _HOSTS_DEFAULTS
    for n, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or s[0] == "#":
            continue
        m = fast(s)
        if m is not None:
            name = m[1]
            if len(name) <= MAX_NAME and name not in defaults:
                add(name, n)
                continue
        if "#" in s:
            s = s[: s.index("#")]
        parts = s.split()
        if not parts:
            continue
        if not _is_ip(parts[0]):
            if len(parts) == 1 and "." in parts[0]:
                names = parts  # a bare name among hosts lines still means "block this"
            else:
                out.warn(n, f"skipped {_shown(s)}: expected 'ADDRESS NAME...'")
                continue
        else:
            names = parts[1:]
            if not names:
                out.warn(n, f"skipped {_shown(s)}: an address with no name after it")
                continue
        for text in names:
            low = text.lower()
            if low in defaults or (low.startswith("ip6-") and "." not in low):
                continue  # ip6-localhost, ip6-allnodes...: the machine's own names
            if len(text) <= MAX_NAME and _fast_domain(text):
                add(text, n)
                continue
            name = out.name(text, n)
            if name is not None:
                add(name, n)


def _adblock_slow(s: str, n: int, out: _Collector) -> None:
    """Every adblock line that is not plain ``||name^``: allows, modifiers, comments, the rest."""
    if s[0] == "!" or s[0] == "[":
        return
    if s[0] == "#":
        if s.startswith(_COSMETIC):
            out.warn(n, f"skipped {_shown(s)}: a cosmetic rule (pages, not names)")
        return  # a '#' comment
    if "##" in s or "#@#" in s or "#?#" in s or "#$#" in s:
        out.warn(n, f"skipped {_shown(s)}: a cosmetic rule (pages, not names)")
        return
    allow = s.startswith("@@")
    body = s[2:] if allow else s
    if "$" in body:
        body, modifiers = body.split("$", 1)
        if "badfilter" in modifiers.split(","):
            out.warn(n, f"skipped {_shown(s)}: $badfilter cancels another rule, not supported")
            return
        out.ignored_modifiers += 1
    if body.startswith("/") and body.endswith("/") and len(body) > 1:
        out.warn(n, f"skipped {_shown(s)}: a regular-expression rule")
        return
    if body.startswith("||") and body.endswith("^"):
        text = body[2:-1]
    elif body.startswith("||") and body.endswith("^|"):
        text = body[2:-2]
    elif body and _NOT_A_NAME.isdisjoint(body):
        text = body  # a bare name is AdGuard DNS syntax for the same rule
    else:
        out.warn(n, f"skipped {_shown(s)}: not a whole-domain rule ('||name^')")
        return
    if len(text) <= MAX_NAME and _fast_domain(text):
        name: str | None = text
    else:
        name = out.name(text, n)
    if name is None:
        return
    if allow:
        out.allows.setdefault(name, None)
    else:
        out.seen.setdefault(name, n)


def _parse_adblock(lines: list[str], out: _Collector) -> None:
    add = out.seen.setdefault
    fast = _fast_adblock
    for n, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s:
            continue
        m = fast(s)
        if m is not None:
            name = m[1]
            if len(name) <= MAX_NAME:
                add(name, n)
                continue
        _adblock_slow(s, n, out)


_PARSERS: Final = {"hosts": _parse_hosts, "domains": _parse_domains, "adblock": _parse_adblock}


def parse_text(text: str, source: str = "<string>", fmt: str = "auto") -> ParsedList:
    """Parse a whole list. Bad lines become warnings; this never raises for content."""
    if fmt != "auto" and fmt not in _PARSERS:
        raise ValueError(f"unknown list format {fmt!r} (known: auto, {', '.join(FORMATS)})")
    if text.startswith("\ufeff"):
        text = text[1:]
    # split("\n"), not splitlines(): the latter also breaks at \x0c, \x1c, U+2028..., which would
    # shift every line number after a stray control character. strip() removes the CR of CRLF.
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    if fmt == "auto":
        fmt = detect_format(lines)
    out = _Collector(source)
    _PARSERS[fmt](lines, out)
    return ParsedList(
        source=source,
        format=fmt,
        domains=tuple(out.seen),
        allows=tuple(out.allows),
        lines=tuple(out.seen.values()),
        warnings=tuple(out.warnings),
        total_lines=len(lines),
        ignored_modifiers=out.ignored_modifiers,
    )


def parse_file(path: str | os.PathLike[str], fmt: str = "auto") -> ParsedList:
    """Parse a list file. Raises ListError only when the file as a whole cannot be read.

    Bytes that are not UTF-8 do not stop the list: they turn the lines they sit on into
    warnings, because one mangled line in a million-line download should not unblock the rest.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ListError(Problem(source, 0, "", "cannot read: no such file")) from None
    except IsADirectoryError:
        raise ListError(Problem(source, 0, "", "cannot read: is a directory")) from None
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ListError(Problem(source, 0, "", message)) from None
    return parse_text(data.decode("utf-8", errors="replace"), source, fmt)


__all__ = [
    "FORMATS",
    "ParsedList",
    "detect_format",
    "normalise_domain",
    "parse_file",
    "parse_text",
]
