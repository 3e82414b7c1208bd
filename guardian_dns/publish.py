"""The publisher's side of the feed: ``guardian-dns feed keygen`` and ``guardian-dns feed build``.

What it decides: which files of a list directory become which feed lists (name, category, format),
whether each one is fit to publish (parsed by the server's own parser, ``lists.parse_stream``), the
next serial, and the order in which a feed's files reach the directory a web server serves.
What it reads: a directory of list files shaped like ``blocklists/``, the signing key, the previous
manifest (for its serial only).
What it must never do: publish a list the server would find empty or unreadable, let a web server
see a half-written feed (everything is written beside ``--out`` first; lists are moved in before
the manifest that names them, the signature last), publish a serial that is not above the last
one, or leave the secret key readable by anyone but its owner.

The feed format itself -- the contract with ``guardian_dns.feed`` (the sync client) -- is in
``docs/feed.md``; the signature format in ``guardian_dns.feedsign``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from guardian_dns.errors import GuardianError, ListError, Problem
from guardian_dns.usage import fsync_dir

if TYPE_CHECKING:
    from guardian_dns.feedsign import PublicKey, SecretKey

FEED_FORMAT: Final = "guardian-dns feed"
FEED_VERSION: Final = 1
MANIFEST_FILE: Final = "manifest.json"
SIGNATURE_FILE: Final = "manifest.json.minisig"
LISTS_DIR: Final = "lists"
KEY_FILE: Final = "guardian-feed.key"
PUBLIC_KEY_FILE: Final = "guardian-feed.pub"
DEFAULT_VALID_DAYS: Final = 7
MAX_VALID_DAYS: Final = 366
MAX_SERIAL: Final = (1 << 63) - 1  # every client language holds it in a signed 64-bit integer
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
# The config's rule for a category (config._CATEGORY_RE): categories become metric labels.
CATEGORY_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_EXT_RE: Final = re.compile(r"[a-z0-9]{1,16}\Z")
_DEFAULT_EXT: Final = "txt"
# Files of a list directory that are not lists: documentation and configuration beside them.
_NOT_LIST_PREFIXES: Final = ("readme", "license", "licence", "copying", "changelog")
_NOT_LIST_SUFFIXES: Final = (".md", ".rst", ".yaml", ".yml", ".json", ".minisig", ".pub", ".key")
_COMPRESSED_SUFFIXES: Final = (".gz", ".xz", ".bz2", ".zst", ".zip")
_WARNINGS_SHOWN: Final = 3  # bad lines quoted per list; the rest are counted
_COPY_BYTES: Final = 1 << 20
_FILE_MODE: Final = 0o644  # the feed is public by design: the web server's user must read it
_DIR_MODE: Final = 0o755
_KEY_MODE: Final = 0o600

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2


class PublishError(GuardianError):
    """A feed cannot be built or a key cannot be written; carries every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Source:
    """One file of the list directory and the feed list it becomes."""

    path: str
    name: str
    category: str
    ext: str


@dataclass(frozen=True)
class BuiltList:
    """One list as published: its manifest entry, and what the parser thought of it."""

    source: str
    name: str
    category: str
    format: str
    url: str
    size: int
    sha256: str
    encoding: str
    uncompressed_size: int
    entries: int
    invalid: int
    warnings: tuple[Problem, ...]

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "format": self.format,
            "url": self.url,
            "size": self.size,
            "sha256": self.sha256,
            "encoding": self.encoding,
            "uncompressed_size": self.uncompressed_size,
            "entries": self.entries,
        }


@dataclass(frozen=True)
class Feed:
    """A feed that was built and moved into place."""

    out: str
    serial: int
    issued: str
    expires: str
    key_id: str
    lists: tuple[BuiltList, ...]
    notes: tuple[str, ...]  # files of the list directory that were not published, and why


# A signer turns the manifest (its path and bytes) and the trusted comment into .minisig text.
Signer = Callable[[str, bytes, str], str]


