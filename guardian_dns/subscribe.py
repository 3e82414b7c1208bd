"""Direct subscriptions: a blocklist kept current from a public URL (StevenBlack, HaGeZi, UT1).

What it decides: whether a download may replace the local copy of a subscribed list. It asks
conditionally (ETag / Last-Modified), streams the body under a byte cap, gunzips it (HTTP
``Content-Encoding: gzip`` and ``.gz`` files alike), parses it with the server's own parser
(``lists.parse_stream``), and applies adblock-lean-style sanity checks: not an HTML page, not
mostly unusable lines, at least ``min_lines`` entries, and no shrink by more than ``max_shrink``
of the previous copy unless forced.
What it reads: the network (``requests``, imported inside ``fetch`` so importing this module costs
the DNS process nothing) and ``<state_dir>/subscriptions/``, where each subscription ``name``
owns ``name.list`` (the copy the server builds its table from), ``name.list.prev`` (the copy
before it), ``name.json`` (metadata) and ``name.lock``.
What it must never do: leave a partial or unchecked ``name.list`` (the new copy is written to a
temporary file, fsynced, then renamed over the old one, so a crash or SIGKILL leaves the old or
the new complete file); change the local copy on any failure; raise for a network, content or
disk problem (``fetch`` returns a ``FetchResult`` carrying a short error code); or be needed for
the server to start (no copy yet means the list is skipped with a warning, never a network wait).

Error codes (``Failure.code``): ``http`` (status, TLS, redirect, cut body), ``timeout``,
``too_large``, ``parse`` (HTML, gzip damage, mostly bad lines), ``too_few``, ``shrink``, ``disk``.
Only connection errors, timeouts, cut bodies and HTTP 5xx/408/429 are retried, after
uniform(0, backoff * 2**n) seconds ("full jitter").
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

from guardian_dns import __version__
from guardian_dns import lists as lists_mod
from guardian_dns.errors import ListError, Problem
from guardian_dns.usage import fsync_dir, write_atomically

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SUBSCRIPTIONS_DIR: Final = "subscriptions"
META_VERSION: Final = 1
ERROR_CODES: Final = ("http", "timeout", "too_large", "parse", "too_few", "shrink", "disk")
USER_AGENT: Final = f"guardian-dns/{__version__} (+subscription)"
CHUNK: Final = 64 * 1024
MAX_BACKOFF: Final = 60.0  # one retry never waits longer than this (Retry-After included)
MAX_REDIRECTS: Final = 5
PROBLEMS_KEPT: Final = 20  # bad lines of a new copy quoted in its FetchResult
_RETRY_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_GZIP_MAGIC: Final = b"\x1f\x8b"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SLUG_MAX: Final = 60
_HTML_START: Final = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")

Outcome = Literal["updated", "unchanged", "failed"]


def _derive_name(url: str) -> str:
    """A file-name-safe, per-URL unique name: host, a slug of the path, and a hash of the URL.

    ``https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts`` becomes
    ``raw.githubusercontent.com-stevenblack-hosts-master-hosts-<8 hex>``. The hash covers the
    whole URL (query included), so two URLs never share a name even when their slugs agree.
    """
    parts = urlsplit(url)
    host = re.sub(r"[^a-z0-9.-]+", "-", (parts.hostname or "").lower()).strip(".-")
    path = re.sub(r"[^a-z0-9]+", "-", parts.path.lower()).strip("-")
    slug = "-".join(p for p in (host, path) if p)[:_SLUG_MAX].rstrip(".-") or "list"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class Subscription:
    """One list kept current from a URL; validated here, so a bad one never reaches ``fetch``.

    ``format`` None means detected from the content, as ``lists`` does. ``name`` (derived from
    the URL when empty) names the files under ``<state_dir>/subscriptions``. ``retries`` counts
    attempts after the first. ``max_bytes`` caps the body as served and again after gunzip.
    ``total_timeout`` bounds the body of one attempt, which ``read_timeout`` (per read) cannot:
    a server dripping a byte a minute would otherwise hold the fetch for days.
    """

    url: str
    category: str
    format: str | None = None
    name: str = ""
    min_lines: int = 100
    max_shrink: float = 0.5
    max_bytes: int = 200 << 20
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    ca_file: str | None = None
    total_timeout: float = 900.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http"):
            raise ValueError(f"url: must start with https:// or http://, got {self.url!r}")
        if not parts.hostname:
            raise ValueError(f"url: no host in {self.url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url: must not carry credentials (user:password@)")
        try:
            _ = parts.port  # raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None
        if any(c.isspace() for c in self.url):
            raise ValueError(f"url: contains white space: {self.url!r}")
        if not self.category:
            raise ValueError("category: must not be empty")
        if self.format is not None and self.format not in lists_mod.FORMATS:
            known = ", ".join(lists_mod.FORMATS)
            raise ValueError(f"format: unknown list format {self.format!r} (known: {known})")
        if not self.name:
            object.__setattr__(self, "name", _derive_name(self.url))
        elif not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name: {self.name!r} is not a safe file name (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit; at most 128 characters)"
            )
        if self.min_lines < 0:
            raise ValueError(f"min_lines: must be 0 or more, got {self.min_lines}")
        if not 0.0 <= self.max_shrink <= 1.0:
            raise ValueError(f"max_shrink: must be a fraction in [0, 1], got {self.max_shrink}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes: must be positive, got {self.max_bytes}")
        for field in ("connect_timeout", "read_timeout", "total_timeout"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}: must be positive, got {getattr(self, field)}")
        if self.retries < 0:
            raise ValueError(f"retries: must be 0 or more, got {self.retries}")
        if not self.backoff >= 0:
            raise ValueError(f"backoff: must be 0 or more, got {self.backoff}")

    @property
    def plain_http(self) -> bool:
        """True for an http:// URL: anyone on the path can change the list."""
        return self.url.lower().startswith("http:")


