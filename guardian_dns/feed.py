"""The central feed, client side: keep a signed, complete set of category lists on local disk.

What it decides: whether a feed's manifest is authentic (a minisign signature by a trusted key),
newer than what we hold (its serial; a lower one is a rollback and is refused as an attack),
current (issued not in the future, not expired), and whether every list it names is exactly the
one signed for (size and SHA-256 of the bytes as served, a bounded gunzip, a parse by the same
``lists`` module the server uses) -- and only then makes the new set the one in force.
What it reads: the feed over HTTP(S) (``requests``, imported only by ``sync``, so the DNS
process never loads it unless it syncs), the trusted public keys, and ``<state_dir>/feed/``.
What it must never do: leave the server without a good set. Every failure (network, signature,
rollback, a flipped byte, a cut body, a gzip bomb, a full disk, a SIGKILL at any instant) leaves
the set in force untouched, with the failure recorded in the state file and the result; the
server builds its table from ``current_lists``, which reads local files only, so a feed that is
unreachable at boot never means a child browsing unfiltered.

Layout of ``<state_dir>/feed/``::

    current                 {"set": "42", "serial": 42, "previous": "41"}, replaced by rename
    state.json              SyncState: last success and attempt, last error, serial, ETag, lists
    lock                    flock'ed by the one sync running
    sets/42/                a complete set: the lists (decoded), manifest.json and its .minisig,
                            and set.json (our index, written last); a set directory appears
                            only by renaming a finished ``sets/.partial-*`` directory
    sets/41/                the previous good set (kept: the last good copy); older ones are deleted
    incoming/43/<sha>.list  lists of a sync not finished yet, verified and parsed, keyed by the
                            SHA-256 of the served bytes: a sync cut halfway resumes from them

The order of a sync is fixed (each step only runs on what the previous one proved): conditional
GET of the manifest and its signature -> signature -> serial -> issue and expiry times -> per list
(reuse an unchanged one, resume a staged one, or download with a byte cap, check size and
SHA-256, gunzip with a cap, parse) -> write the set aside -> switch ``current`` -> delete what is
no longer needed. Connection errors, timeouts and 5xx are retried with exponential backoff and
full jitter; a verification failure is never retried (the same bytes would fail again).

Sync parses every new list, which is seconds of Python for millions of names: run it in a child
(``sync_in_child``, or ``python -m guardian_dns.feed`` with a JSON request on stdin), never on
the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args
from urllib.parse import urljoin, urlsplit

from guardian_dns import lists as lists_mod
from guardian_dns.errors import GuardianError
from guardian_dns.usage import fsync_dir, write_atomically

if TYPE_CHECKING:
    import requests

    from guardian_dns import feedsign

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FEED_DIR: Final = "feed"
SETS_DIR: Final = "sets"
INCOMING_DIR: Final = "incoming"
POINTER_FILE: Final = "current"
STATE_FILE: Final = "state.json"
LOCK_FILE: Final = "lock"
INDEX_FILE: Final = "set.json"
MANIFEST_FILE: Final = "manifest.json"
SIGNATURE_FILE: Final = "manifest.json.minisig"
LIST_SUFFIX: Final = ".list"
PARTIAL_PREFIX: Final = ".partial-"
TEMP_SUFFIX: Final = ".tmp"

FEED_FORMAT: Final = "guardian-dns feed"
FEED_VERSION: Final = 1
SET_FORMAT: Final = "guardian-dns feed set"
STATE_VERSION: Final = 1
MAX_SERIAL: Final = (1 << 63) - 1  # docs/feed.md: a signed 64-bit integer in every language

MIB: Final = 1 << 20
DAY: Final = 86400.0
CLOCK_SKEW: Final = 300.0  # an "issued" this far in the future is still accepted (clock drift)
MAX_SIGNATURE_BYTES: Final = 64 * 1024  # a minisign signature is about 300 bytes
MAX_BACKOFF: Final = 300.0  # one retry never waits longer than this
READ_CHUNK: Final = 64 * 1024
# A body slower than this on average (after read_timeout of grace) is cut and retried: the
# per-read timeout alone lets a server that drips a byte a second hold a sync for days.
MIN_RATE: Final = 4096  # bytes per second
USER_AGENT: Final = "guardian-dns-feed/1"

ErrorCode = Literal[
    "busy",  # another sync holds the lock
    "key",  # a trusted key cannot be read or parsed (a configuration problem)
    "network",  # connection refused or reset, timeout, a body cut short (after retries)
    "tls",  # the server's certificate is not trusted (not retried)
    "http",  # an HTTP status other than 200/304 (5xx after retries), or a Content-Encoding
    "manifest",  # the manifest is not a well-formed version 1 manifest
    "signature",  # no trusted key signed these manifest bytes
    "rollback",  # a validly signed manifest older than the one in force
    "future",  # issued more than CLOCK_SKEW in the future (or the system clock is wrong)
    "expired",  # the manifest's expiry time has passed
    "too_large",  # over max_manifest_bytes / max_list_bytes, served or uncompressed
    "size",  # the served bytes or the uncompressed size differ from the manifest
    "sha256",  # the served bytes are not the ones signed for
    "gzip",  # a gzip list that does not decompress
    "parse",  # a list with no valid entry at all
    "disk",  # writing the new set failed (ENOSPC, EFBIG, EROFS, ...)
    "internal",  # the sync child died, timed out or crashed (sync_in_child, main)
]
ERROR_CODES: Final[tuple[str, ...]] = get_args(ErrorCode)

# A list name is also its file name in a set, so it cannot contain a path.
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
# The rule config.py applies to categories (they become metric labels and category bits).
_CATEGORY_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
# A relative URL: path segments that cannot start with a dot (so no "." or ".."), no scheme, no
# host, no query, no percent-escapes that could smuggle either.
_REL_URL_RE: Final = re.compile(
    r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*\Z"
)
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}\Z")
_TIME_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z\Z")
_INLINE_KEY_RE: Final = re.compile(r"RW[A-Za-z0-9+/]{54}\Z")
_SET_NAME_RE: Final = re.compile(r"([1-9][0-9]{0,18})(?:-([1-9][0-9]{0,5}))?\Z")

_MANIFEST_KEYS: Final = frozenset({"format", "version", "serial", "issued", "expires", "lists"})
_LIST_KEYS: Final = frozenset(
    {
        "name",
        "category",
        "format",
        "url",
        "size",
        "sha256",
        "encoding",
        "uncompressed_size",
        "entries",
    }
)
_ENCODINGS: Final = ("identity", "gzip")


# --- configuration and results ---------------------------------------------------------------


@dataclass(frozen=True)
class FeedConfig:
    """One feed subscription: where, whom to trust, how often, and the limits on what comes back.

    ``keys`` are public key files or inline key text (``untrusted comment: ...`` and the key
    line, or the ``RW...`` key line alone); two keys are trusted at once during a rotation.
    ``url`` is the feed directory (``manifest.json`` is fetched from it) or the manifest's own
    URL when it ends in ``.json``. ``ca_file`` replaces the system's trusted certificates.
    """

    url: str
    keys: tuple[str, ...]
    interval: float = 3600.0
    jitter: float = 0.2  # each wait is interval * (1 +- jitter), uniformly
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # per read on the socket, so a stalled server costs this much
    max_list_bytes: int = 200 * MIB
    max_manifest_bytes: int = 1 * MIB
    retries: int = 4  # further attempts after the first, for transient failures only
    backoff: float = 2.0  # the n-th retry waits uniform(0, backoff * 2**n) seconds
    max_age_warning: float = 7 * DAY
    ca_file: str | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("http", "https") or not urlsplit(self.url).netloc:
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url!r}")
        if not self.keys:
            raise ValueError("keys: at least one trusted public key is needed")
        for name in ("interval", "connect_timeout", "read_timeout", "max_age_warning"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter: must be a fraction in [0, 1), got {self.jitter!r}")
        if not (math.isfinite(self.backoff) and self.backoff >= 0):
            raise ValueError(f"backoff: must be a non-negative number, got {self.backoff!r}")
        for name in ("max_list_bytes", "max_manifest_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive number of bytes")
        if self.retries < 0:
            raise ValueError("retries: must be 0 or more")

    def manifest_url(self) -> str:
        """The manifest's URL: ``url`` itself when it names a ``.json`` file, else inside it."""
        if urlsplit(self.url).path.endswith(".json"):
            return self.url
        return urljoin(self.url if self.url.endswith("/") else self.url + "/", MANIFEST_FILE)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["keys"] = list(self.keys)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeedConfig:
        return cls(**{**d, "keys": tuple(d["keys"])})