def rfc3339(t: float) -> str:
    """``2026-11-24T21:30:00Z``: UTC, whole seconds, as the manifest carries times."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- which files are lists -----------------------------------------------------------------------


def _not_a_list(filename: str) -> str | None:
    low = filename.lower()
    if low.startswith("."):
        return "hidden file"
    if low.startswith(_NOT_LIST_PREFIXES) or low.endswith(_NOT_LIST_SUFFIXES):
        return "documentation or configuration, not a list"
    return None


def find_lists(
    directory: str, categories: Mapping[str, str] | None = None
) -> tuple[list[Source], list[str]]:
    """The list files of ``directory`` (top level only) and notes on the entries left out.

    A file's list name is its name up to the first dot (``bypass-ut1-doh.txt`` ->
    ``bypass-ut1-doh``), its category the same unless ``categories`` maps the file name to
    another (``{"bypass-ut1-doh.txt": "bypass"}``). Subdirectories (``services/``), hidden
    files, READMEs, licences and ``.md``/``.yaml``/``.json`` files are left out with a note.
    Raises PublishError with every problem at once.
    """
    categories = dict(categories or {})
    problems: list[str] = []
    notes: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise PublishError(
            [f"{directory}: cannot read the list directory: {exc.strerror}"]
        ) from None
    sources: list[Source] = []
    seen: dict[str, str] = {}
    for entry in entries:
        path = os.path.join(directory, entry.name)
        if entry.is_dir():
            notes.append(f"{path}/: subdirectory skipped (a feed carries the top-level files)")
            continue
        if not entry.is_file():
            notes.append(f"{path}: skipped (not a regular file)")
            continue
        why = _not_a_list(entry.name)
        if why is not None:
            notes.append(f"{path}: skipped ({why})")
            continue
        if entry.name.lower().endswith(_COMPRESSED_SUFFIXES):
            problems.append(
                f"{path}: a compressed file; put the list itself here (--gzip compresses "
                "what is published)"
            )
            continue
        stem, dot, rest = entry.name.partition(".")
        if not NAME_RE.match(stem):
            problems.append(
                f"{path}: the file name before the first '.' is the list name, and {stem!r} is "
                "not one (1-64 lowercase letters, digits, '-' and '_', starting with a letter "
                "or digit): rename the file"
            )
            continue
        if stem in seen:
            problems.append(f"{path}: the list name {stem!r} is taken by {seen[stem]}")
            continue
        seen[stem] = path
        category = categories.pop(entry.name, stem)
        if not CATEGORY_RE.match(category):
            problems.append(
                f"{path}: category {category!r} is not valid (up to 32 lowercase letters, "
                f"digits, '-' and '_'): name one with --category {entry.name}=CATEGORY"
            )
            continue
        ext = rest.rsplit(".", 1)[-1].lower() if dot else _DEFAULT_EXT
        sources.append(Source(path, stem, category, ext if _EXT_RE.match(ext) else _DEFAULT_EXT))
    for filename in sorted(categories):
        problems.append(f"--category {filename}=...: no list file {filename!r} in {directory}")
    if not sources and not problems:
        problems.append(f"{directory}: no list files (see docs/feed.md for which files are lists)")
    if problems:
        raise PublishError(problems)
    return sources, notes


# --- serials -------------------------------------------------------------------------------------


def previous_serial(path: str) -> int | None:
    """The serial of the manifest at ``path``, or None when there is none. A manifest that is
    there but unreadable is an error: guessing could publish a serial that goes backwards."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PublishError([f"{path}: cannot read the previous serial: {exc.strerror}"]) from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PublishError(
            [f"{path}: cannot read the previous serial: not UTF-8 JSON ({exc}); fix or remove it"]
        ) from None
    serial = doc.get("serial") if isinstance(doc, dict) else None
    if type(serial) is not int or serial < 1:
        raise PublishError(
            [f"{path}: cannot read the previous serial: no positive integer 'serial'"]
        )
    return serial


def next_serial(requested: int | None, previous: int | None, now: float) -> int:
    """``requested`` if above ``previous``; by default max(previous + 1, the Unix time), so a
    serial goes up on every build even when the previous feed is not at hand."""
    floor = 1 if previous is None else previous + 1
    if requested is None:
        serial = max(floor, int(now))
    elif requested < floor:
        raise PublishError(
            [
                f"--serial {requested}: not above the previous serial {previous}; clients would "
                "reject it as a rollback"
            ]
        )
    else:
        serial = requested
    if serial > MAX_SERIAL:
        raise PublishError([f"serial {serial}: above the limit {MAX_SERIAL}"])
    return serial


