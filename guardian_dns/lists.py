"""Blocklist parsing: every list syntax we accept, streamed, into normalised domain names.

What it decides: which lines of a list block which domain (lower case, punycode, no trailing dot),
which lines allow one, which lines are regular expressions for the opt-in regex rules, and which
lines are unusable and why (``file:line``).
What it reads: one list file (or its text), block by block; it keeps no state between calls.
What it must never do: give up on a list because of a bad line (a bad line is a warning, the rest
still blocks), guess a domain out of a line it does not understand, hold a multi-million-line list
as one string per line, or touch the network.

The formats (``FORMATS``; "auto" picks one by a majority vote over the first lines). A listed
name always covers its subdomains, so ``*.x``, ``x`` and "x and everything below" all mean x:

===========  =====================================================  ==========================
format       blocks                                                 allows
===========  =====================================================  ==========================
hosts        ``0.0.0.0 x y`` (any address; a bare name too)
domains      ``x``, also ``*.x``
wildcard     ``*.x``, also ``x`` (same reading as domains)
adblock      ``||x^``, a bare ``x``; modifiers (``$important``...)    ``@@||x^``
             are ignored and counted
dnsmasq      ``address=/x/#``, ``address=/x/0.0.0.0``, ``/x/::``,    ``server=/x/#`` (use the
             ``address=/x/``, ``address=/a/b/#``, ``server=/x/``,   normal servers)
             ``local=/x/``; ``server=/x/1.2.3.4`` forwards: skipped
rpz          ``x CNAME .``, ``*.x CNAME .``, ``x CNAME *.``,          ``x CNAME rpz-passthru.``
             ``x CNAME rpz-drop.``; ``$ORIGIN``/``$TTL``/SOA/NS
             skipped; an absolute owner under ``$ORIGIN`` loses it
unbound      ``local-zone: "x" always_nxdomain`` (always_refuse,    ``transparent``,
             always_null, always_nodata, always_deny, refuse,       ``always_transparent``,
             static, deny, inform_deny); ``server:`` and            ``typetransparent``,
             ``local-data:`` lines skipped                           ``inform``
regex        nothing on the domain table: one Python pattern per line, collected for regexrules
===========  =====================================================  ==========================

Every unusable line (bad name, IP address, bare TLD unless ``allow_tld``, a rule we cannot honour)
is skipped with a warning and counted; only an unreadable file raises ``ListError``.

Speed. Lists run to millions of lines and are parsed again on every reload. A per-line Python loop
costs about a microsecond a line, so the common line never sees one: each chunk of lines is
stripped, cut and checked with C-level calls (``map``, ``str.removeprefix``, one ``join`` and a
few searches over the joined names). The cut is a *shape*, a fixed prefix and suffix around the
name (``0.0.0.0 `` + name, ``address=/`` + name + ``/#``), learned by running the exact per-line
parser (the slow path) on a few sample lines of the chunk; a line of that shape whose middle is a
plain final-form name (``_bad_names``) means for certain what the sample meant. Everything else
(comments, upper case, IDN, errors, rare syntax) goes through the slow path, which is also the one
place that explains what is wrong. Only the RPZ reader has state across lines ($ORIGIN, multi-line
records, owner-less lines); the lines up to the last one that touches that state go one by one.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from encodings.idna import ToASCII
from itertools import chain, compress, pairwise, repeat
from operator import and_, contains, eq, gt, is_not, not_, sub
from typing import IO, Any, Final

from guardian_dns.errors import ListError, Problem
from guardian_dns.regexrules import MAX_PATTERN_LENGTH, MAX_PATTERNS

FORMATS: Final[tuple[str, ...]] = (
    "hosts",
    "domains",
    "wildcard",
    "adblock",
    "dnsmasq",
    "rpz",
    "unbound",
    "regex",
)
DETECT_LINES: Final = 200  # non-comment lines looked at by detect_format

MAX_NAME: Final = 253  # RFC 1035 2.3.4, in presentation form without the trailing dot
MAX_LABEL: Final = 63
SHOWN: Final = 80  # characters of a bad line quoted in its warning
MAX_WARNINGS_KEPT: Final = 1000  # per list in a ListSummary; ListSummary.invalid counts them all
BLOCK_BYTES: Final = 4 << 20  # read size; a block is cut at its last newline
CHUNK_LINES: Final = 65536  # lines per on_entries call
MAX_LINE_BYTES: Final = 1 << 20  # a longer line is skipped unread, so garbage cannot fill memory
_SAMPLES: Final = 8  # sample lines a chunk's shape is learned from
_MAX_SHAPES: Final = 4  # shapes tried per chunk before the rest goes line by line
_BOM: Final = b"\xef\xbb\xbf"
_DETECT_BYTES: Final = 2 * BLOCK_BYTES  # detection never holds more than this before parsing
_PROBE_NAME: Final = "shape-probe.example"
_FEW: Final = 64  # rejected lines below which a chunk is copied in runs rather than masked

# A usable name in its final form: two or more labels of 1..63 [a-z0-9_-], last label not all
# digits (that would be an IPv4 address or not a domain at all). Underscores and leading hyphens
# occur in real lists and in real DNS, so they are accepted. The length limit is checked apart.
_DOMAIN: Final = r"(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+(?:\Z|[\^\s]))[a-z0-9_-]{1,63}"
_fast_domain: Final = re.compile(_DOMAIN).fullmatch
_LABEL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
# The same rules for many names at once, over names joined by "\n" (see _bad_names).
_NAME_BYTES: Final = b"abcdefghijklmnopqrstuvwxyz0123456789-_.\n"
_BAD_CHAR: Final = re.compile(r"[^a-z0-9_.\n-]").search
# ".." (empty label), a dot ending a name, or an all-digit last label; each hit lies in its name.
_BAD_DOTS: Final = re.compile(r"\.(?:[.\n]|\Z|[0-9]+(?:\n|\Z))").finditer

# Names every stock hosts file carries for the machine itself; they are not blocks, so they are
# skipped without a warning.
_HOSTS_DEFAULTS: Final = frozenset(
    {"localhost", "localhost.localdomain", "broadcasthost", "local", "0.0.0.0"}
)
# Adblock lines that are about pages, not names: element hiding, scriptlets, HTML filtering.
_COSMETIC: Final = ("##", "#@#", "#?#", "#$#", "#%#", "$$", "$@$")
# Characters that make an adblock rule about URLs or patterns rather than one whole name.
_NOT_A_NAME: Final = frozenset("|^/*:?=&")

_UNBOUND_BLOCK: Final = frozenset(
    {
        "always_nxdomain",
        "always_refuse",
        "always_null",
        "always_nodata",
        "always_deny",
        "refuse",
        "static",
        "deny",
        "inform_deny",
    }
)
_UNBOUND_ALLOW: Final = frozenset(
    {"transparent", "always_transparent", "typetransparent", "inform"}
)
# Owner names ending in these labels trigger on IP addresses or name servers, not on the name.
_RPZ_TRIGGERS: Final = frozenset({"rpz-ip", "rpz-nsip", "rpz-nsdname", "rpz-client-ip"})
_RPZ_CLASSES: Final = frozenset({"IN", "CH", "HS", "CS"})
_RPZ_TTL: Final = re.compile(r"(?:[0-9]+[smhdw]?)+", re.IGNORECASE).fullmatch


@dataclass(frozen=True)
class ListSummary:
    """What ``parse_stream`` saw in one list; the names themselves went to ``on_entries``.

    ``blocked`` and ``allowed`` count entries handed over, repeats included (the consumer
    dedupes). ``invalid`` counts every line (or name of a several-name hosts line) skipped with
    a warning, and ``warnings`` keeps the first ``MAX_WARNINGS_KEPT`` of those warnings: a list
    of a million bad lines must not become a million objects. A file that only looks like
    regexes adds one warning at line 0 and counts its patterns as invalid.
    """

    source: str
    format: str
    total_lines: int
    blocked: int
    allowed: int
    invalid: int
    ignored_modifiers: int
    warnings: tuple[Problem, ...]
    regexes: tuple[tuple[str, int], ...]  # (pattern, line) for the regex format, else ()


# on_entries(block_names, block_lines, allow_names, allow_lines), once per chunk that has any.
EntrySink = Callable[[list[str], list[int], list[str], list[int]], None]


@dataclass(frozen=True)
class ParsedList:
    """One list after parsing, held whole: what it blocks and allows, and what was wrong with it.

    ``lines[i]`` is the line of the first occurrence of ``domains[i]``, so "why is this blocked"
    can point at the line an administrator would edit. Unlike ``ListSummary`` it keeps every
    warning: whoever holds the whole list can hold its warnings too.
    """

    source: str
    format: str
    domains: tuple[str, ...]
    allows: tuple[str, ...]
    lines: tuple[int, ...]
    warnings: tuple[Problem, ...]
    total_lines: int
    ignored_modifiers: int
    invalid: int = 0
    regexes: tuple[tuple[str, int], ...] = ()


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%lo0: a zone is still an address
    except ValueError:
        return False
    return True


def _normalise(text: str, allow_tld: bool = False) -> tuple[str | None, str]:
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
    if labels[-1].isdigit():
        return None, "the last label is all digits, so this is not a domain name"
    if len(labels) == 1 and not allow_tld:
        return None, "a single label would block a whole top-level domain"
    return name, ""


def normalise_domain(text: str) -> str | None:
    """The form lists and lookups share, or None when ``text`` must not be blocked as a name.

    Upper case, a trailing dot and Unicode (IDNA 2003, as Python's ``idna`` codec does it) are
    folded; wildcards are not, because only some formats give ``*.`` a meaning.
    """
    if len(text) <= MAX_NAME and _fast_domain(text):
        return text
    return _normalise(text)[0]


# --- format detection -------------------------------------------------------------------------

_DETECT_ORDER: Final = (
    # Ties go to hosts: its parser also takes a line that is a bare name, so mixed files lose least.
    "hosts",
    "adblock",
    "dnsmasq",
    "unbound",
    "rpz",
    "regex",
    "wildcard",
    "domains",
)


def _vote(line: str) -> str | None:
    """The format one line looks like, or None for a comment, a blank or a header."""
    s = line.strip().lstrip("\ufeff")
    if not s or s[0] in "#!;":
        return "adblock" if s.startswith(_COSMETIC) else None
    if s[0] == "[":
        return "adblock" if s.lower().startswith("[adblock") else None
    low = s.lower()
    if low.startswith(("address=/", "server=/", "local=/")):
        return "dnsmasq"
    if low.startswith(("local-zone:", "local-data:", "local-data-ptr:", "server:")):
        return "unbound"
    if s[0] == "$":
        return "rpz" if low.startswith(("$origin", "$ttl")) else None
    if s.startswith(("||", "@@", "|", "/")):
        return "adblock"
    parts = s.split()
    if len(parts) >= 2:
        if _is_ip(parts[0]):
            return "hosts"
        if any(p.upper() in ("CNAME", "SOA", "NS") for p in parts[1:5]):
            return "rpz"
    if s[0] in "^(" or s.endswith("$") or "\\" in s:
        return "regex"
    if "^" in s:
        return "adblock"
    if s.startswith("*."):
        return "wildcard"
    return "domains"


def detect_format(lines: Iterable[str]) -> str:
    """The format most of the first lines are written in; "domains" when nothing says otherwise.

    A majority rather than the first line, because hosts files often open with a few
    ``127.0.0.1 localhost`` lines and lists sometimes carry a stray line of another syntax.
    "regex" can be the answer, but ``parse_stream`` loads regexes only when asked by name.
    """
    votes = dict.fromkeys(_DETECT_ORDER, 0)
    _count_votes(lines, votes)
    return _winner(votes)


def _count_votes(lines: Iterable[str], votes: dict[str, int]) -> bool:
    """Add the votes of ``lines``; True once ``DETECT_LINES`` lines have voted."""
    seen = sum(votes.values())
    for line in lines:
        if seen >= DETECT_LINES:
            return True
        kind = _vote(line)
        if kind is not None:
            votes[kind] += 1
            seen += 1
    return seen >= DETECT_LINES


def _winner(votes: dict[str, int]) -> str:
    if not any(votes.values()):
        return "domains"
    return max(_DETECT_ORDER, key=lambda kind: votes[kind])


# --- the per-line readers (the slow path) -----------------------------------------------------


class _Out:
    """One parse's counters and warnings, and the current chunk's entries from the slow path."""

    __slots__ = (
        "allow_lines",
        "allow_names",
        "allow_tld",
        "block_lines",
        "block_names",
        "ignored_modifiers",
        "invalid",
        "max_warnings",
        "regexes",
        "source",
        "warnings",
    )

    def __init__(self, source: str, allow_tld: bool, max_warnings: int | None) -> None:
        self.source = source
        self.allow_tld = allow_tld
        self.max_warnings = max_warnings
        self.warnings: list[Problem] = []
        self.invalid = 0
        self.ignored_modifiers = 0
        self.regexes: list[tuple[str, int]] = []
        self.block_names: list[str] = []
        self.block_lines: list[int] = []
        self.allow_names: list[str] = []
        self.allow_lines: list[int] = []

    def warn(self, line: int, message: str) -> None:
        self.invalid += 1
        if self.max_warnings is None or len(self.warnings) < self.max_warnings:
            self.warnings.append(Problem(self.source, line, "", message))

    def skip(self, text: str, line: int, why: str) -> None:
        self.warn(line, f"skipped {_shown(text)}: {why}")

    def name(self, text: str, line: int) -> str | None:
        """One name in final form, or None after warning about it."""
        if len(text) <= MAX_NAME and _fast_domain(text):
            return text
        name, why = _normalise(text, self.allow_tld)
        if name is None:
            self.skip(text, line, why)
        return name

    def block(self, text: str, line: int) -> None:
        name = self.name(text, line)
        if name is not None:
            self.block_names.append(name)
            self.block_lines.append(line)

    def allow(self, text: str, line: int) -> None:
        name = self.name(text, line)
        if name is not None:
            self.allow_names.append(name)
            self.allow_lines.append(line)

    def take(self) -> tuple[list[str], list[int], list[str], list[int]]:
        """The chunk's slow-path entries, leaving empty lists for the next chunk."""
        taken = (self.block_names, self.block_lines, self.allow_names, self.allow_lines)
        self.block_names, self.block_lines, self.allow_names, self.allow_lines = [], [], [], []
        return taken


class _Syntax:
    """One format's exact reading of a line, and what the bulk path must leave to it.

    ``specials`` are substrings that make a plain-looking name mean something else in this
    format, so lines containing them always take the slow path.
    """

    name = ""
    bulk = True
    specials: tuple[str, ...] = ()

    def line(self, raw: str, n: int, out: _Out) -> None:
        raise NotImplementedError

    def probe(self) -> _Syntax:
        """A reader safe to try a sample line on without changing this one's state."""
        return self

    def stateful_upto(self, raw: list[str]) -> int:
        """Index of the last line of the chunk that must be read in order; -1 for none."""
        return -1

    def end_chunk(self, raw: list[str]) -> None:
        """Carry what the next chunk needs from lines the bulk path read."""


class _Hosts(_Syntax):
    name = "hosts"
    # The only default hosts name that is also a plain two-label name.
    specials = ("localhost.localdomain",)

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "#":
            return
        if "#" in s:
            s = s[: s.index("#")]
        parts = s.split()
        if not parts:
            return
        if not _is_ip(parts[0]):
            if len(parts) == 1 and "." in parts[0]:
                names = parts  # a bare name among hosts lines still means "block this"
            else:
                out.skip(s, n, "expected 'ADDRESS NAME...'")
                return
        else:
            names = parts[1:]
            if not names:
                out.skip(s, n, "an address with no name after it")
                return
        for text in names:
            low = text.lower()
            if low in _HOSTS_DEFAULTS or (low.startswith("ip6-") and "." not in low):
                continue  # ip6-localhost, ip6-allnodes...: the machine's own names
            out.block(text, n)


class _Domains(_Syntax):
    name = "domains"

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "#" or s[0] == "!":
            return
        if "#" in s:  # an inline comment
            s = s[: s.index("#")].rstrip()
        if s.startswith("*."):
            s = s[2:]  # every entry blocks its subdomains anyway
        elif len(s.split()) > 1:
            out.skip(s, n, f"more than one word on a line of a {self.name} list")
            return
        out.block(s, n)


class _Wildcard(_Domains):
    name = "wildcard"


class _Adblock(_Syntax):
    name = "adblock"

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "!" or s[0] == "[":
            return
        if s[0] == "#":
            if s.startswith(_COSMETIC):
                out.skip(s, n, "a cosmetic rule (pages, not names)")
            return  # a '#' comment
        if "##" in s or "#@#" in s or "#?#" in s or "#$#" in s:
            out.skip(s, n, "a cosmetic rule (pages, not names)")
            return
        allow = s.startswith("@@")
        body = s[2:] if allow else s
        if "$" in body:
            body, modifiers = body.split("$", 1)
            if "badfilter" in modifiers.split(","):
                out.skip(s, n, "$badfilter cancels another rule, not supported")
                return
            out.ignored_modifiers += 1
        if body.startswith("/") and body.endswith("/") and len(body) > 1:
            out.skip(s, n, "a regular-expression rule")
            return
        if body.startswith("||") and body.endswith("^"):
            text = body[2:-1]
        elif body.startswith("||") and body.endswith("^|"):
            text = body[2:-2]
        elif body and _NOT_A_NAME.isdisjoint(body):
            text = body  # a bare name is AdGuard DNS syntax for the same rule
        else:
            out.skip(s, n, "not a whole-domain rule ('||name^')")
            return
        if allow:
            out.allow(text, n)
        else:
            out.block(text, n)


class _Dnsmasq(_Syntax):
    name = "dnsmasq"

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "#":
            return
        key, eq, value = s.partition("=")
        key = key.strip().lower()
        if not eq or key not in ("address", "server", "local"):
            out.skip(s, n, "expected 'address=/name/...', 'server=/name/' or 'local=/name/'")
            return
        parts = value.strip().split("/")
        if len(parts) < 3 or parts[0]:
            out.skip(s, n, f"expected '/name/' after '{key}='")
            return
        names, target = parts[1:-1], parts[-1].strip()
        allow = False
        if key == "address":
            # Any address is a sinkhole here, as in a hosts file; '#' is dnsmasq's 0.0.0.0 and ::.
            if target not in ("", "#") and not _is_ip(target):
                out.skip(s, n, f"{target!r} is not an address")
                return
        elif target == "#":
            allow = True  # server=/x/# sends x to the normal servers: an exception to a block
        elif target:
            out.skip(s, n, f"forwards to the server {target!r}, which is not a block")
            return
        for text in names:
            t = text.strip()
            if t == "#":
                out.skip(s, n, "'#' as a name means every name")
                continue
            if t.startswith("*."):
                t = t[2:]  # dnsmasq's subdomains-only form; the table also blocks t itself
            elif t.startswith(".") and len(t) > 1:
                t = t[1:]
            if allow:
                out.allow(t, n)
            else:
                out.block(t, n)


class _Unbound(_Syntax):
    name = "unbound"

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "#":
            return
        if "#" in s:
            s = s[: s.index("#")].rstrip()
        key, colon, value = s.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if not colon:
            out.skip(s, n, "expected 'local-zone: \"name\" type'")
            return
        if key == "server" and not value:
            return  # the clause header
        if key in ("local-data", "local-data-ptr"):
            return  # answers for redirect zones; the zone line decides
        if key != "local-zone":
            out.skip(s, n, f"'{key}:' is not a local-zone line")
            return
        if value.startswith('"'):
            end = value.find('"', 1)
            if end < 0:
                out.skip(s, n, "unterminated quote")
                return
            zone, rest = value[1:end], value[end + 1 :]
        else:
            zone, _, rest = value.replace("\t", " ").partition(" ")
        kinds = rest.split()
        if not kinds:
            out.skip(s, n, "no zone type after the name")
            return
        kind = kinds[0].lower()
        if not zone.strip("."):
            out.skip(s, n, "the root zone would cover every name")
        elif kind in _UNBOUND_BLOCK:
            out.block(zone, n)
        elif kind in _UNBOUND_ALLOW:
            out.allow(zone, n)
        else:
            out.skip(s, n, f"zone type {kind!r} is neither a block nor an allow")


class _Rpz(_Syntax):
    """RPZ zone files: the one reader with state ($ORIGIN, parentheses, the last owner name)."""

    name = "rpz"

    def __init__(self) -> None:
        self.origin = ""  # lower case, no trailing dot; "" for none or the root
        self.in_parens = False
        self.owner: str | None = None
        self.specials = ("rpz-",)

    def probe(self) -> _Syntax:
        return copy.copy(self)

    def stateful_upto(self, raw: list[str]) -> int:
        # Lines that open or close parentheses, start with a blank (no owner: the previous
        # line's) or a '$' directive change or use state, so everything up to the last of them
        # is read in order. A ';' comment with a parenthesis only costs speed.
        if not raw:
            return -1
        text = "\n".join(raw)
        last = max(text.rfind("("), text.rfind(")"))
        for mark in ("\n ", "\n\t", "\n$"):
            p = text.rfind(mark)
            if p >= 0:
                last = max(last, p + 1)
        if raw[0][:1] in (" ", "\t", "$"):
            last = max(last, 0)
        if last < 0:
            return len(raw) - 1 if self.in_parens else -1
        return text.count("\n", 0, last)

    def end_chunk(self, raw: list[str]) -> None:
        for s in reversed(raw):
            t = s.split(";", 1)[0]
            if not t.strip():
                continue
            if not self.in_parens and t[0] not in " \t$":
                self.owner = t.split()[0]  # the bulk path read this line, not line()
            return

    def _set_origin(self, origin: str) -> None:
        self.origin = origin
        # An absolute owner under the origin loses the origin, which a plain-name shape cannot.
        self.specials = ("rpz-", origin + ".") if origin else ("rpz-",)

    def line(self, raw: str, n: int, out: _Out) -> None:
        text = raw.split(";", 1)[0]
        if self.in_parens:
            if ")" in text:
                self.in_parens = False
            return  # the rest of a multi-line record (SOA timers)
        if "(" in text:
            if ")" not in text[text.index("(") :]:
                self.in_parens = True
            text = text.replace("(", " ").replace(")", " ")
        fields = text.split()
        if not fields:
            return
        if text[0] in " \t":
            owner, rest = self.owner, fields  # no owner: the previous record's
        else:
            owner, rest = fields[0], fields[1:]
            if owner.startswith("$"):
                self._directive(fields, raw.strip(), n, out)
                return
            self.owner = owner
        i = 0
        while i < len(rest) and (rest[i].upper() in _RPZ_CLASSES or _RPZ_TTL(rest[i])):
            i += 1
        rtype = rest[i].upper() if i < len(rest) else ""
        if rtype in ("SOA", "NS"):
            return
        s = raw.strip()
        if rtype != "CNAME":
            what = f"a record of type {rtype}" if rtype else "a record without a type"
            out.skip(s, n, f"{what}; only CNAME policy rules are read")
            return
        target = rest[i + 1].lower() if i + 1 < len(rest) else ""
        if target in (".", "*.", "rpz-drop."):
            allow = False
        elif target == "rpz-passthru.":
            allow = True
        else:
            out.skip(s, n, f"CNAME {target or '(nothing)'} is a rewrite, not a block")
            return
        name = self._domain(owner, s, n, out)
        if name is None:
            return
        if allow:
            out.allow(name, n)
        else:
            out.block(name, n)

    def _domain(self, owner: str | None, s: str, n: int, out: _Out) -> str | None:
        """The domain an owner name triggers on, or None after a warning."""
        if owner is None:
            out.skip(s, n, "a record with no owner name before it")
            return None
        name = owner
        if name == "@":
            out.skip(s, n, "the zone's own name is not a trigger")
            return None
        if name.endswith("."):
            low = name[:-1].lower()
            origin = self.origin
            if origin and low == origin:
                out.skip(s, n, "the zone's own name is not a trigger")
                return None
            if origin and low.endswith("." + origin):
                name = low[: -len(origin) - 1]
            # else: absolute and outside the zone; lists written for other servers mean the name
        if name.startswith("*."):
            name = name[2:]
        if name.rstrip(".").rpartition(".")[2].lower() in _RPZ_TRIGGERS:
            out.skip(s, n, "an IP-address or name-server trigger, not a domain")
            return None
        return name

    def _directive(self, fields: list[str], s: str, n: int, out: _Out) -> None:
        key = fields[0].upper()
        if key == "$TTL":
            return
        if key == "$ORIGIN":
            if len(fields) < 2:
                out.skip(s, n, "$ORIGIN without a name")
                return
            origin = fields[1].lower()
            if origin.endswith("."):
                self._set_origin(origin[:-1])
            else:  # relative to the current origin
                self._set_origin(f"{origin}.{self.origin}" if self.origin else origin)
            return
        if key == "$INCLUDE":
            out.skip(s, n, "$INCLUDE is not followed: a list is read alone")
            return
        out.skip(s, n, f"unknown directive {fields[0]}")


class _Regex(_Syntax):
    name = "regex"
    bulk = False

    def line(self, raw: str, n: int, out: _Out) -> None:
        s = raw.strip()
        if not s or s[0] == "#":
            return
        if len(s) > MAX_PATTERN_LENGTH:
            out.skip(s, n, f"pattern of {len(s)} characters (the limit is {MAX_PATTERN_LENGTH})")
        elif len(out.regexes) >= MAX_PATTERNS:
            out.skip(s, n, f"more than {MAX_PATTERNS} regular expressions in one list")
        else:
            out.regexes.append((s, n))


_SYNTAXES: Final[dict[str, Callable[[], _Syntax]]] = {
    "hosts": _Hosts,
    "domains": _Domains,
    "wildcard": _Wildcard,
    "adblock": _Adblock,
    "dnsmasq": _Dnsmasq,
    "rpz": _Rpz,
    "unbound": _Unbound,
    "regex": _Regex,
}
assert tuple(_SYNTAXES) == FORMATS


# --- the bulk path ----------------------------------------------------------------------------

_UNCHANGED: Final = "unchanged"
_SAME_WHEN_UNCHANGED: Final = _UNCHANGED.removeprefix("x") is _UNCHANGED


@dataclass(frozen=True)
class _Shape:
    """A line is prefix + name + suffix, and then it means what ``allow`` says for that name."""

    prefix: str
    suffix: str
    allow: bool


def _indexes(items: list[Any], value: object) -> Iterator[int]:
    """Where ``value`` sits in ``items``, found by ``list.index`` (a C loop) between hits."""
    i = -1
    with suppress(ValueError):
        while True:
            i = items.index(value, i + 1)
            yield i


def _bad_names(cand: list[str], specials: tuple[str, ...] = ()) -> set[int]:
    """Indexes of the strings that are not plain final-form names (or contain a special).

    A plain name is what ``normalise_domain`` returns unchanged: [a-z0-9_-] labels of 1..63,
    two or more, last not all digits, 253 at most. Checked over all names joined by "\\n" with
    a few C-level searches, because a per-name regular expression costs as much as the rest of
    the parse; only the names that fail are located, by counting newlines up to each hit.
    """
    n = len(cand)
    blob = "\n".join(cand)
    hits: list[int] = []  # offsets in blob, each inside a bad name (or at its start)
    bad: set[int] = set()
    if not blob.isascii() or blob.encode("ascii").translate(None, _NAME_BYTES):
        pos = 0
        while (m := _BAD_CHAR(blob, pos)) is not None:
            hits.append(m.start())
            pos = blob.find("\n", m.start()) + 1  # one hit per name is enough
            if not pos:
                break
            if len(hits) == _FEW:  # many: one search per remaining name is cheaper
                rest = blob.count("\n", 0, pos)
                bad.update(compress(range(rest, n), map(_BAD_CHAR, cand[rest:])))
                break
    hits.extend(m.start() for m in _BAD_DOTS(blob))
    pos = blob.find("\n.")
    while pos >= 0:
        hits.append(pos + 1)
        pos = blob.find("\n.", pos + 1)
    if blob.startswith("."):
        hits.append(0)
    for special in specials:
        pos = blob.find(special)
        while pos >= 0:
            hits.append(pos)
            pos = blob.find(special, pos + 1)
    if hits:
        hits.sort()
        line = last = 0
        for pos in hits:
            line += blob.count("\n", last, pos)
            last = pos
            bad.add(line)
    if not all(cand):
        bad.update(_indexes(cand, ""))
    dotted = list(map(contains, cand, repeat(".")))
    if not all(dotted):
        bad.update(_indexes(dotted, False))
    lens = list(map(len, cand))
    if n and max(lens) > MAX_LABEL:
        for i in compress(range(n), map(gt, lens, repeat(MAX_LABEL))):
            name = cand[i]
            if len(name) > MAX_NAME or max(map(len, name.split("."))) > MAX_LABEL:
                bad.add(i)
    return bad


def _read_one(syntax: _Syntax, s: str, allow_tld: bool) -> tuple[str, bool] | None:
    """(name, allow) when the exact reader finds one entry in ``s`` and nothing else."""
    probe = _Out("", allow_tld, 0)
    syntax.probe().line(s, 0, probe)
    if probe.invalid or probe.ignored_modifiers or probe.regexes:
        return None
    if len(probe.block_names) + len(probe.allow_names) != 1:
        return None
    return (probe.allow_names or probe.block_names)[0], bool(probe.allow_names)


def _shape_of(syntax: _Syntax, s: str, allow_tld: bool) -> _Shape | None:
    """The shape of one sample line, if the exact reader finds exactly one plain name in it.

    The shape is then tried on a made-up name: a reader whose meaning depended on the name
    itself (beyond what ``specials`` catch) must not lend its answer to other names.
    """
    one = _read_one(syntax, s, allow_tld)
    if one is None:
        return None
    name, allow = one
    if s.count(name) != 1 or _bad_names([name], syntax.specials):
        return None
    i = s.index(name)
    shape = _Shape(s[:i], s[i + len(name) :], allow)
    if _read_one(syntax, f"{shape.prefix}{_PROBE_NAME}{shape.suffix}", allow_tld) != (
        _PROBE_NAME,
        allow,
    ):
        return None
    return shape


def _learn(syntax: _Syntax, strs: list[str], allow_tld: bool) -> _Shape | None:
    """The commonest shape among a few lines spread over the chunk, or None."""
    n = len(strs)
    samples = {strs[(k * n) // _SAMPLES] for k in range(_SAMPLES)} if n else set()
    found = (_shape_of(syntax, s, allow_tld) for s in samples if s)
    shapes = Counter(shape for shape in found if shape is not None)
    if not shapes:
        return None
    # Among the common ones (at least half as frequent as the commonest) the longest prefix and
    # suffix go first: lines of a shorter shape then lack them, which costs a mask, whereas the
    # other way round they would be rejected one bad name at a time.
    top = max(shapes.values())
    common = [shape for shape, n in shapes.items() if 2 * n >= top]
    return max(common, key=lambda shape: len(shape.prefix) + len(shape.suffix))


def _has(strs: list[str], affix: str, suffix: bool) -> tuple[list[str], list[bool]]:
    """``strs`` without ``affix``, and which of them had it.

    CPython returns the very same object when there is nothing to remove, so one identity
    test per line tells; ``_SAME_WHEN_UNCHANGED`` checks that once, at import.
    """
    cut = list(map(str.removesuffix if suffix else str.removeprefix, strs, repeat(affix)))
    if _SAME_WHEN_UNCHANGED:
        return cut, list(map(is_not, cut, strs))
    return cut, list(map(eq, map(sub, map(len, strs), map(len, cut)), repeat(len(affix))))


def _take_shape(
    shape: _Shape, strs: list[str], nums: Sequence[int], specials: tuple[str, ...]
) -> tuple[list[str], list[int], list[str], list[int]]:
    """(names, lines) of the lines that have the shape, and (strs, nums) of those that do not.

    Lines without the prefix or suffix are set aside with masks first, so that a chunk of two
    alternating shapes (RPZ's ``x CNAME .`` and ``*.x CNAME .``) costs C loops, not a rejected
    name at a time.
    """
    cand = strs
    mask: list[bool] | None = None
    if shape.prefix:
        cand, mask = _has(cand, shape.prefix, False)
    if shape.suffix:
        cand, has = _has(cand, shape.suffix, True)
        mask = has if mask is None else list(map(and_, mask, has))
    other_strs: list[str] = []
    other_nums: list[int] = []
    if mask is not None and not all(mask):
        other_strs = list(compress(strs, map(not_, mask)))
        other_nums = list(compress(nums, map(not_, mask)))
        strs = list(compress(strs, mask))
        cand = list(compress(cand, mask))
        nums = list(compress(nums, mask))
    bad = _bad_names(cand, specials)
    if not bad:
        return cand, list(nums), other_strs, other_nums
    rejected = sorted(bad)
    if len(rejected) <= _FEW:  # copy the runs between them: memcpy beats a mask per line
        edges = [-1, *rejected, len(cand)]
        names = list(chain.from_iterable(cand[a + 1 : b] for a, b in pairwise(edges)))
        lines = list(chain.from_iterable(nums[a + 1 : b] for a, b in pairwise(edges)))
    else:
        keep = [True] * len(cand)
        for i in rejected:
            keep[i] = False
        names = list(compress(cand, keep))
        lines = list(compress(nums, keep))
    more = ([nums[i] for i in rejected], [strs[i] for i in rejected])
    bad_strs, bad_nums = _merge([(other_nums, other_strs), more])
    return names, lines, bad_strs, bad_nums


def _merge(runs: list[tuple[list[int], list[str]]]) -> tuple[list[str], list[int]]:
    """Entries of several line-ordered runs as one list in line order (stable within a line).

    Usually one long run from the bulk path and a few entries from the slow path: those are
    inserted by bisection, which costs a few memmoves instead of a sort of the whole chunk.
    """
    runs = sorted((run for run in runs if run[0]), key=lambda run: len(run[0]), reverse=True)
    if not runs:
        return [], []
    lines, names = runs[0]
    if len(runs) == 1:
        return names, lines
    if sum(len(run[0]) for run in runs[1:]) <= _FEW:
        lines, names = list(lines), list(names)
        for more_lines, more_names in runs[1:]:
            for line, name in zip(more_lines, more_names, strict=True):
                i = bisect_right(lines, line)
                lines.insert(i, line)
                names.insert(i, name)
        return names, lines
    # An argsort: timsort finds the runs and merges them, all in C, with no tuple per entry.
    lines = list(chain.from_iterable(run[0] for run in runs))
    names = list(chain.from_iterable(run[1] for run in runs))
    order = sorted(range(len(lines)), key=lines.__getitem__)
    return list(map(names.__getitem__, order)), list(map(lines.__getitem__, order))


def _parse_chunk(
    syntax: _Syntax, raw: list[str], first: int, out: _Out
) -> tuple[list[str], list[int], list[str], list[int]]:
    """Block and allow entries of lines ``first``.. of a chunk, each list in line order."""
    blocks: list[tuple[list[int], list[str]]] = []
    allows: list[tuple[list[int], list[str]]] = []
    read = syntax.line
    start = syntax.stateful_upto(raw) + 1 if syntax.bulk else len(raw)
    for i in range(start):
        read(raw[i], first + i, out)
    if start < len(raw):
        base = first + start
        strs = list(map(str.strip, raw[start:] if start else raw))
        nums: Sequence[int] = range(base, base + len(strs))
        for _ in range(_MAX_SHAPES):
            shape = _learn(syntax, strs, out.allow_tld)
            if shape is None:
                break
            names, lines, strs, nums = _take_shape(shape, strs, nums, syntax.specials)
            (allows if shape.allow else blocks).append((lines, names))
            if not strs:
                break
        for n in nums:
            read(raw[n - first], n, out)
        syntax.end_chunk(raw)
    block_names, block_lines, allow_names, allow_lines = out.take()
    blocks.append((block_lines, block_names))
    allows.append((allow_lines, allow_names))
    return (*_merge(blocks), *_merge(allows))


# --- reading --------------------------------------------------------------------------------


def _unreadable(source: str, exc: OSError) -> ListError:
    if isinstance(exc, FileNotFoundError):
        message = "cannot read: no such file"
    elif isinstance(exc, IsADirectoryError):
        message = "cannot read: is a directory"
    else:
        message = f"cannot read: {exc.strerror or exc}"
    return ListError(Problem(source, 0, "", message))


def _open(source: str) -> IO[bytes]:
    try:
        return open(source, "rb")  # the callers close it with "with"
    except OSError as exc:
        raise _unreadable(source, exc) from None


def _file_blocks(f: IO[bytes], block_bytes: int, out: _Out) -> Iterator[str]:
    """The file as text blocks that each end at a newline (the last one may not).

    Cutting at a newline byte never splits a UTF-8 character. A line that would be carried
    over past ``MAX_LINE_BYTES`` is dropped as it is read (one warning, an empty line in its
    place), so a file without newlines cannot grow the carried remainder without end.
    """

    def read(size: int) -> bytes:
        try:
            return f.read(size)
        except OSError as exc:  # midway too: half a list must not pass for the whole one
            raise _unreadable(out.source, exc) from None

    carry = b""
    lines_done = 0
    skipping = False
    data = read(max(block_bytes, len(_BOM)))
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    while True:
        if not data:
            data = read(block_bytes)
            if not data:
                break
        newline = data.find(b"\n")
        line_end = newline if newline >= 0 else len(data)
        if skipping or (carry and len(carry) + line_end > MAX_LINE_BYTES):
            if not skipping:
                out.warn(lines_done + 1, f"skipped a line of more than {MAX_LINE_BYTES} bytes")
                carry, skipping = b"", True
            if newline < 0:
                data = b""
                continue
            data = data[newline:]  # the dropped line ends here, as an empty line
            skipping = False
        cut = data.rfind(b"\n")
        if cut < 0:
            carry += data
            data = b""
            continue
        text = (carry + data[: cut + 1] if carry else data[: cut + 1]).decode("utf-8", "replace")
        carry, data = data[cut + 1 :], b""
        lines_done += text.count("\n")
        yield text
    if carry:
        yield carry.decode("utf-8", "replace")
    elif skipping:
        yield ""  # the dropped last line still counts as a line


def _text_blocks(text: str, block_chars: int) -> Iterator[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    pos = 0
    while pos < len(text):
        end = text.rfind("\n", pos, pos + block_chars)
        if end < 0:
            end = text.find("\n", pos + block_chars)
            if end < 0:
                yield text[pos:]
                return
        yield text[pos : end + 1]
        pos = end + 1


def _iter_lines(text: str) -> Iterator[str]:
    """Lines of a block one at a time, so detection does not split a whole block."""
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


def _check_format(fmt: str) -> None:
    if fmt != "auto" and fmt not in _SYNTAXES:
        raise ValueError(f"unknown list format {fmt!r} (known: auto, {', '.join(FORMATS)})")


def _run(
    blocks: Iterator[str],
    fmt: str,
    on_entries: EntrySink | None,
    out: _Out,
    chunk_lines: int,
) -> ListSummary:
    """Parse text blocks, each a whole number of lines but the last, chunk by chunk."""
    if chunk_lines < 1:
        raise ValueError("chunk_lines must be at least 1")
    head: list[str] = []
    detected = fmt
    if fmt == "auto":
        # Blocks are read until enough lines have voted (a long comment header can fill one).
        votes = dict.fromkeys(_DETECT_ORDER, 0)
        size = 0
        for text in blocks:
            head.append(text)
            size += len(text)
            if _count_votes(_iter_lines(text), votes) or size >= _DETECT_BYTES:
                break
        detected = _winner(votes)
    syntax = _SYNTAXES[detected]()
    total = blocked = allowed = 0
    for text in chain(head, blocks):
        # split("\n"), not splitlines(): the latter also breaks at \x0c, \x1c, U+2028..., which
        # would shift every line number after a stray control character. strip() removes the
        # CR of CRLF.
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        for i in range(0, len(lines), chunk_lines):
            chunk = lines if len(lines) <= chunk_lines else lines[i : i + chunk_lines]
            bn, bl, an, al = _parse_chunk(syntax, chunk, total + i + 1, out)
            blocked += len(bn)
            allowed += len(an)
            if on_entries is not None and (bn or an):
                on_entries(bn, bl, an, al)
        total += len(lines)
    regexes = tuple(out.regexes)
    warnings = out.warnings
    invalid = out.invalid
    if fmt == "auto" and detected == "regex":
        # Regexes are opt-in: a file that merely looks like them loads nothing, and says why.
        message = "looks like regular expressions, which load only with format 'regex'"
        warnings = [Problem(out.source, 0, "", message), *warnings]
        invalid += len(regexes)
        regexes = ()
    return ListSummary(
        source=out.source,
        format=detected,
        total_lines=total,
        blocked=blocked,
        allowed=allowed,
        invalid=invalid,
        ignored_modifiers=out.ignored_modifiers,
        warnings=tuple(warnings),
        regexes=regexes,
    )


def parse_stream(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    on_entries: EntrySink | None = None,
    *,
    allow_tld: bool = False,
    chunk_lines: int = CHUNK_LINES,
    block_bytes: int = BLOCK_BYTES,
) -> ListSummary:
    """Parse a list file without holding it: entries go to ``on_entries`` chunk by chunk.

    ``on_entries(block_names, block_lines, allow_names, allow_lines)`` gets normalised names
    and their 1-based lines, each pair of lists in line order, at most ``chunk_lines`` lines'
    worth per call, and no call for a chunk with no entries. Names may repeat. Raises ListError
    only when the file cannot be read (a read error midway too: what was handed over must then
    be thrown away). Bytes that are not UTF-8 spoil only the lines they sit on.
    """
    _check_format(fmt)
    source = os.fspath(path)
    out = _Out(source, allow_tld, MAX_WARNINGS_KEPT)
    with _open(source) as f:
        return _run(_file_blocks(f, block_bytes, out), fmt, on_entries, out, chunk_lines)


def parse_text_stream(
    text: str,
    source: str = "<string>",
    fmt: str = "auto",
    on_entries: EntrySink | None = None,
    *,
    allow_tld: bool = False,
    chunk_lines: int = CHUNK_LINES,
    block_chars: int = BLOCK_BYTES,
) -> ListSummary:
    """``parse_stream`` for text already in memory (tests, the CLI's stdin)."""
    _check_format(fmt)
    out = _Out(source, allow_tld, MAX_WARNINGS_KEPT)
    return _run(_text_blocks(text, block_chars), fmt, on_entries, out, chunk_lines)


def _collect(blocks: Iterator[str], fmt: str, out: _Out) -> ParsedList:
    seen: dict[str, int] = {}
    allows: dict[str, None] = {}
    first = seen.setdefault

    def sink(bn: list[str], bl: list[int], an: list[str], al: list[int]) -> None:
        deque(map(first, bn, bl), maxlen=0)  # keeps each name's first line, in C
        allows.update(dict.fromkeys(an))

    summary = _run(blocks, fmt, sink, out, CHUNK_LINES)
    return ParsedList(
        source=out.source,
        format=summary.format,
        domains=tuple(seen),
        allows=tuple(allows),
        lines=tuple(seen.values()),
        warnings=summary.warnings,
        total_lines=summary.total_lines,
        ignored_modifiers=summary.ignored_modifiers,
        invalid=summary.invalid,
        regexes=summary.regexes,
    )


def parse_text(
    text: str, source: str = "<string>", fmt: str = "auto", *, allow_tld: bool = False
) -> ParsedList:
    """Parse a whole list into one ``ParsedList``. Bad lines become warnings; never raises for
    content."""
    _check_format(fmt)
    return _collect(_text_blocks(text, BLOCK_BYTES), fmt, _Out(source, allow_tld, None))


def parse_file(
    path: str | os.PathLike[str], fmt: str = "auto", *, allow_tld: bool = False
) -> ParsedList:
    """Parse a list file into one ``ParsedList``. Raises ListError only when the file as a whole
    cannot be read.

    Bytes that are not UTF-8 do not stop the list: they turn the lines they sit on into
    warnings, because one mangled line in a million-line download should not unblock the rest.
    """
    _check_format(fmt)
    source = os.fspath(path)
    out = _Out(source, allow_tld, None)
    with _open(source) as f:
        return _collect(_file_blocks(f, BLOCK_BYTES, out), fmt, out)


__all__ = [
    "BLOCK_BYTES",
    "CHUNK_LINES",
    "FORMATS",
    "MAX_WARNINGS_KEPT",
    "EntrySink",
    "ListSummary",
    "ParsedList",
    "detect_format",
    "normalise_domain",
    "parse_file",
    "parse_stream",
    "parse_text",
    "parse_text_stream",
]