class FeedError(GuardianError):
    """A sync failed: which feed, which list (or none), a machine-readable code and why."""

    def __init__(self, code: str, message: str, url: str = "", list_name: str | None = None):
        self.code = code
        self.message = message
        self.url = url
        self.list_name = list_name
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"feed {self.url}" if self.url else "feed"
        if self.list_name:
            where += f": list {self.list_name}"
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class ManifestList:
    """One list as the signed manifest announces it."""

    name: str
    category: str
    format: str
    url: str
    size: int  # bytes as served
    sha256: str  # of the bytes as served
    encoding: str  # "identity" or "gzip"
    uncompressed_size: int
    entries: int  # as the publisher counted them (informational: the parse here decides)


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated version 1 manifest (its signature is checked before parsing)."""

    serial: int
    issued: float
    expires: float
    lists: tuple[ManifestList, ...]


@dataclass(frozen=True)
class FeedList:
    """One list of the set in force, as the server builds its table from it."""

    name: str
    category: str
    format: str
    path: str  # absolute path of the decoded list file
    entries: int
    sha256: str  # of the decoded file
    serial: int
    fetched_at: float  # when this content was first downloaded (kept across reuses)


@dataclass(frozen=True)
class ListOutcome:
    """What one sync did with one list."""

    name: str
    source: Literal["downloaded", "reused", "resumed"]
    entries: int
    invalid: int
    bytes: int  # downloaded in this sync (0 when reused or resumed)


@dataclass(frozen=True)
class SyncResult:
    """The outcome of one ``sync``. ``ok`` False: ``error``, ``message`` (and ``list_name``) say
    why, and the set in force did not change."""

    ok: bool
    changed: bool  # a new set was put in force
    url: str
    serial: int | None  # the serial in force after the sync
    error: str | None = None
    list_name: str | None = None
    message: str = ""
    lists: tuple[ListOutcome, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lists"] = [asdict(o) for o in self.lists]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SyncResult:
        outcomes = tuple(ListOutcome(**o) for o in d.get("lists", ()))
        return cls(**{**d, "lists": outcomes})


@dataclass
class SyncState:
    """What ``state.json`` remembers between syncs (and across restarts)."""

    url: str = ""
    serial: int = 0  # the highest serial ever put in force from ``url``: the rollback baseline
    etag: str | None = None
    last_modified: str | None = None
    last_success: float | None = None  # the feed last confirmed (or replaced) the set in force
    last_attempt: float | None = None
    last_error: dict[str, Any] | None = None  # {"error", "message", "list", "at"}
    failures: int = 0  # consecutive failed syncs
    issued: float | None = None
    expires: float | None = None
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> entries, sha256...

    @classmethod
    def load(cls, state_dir: str) -> SyncState:
        path = os.path.join(state_dir, FEED_DIR, STATE_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(MIB))
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError("not a version 1 state file")
            data.pop("version")
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("feed state %s unreadable (%s): starting afresh", path, exc)
            return cls()

    def save(self, state_dir: str) -> None:
        """Write ``state.json`` atomically; a failure is logged, never raised (it is a record,
        not the set in force)."""
        path = os.path.join(state_dir, FEED_DIR, STATE_FILE)
        doc = {"version": STATE_VERSION, **asdict(self)}
        try:
            write_atomically(path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            log.warning("feed state %s not saved: %s", path, exc.strerror or exc)


# --- the manifest ------------------------------------------------------------------------------


def _rfc3339(value: Any, where: str) -> float:
    if not isinstance(value, str) or not _TIME_RE.match(value):
        raise FeedError(
            "manifest",
            f"{where}: expected an RFC 3339 UTC time such as 2026-01-31T12:00:00Z, got {value!r}",
        )
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise FeedError("manifest", f"{where}: {exc}") from None


def _int(d: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = d[key]
    if type(value) is not int or value < minimum:  # bool is an int subclass: not a count
        raise FeedError("manifest", f"{where}.{key}: expected an integer >= {minimum}")
    return value


def _str(d: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None) -> str:
    value = d[key]
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise FeedError("manifest", f"{where}.{key}: invalid value {value!r}")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key, value in pairs:
        if key in d:
            raise ValueError(f"duplicate key {key!r}")
        d[key] = value
    return d


def _keys(d: Any, expected: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise FeedError("manifest", f"{where}: expected an object")
    unknown = sorted(set(d) - expected)
    missing = sorted(expected - set(d))
    if unknown:
        raise FeedError("manifest", f"{where}: unknown key(s) {', '.join(unknown)}")
    if missing:
        raise FeedError("manifest", f"{where}: missing key(s) {', '.join(missing)}")
    return d


def parse_manifest(data: bytes) -> Manifest:
    """Validate manifest bytes (already signature-checked). Raises FeedError("manifest")."""
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FeedError("manifest", f"not UTF-8 JSON: {exc}") from None
    doc = _keys(doc, _MANIFEST_KEYS, "manifest")
    if doc["format"] != FEED_FORMAT:
        raise FeedError("manifest", f"format: expected {FEED_FORMAT!r}, got {doc['format']!r}")
    if type(doc["version"]) is not int or doc["version"] != FEED_VERSION:
        raise FeedError(
            "manifest",
            f"version: only version {FEED_VERSION} is understood, got {doc['version']!r}",
        )
    serial = _int(doc, "serial", "manifest", 1)
    if serial > MAX_SERIAL:
        raise FeedError("manifest", f"manifest.serial: above the limit {MAX_SERIAL}")
    issued = _rfc3339(doc["issued"], "manifest.issued")
    expires = _rfc3339(doc["expires"], "manifest.expires")
    if expires <= issued:
        raise FeedError("manifest", "manifest.expires: not after manifest.issued")
    if not isinstance(doc["lists"], list) or not doc["lists"]:
        # An empty set would unblock every category the feed used to fill.
        raise FeedError("manifest", "manifest.lists: expected a non-empty array")
    entries: list[ManifestList] = []
    names: set[str] = set()
    for i, item in enumerate(doc["lists"]):
        where = f"manifest.lists[{i}]"
        item = _keys(item, _LIST_KEYS, where)
        name = _str(item, "name", where, _NAME_RE)
        if name in names:
            raise FeedError("manifest", f"{where}.name: {name!r} appears twice")
        names.add(name)
        fmt = _str(item, "format", where)
        if fmt not in lists_mod.FORMATS:
            raise FeedError(
                "manifest",
                f"{where}.format: unknown list format {fmt!r} "
                f"(known: {', '.join(lists_mod.FORMATS)})",
            )
        encoding = _str(item, "encoding", where)
        if encoding not in _ENCODINGS:
            raise FeedError("manifest", f"{where}.encoding: expected identity or gzip")
        entry = ManifestList(
            name=name,
            category=_str(item, "category", where, _CATEGORY_RE),
            format=fmt,
            url=_str(item, "url", where, _REL_URL_RE),
            size=_int(item, "size", where),
            sha256=_str(item, "sha256", where, _SHA256_RE),
            encoding=encoding,
            uncompressed_size=_int(item, "uncompressed_size", where),
            entries=_int(item, "entries", where),
        )
        if encoding == "identity" and entry.uncompressed_size != entry.size:
            raise FeedError(
                "manifest", f"{where}.uncompressed_size: differs from size for an identity list"
            )
        entries.append(entry)
    return Manifest(serial=serial, issued=issued, expires=expires, lists=tuple(entries))


# --- files: every write is temp + fsync + rename, and the directory is fsynced ----------------


def _write_file(directory: str, name: str, data: bytes) -> str:
    """Write ``directory/name`` through a temporary file; the caller fsyncs the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path = os.path.join(directory, name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _link_or_copy(src: str, dst: str) -> None:
    """Put ``src``'s bytes at ``dst``: a hard link (no bytes written) or, where links are not
    possible, a copy that is fsynced before it counts."""
    try:
        os.link(src, dst)
        return
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
    tmp = dst + TEMP_SUFFIX
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, MIB)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove(path: str) -> None:
    """Delete a file or a whole directory, quietly: cleaning up must never fail a sync."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


# --- the sets on disk -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Set:
    """A complete set directory and its index, as read back from disk."""

    name: str
    path: str
    serial: int
    url: str
    lists: tuple[FeedList, ...]
    served: dict[str, str]  # list name -> SHA-256 of the bytes as served
    invalid: dict[str, int]  # list name -> lines the parser skipped
    issued: float | None
    expires: float | None


def _set_key(name: str) -> tuple[int, int] | None:
    m = _SET_NAME_RE.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def _read_set(sets_dir: str, name: str, *, verify: bool) -> _Set:
    """Read ``sets/<name>`` and check it is complete. Raises ValueError with the reason.

    Always: the index parses, every list file exists with its recorded size. With ``verify``
    (the fall-back path, when ``current`` cannot be trusted): every file's SHA-256 matches the
    index, the saved manifest is the one the index was written for, and the index's lists are
    exactly the manifest's, with the manifest's hashes.
    """
    key = _set_key(name)
    if key is None:
        raise ValueError(f"{name!r} is not a set name")
    path = os.path.join(sets_dir, name)
    with open(os.path.join(path, INDEX_FILE), "rb") as f:
        index = json.loads(f.read(MIB))
    if not isinstance(index, dict) or index.get("format") != SET_FORMAT:
        raise ValueError("set.json is not a set index")
    serial = index["serial"]
    if type(serial) is not int or serial != key[0]:
        raise ValueError(f"set.json names serial {serial!r}")
    found: list[FeedList] = []
    served: dict[str, str] = {}
    invalid: dict[str, int] = {}
    for item in index["lists"]:
        name_ = item["name"]
        if not isinstance(name_, str) or not _NAME_RE.match(name_):
            raise ValueError(f"bad list name {name_!r}")
        file = os.path.join(path, name_ + LIST_SUFFIX)
        size = os.stat(file).st_size
        if size != item["size"]:
            raise ValueError(f"{name_}: {size} bytes on disk, {item['size']} recorded")
        if verify and _sha256_file(file)[0] != item["sha256"]:
            raise ValueError(f"{name_}: content differs from its recorded SHA-256")
        found.append(
            FeedList(
                name=name_,
                category=str(item["category"]),
                format=str(item["format"]),
                path=os.path.abspath(file),
                entries=int(item["entries"]),
                sha256=str(item["sha256"]),
                serial=serial,
                fetched_at=float(item["fetched_at"]),
            )
        )
        served[name_] = str(item["served_sha256"])
        invalid[name_] = int(item.get("invalid", 0))
    if not found:
        raise ValueError("set.json lists nothing")
    if verify:
        manifest_path = os.path.join(path, MANIFEST_FILE)
        with open(manifest_path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != index["manifest_sha256"]:
            raise ValueError("manifest.json differs from the one the set was written for")
        try:
            manifest = parse_manifest(data)
        except FeedError as exc:
            raise ValueError(str(exc)) from None
        if manifest.serial != serial or {e.name: e.sha256 for e in manifest.lists} != served:
            raise ValueError("set.json does not match its manifest")
    issued, expires = index.get("issued"), index.get("expires")
    return _Set(
        name,
        path,
        serial,
        str(index.get("url", "")),
        tuple(found),
        served,
        invalid,
        float(issued) if isinstance(issued, int | float) else None,
        float(expires) if isinstance(expires, int | float) else None,
    )


def _read_pointer(feed_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(feed_dir, POINTER_FILE), "rb") as f:
            pointer = json.loads(f.read(4096))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("feed pointer %s unreadable: %s", os.path.join(feed_dir, POINTER_FILE), exc)
        return None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("set"), str):
        log.warning("feed pointer %s is not ours", os.path.join(feed_dir, POINTER_FILE))
        return None
    return pointer


def _set_names(sets_dir: str) -> list[str]:
    """Complete-looking set names, newest first."""
    try:
        names = os.listdir(sets_dir)
    except OSError:
        return []
    keyed = [(k, n) for n in names if (k := _set_key(n)) is not None]
    return [n for _, n in sorted(keyed, reverse=True)]


def _in_force(feed_dir: str) -> tuple[_Set | None, dict[str, Any] | None]:
    """The set in force and the pointer that named it (None when the fallback chose it).

    The pointer's set, checked cheaply (index and sizes); when the pointer is missing, corrupt
    or names a set that is not complete, the newest set that passes the full check.
    """
    sets_dir = os.path.join(feed_dir, SETS_DIR)
    pointer = _read_pointer(feed_dir)
    if pointer is not None:
        try:
            return _read_set(sets_dir, pointer["set"], verify=False), pointer
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "feed set %r named by %s is unusable (%s): looking for another",
                pointer["set"],
                os.path.join(feed_dir, POINTER_FILE),
                exc,
            )
    for name in _set_names(sets_dir):
        try:
            found = _read_set(sets_dir, name, verify=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("feed set %s skipped: %s", os.path.join(sets_dir, name), exc)
            continue
        if pointer is not None or os.path.exists(os.path.join(feed_dir, POINTER_FILE)):
            log.warning("feed lists: falling back to the complete set %s", found.path)
        return found, None
    return None, pointer


def current_lists(state_dir: str) -> list[FeedList]:
    """The lists of the set in force, from local files only: what the server enforces at boot.

    Never touches the network and never raises for what it finds on disk: a missing or corrupt
    pointer, or a set that is not complete, falls back to the newest complete set (every file
    checked against its SHA-256 and the saved manifest); no usable set at all gives [] (the
    server then enforces its configured lists alone, and ``status`` says so).
    """
    found, _ = _in_force(os.path.join(state_dir, FEED_DIR))
    return list(found.lists) if found is not None else []


# --- network ---------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (connection, timeout, 5xx, a body cut short)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_RETRY_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


def _looks_inline(key: str) -> bool:
    text = key.strip()
    return text.startswith("untrusted comment:") or bool(_INLINE_KEY_RE.match(text))


def load_keys(keys: Sequence[str]) -> list[feedsign.PublicKey]:
    """The trusted public keys, from files or inline text. Raises FeedError("key")."""
    from guardian_dns import feedsign

    loaded = []
    for i, key in enumerate(keys):
        if _looks_inline(key):
            text, source = key, f"<keys[{i}]>"
        else:
            source = key
            try:
                with open(key, encoding="utf-8") as f:
                    text = f.read(64 * 1024)
            except (OSError, UnicodeDecodeError) as exc:
                raise FeedError("key", f"trusted key {key}: cannot read: {exc}") from None
        try:
            loaded.append(feedsign.PublicKey.parse(text, source))
        except GuardianError as exc:
            raise FeedError("key", f"trusted key {source}: {exc}") from None
    return loaded


@dataclass(frozen=True)
class _Staged:
    """One list ready to go into the new set: its decoded file and what is known about it."""

    entry: ManifestList
    path: str
    sha256: str  # of the decoded file
    outcome: ListOutcome
    fetched_at: float


class _Syncer:
    """One sync run: the feed's URL, the HTTP session, the clock, and the state being updated."""

    def __init__(
        self,
        cfg: FeedConfig,
        state_dir: str,
        session: requests.Session,
        now: Callable[[], float],
        sleep: Callable[[float], None],
        rng: random.Random,
    ) -> None:
        self.cfg = cfg
        self.feed_dir = os.path.join(state_dir, FEED_DIR)
        self.sets_dir = os.path.join(self.feed_dir, SETS_DIR)
        self.incoming_dir = os.path.join(self.feed_dir, INCOMING_DIR)
        self.session = session
        self.now = now
        self.sleep = sleep
        self.rng = rng
        self.url = cfg.manifest_url()
        self.verify: bool | str = cfg.ca_file or True
        self.list_name: str | None = None  # the list being worked on, for the error

    # -- HTTP --

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, again after a transient failure, ``retries`` times at most, waiting
        uniform(0, backoff * 2**n) seconds before the n-th retry ("full jitter")."""
        for n in range(self.cfg.retries + 1):
            try:
                return attempt()
            except _Transient as exc:
                if n == self.cfg.retries:
                    raise FeedError(exc.code, exc.message) from None
                delay = self.rng.uniform(0, min(MAX_BACKOFF, self.cfg.backoff * 2**n))
                log.info(
                    "feed %s%s: %s; retry %d of %d in %.1f s",
                    self.url,
                    f": list {self.list_name}" if self.list_name else "",
                    exc.message,
                    n + 1,
                    self.cfg.retries,
                    delay,
                )
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        import requests

        all_headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **(headers or {})}
        try:
            resp = self.session.get(
                url,
                headers=all_headers,
                stream=True,
                timeout=(self.cfg.connect_timeout, self.cfg.read_timeout),
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:
            raise FeedError("tls", f"{url}: TLS failed: {exc}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise _Transient("network", f"{url}: {type(exc).__name__}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise FeedError("http", f"{url}: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # requests' own check of ca_file, before any connection
            raise FeedError("tls", f"{url}: {exc}") from None
        if resp.status_code in _RETRY_STATUS:
            resp.close()
            raise _Transient("http", f"{url}: HTTP {resp.status_code}")
        if resp.status_code not in (200, 304):
            resp.close()
            raise FeedError("http", f"{url}: HTTP {resp.status_code}")
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if resp.status_code == 200 and encoding not in ("", "identity"):
            resp.close()
            raise FeedError(
                "http",
                f"{url}: served with Content-Encoding {encoding!r} although identity was asked "
                "for (the signed hashes are of the bytes as stored)",
            )
        return resp

    @staticmethod
    def _content_length(resp: requests.Response) -> int | None:
        value = resp.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise FeedError("http", f"{resp.url}: bad Content-Length {value!r}") from None

    def _body(self, resp: requests.Response, expected: int) -> Iterator[bytes]:
        """The body's raw bytes as served (never decoded), chunk by chunk. A connection that
        breaks, stalls past the read timeout, ends before Content-Length or delivers
        ``expected`` bytes slower than ``MIN_RATE`` is transient."""
        import requests
        import urllib3

        n = 0
        start = time.monotonic()
        budget = self.cfg.read_timeout + expected / MIN_RATE
        raw = resp.raw
        if hasattr(raw, "read1"):  # urllib3 >= 2.3: returns what one socket read brings
            chunks: Iterator[bytes] = iter(lambda: raw.read1(READ_CHUNK, decode_content=False), b"")
        else:  # older urllib3 waits for whole chunks, so the MIN_RATE check comes late
            chunks = raw.stream(READ_CHUNK, decode_content=False)
        try:
            for chunk in chunks:
                n += len(chunk)
                elapsed = time.monotonic() - start
                if elapsed > budget:
                    raise _Transient(
                        "network",
                        f"{resp.url}: too slow: {n} bytes in {elapsed:.1f} s "
                        f"(at least {MIN_RATE} bytes/s are needed)",
                    )
                yield chunk
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
            raise _Transient(
                "network", f"{resp.url}: connection broken after {n} bytes: {type(exc).__name__}"
            ) from None

    def _fetch_small(
        self, url: str, cap: int, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of a small document read whole, at most ``cap`` bytes."""

        def attempt() -> tuple[int, bytes, dict[str, str]]:
            resp = self._get(url, headers)
            with contextlib.closing(resp):
                if resp.status_code == 304:
                    if not headers:  # "not modified" since when? Nothing was asked.
                        raise FeedError("http", f"{url}: HTTP 304 to a plain GET")
                    return 304, b"", dict(resp.headers)
                length = self._content_length(resp)
                if length is not None and length > cap:
                    raise FeedError("too_large", f"{url}: {length} bytes, the limit is {cap}")
                parts: list[bytes] = []
                n = 0
                for chunk in self._body(resp, length if length is not None else cap):
                    n += len(chunk)
                    if n > cap:
                        raise FeedError("too_large", f"{url}: more than {cap} bytes")
                    parts.append(chunk)
                return 200, b"".join(parts), dict(resp.headers)

        return self._retrying(attempt)

    def _download(self, entry: ManifestList, staging: str) -> tuple[str, int]:
        """Stream one list's served bytes to a temporary file in ``staging``, checking the byte
        count against the manifest as they come and the SHA-256 at the end. (path, bytes)."""
        url = urljoin(self.url, entry.url)

        def attempt() -> tuple[str, int]:
            resp = self._get(url)
            with contextlib.closing(resp):
                if resp.status_code != 200:
                    raise FeedError("http", f"{url}: HTTP {resp.status_code} to a plain GET")
                length = self._content_length(resp)
                if length is not None and length != entry.size:
                    raise FeedError(
                        "size",
                        f"{url}: Content-Length {length} but the manifest says {entry.size}",
                    )
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{entry.sha256[:16]}-", suffix=".served" + TEMP_SUFFIX, dir=staging
                )
                try:
                    h = hashlib.sha256()
                    n = 0
                    with os.fdopen(fd, "wb") as f:
                        for chunk in self._body(resp, entry.size):
                            n += len(chunk)
                            if n > entry.size:  # the cap: never a byte past what was signed for
                                raise FeedError(
                                    "size",
                                    f"{url}: body longer than the {entry.size} bytes announced",
                                )
                            h.update(chunk)
                            f.write(chunk)
                        if n < entry.size:
                            raise _Transient(
                                "size", f"{url}: body ended after {n} of {entry.size} bytes"
                            )
                        f.flush()
                        os.fsync(f.fileno())
                    if h.hexdigest() != entry.sha256:
                        raise FeedError(
                            "sha256",
                            f"{url}: SHA-256 {h.hexdigest()} differs from the manifest's "
                            f"{entry.sha256}",
                        )
                except BaseException:
                    _remove(tmp)
                    raise
                return tmp, n

        return self._retrying(attempt)

    # -- lists --

    def _decode(self, entry: ManifestList, served: str, staging: str) -> tuple[str, str]:
        """The decoded list as a temporary file (the served file itself for identity), and
        its SHA-256."""
        if entry.encoding == "identity":
            return served, entry.sha256
        cap = min(entry.uncompressed_size, self.cfg.max_list_bytes)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{entry.sha256[:16]}-", suffix=".decoded" + TEMP_SUFFIX, dir=staging
        )
        written = 0
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(served, "rb") as src:
                d = zlib.decompressobj(wbits=31)  # gzip container only

                def emit(data: bytes) -> None:
                    nonlocal written
                    written += len(data)
                    if written > cap:
                        raise FeedError(
                            "too_large",
                            f"decompresses to more than {cap} bytes "
                            f"(the manifest says {entry.uncompressed_size})",
                        )
                    h.update(data)
                    out.write(data)

                try:
                    while chunk := src.read(READ_CHUNK):
                        data = chunk
                        while data:
                            if d.eof:  # a second gzip member follows the first
                                d = zlib.decompressobj(wbits=31)
                            emit(d.decompress(data, READ_CHUNK))
                            data = d.unused_data if d.eof else d.unconsumed_tail
                    while not d.eof and (more := d.decompress(b"", READ_CHUNK)):
                        emit(more)
                except zlib.error as exc:
                    raise FeedError("gzip", f"not valid gzip: {exc}") from None
                if not d.eof:
                    raise FeedError("gzip", "the gzip stream is truncated")
                if written != entry.uncompressed_size:
                    raise FeedError(
                        "size",
                        f"decompresses to {written} bytes, the manifest says "
                        f"{entry.uncompressed_size}",
                    )
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _remove(tmp)
            raise
        finally:
            _remove(served)
        return tmp, h.hexdigest()

    def _parse(self, entry: ManifestList, path: str) -> tuple[int, int]:
        """(entries, invalid lines) of a decoded list, by the parser the server uses."""
        try:
            summary = lists_mod.parse_stream(path, entry.format)
        except GuardianError as exc:
            raise FeedError("parse", str(exc)) from None
        entries = summary.blocked + summary.allowed + len(summary.regexes)
        if entries == 0:
            raise FeedError(
                "parse", f"no valid entry in {summary.total_lines} lines ({summary.invalid} bad)"
            )
        if summary.invalid:
            first = summary.warnings[0] if summary.warnings else None
            log.warning(
                "feed %s: list %s: %d bad lines skipped%s",
                self.url,
                entry.name,
                summary.invalid,
                f" (first: line {first.line}: {first.message})" if first else "",
            )
        if entries != entry.entries:
            log.info(
                "feed %s: list %s: %d entries here, %d by the publisher's count",
                self.url,
                entry.name,
                entries,
                entry.entries,
            )
        return entries, summary.invalid

    def _stage(self, entry: ManifestList, staging: str, now: float) -> _Staged:
        """``staging/<sha>.list`` holding the decoded, verified, parsed list: resumed from an
        earlier cut sync when it is already there, else downloaded."""
        final = os.path.join(staging, entry.sha256 + LIST_SUFFIX)
        if os.path.exists(final):
            # Staged files were renamed into place only after every check, and fsynced; an
            # identity list is checked against the manifest again all the same (it is cheap).
            digest, size = _sha256_file(final)
            intact = size == entry.uncompressed_size and (
                entry.encoding != "identity" or digest == entry.sha256
            )
            if intact:
                entries, invalid = self._parse(entry, final)
                outcome = ListOutcome(entry.name, "resumed", entries, invalid, 0)
                return _Staged(entry, final, digest, outcome, now)
            _remove(final)
        if entry.size > self.cfg.max_list_bytes:
            raise FeedError(
                "too_large",
                f"{entry.size} bytes announced, the limit is {self.cfg.max_list_bytes}",
            )
        if entry.uncompressed_size > self.cfg.max_list_bytes:
            raise FeedError(
                "too_large",
                f"{entry.uncompressed_size} bytes uncompressed announced, the limit is "
                f"{self.cfg.max_list_bytes}",
            )
        served, n = self._download(entry, staging)
        decoded, digest = self._decode(entry, served, staging)
        try:
            entries, invalid = self._parse(entry, decoded)
            os.replace(decoded, final)
        except BaseException:
            _remove(decoded)
            raise
        fsync_dir(staging, strict=True)
        outcome = ListOutcome(entry.name, "downloaded", entries, invalid, n)
        return _Staged(entry, final, digest, outcome, now)

    # -- the run --

    def _clean(self, keep: set[str]) -> None:
        """Remove what a killed sync left behind: temporaries, partial sets, superseded sets."""
        for directory in (self.feed_dir, self.sets_dir):
            with contextlib.suppress(OSError):
                for name in os.listdir(directory):
                    path = os.path.join(directory, name)
                    debris = name.endswith(TEMP_SUFFIX) or name.startswith(PARTIAL_PREFIX)
                    superseded = directory == self.sets_dir and name not in keep
                    if debris or superseded:
                        _remove(path)
        with contextlib.suppress(OSError):
            for serial in os.listdir(self.incoming_dir):
                staged = os.path.join(self.incoming_dir, serial)
                with contextlib.suppress(OSError):
                    for name in os.listdir(staged):
                        if not (name.endswith(LIST_SUFFIX) and _SHA256_RE.match(name[:64])):
                            _remove(os.path.join(staged, name))

    def _staging_for(self, manifest: Manifest) -> str:
        """``incoming/<serial>/``, holding whatever earlier cut syncs staged for these lists."""
        staging = os.path.join(self.incoming_dir, str(manifest.serial))
        os.makedirs(staging, mode=0o750, exist_ok=True)
        wanted = {e.sha256 + LIST_SUFFIX for e in manifest.lists}
        with contextlib.suppress(OSError):
            for other in os.listdir(self.incoming_dir):
                if other == str(manifest.serial):
                    continue
                path = os.path.join(self.incoming_dir, other)
                with contextlib.suppress(OSError):
                    for name in os.listdir(path):
                        if name in wanted and not os.path.exists(os.path.join(staging, name)):
                            os.replace(os.path.join(path, name), os.path.join(staging, name))
                _remove(path)
        return staging

    def _set_name(self, serial: int) -> str:
        name, k = str(serial), 0
        while os.path.exists(os.path.join(self.sets_dir, name)):
            k += 1
            name = f"{serial}-{k}"
        return name

    def run(self, state: SyncState, force: bool) -> SyncResult:
        start = time.monotonic()
        os.makedirs(self.sets_dir, mode=0o750, exist_ok=True)
        os.makedirs(self.incoming_dir, mode=0o750, exist_ok=True)
        keys = load_keys(self.cfg.keys)
        old, pointer = _in_force(self.feed_dir)
        if old is not None and pointer is None:  # the fallback found it: repair the pointer
            self._point(old.name, old.serial, None)
        keep = {n for n in (old.name if old else None, (pointer or {}).get("previous")) if n}
        self._clean({n for n in keep if isinstance(n, str)})
        same_feed = state.url == self.url
        old_serial = old.serial if old is not None and old.url == self.url else 0
        baseline = max(state.serial if same_feed else 0, old_serial)
        if not same_feed:
            state.etag = state.last_modified = None
            state.url = self.url

        # 1. the manifest (conditional only while the set it described is the one in force)
        headers: dict[str, str] = {}
        if not force and old is not None and old.serial == state.serial == baseline:
            if state.etag:
                headers["If-None-Match"] = state.etag
            if state.last_modified:
                headers["If-Modified-Since"] = state.last_modified
        status_code, data, resp_headers = self._fetch_small(
            self.url, self.cfg.max_manifest_bytes, headers
        )
        if status_code == 304:
            return self._unchanged(state, old, start, "not modified (HTTP 304)")
        sig_url = self.url + ".minisig"
        _, sig, _ = self._fetch_small(sig_url, MAX_SIGNATURE_BYTES)

        # 2. the signature, over the exact bytes received
        from guardian_dns import feedsign

        try:
            feedsign.verify(data, sig.decode("utf-8"), keys, source=sig_url)
        except UnicodeDecodeError:
            raise FeedError("signature", f"{sig_url}: not a minisign signature") from None
        except feedsign.SignatureError as exc:
            raise FeedError("signature", str(exc)) from None
        manifest = parse_manifest(data)

        # 3. the serial: lower is a rollback (a replayed old manifest), equal is nothing new
        if manifest.serial < baseline:
            log.error(
                "feed %s: ROLLBACK REFUSED: a validly signed manifest with serial %d, older than "
                "serial %d already accepted; a mirror or someone in between is replaying an old "
                "feed (possible attack)",
                self.url,
                manifest.serial,
                baseline,
            )
            raise FeedError(
                "rollback",
                f"serial {manifest.serial} is older than serial {baseline} already accepted",
            )
        if manifest.serial == baseline and old is not None and old.serial == baseline and not force:
            self._remember(state, resp_headers)
            return self._unchanged(state, old, start, f"serial {manifest.serial} unchanged")

        # 4. times
        now = self.now()
        if manifest.issued > now + CLOCK_SKEW:
            raise FeedError(
                "future",
                f"issued {_iso(manifest.issued)}, after this machine's clock "
                f"({_iso(now)}): check the system time",
            )
        if manifest.expires <= now:
            raise FeedError("expired", f"expired at {_iso(manifest.expires)}")

        # 5. every list: reuse an unchanged one, resume a staged one, or download it
        staging = self._staging_for(manifest)
        previous = {} if old is None else {fl.name: fl for fl in old.lists}
        by_served = {} if old is None else {v: k for k, v in old.served.items()}
        staged: list[_Staged] = []
        for entry in manifest.lists:
            self.list_name = entry.name
            reused = self._reuse(entry, old, previous, by_served)
            staged.append(reused if reused is not None else self._stage(entry, staging, now))
        self.list_name = None

        # 6. the new set aside, then one atomic switch
        name = self._write_set(manifest, data, sig, staged, now)
        self._point(name, manifest.serial, old.name if old else None)
        log.info(
            "feed %s: serial %d in force (%s)",
            self.url,
            manifest.serial,
            ", ".join(f"{s.entry.name}: {s.outcome.entries} {s.outcome.source}" for s in staged),
        )

        # 7. the record, and what is no longer needed
        self._remember(state, resp_headers)
        self._succeeded(state, _read_set(self.sets_dir, name, verify=False))
        self._clean({n for n in (name, old.name if old else None) if n})
        _remove(self.incoming_dir)
        return SyncResult(
            ok=True,
            changed=True,
            url=self.url,
            serial=manifest.serial,
            message=f"serial {manifest.serial} in force",
            lists=tuple(s.outcome for s in staged),
            seconds=time.monotonic() - start,
        )

    def _reuse(
        self,
        entry: ManifestList,
        old: _Set | None,
        previous: dict[str, FeedList],
        by_served: dict[str, str],
    ) -> _Staged | None:
        """The set in force's copy of a list whose served bytes have not changed, if intact."""
        if old is None or entry.sha256 not in by_served:
            return None
        have = previous[by_served[entry.sha256]]
        if have.format != entry.format:
            return None  # same bytes read another way: parse again
        try:
            digest, _ = _sha256_file(have.path)
        except OSError:
            return None
        if digest != have.sha256:
            log.warning(
                "feed list %s: local copy %s is damaged; downloading it again",
                entry.name,
                have.path,
            )
            return None
        outcome = ListOutcome(entry.name, "reused", have.entries, old.invalid.get(have.name, 0), 0)
        return _Staged(entry, have.path, have.sha256, outcome, have.fetched_at)

    def _write_set(
        self,
        manifest: Manifest,
        data: bytes,
        sig: bytes,
        staged: list[_Staged],
        now: float,
    ) -> str:
        """Write ``sets/<name>`` complete, through a partial directory renamed at the end."""
        name = self._set_name(manifest.serial)
        partial = os.path.join(self.sets_dir, f"{PARTIAL_PREFIX}{name}-{os.getpid()}")
        os.mkdir(partial, 0o750)
        try:
            items = []
            for s in staged:
                dst = os.path.join(partial, s.entry.name + LIST_SUFFIX)
                _link_or_copy(s.path, dst)
                items.append(
                    {
                        "name": s.entry.name,
                        "category": s.entry.category,
                        "format": s.entry.format,
                        "size": os.path.getsize(dst),
                        "sha256": s.sha256,
                        "served_sha256": s.entry.sha256,
                        "entries": s.outcome.entries,
                        "invalid": s.outcome.invalid,
                        "fetched_at": s.fetched_at,
                    }
                )
            _write_file(partial, MANIFEST_FILE, data)
            _write_file(partial, SIGNATURE_FILE, sig)
            index = {
                "format": SET_FORMAT,
                "version": 1,
                "serial": manifest.serial,
                "url": self.url,
                "created": now,
                "issued": manifest.issued,
                "expires": manifest.expires,
                "manifest_sha256": hashlib.sha256(data).hexdigest(),
                "lists": items,
            }
            _write_file(partial, INDEX_FILE, json.dumps(index, indent=1).encode() + b"\n")
            fsync_dir(partial, strict=True)
            os.rename(partial, os.path.join(self.sets_dir, name))
            fsync_dir(self.sets_dir, strict=True)
        except BaseException:
            _remove(partial)
            raise
        return name

    def _point(self, name: str, serial: int, previous: str | None) -> None:
        """Make ``sets/<name>`` the set in force: one rename, then the directory's fsync."""
        doc = {"set": name, "serial": serial, "previous": previous}
        write_atomically(
            os.path.join(self.feed_dir, POINTER_FILE), json.dumps(doc).encode() + b"\n"
        )

    def _remember(self, state: SyncState, headers: dict[str, str]) -> None:
        """Keep the validators of an accepted manifest for the next conditional GET."""
        state.etag = headers.get("ETag") or headers.get("Etag")
        state.last_modified = headers.get("Last-Modified")

    def _succeeded(self, state: SyncState, in_force: _Set | None) -> None:
        """Record a sync that ended with ``in_force`` as the set in force."""
        state.last_success = self.now()
        state.last_error = None
        state.failures = 0
        if in_force is None:
            return
        # From the set itself, so the record also catches up after a kill left it behind.
        state.serial = max(state.serial, in_force.serial)
        state.issued, state.expires = in_force.issued, in_force.expires
        state.lists = {
            fl.name: {
                "entries": fl.entries,
                "sha256": fl.sha256,
                "served_sha256": in_force.served[fl.name],
                "category": fl.category,
                "format": fl.format,
                "invalid": in_force.invalid.get(fl.name, 0),
                "fetched_at": fl.fetched_at,
            }
            for fl in in_force.lists
        }

    def _unchanged(
        self, state: SyncState, old: _Set | None, start: float, message: str
    ) -> SyncResult:
        self._succeeded(state, old)
        self._clean({n for n in (old.name if old else None,) if n} | self._kept_previous())
        _remove(self.incoming_dir)
        return SyncResult(
            ok=True,
            changed=False,
            url=self.url,
            serial=old.serial if old else None,
            message=message,
            seconds=time.monotonic() - start,
        )

    def _kept_previous(self) -> set[str]:
        pointer = _read_pointer(self.feed_dir)
        previous = (pointer or {}).get("previous")
        return {previous} if isinstance(previous, str) else set()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _disk_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{what} ({exc.filename})" if exc.filename else what