# --- files ---------------------------------------------------------------------------------------


def write_file(path: str, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it with ``mode`` from the
    start, fsync, then rename (``overwrite``) or hard link (refused if ``path`` exists)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic "create if absent": never replaces a key by accident
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_COPY_BYTES):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _pump(src: BinaryIO, write: Callable[[bytes], object]) -> int:
    read = 0
    while block := src.read(_COPY_BYTES):
        write(block)
        read += len(block)
    return read


def _copy(src: str, dst: str, compress: bool) -> int:
    """Copy ``src`` to a new file ``dst`` (gzip-compressed if asked), fsynced, mode 0644;
    returns the bytes read. Raises OSError."""
    import gzip

    with open(src, "rb") as fin, open(dst, "xb") as raw:
        os.fchmod(raw.fileno(), _FILE_MODE)
        if compress:
            # mtime=0 and no file name: the same list always compresses to the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                read = _pump(fin, gz.write)
        else:
            read = _pump(fin, raw.write)
        raw.flush()
        os.fsync(raw.fileno())
    return read


@contextlib.contextmanager
def _build_lock(out: str) -> Iterator[None]:
    """One build per output directory at a time, so two builds never interleave their renames."""
    import fcntl

    parent = os.path.dirname(out)
    path = os.path.join(parent, f".{os.path.basename(out)}.build-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublishError(
                [f"{out}: another 'feed build' is writing it (lock {path})"]
            ) from None
        yield
    finally:
        os.close(fd)


def _remove_stale_builds(out: str) -> None:
    """Remove what a build killed midway left beside ``out`` (only ever our own temporaries)."""
    parent = os.path.dirname(out)
    prefix = f".{os.path.basename(out)}.build-"
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            if name.startswith(prefix) and name != prefix + "lock":
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


# --- building -----------------------------------------------------------------------------------


def _located(problem: Problem, path: str) -> Problem:
    """A parser problem about the staged copy, told about the administrator's file instead."""
    return replace(problem, file=path)


def _build_list(src: Source, stage: str, lists_dir: str, compress: bool) -> BuiltList | str:
    """Copy one list into the new feed and check it; the built list, or what is wrong."""
    from guardian_dns.lists import parse_stream

    staged = os.path.join(stage, f"{src.name}.{src.ext}")
    try:
        uncompressed = _copy(src.path, staged, compress=False)
    except OSError as exc:
        return f"{src.path}: cannot read: {exc.strerror or exc}"
    # The bytes checked are the bytes published: parsing the staged copy, not the original,
    # means a list edited during the build cannot slip through unchecked.
    try:
        summary = parse_stream(staged)
    except ListError as exc:
        return str(_located(exc.problem, src.path))
    warnings = tuple(_located(w, src.path) for w in summary.warnings)
    entries = summary.blocked + summary.allowed
    if entries == 0:
        detail = f"{summary.total_lines} lines, {summary.invalid} bad"
        first = f"; first: {warnings[0]}" if warnings else ""
        return f"{src.path}: no valid entries ({detail}){first}"
    filename = f"{src.name}.{src.ext}" + (".gz" if compress else "")
    published = os.path.join(lists_dir, filename)
    try:
        if compress:
            _copy(staged, published, compress=True)
            os.unlink(staged)
        else:
            os.rename(staged, published)
        sha256, size = _sha256_file(published)
    except OSError as exc:
        return f"{published}: cannot write: {exc.strerror or exc}"
    return BuiltList(
        source=src.path,
        name=src.name,
        category=src.category,
        format=summary.format,
        url=f"{LISTS_DIR}/{filename}",
        size=size,
        sha256=sha256,
        encoding="gzip" if compress else "identity",
        uncompressed_size=uncompressed,
        entries=entries,
        invalid=summary.invalid,
        warnings=warnings,
    )