@dataclass(frozen=True)
class Failure:
    """Why the last fetch did not replace the copy: a code from ``ERROR_CODES`` and a message
    naming the URL."""

    code: str
    message: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "at": self.at}


@dataclass(frozen=True)
class FetchResult:
    """What one ``fetch`` did. ``path``, ``entries``, ``invalid`` and ``format`` describe the
    copy in force afterwards: the new one when updated, the old one (or none) otherwise."""

    url: str
    name: str
    outcome: Outcome
    path: Path | None
    entries: int
    invalid: int
    format: str | None
    error: Failure | None = None
    warnings: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()  # the first bad lines of the new copy, file = the URL
    http_status: int | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return self.outcome == "updated"


class _Failed(Exception):
    """Internal: a fetch cannot go on. Never leaves this module (``fetch`` returns it)."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.attempts = 0


class _Transient(_Failed):
    """Internal: worth another attempt (connection, timeout, cut body, 5xx/408/429)."""

    def __init__(
        self,
        code: str,
        message: str,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, http_status)
        self.retry_after = retry_after


# --- files ------------------------------------------------------------------------------------


def _dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / SUBSCRIPTIONS_DIR


def _list_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.list"


def _meta_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _stat(path: Path) -> os.stat_result | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st if path.is_file() else None


def _read_meta(directory: Path, name: str) -> dict[str, Any]:
    """The saved metadata, or {} when it is missing, unreadable or not ours: metadata is a
    cache, so losing it only costs an unconditional download."""
    path = _meta_path(directory, name)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("subscription %s: ignoring unreadable metadata %s: %s", name, path, exc)
        return {}
    if not isinstance(data, dict) or data.get("version") != META_VERSION:
        log.warning("subscription %s: ignoring metadata %s of another shape", name, path)
        return {}
    return data


def _meta_int(meta: dict[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _meta_float(meta: dict[str, Any], key: str) -> float | None:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _meta_str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _meta_describes(meta: dict[str, Any], st: os.stat_result | None) -> bool:
    """True when the metadata was written for the very file now at ``name.list``.

    A crash between the list's rename and the metadata's, or an administrator replacing the
    file by hand, makes them disagree; the ETag and the counts then describe another file.
    """
    return st is not None and meta.get("file") == _identity(st)


def _write_meta(directory: Path, name: str, meta: dict[str, Any]) -> None:
    data = json.dumps(meta, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    write_atomically(str(_meta_path(directory, name)), data)


def _remove_stale_temporaries(directory: Path, name: str) -> None:
    """Delete temporary files a killed fetch of ``name`` left behind (never the state of
    record). The pattern is exact so another subscription's temporaries are never touched."""
    stale = re.compile(rf"\.{re.escape(name)}\.(?:list|list\.prev|json)-[a-z0-9_]+\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            if stale.fullmatch(entry):
                with contextlib.suppress(OSError):
                    os.unlink(directory / entry)


def _keep_previous(directory: Path, name: str, current: Path) -> None:
    """Make ``name.list.prev`` the current copy before it is replaced.

    A hard link (no bytes written, so it works on a nearly full disk) renamed over the old
    ``.prev``; ``name.list`` itself is never absent, not even for a moment.
    """
    prev = directory / f"{name}.list.prev"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.list.prev-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(current, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            with open(current, "rb") as src, open(tmp, "wb") as dst:  # no hard links here
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, prev)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lock(directory: Path, name: str) -> int:
    """One fetch per subscription at a time (the timer and ``sync --now`` may overlap): the
    second waits, then usually gets a 304. Released by closing the returned descriptor (and by
    the kernel when the process dies, so a killed fetch never leaves it held)."""
    fd = os.open(directory / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- the body: raw bytes -> [Content-Encoding gunzip] -> [.gz gunzip] -> file ------------------


class _Stage(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _FileSink:
    """The end of the chain: the temporary file, its SHA-256, and the cap on stored bytes."""

    def __init__(self, f: IO[bytes], cap: int, url: str) -> None:
        self.f = f
        self.cap = cap
        self.url = url
        self.size = 0
        self.sha = hashlib.sha256()
        self.head = b""  # the first bytes, for the HTML check

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise _Failed("too_large", f"{self.url}: more than {self.cap} bytes once unpacked")
        if len(self.head) < 1024:
            self.head += data[: 1024 - len(self.head)]
        self.sha.update(data)
        try:
            self.f.write(data)
        except OSError as exc:
            raise _disk(self.url, exc) from None

    def close(self) -> None:
        pass


class _Gunzip:
    """Inflates gzip (several members too) in bounded pieces, so a gzip bomb meets the cap
    after at most ``CHUNK`` bytes of output rather than after filling memory. The gzip
    trailer's CRC and length are checked by zlib; a stream that stops early is an error."""

    def __init__(self, nxt: _Stage, url: str, what: str) -> None:
        self.nxt = nxt
        self.url = url
        self.what = what
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.started = False
        self.done = False  # at least one member complete, nothing after it yet

    def write(self, data: bytes) -> None:
        try:
            while data:
                if self.done:  # between members
                    if not data.strip(b"\0"):
                        return  # zero padding after the last member, as gzip(1) accepts
                    if not data.startswith(_GZIP_MAGIC[: len(data)]):
                        raise _Failed("parse", f"{self.url}: data after the end of {self.what}")
                    self.done = False
                self.started = True
                while True:
                    out = self.d.decompress(data, CHUNK)
                    self.nxt.write(out)
                    data = self.d.unconsumed_tail
                    # A full CHUNK of output may leave more inside zlib even with no input left.
                    if self.d.eof or (not data and len(out) < CHUNK):
                        break
                if self.d.eof:
                    data = self.d.unused_data
                    self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self.started = False
                    self.done = True
        except zlib.error as exc:
            raise _Failed("parse", f"{self.url}: damaged {self.what}: {exc}") from None

    def close(self) -> None:
        if self.started or not self.done:
            raise _Failed("parse", f"{self.url}: {self.what} ends early (cut or damaged)")
        self.nxt.close()


class _Sniff:
    """A ``.gz`` list, whatever the URL is called: inflate it when it starts with gzip's magic
    bytes (no text list starts with 0x1f 0x8b)."""

    def __init__(self, nxt: _Stage, url: str) -> None:
        self.nxt = nxt
        self.url = url
        self.buf = b""
        self.stage: _Stage | None = None

    def write(self, data: bytes) -> None:
        if self.stage is None:
            self.buf += data
            if len(self.buf) < len(_GZIP_MAGIC):
                return
            gz = self.buf.startswith(_GZIP_MAGIC)
            self.stage = _Gunzip(self.nxt, self.url, "gzip file") if gz else self.nxt
            data, self.buf = self.buf, b""
        self.stage.write(data)

    def close(self) -> None:
        if self.stage is None:
            self.stage = self.nxt
            if self.buf:
                self.stage.write(self.buf)
        self.stage.close()


def _disk(url: str, exc: OSError) -> _Failed:
    return _Failed("disk", f"{url}: cannot write the new copy: {exc.strerror or exc}")


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class _Download:
    status: int
    tmp: str | None = None  # the new copy (status 200), not yet checked
    sha256: str = ""
    size: int = 0
    head: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form: the jittered backoff is good enough


def _attempt(
    sub: Subscription, session: requests.Session, directory: Path, headers: dict[str, str]
) -> _Download:
    """One GET; a 200's body lands in a temporary file (``_receive``)."""
    import requests

    url = sub.url
    try:
        resp = session.get(
            url,
            headers=headers,
            stream=True,
            timeout=(sub.connect_timeout, sub.read_timeout),
            verify=sub.ca_file or True,
        )
    except requests.exceptions.SSLError as exc:
        raise _Failed("http", f"{url}: TLS failed: {exc}") from None
    except requests.exceptions.Timeout as exc:
        raise _Transient("timeout", f"{url}: timed out: {type(exc).__name__}") from None
    except requests.exceptions.ConnectionError as exc:
        raise _Transient("http", f"{url}: cannot connect: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise _Failed("http", f"{url}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:  # requests' own check of ca_file, before any connection
        raise _Failed("http", f"{url}: {exc}") from None
    with contextlib.closing(resp):
        if sub.url.lower().startswith("https:") and not resp.url.lower().startswith("https:"):
            raise _Failed("http", f"{url}: redirected to plain http ({resp.url}); refused")
        if resp.status_code in _RETRY_STATUS:
            raise _Transient(
                "http",
                f"{url}: HTTP {resp.status_code}",
                resp.status_code,
                _retry_after(resp.headers.get("Retry-After")),
            )
        if resp.status_code == 304:
            if "If-None-Match" not in headers and "If-Modified-Since" not in headers:
                raise _Failed("http", f"{url}: HTTP 304 to an unconditional request", 304)
            return _Download(304)
        if resp.status_code != 200:
            raise _Failed("http", f"{url}: HTTP {resp.status_code}", resp.status_code)
        try:
            return _receive(sub, resp, directory)
        except _Failed as exc:
            if exc.http_status is None:
                exc.http_status = resp.status_code
            raise


def _receive(sub: Subscription, resp: requests.Response, directory: Path) -> _Download:
    """The body of a 200, streamed through the gunzip chain to a temporary file (removed
    again on any failure)."""
    import requests
    import urllib3

    url = sub.url
    deadline = time.monotonic() + sub.total_timeout
    length_text = resp.headers.get("Content-Length")
    length: int | None = None
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise _Failed("http", f"{url}: bad Content-Length {length_text!r}") from None
        if length > sub.max_bytes:
            raise _Failed(
                "too_large", f"{url}: {length} bytes announced, the limit is {sub.max_bytes}"
            )
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise _Failed("http", f"{url}: unsupported Content-Encoding {encoding!r}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{sub.name}.list-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _disk(url, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _FileSink(f, sub.max_bytes, url)
            chain: _Stage = _Sniff(sink, url)
            if encoding in ("gzip", "x-gzip"):
                chain = _Gunzip(chain, url, "gzip Content-Encoding")
            received = 0
            try:
                for chunk in resp.raw.stream(CHUNK, decode_content=False):
                    received += len(chunk)
                    if received > sub.max_bytes:
                        raise _Failed("too_large", f"{url}: more than {sub.max_bytes} bytes")
                    chain.write(chunk)
                    if time.monotonic() > deadline:
                        raise _Transient(
                            "timeout",
                            f"{url}: not done after {sub.total_timeout:g} s ({received} bytes)",
                        )
            except urllib3.exceptions.ReadTimeoutError:
                raise _Transient(
                    "timeout", f"{url}: read timed out after {received} bytes"
                ) from None
            except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
                raise _Transient(
                    "http",
                    f"{url}: connection broken after {received} bytes: {type(exc).__name__}",
                ) from None
            except OSError as exc:  # a socket error the HTTP layers did not wrap
                raise _Transient(
                    "http", f"{url}: connection broken after {received} bytes: {exc}"
                ) from None
            if length is not None and received != length:
                raise _Transient(
                    "http", f"{url}: body cut: {received} of {length} bytes (Content-Length)"
                )
            chain.close()
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise _disk(url, exc) from None
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, _Failed) and exc.http_status is None:
            exc.http_status = resp.status_code
        raise
    return _Download(
        200,
        tmp=tmp,
        sha256=sink.sha.hexdigest(),
        size=sink.size,
        head=sink.head,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
    )


def _download(
    sub: Subscription,
    session: requests.Session,
    directory: Path,
    headers: dict[str, str],
    sleep: Callable[[float], None],
) -> tuple[_Download, int]:
    """``_attempt`` with retries for transient failures; (download, attempts made)."""
    for n in range(sub.retries + 1):
        try:
            return _attempt(sub, session, directory, headers), n + 1
        except _Transient as exc:
            if n == sub.retries:
                final = _Failed(
                    exc.code, f"{exc.message} (after {n + 1} attempts)", exc.http_status
                )
                final.attempts = n + 1
                raise final from None
            delay = random.uniform(0, min(MAX_BACKOFF, sub.backoff * 2**n))
            if exc.retry_after is not None:
                delay = max(delay, min(MAX_BACKOFF, exc.retry_after))
            log.info(
                "subscription %s: %s; retry %d of %d in %.1f s",
                sub.name,
                exc.message,
                n + 1,
                sub.retries,
                delay,
            )
            sleep(delay)
        except _Failed as exc:
            exc.attempts = n + 1
            raise
    raise AssertionError("unreachable")


# --- checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What the parser found in one copy: usable entries (block, allow and regex rules,
    repeats included) and skipped lines."""

    entries: int
    invalid: int
    format: str
    problems: tuple[Problem, ...] = ()


def count(path: str | os.PathLike[str], fmt: str | None, shown_as: str) -> Counts:
    """Parse a copy with the server's parser without holding it; bad lines name ``shown_as``.
    Raises ListError when the file cannot be read."""
    summary = lists_mod.parse_stream(path, fmt or "auto")
    problems = tuple(
        dataclasses.replace(p, file=shown_as) for p in summary.warnings[:PROBLEMS_KEPT]
    )
    return Counts(
        entries=summary.blocked + summary.allowed + len(summary.regexes),
        invalid=summary.invalid,
        format=summary.format,
        problems=problems,
    )


def check(
    sub: Subscription, new: Counts, previous: int | None, *, force: bool = False, head: bytes = b""
) -> tuple[str, str] | None:
    """The sanity checks a new copy must pass, in order; (code, message) for the first that
    fails, None when it may replace the copy. ``previous`` is the entries of the copy in force
    (None when there is none); ``force`` waives only the shrink check, never the others."""
    url = sub.url
    start = head.lstrip().lower()
    if start.startswith(_HTML_START) or (start.startswith(b"<") and b"<html" in start):
        return "parse", f"{url}: an HTML page, not a list (a captive portal or an error page?)"
    if new.invalid > new.entries:
        return (
            "parse",
            f"{url}: {new.invalid} unusable lines against {new.entries} entries "
            f"(read as {new.format}; wrong format?)",
        )
    if new.entries < sub.min_lines:
        return "too_few", f"{url}: {new.entries} entries, at least {sub.min_lines} expected"
    if previous and not force and new.entries < (1.0 - sub.max_shrink) * previous:
        return (
            "shrink",
            f"{url}: {new.entries} entries against {previous} in the current copy, a shrink of "
            f"more than {sub.max_shrink:.0%}; refused (force to accept)",
        )
    return None


# --- the public verbs -------------------------------------------------------------------------


def local_copy(sub: Subscription, state_dir: str | os.PathLike[str]) -> Path | None:
    """The file the server builds this list from, or None when it was never fetched (the
    server then skips the list with a warning; start-up never waits for the network)."""
    path = _list_path(_dir(state_dir), sub.name)
    return path if _stat(path) is not None else None


def status(sub: Subscription, state_dir: str | os.PathLike[str], now: float) -> dict[str, Any]:
    """One subscription for ``guardian-dns lists --json``; reads files only, never fails.

    ``age_seconds`` counts from the last successful check (a 200 or a 304), so a list the
    server confirms unchanged every day stays young; ``fetched_at`` is when its content last
    changed.
    """
    directory = _dir(state_dir)
    meta = _read_meta(directory, sub.name)
    path = _list_path(directory, sub.name)
    st = _stat(path)
    fits = _meta_describes(meta, st) and meta.get("url") == sub.url
    checked = _meta_float(meta, "checked_at") if fits else None
    error = meta.get("last_error")
    if not (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        error = None
    return {
        "url": sub.url,
        "name": sub.name,
        "category": sub.category,
        "format": _meta_str(meta, "format") if fits else None,
        "local_copy": str(path) if st is not None else None,
        "entries": _meta_int(meta, "entries") if fits else None,
        "invalid": _meta_int(meta, "invalid") if fits else None,
        "age_seconds": max(0.0, now - checked) if checked is not None else None,
        "fetched_at": _meta_float(meta, "fetched_at") if fits else None,
        "checked_at": checked,
        "last_error": error,
        "etag": bool(fits and _meta_str(meta, "etag")),
        "plain_http": sub.plain_http,
    }


def fetch(
    sub: Subscription,
    state_dir: str | os.PathLike[str],
    *,
    now: Callable[[], float] = time.time,
    force: bool = False,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Bring the local copy of ``sub`` up to date, if the download passes every check.

    Never raises for the network, the content or the disk: a failure leaves ``name.list``
    untouched, is saved as ``last_error`` in the metadata (best effort) and returned. ``force``
    accepts a shrink beyond ``max_shrink``. ``session`` lets a caller share connections or set
    ``trust_env``; one is made (and closed) otherwise.
    """
    directory = _dir(state_dir)
    warnings: list[str] = []
    if sub.plain_http:
        warnings.append(f"{sub.url}: plain http: the list has no integrity protection")
        log.warning("subscription %s: %s", sub.name, warnings[-1])
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        lock = _lock(directory, sub.name)
    except OSError as exc:
        message = f"{sub.url}: cannot use {directory}: {exc.strerror or exc}"
        log.warning("subscription %s: %s", sub.name, message)
        return FetchResult(
            sub.url,
            sub.name,
            "failed",
            local_copy(sub, state_dir),
            0,
            0,
            None,
            Failure("disk", message, now()),
            tuple(warnings),
        )
    try:
        return _fetch_locked(sub, directory, now, force, session, sleep, warnings)
    finally:
        os.close(lock)


def _fetch_locked(
    sub: Subscription,
    directory: Path,
    now: Callable[[], float],
    force: bool,
    session: requests.Session | None,
    sleep: Callable[[float], None],
    warnings: list[str],
) -> FetchResult:
    _remove_stale_temporaries(directory, sub.name)
    path = _list_path(directory, sub.name)
    meta = _read_meta(directory, sub.name)
    st = _stat(path)
    fits = _meta_describes(meta, st)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"}
    if fits and meta.get("url") == sub.url:
        # Conditional only when the metadata describes this very file for this very URL:
        # otherwise a 304 would vouch for a file the server never sent us.
        if etag := _meta_str(meta, "etag"):
            headers["If-None-Match"] = etag
        if last_modified := _meta_str(meta, "last_modified"):
            headers["If-Modified-Since"] = last_modified

    current: Counts | None = None
    if st is not None:
        entries, invalid = _meta_int(meta, "entries"), _meta_int(meta, "invalid")
        if fits and entries is not None and invalid is not None:
            current = Counts(entries, invalid, _meta_str(meta, "format") or sub.format or "auto")
        else:
            with contextlib.suppress(ListError):  # rare: the metadata is lost or stale
                current = count(path, sub.format, str(path))

    def result(
        outcome: Outcome,
        counts: Counts | None,
        error: Failure | None = None,
        http_status: int | None = None,
        attempts: int = 0,
        problems: tuple[Problem, ...] = (),
    ) -> FetchResult:
        return FetchResult(
            url=sub.url,
            name=sub.name,
            outcome=outcome,
            path=path if _stat(path) is not None else None,
            entries=counts.entries if counts else 0,
            invalid=counts.invalid if counts else 0,
            format=counts.format if counts else None,
            error=error,
            warnings=tuple(warnings),
            problems=problems,
            http_status=http_status,
            attempts=attempts,
        )

    def failed(why: _Failed, problems: tuple[Problem, ...]) -> FetchResult:
        failure = Failure(why.code, why.message, now())
        log.warning("subscription %s: not updated: %s", sub.name, why.message)
        saved = dict(meta) if meta else {"version": META_VERSION, "url": sub.url}
        saved["last_error"] = failure.to_json()
        try:
            _write_meta(directory, sub.name, saved)
        except OSError as exc:  # a full disk: the result still says what happened
            log.warning("subscription %s: cannot save metadata: %s", sub.name, exc)
        return result("failed", current, failure, why.http_status, why.attempts, problems)

    own = session
    if own is None:
        import requests

        own = requests.Session()
        own.max_redirects = MAX_REDIRECTS
    attempts = 0
    download: _Download | None = None
    new: Counts | None = None  # the downloaded copy's counts, once parsed
    try:
        try:
            download, attempts = _download(sub, own, directory, headers, sleep)
        finally:
            if session is None:
                own.close()
        if download.status == 304:
            meta.update(checked_at=now(), last_error=None)
            try:
                _write_meta(directory, sub.name, meta)
            except OSError as exc:
                warnings.append(f"{sub.url}: checked, but the metadata was not saved: {exc}")
            log.info("subscription %s: unchanged (HTTP 304)", sub.name)
            return result("unchanged", current, None, 304, attempts)

        assert download.tmp is not None
        try:
            new = count(download.tmp, sub.format, sub.url)
        except ListError as exc:
            raise _Failed("disk", f"{sub.url}: cannot read the new copy back: {exc}") from None
        problem = check(
            sub, new, current.entries if current else None, force=force, head=download.head
        )
        if problem is not None:
            raise _Failed(*problem)

        stamp = now()
        same = fits and st is not None and meta.get("sha256") == download.sha256
        if same:
            outcome: Outcome = "unchanged"  # same bytes: keep the file (and the table) as is
        else:
            try:
                if st is not None:
                    _keep_previous(directory, sub.name, path)
                os.replace(download.tmp, path)
            except OSError as exc:
                raise _disk(sub.url, exc) from None
            download.tmp = None
            fsync_dir(directory)
            outcome = "updated"
        st_new = _stat(path)
        saved: dict[str, Any] = {
            "version": META_VERSION,
            "url": sub.url,
            "etag": download.etag,
            "last_modified": download.last_modified,
            "sha256": download.sha256,
            "size": download.size,
            "entries": new.entries,
            "invalid": new.invalid,
            "format": new.format,
            "fetched_at": meta.get("fetched_at", stamp) if same else stamp,
            "checked_at": stamp,
            "last_error": None,
            "file": _identity(st_new) if st_new is not None else None,
        }
        try:
            _write_meta(directory, sub.name, saved)
        except OSError as exc:
            # The new copy is in place and complete; the next fetch notices the metadata does
            # not describe it and downloads unconditionally.
            warnings.append(f"{sub.url}: updated, but the metadata was not saved: {exc}")
            log.warning("subscription %s: %s", sub.name, warnings[-1])
        if outcome == "updated":
            log.info(
                "subscription %s: updated from %s: %d entries, %d lines skipped (%s)",
                sub.name,
                sub.url,
                new.entries,
                new.invalid,
                new.format,
            )
        else:
            log.info("subscription %s: unchanged (same content)", sub.name)
        return result(outcome, new, None, 200, attempts, new.problems if not same else ())
    except _Failed as exc:
        if download is not None:
            exc.http_status, exc.attempts = download.status, attempts
        return failed(exc, new.problems if new is not None else ())
    finally:
        if download is not None and download.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(download.tmp)


__all__ = [
    "ERROR_CODES",
    "SUBSCRIPTIONS_DIR",
    "Counts",
    "Failure",
    "FetchResult",
    "Subscription",
    "check",
    "count",
    "fetch",
    "local_copy",
    "status",
]