def sync(
    cfg: FeedConfig,
    state_dir: str,
    *,
    now: Callable[[], float] = time.time,
    session: requests.Session | None = None,
    force: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> SyncResult:
    """Bring ``<state_dir>/feed/`` up to date with the feed, or leave it exactly as it was.

    Blocks for as long as the downloads, retries and parses take: call it from a child process
    (``sync_in_child``) or a worker thread of a tool, never from the DNS event loop. Never
    raises for what the feed, the network or the disk do: the result says what happened, and
    ``state.json`` records it. ``force`` skips the conditional GET and accepts the serial in
    force again, re-checking every local copy (a damaged one is downloaded again).
    """
    import requests

    start = time.monotonic()
    url = cfg.manifest_url()
    feed_dir = os.path.join(state_dir, FEED_DIR)
    try:
        os.makedirs(feed_dir, mode=0o750, exist_ok=True)
        lock = os.open(os.path.join(feed_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        return _failed(cfg, state_dir, None, FeedError("disk", _disk_message(exc), url), start, now)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = FeedError("busy", "another sync of this state directory is running", url)
            return SyncResult(False, False, url, None, busy.code, None, busy.message)
        state = SyncState.load(state_dir)
        state.last_attempt = now()
        own = session is None
        http = requests.Session() if session is None else session
        syncer = _Syncer(cfg, state_dir, http, now, sleep, rng or random.Random())
        try:
            result = syncer.run(state, force)
        except FeedError as exc:
            exc.url = exc.url or url
            exc.list_name = exc.list_name or syncer.list_name
            return _failed(cfg, state_dir, state, exc, start, now)
        except OSError as exc:
            disk = FeedError("disk", _disk_message(exc), url, syncer.list_name)
            return _failed(cfg, state_dir, state, disk, start, now)
        finally:
            if own:
                http.close()
        state.save(state_dir)
        return result
    finally:
        os.close(lock)  # releases the flock


def _failed(
    cfg: FeedConfig,
    state_dir: str,
    state: SyncState | None,
    exc: FeedError,
    start: float,
    now: Callable[[], float],
) -> SyncResult:
    """Record a failed sync; the set in force is whatever it was before."""
    if exc.code != "rollback":  # a rollback was logged as an attack where it was found
        log.warning("%s (the lists in force stay in force)", exc)
    in_force = current_lists(state_dir)
    serial = in_force[0].serial if in_force else None
    if state is not None:
        state.last_error = {
            "error": exc.code,
            "message": exc.message,
            "list": exc.list_name,
            "at": now(),
        }
        state.failures += 1
        state.save(state_dir)
    return SyncResult(
        ok=False,
        changed=False,
        url=exc.url or cfg.manifest_url(),
        serial=serial,
        error=exc.code,
        list_name=exc.list_name,
        message=exc.message,
        seconds=time.monotonic() - start,
    )


def next_delay(cfg: FeedConfig, rng: random.Random | None = None) -> float:
    """Seconds until the next sync: ``interval`` spread by +-``jitter``, so a campus of servers
    started together by one power cut does not hit the feed in the same second."""
    r = rng or random.Random()
    return cfg.interval * (1.0 + r.uniform(-cfg.jitter, cfg.jitter))


def status(state_dir: str, cfg: FeedConfig, now: float) -> dict[str, Any]:
    """What ``guardian-dns lists/sync --json`` shows: source, serial, entries and age of each
    list, the last error, and a warning when the lists are stale. Local files only."""
    state = SyncState.load(state_dir)
    in_force = current_lists(state_dir)
    warnings: list[str] = []
    confirmed = state.last_success
    if confirmed is None and in_force:
        confirmed = max(fl.fetched_at for fl in in_force)
    age = None if confirmed is None else max(0.0, now - confirmed)
    stale = not in_force or age is None or age > cfg.max_age_warning
    if not in_force:
        warnings.append("no feed lists on disk yet: only the configured lists are enforced")
    elif stale:
        warnings.append(
            f"the feed last confirmed these lists {_human(age)} ago "
            f"(warning after {_human(cfg.max_age_warning)})"
        )
    if in_force and state.expires is not None and state.expires <= now:
        warnings.append(f"the feed's manifest expired at {_iso(state.expires)}; lists kept")
    if state.last_error is not None:
        err = state.last_error
        where = f" (list {err['list']})" if err.get("list") else ""
        warnings.append(f"last sync failed: {err.get('error')}{where}: {err.get('message')}")
    return {
        "source": cfg.manifest_url(),
        "serial": in_force[0].serial if in_force else None,
        "issued": None if state.issued is None else _iso(state.issued),
        "expires": None if state.expires is None else _iso(state.expires),
        "last_success": state.last_success,
        "last_attempt": state.last_attempt,
        "age_seconds": age,
        "stale": stale,
        "failures": state.failures,
        "last_error": state.last_error,
        "warnings": warnings,
        "lists": [
            {
                "name": fl.name,
                "category": fl.category,
                "format": fl.format,
                "entries": fl.entries,
                "invalid": state.lists.get(fl.name, {}).get("invalid", 0),
                "sha256": fl.sha256,
                "path": fl.path,
                "fetched_at": fl.fetched_at,
                "age_seconds": max(0.0, now - fl.fetched_at),
            }
            for fl in in_force
        ],
    }


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / DAY:.1f} days"


# --- the child process ------------------------------------------------------------------------


async def sync_in_child(
    cfg: FeedConfig, state_dir: str, *, force: bool = False, timeout: float | None = None
) -> SyncResult:
    """``sync`` in ``python -m guardian_dns.feed``, so parsing new lists never holds the server's
    GIL; the child's log lines are logged here. A child that dies or times out is a failed sync
    (error "internal"): the set in force is untouched whatever instant it died at."""
    request = json.dumps({"config": cfg.to_json(), "state_dir": state_dir, "force": force})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "guardian_dns.feed",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(request.encode()), timeout)
    except TimeoutError:
        proc.kill()  # safe at any instant: the set in force only changes by one rename
        await proc.wait()
        message = f"the sync process took more than {timeout} s and was stopped"
        return SyncResult(False, False, cfg.manifest_url(), None, "internal", None, message)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        raise
    for line in stderr.decode(errors="replace").splitlines():
        level, _, text = line.partition(" ")
        log.log(logging.getLevelName(level) if level in _LEVELS else logging.WARNING, "%s", text)
    try:
        return SyncResult.from_json(json.loads(stdout))
    except (ValueError, TypeError, KeyError):
        return SyncResult(
            False,
            False,
            cfg.manifest_url(),
            None,
            "internal",
            None,
            f"the sync process exited with {proc.returncode} and no result",
        )


_LEVELS: Final = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def main() -> int:
    """The child: a JSON request on stdin, the SyncResult as JSON on stdout; exit 0 when ok."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    request = json.load(sys.stdin)
    cfg = FeedConfig.from_json(request["config"])
    try:
        result = sync(cfg, request["state_dir"], force=bool(request.get("force")))
    except Exception as exc:  # the edge: a bug must still come back as a result
        log.exception("feed sync crashed")
        result = SyncResult(False, False, cfg.manifest_url(), None, "internal", None, repr(exc))
    json.dump(result.to_json(), sys.stdout)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ERROR_CODES",
    "FeedConfig",
    "FeedError",
    "FeedList",
    "ListOutcome",
    "Manifest",
    "ManifestList",
    "SyncResult",
    "SyncState",
    "current_lists",
    "load_keys",
    "next_delay",
    "parse_manifest",
    "status",
    "sync",
    "sync_in_child",
]