def manifest_bytes(serial: int, issued: str, expires: str, lists: Sequence[BuiltList]) -> bytes:
    """The manifest exactly as signed and served: UTF-8 JSON, keys in the documented order."""
    doc = {
        "format": FEED_FORMAT,
        "version": FEED_VERSION,
        "serial": serial,
        "issued": issued,
        "expires": expires,
        "lists": [item.manifest_entry() for item in lists],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def key_signer(key: SecretKey) -> Signer:
    """Sign with a key read by ``feedsign.SecretKey.parse`` (ours, or ``minisign -G -W``)."""

    def signer(path: str, data: bytes, trusted_comment: str) -> str:
        from guardian_dns import feedsign

        return feedsign.sign(data, key, trusted_comment)

    return signer


def minisign_signer(key_file: str, minisign: str = "minisign") -> Signer:
    """Sign by running the stock ``minisign -S`` (for a password-protected key: it asks)."""

    def signer(path: str, data: bytes, trusted_comment: str) -> str:
        sig = path + ".minisign-out"
        argv = [minisign, "-S", "-s", key_file, "-m", path, "-x", sig, "-t", trusted_comment]
        try:
            # minisign's progress lines go to our stderr: stdout is for the build's results.
            done = subprocess.run(argv, stdout=sys.stderr, check=False)
        except OSError as exc:
            raise PublishError([f"cannot run {minisign}: {exc.strerror or exc}"]) from None
        if done.returncode != 0:
            raise PublishError([f"{minisign} -S -s {key_file} failed (exit {done.returncode})"])
        try:
            with open(sig, encoding="utf-8") as f:
                return f.read()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(sig)

    return signer


def build_feed(
    lists_dir: str,
    out: str,
    signer: Signer,
    *,
    check_keys: Sequence[PublicKey] = (),
    serial: int | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    compress: bool = False,
    previous_from: str | None = None,
    categories: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Feed:
    """Build a signed feed of the lists in ``lists_dir`` and move it into ``out``.

    Every list is parsed with the server's parser; an unreadable list or one with no valid
    entry stops the build (all such problems reported at once), bad lines do not. The signature
    is checked against ``check_keys`` (``feedsign.PublicKey``s) before anything is published.

    Publication order, so that a web server never serves a manifest whose lists are not there:
    everything is written and fsynced in a temporary directory beside ``out``; then, if ``out``
    does not exist, that directory is renamed to ``out`` in one step; otherwise the list files
    are renamed into ``out/lists/`` one by one, then ``manifest.json``, then
    ``manifest.json.minisig``, and last the list files no longer named are removed.
    """
    from guardian_dns import feedsign

    t = time.time() if now is None else now
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise PublishError([f"--valid-days {valid_days}: expected 1 to {MAX_VALID_DAYS}"])
    lists_dir = os.path.abspath(lists_dir)
    out = os.path.abspath(out)
    real_lists, real_out = os.path.realpath(lists_dir), os.path.realpath(out)
    if real_out == real_lists or real_out.startswith(real_lists + os.sep):
        raise PublishError([f"{out}: the feed cannot be written inside the list directory"])
    if real_lists.startswith(real_out + os.sep):
        raise PublishError([f"{lists_dir}: the list directory cannot be inside the feed"])
    if os.path.exists(out) and not os.path.isdir(out):
        raise PublishError([f"{out}: exists and is not a directory"])
    sources, notes = find_lists(lists_dir, categories)
    previous_path = previous_from or os.path.join(out, MANIFEST_FILE)
    new_serial = next_serial(serial, previous_serial(previous_path), t)
    issued, expires = rfc3339(t), rfc3339(t + valid_days * 86400)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with _build_lock(out):
        _remove_stale_builds(out)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.build-", dir=parent)
        try:
            os.chmod(tmp, _DIR_MODE)
            tmp_lists = os.path.join(tmp, LISTS_DIR)
            stage = os.path.join(tmp, ".stage")
            os.mkdir(tmp_lists, _DIR_MODE)
            os.mkdir(stage, 0o700)
            built: list[BuiltList] = []
            problems: list[str] = []
            for src in sources:
                result = _build_list(src, stage, tmp_lists, compress)
                if isinstance(result, str):
                    problems.append(result)
                else:
                    built.append(result)
            if problems:
                raise PublishError(problems)
            os.rmdir(stage)
            data = manifest_bytes(new_serial, issued, expires, built)
            manifest_path = os.path.join(tmp, MANIFEST_FILE)
            write_file(manifest_path, data, _FILE_MODE, overwrite=True)
            where = "the new signature"
            comment = f"timestamp:{int(t)}\tfile:{MANIFEST_FILE}\tserial:{new_serial}\thashed"
            signature = signer(manifest_path, data, comment)
            try:
                if check_keys:
                    key_id = feedsign.verify(data, signature, check_keys, source=where).key_id
                else:
                    key_id = feedsign.signature_key_id(signature, source=where)
            except feedsign.SignatureError as exc:
                raise PublishError([f"{exc} (nothing was published)"]) from None
            write_file(
                os.path.join(tmp, SIGNATURE_FILE), signature.encode(), _FILE_MODE, overwrite=True
            )
            fsync_dir(tmp_lists)
            fsync_dir(tmp)
            _move_into_place(tmp, out, [b.url.split("/", 1)[1] for b in built])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    key_hex = feedsign.key_id_hex(key_id)
    return Feed(out, new_serial, issued, expires, key_hex, tuple(built), tuple(notes))


_LIST_FILE_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.[a-z0-9]{1,16}(?:\.gz)?\Z")


def _move_into_place(tmp: str, out: str, filenames: Sequence[str]) -> None:
    parent = os.path.dirname(out)
    if not os.path.exists(out):
        os.rename(tmp, out)  # the whole feed appears at once
        fsync_dir(parent)
        return
    out_lists = os.path.join(out, LISTS_DIR)
    os.makedirs(out_lists, mode=_DIR_MODE, exist_ok=True)
    for filename in filenames:  # lists first: the new manifest must find them all
        os.replace(os.path.join(tmp, LISTS_DIR, filename), os.path.join(out_lists, filename))
    fsync_dir(out_lists)
    os.replace(os.path.join(tmp, MANIFEST_FILE), os.path.join(out, MANIFEST_FILE))
    os.replace(os.path.join(tmp, SIGNATURE_FILE), os.path.join(out, SIGNATURE_FILE))
    fsync_dir(out)
    keep = set(filenames)
    for name in os.listdir(out_lists):
        # Only files named the way we name lists: anything else there is not ours to delete.
        if name not in keep and _LIST_FILE_RE.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out_lists, name))
    fsync_dir(out_lists)


# --- keys ----------------------------------------------------------------------------------------


def keygen(
    out_dir: str, comment: str | None = None, force: bool = False
) -> tuple[str, str, SecretKey]:
    """Write a new key pair as ``out_dir/guardian-feed.key`` (0600) and ``.pub`` (0644).

    Refuses to replace either file unless ``force``. Returns (key path, public key path,
    the ``feedsign.SecretKey``).
    """
    from guardian_dns import feedsign

    key_path = os.path.join(out_dir, KEY_FILE)
    pub_path = os.path.join(out_dir, PUBLIC_KEY_FILE)
    if not force:
        taken = [p for p in (key_path, pub_path) if os.path.lexists(p)]
        if taken:
            raise PublishError(
                [
                    f"{p}: exists; pass --force to replace it (clients that trust the old key "
                    "reject feeds signed by a new one)"
                    for p in taken
                ]
            )
    try:
        key = feedsign.SecretKey.generate(comment or feedsign.DEFAULT_KEY_COMMENT)
    except ValueError as exc:
        raise PublishError([f"--comment: {exc}"]) from None
    try:
        os.makedirs(out_dir, mode=0o700, exist_ok=True)
        write_file(key_path, key.to_text().encode(), _KEY_MODE, overwrite=force)
        write_file(pub_path, key.public_key().to_text().encode(), _FILE_MODE, overwrite=force)
    except FileExistsError as exc:
        raise PublishError([f"{exc.filename}: appeared meanwhile; nothing replaced"]) from None
    except OSError as exc:
        raise PublishError([f"{exc.filename or out_dir}: cannot write: {exc.strerror}"]) from None
    return key_path, pub_path, key


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PublishError([f"{path}: cannot read the {what}: {why}"]) from None


# --- the command line ----------------------------------------------------------------------------

FEED_EPILOG = """\
examples:
  guardian-dns feed keygen --out /etc/guardian-feed
  guardian-dns feed build --lists blocklists --key /etc/guardian-feed/guardian-feed.key \\
                          --out /var/www/feed --category bypass-ut1-doh.txt=bypass --gzip
  python3 -m http.server --bind 127.0.0.1 8080 --directory /var/www/feed   # a working feed

The feed format, the key files and the publication order: docs/feed.md.
exit codes: 0 done, 1 error (a bad list, a bad key, a serial that would go back), 2 bad command line
"""


def _category_arg(text: str) -> tuple[str, str]:
    filename, sep, category = text.partition("=")
    if not sep or not filename or not category:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FILE=CATEGORY")
    if not CATEGORY_RE.match(category):
        raise argparse.ArgumentTypeError(
            f"{category!r}: a category is up to 32 lowercase letters, digits, '-' and '_'"
        )
    return filename, category


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def add_feed_verbs(sub: Any) -> None:
    """``feed keygen`` and ``feed build`` under ``sub`` (the CLI's verb subparsers)."""
    raw = argparse.RawDescriptionHelpFormatter
    feed = sub.add_parser(
        "feed",
        help="publish a signed blocklist feed (keygen, build)",
        description="Publish a feed: make a signing key, build a signed feed from list files.",
        epilog=FEED_EPILOG,
        formatter_class=raw,
    )
    feed.set_defaults(feed_parser=feed)
    actions = feed.add_subparsers(dest="feed_verb", metavar="ACTION")
    k = actions.add_parser(
        "keygen",
        help="make a signing key pair",
        description=(
            f"Write DIR/{KEY_FILE} (the secret key, mode 0600, no password: keep it off the "
            f"web server) and DIR/{PUBLIC_KEY_FILE} (give it to every client). Both are in "
            "minisign's format, so the stock minisign tool can use them."
        ),
        epilog=FEED_EPILOG,
        formatter_class=raw,
    )
    k.add_argument("--out", required=True, metavar="DIR", help="where to write the key pair")
    k.add_argument("--comment", metavar="TEXT", help="the secret key file's comment line")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    b = actions.add_parser(
        "build",
        help="build a signed feed from a directory of lists",
        description=(
            "Parse every list in DIR with the server's parser, copy the lists, write and sign "
            "manifest.json, and move the whole feed into OUT without a moment where a web "
            "server could serve half of it."
        ),
        epilog=FEED_EPILOG,
        formatter_class=raw,
    )
    b.add_argument("--lists", required=True, metavar="DIR", help="list files, one per list")
    b.add_argument("--key", required=True, metavar="FILE", help="the secret key")
    b.add_argument("--out", required=True, metavar="DIR", help="the feed directory to serve")
    b.add_argument(
        "--serial", type=_positive_int, metavar="N", help="default: max(previous + 1, Unix time)"
    )
    b.add_argument(
        "--valid-days",
        type=_positive_int,
        default=DEFAULT_VALID_DAYS,
        metavar="DAYS",
        help=f"clients refuse the feed after this (default {DEFAULT_VALID_DAYS})",
    )
    b.add_argument("--gzip", action="store_true", help="publish the lists gzip-compressed")
    b.add_argument(
        "--previous-serial-from",
        metavar="FILE",
        help=f"the last published manifest (default: OUT/{MANIFEST_FILE})",
    )
    b.add_argument(
        "--category",
        action="append",
        default=[],
        type=_category_arg,
        metavar="FILE=CATEGORY",
        help="the category of one file (default: its name up to the first '.'); repeatable",
    )
    b.add_argument(
        "--minisign",
        action="store_true",
        help="sign by running the stock minisign tool (for a password-protected key)",
    )
    b.add_argument(
        "--pub",
        metavar="FILE",
        help="check the new signature with this public key before publishing",
    )


def _keygen_verb(args: argparse.Namespace) -> int:
    key_path, pub_path, key = keygen(args.out, args.comment, args.force)
    public = key.public_key()
    print(f"wrote {key_path} (secret key, mode 0600: keep it off the web server)")
    print(f"wrote {pub_path} (public key: give it to every client)")
    print(f"key id {public.key_id_hex}")
    print(f"public key {public.to_base64()}")
    return EXIT_OK


def _build_verb(args: argparse.Namespace) -> int:
    from guardian_dns import feedsign

    check: list[feedsign.PublicKey] = []
    if args.pub:
        try:
            check.append(feedsign.PublicKey.parse(_read_text(args.pub, "public key"), args.pub))
        except feedsign.SignatureError as exc:
            raise PublishError([str(exc)]) from None
    if args.minisign:
        if not os.path.isfile(args.key):
            raise PublishError([f"{args.key}: cannot read the secret key: no such file"])
        signer = minisign_signer(args.key)
        if not check:
            print(
                "warning: the signature minisign makes is not checked before it is published: "
                "pass --pub FILE to check it",
                file=sys.stderr,
            )
    else:
        text = _read_text(args.key, "secret key")
        try:
            key = feedsign.SecretKey.parse(text, args.key)
        except feedsign.SignatureError as exc:
            hint = ""
            if "password-protected" in str(exc):
                hint = " (pass --minisign to have minisign sign with it; it asks for the password)"
            raise PublishError([f"{exc}{hint}"]) from None
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(args.key).st_mode)
            if mode & 0o077:
                print(
                    f"warning: {args.key} is readable by others (mode {mode:04o}): "
                    f"chmod 600 {args.key}",
                    file=sys.stderr,
                )
        signer = key_signer(key)
        check.append(key.public_key())
    feed = build_feed(
        args.lists,
        args.out,
        signer,
        check_keys=check,
        serial=args.serial,
        valid_days=args.valid_days,
        compress=args.gzip,
        previous_from=args.previous_serial_from,
        categories=dict(args.category),
    )
    for note in feed.notes:
        print(f"note: {note}", file=sys.stderr)
    for item in feed.lists:
        if item.invalid:
            for w in item.warnings[:_WARNINGS_SHOWN]:
                print(f"warning: {w}", file=sys.stderr)
            print(
                f"warning: {item.source}: {item.invalid} bad line(s) skipped by the parser "
                "(published as they are; every client skips them too)",
                file=sys.stderr,
            )
    width = max(len(item.name) for item in feed.lists)
    for item in feed.lists:
        print(
            f"{item.name.ljust(width)}  category {item.category}, {item.format}, "
            f"{item.entries} entries, {item.size} bytes -> {item.url}"
        )
    print(
        f"published serial {feed.serial} to {feed.out}: {len(feed.lists)} lists, signed by key "
        f"{feed.key_id}, expires {feed.expires}"
    )
    return EXIT_OK


def run_feed_verb(args: argparse.Namespace) -> int:
    """The CLI edge of ``feed``: every error becomes one line per problem and exit code 1."""
    verbs: dict[str, Callable[[argparse.Namespace], int]] = {
        "keygen": _keygen_verb,
        "build": _build_verb,
    }
    handler = verbs.get(args.feed_verb or "")
    if handler is None:
        args.feed_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except PublishError as exc:
        for problem in exc.problems:
            print(f"guardian-dns feed {args.feed_verb}: {problem}", file=sys.stderr)
        return EXIT_ERROR
    except GuardianError as exc:
        print(f"guardian-dns feed {args.feed_verb}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = exc.filename or ""
        print(
            f"guardian-dns feed {args.feed_verb}: {where}: {exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_ERROR


__all__ = [
    "FEED_FORMAT",
    "FEED_VERSION",
    "KEY_FILE",
    "MANIFEST_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE_FILE",
    "BuiltList",
    "Feed",
    "PublishError",
    "Source",
    "add_feed_verbs",
    "build_feed",
    "find_lists",
    "keygen",
    "manifest_bytes",
    "next_serial",
    "previous_serial",
    "run_feed_verb",
]
