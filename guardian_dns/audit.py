"""The audit log: who changed what, when, from where, why, and how it went.

What it decides: what one audit entry holds and where it lands (``<state_dir>/audit/audit.jsonl``,
one JSON object a line, rotated to ``audit.jsonl.1`` ... ``audit.jsonl.<keep>``), and the
``guardian-dns audit`` verb that shows it.
What it reads: the environment (``$SUDO_USER``, ``$SSH_CONNECTION``/``$SSH_CLIENT``), the real uid's
passwd name, and the log files. The verbs that change something call :func:`record` once per run,
refused and failed runs included.
What it must never do: make a change fail, or fail silently. :func:`record` never raises for a
log it cannot write; it returns the warning the caller prints on stderr
(``change applied, but the audit log could not be written: ...``), and the verb keeps its own exit
code: the change is in force, and a script that retried it would apply it twice. Reading never
fails on a bad line: a line that is not one whole entry is skipped and counted.

One entry::

    {"time": 1767225600.123, "iso": "2026-01-01T00:00:00+00:00", "verb": "allow",
     "args": {"names": ["youtube.com"], "group": "kids", "for": "45m"}, "result": "ok",
     "detail": "allowed youtube.com for group 'kids' until ...", "user": "root",
     "sudo_user": "alice", "ssh": "192.0.2.7", "comment": "homework", "pid": 4242}

``result`` is ``ok`` (the change is in force), ``refused`` (nothing changed: a bad name, an
unknown group, nothing to end) or ``error`` (nothing changed, or not known to have: a bad config,
an unusable state file). ``args`` keys are the verb's option names (``group``, ``for``, ``who``,
``all``) and its positional lists (``names``, ``ids``).

Writers: every append takes an exclusive ``flock`` on ``audit/audit.lock`` (the log itself is
renamed by rotation, so it cannot be what is locked), appends one line with ``O_APPEND``, fsyncs
it, and rotates when the line would take the file past ``max_bytes``, all under that lock: two
admins at once both land, and lines never interleave. Changes are rare and an audit entry that a
power cut lost is exactly the one a school will be asked about, hence the fsync on every append.
As root, the files are written as the state directory's owner (as the overrides file is), so the
server's user and its group can read them. Modes: directory 0750, files 0640.

This log is evidence of what the administrators did, not proof against them: anyone who can write
the state directory can edit it, and ``$SUDO_USER``/``$SSH_CONNECTION`` are what the environment
says (``sudo`` drops ``$SSH_CONNECTION`` unless ``env_keep`` lists it).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import pwd
import re
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import IO, Any, Final, Literal

from guardian_dns.errors import ConfigError, GuardianError
from guardian_dns.usage import fsync_dir

Result = Literal["ok", "refused", "error"]
RESULTS: Final = ("ok", "refused", "error")

AUDIT_DIR: Final = "audit"
AUDIT_FILE: Final = "audit.jsonl"
LOCK_FILE: Final = "audit.lock"
MAX_BYTES: Final = 1 << 20  # per file; an entry is ~300 bytes, so ~3000 changes a file
KEEP: Final = 10  # rotated files kept beside the current one
DIR_MODE: Final = 0o750
FILE_MODE: Final = 0o640
MAX_COMMENT: Final = 500  # characters; the CLI refuses a longer --comment
MAX_DETAIL: Final = 500
# An append holds the lock for one write and one fsync; a longer wait means a stuck writer.
LOCK_TIMEOUT: Final = 10.0
_LOCK_POLL: Final = 0.02

WARNING_PREFIX: Final = "the audit log could not be written"


class AuditLogError(GuardianError):
    """The audit log cannot be read; names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def log_dir(state_dir: str) -> str:
    """``<state_dir>/audit``."""
    return os.path.join(state_dir, AUDIT_DIR)


def log_path(state_dir: str) -> str:
    """``<state_dir>/audit/audit.jsonl``, the file appended to."""
    return os.path.join(state_dir, AUDIT_DIR, AUDIT_FILE)


# --- writing -----------------------------------------------------------------------------------


def record(
    state_dir: str,
    verb: str,
    args: Mapping[str, Any],
    result: Result,
    detail: str,
    comment: str | None = None,
    *,
    now: float | None = None,
    max_bytes: int = MAX_BYTES,
    keep: int = KEEP,
) -> str | None:
    """Append one entry; None when it is on disk, else the warning for the caller to print.

    The warning reads ``the audit log could not be written: <path>: <reason>``; after a change
    that is in force, print it as ``change applied, but <warning>``. ``args`` must be JSON-able
    (anything else is written as its ``str``). ``detail`` and ``comment`` are cut at
    :data:`MAX_DETAIL`/:data:`MAX_COMMENT` characters. Raises ValueError only for a ``result``
    outside :data:`RESULTS` or a ``keep`` below 1 (a caller's bug, not a condition of the disk).
    """
    if result not in RESULTS:
        raise ValueError(f"audit result {result!r}: expected one of {', '.join(RESULTS)}")
    if keep < 1:
        raise ValueError(f"audit keep {keep}: at least 1 rotated file")
    t = time.time() if now is None else now
    user, sudo_user, ssh = identity(os.environ)
    entry = {
        "time": t,
        "iso": datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds"),
        "verb": verb,
        "args": dict(args),
        "result": result,
        "detail": _cut(detail, MAX_DETAIL),
        "user": user,
        "sudo_user": sudo_user,
        "ssh": ssh,
        "comment": _cut(comment, MAX_COMMENT) if comment else None,
        "pid": os.getpid(),
    }
    path = log_path(state_dir)
    try:
        line = json.dumps(entry, ensure_ascii=False, default=str)
        data = (line + "\n").encode("utf-8", "backslashreplace")
        _append(state_dir, data, max_bytes, keep)
    except AuditLogError as exc:
        return f"{WARNING_PREFIX}: {exc}"
    except (OSError, ValueError, TypeError) as exc:  # TypeError: a key json cannot write
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = getattr(exc, "filename", None) or path
        return f"{WARNING_PREFIX}: {where}: {reason}"
    return None


def identity(environ: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """(the real user's name, ``$SUDO_USER`` or None, the SSH client's address or None)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (some containers)
        user = f"uid {uid}"
    sudo_user = environ.get("SUDO_USER") or None
    ssh = None
    for var in ("SSH_CONNECTION", "SSH_CLIENT"):  # "client port server port" / "client port port"
        first = environ.get(var, "").split(" ", 1)[0]
        try:
            ssh = str(ipaddress.ip_address(first))
            break
        except ValueError:
            continue
    return user, sudo_user[:64] if sudo_user else None, ssh


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _append(state_dir: str, data: bytes, max_bytes: int, keep: int) -> None:
    from guardian_dns.overrides import _as_owner_of  # root writes as the directory's owner

    directory = log_dir(state_dir)
    os.makedirs(state_dir, mode=DIR_MODE, exist_ok=True)
    with _as_owner_of(state_dir):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass
        else:
            os.chmod(directory, DIR_MODE)  # the umask may have narrowed (or widened) it
        with _locked(directory, exclusive=True):
            path = os.path.join(directory, AUDIT_FILE)
            fd = _open_log(path)
            try:
                size = os.fstat(fd).st_size
                if size and size + len(data) > max_bytes:
                    os.close(fd)
                    fd = -1
                    _rotate(directory, keep)
                    fd = _open_log(path)
                elif size and os.pread(fd, 1, size - 1) != b"\n":
                    # A writer died mid-line: end that line, so this entry is a line of its own.
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)


def _open_log(path: str) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC  # read: the last byte, see _append
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it; the group reads
        fsync_dir(os.path.dirname(path), strict=True)  # the new name survives a power cut too
    except OSError:
        os.close(fd)
        raise
    return fd


def _rotate(directory: str, keep: int) -> None:
    """audit.jsonl -> .1 -> .2 ... -> .<keep>; the oldest is dropped. Under the lock."""
    base = os.path.join(directory, AUDIT_FILE)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{base}.{keep}")
    for n in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{base}.{n}", f"{base}.{n + 1}")
    os.rename(base, f"{base}.1")
    fsync_dir(directory, strict=True)


def _open_lock(lock_path: str) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(lock_path, flags)
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it
    return fd


@contextlib.contextmanager
def _locked(directory: str, *, exclusive: bool) -> Iterator[bool]:
    """Hold ``audit.lock`` (exclusive for a writer, shared for a reader); yields whether held.

    A writer creates the lock file; a reader that finds none (or may not open it) reads without
    it and yields False: there is then no writer that could rotate under it, or nothing to read.
    """
    lock_path = os.path.join(directory, LOCK_FILE)
    if exclusive:
        try:
            fd = _open_lock(lock_path)
        except OSError as exc:
            raise AuditLogError(lock_path, f"cannot open the lock: {exc.strerror}") from None
    else:
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            yield False
            return
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise AuditLogError(lock_path, f"cannot lock: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                raise AuditLogError(
                    lock_path,
                    f"another writer has held the lock for {LOCK_TIMEOUT:g} s "
                    "(a stopped guardian-dns command?)",
                )
            time.sleep(_LOCK_POLL)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --- reading -----------------------------------------------------------------------------------


class Entries(Iterator[dict[str, Any]]):
    """The entries of the log, oldest first, across the rotated files; see :func:`read`.

    ``skipped`` counts the lines that were not one whole entry (so far: it is final once the
    iteration has ended). Iterating may raise :class:`AuditLogError` when a file fails mid-read.
    """

    def __init__(self, files: list[tuple[str, IO[bytes]]], since: float | None) -> None:
        self.skipped = 0
        self.files = [path for path, _ in files]
        self._since = since
        self._lines = self._generate(files)

    def __next__(self) -> dict[str, Any]:
        return next(self._lines)

    def _generate(self, files: list[tuple[str, IO[bytes]]]) -> Iterator[dict[str, Any]]:
        try:
            for path, f in files:
                with f:
                    try:
                        for raw in f:
                            entry = _parse(raw)
                            if entry is None:
                                self.skipped += 1
                            elif self._since is None or entry["time"] >= self._since:
                                yield entry
                    except OSError as exc:
                        raise AuditLogError(path, f"cannot read: {exc.strerror}") from None
        finally:
            for _, f in files:
                f.close()


def read(state_dir: str, since: float | None = None) -> Entries:
    """The entries with ``time >= since`` (every one when None), oldest first.

    No log at all is no entries. Raises :class:`AuditLogError` when a log file exists but cannot
    be opened (permissions, a directory in its place). A line that is not a JSON object with a
    numeric ``time``, ``verb`` and ``result`` is skipped and counted in ``Entries.skipped``.

    The files are all opened at once under the shared lock, so a rotation by a writer at that
    moment can neither hide entries nor show them twice; the lock is released before the first
    entry is read, so a slow reader (a pager) never holds a writer up.
    """
    directory = log_dir(state_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return Entries([], since)
    except OSError as exc:
        raise AuditLogError(directory, f"cannot list: {exc.strerror}") from None
    rotated = sorted(
        (int(n[len(AUDIT_FILE) + 1 :]) for n in names if re.fullmatch(r"audit\.jsonl\.\d+", n)),
        reverse=True,
    )
    opened: list[tuple[str, IO[bytes]]] = []
    try:
        with _locked(directory, exclusive=False):
            for suffix in [*(f".{n}" for n in rotated), ""]:
                path = os.path.join(directory, AUDIT_FILE + suffix)
                try:
                    f = open(path, "rb")  # noqa: SIM115 -- Entries closes it
                except FileNotFoundError:
                    continue  # rotated away since the listing: its entries are in the next one
                except OSError as exc:
                    raise AuditLogError(path, f"cannot read: {exc.strerror}") from None
                # Every entry of a file is older than the file's last write.
                if since is not None and suffix and os.fstat(f.fileno()).st_mtime < since:
                    f.close()
                    continue
                opened.append((path, f))
    except BaseException:
        for _, done in opened:
            done.close()
        raise
    return Entries(opened, since)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(entry, dict):
        return None
    t = entry.get("time")
    if isinstance(t, bool) or not isinstance(t, int | float):
        return None
    if not isinstance(entry.get("verb"), str) or not isinstance(entry.get("result"), str):
        return None
    return entry


# --- the arguments an entry records ------------------------------------------------------------

# Options that change what is printed or where the config is, never what the verb does.
_NOT_RECORDED: Final = frozenset({"verb", "json", "config", "comment", "audit_detail"})


def args_of(namespace: argparse.Namespace) -> dict[str, Any]:
    """The arguments of a parsed command line worth recording: every option that was given.

    Unset ones (None, False, an empty list) and output-only ones (``--json``, ``--config``)
    are left out; ``duration`` (the seconds of ``--for``) is recorded as ``for``: ``"1h30m"``.
    """
    out: dict[str, Any] = {}
    for key, value in sorted(vars(namespace).items()):
        if key in _NOT_RECORDED or key.startswith("_") or value is None or value is False:
            continue
        if isinstance(value, list | tuple) and not value:
            continue
        if key == "duration" and isinstance(value, int | float):
            out["for"] = duration_text(value)
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def duration_text(seconds: float) -> str:
    """``5400`` -> ``1h30m``; the spelling ``--for`` accepts."""
    s = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts) or "0s"


def args_text(args: Mapping[str, Any]) -> str:
    """The arguments as a command line would give them: lists first, then ``--key value``."""
    words: list[str] = []
    for value in args.values():
        if isinstance(value, list):
            words += (str(v) for v in value)
    for key, value in args.items():
        if isinstance(value, list):
            continue
        flag = "--" + key.replace("_", "-")
        words.append(flag if value is True else f"{flag} {value}")
    return " ".join(words)


def user_text(entry: Mapping[str, Any]) -> str:
    """``alice (sudo, ssh 192.0.2.7)``: who, and how they came in."""
    user = str(entry.get("user") or "?")
    sudo_user = entry.get("sudo_user")
    how = []
    if sudo_user:
        how.append("sudo" if user == "root" else f"sudo as {user}")
        user = str(sudo_user)
    if entry.get("ssh"):
        how.append(f"ssh {entry['ssh']}")
    return f"{user} ({', '.join(how)})" if how else user


# --- the verb ----------------------------------------------------------------------------------

EPILOG = """\
examples:
  guardian-dns audit                                  # every change still in the log
  guardian-dns audit --since 7d                       # the last week
  guardian-dns audit --since 2026-11-01 --verb allow  # allows since a date (local time)
  guardian-dns audit --since 1h --json                # JSON lines, one entry a line

--since takes 30m, 12h, 7d, 2w (or combined, 1d12h), or an ISO date or time such as 2026-11-01
or "2026-11-01 18:00" (local time unless it names an offset).
The log is <state_dir>/audit/audit.jsonl, rotated at 1 MiB to audit.jsonl.1 ... .10; every
pause, allow and resume is in it, refused and failed ones too, with --comment.
The text view shortens long arguments; --json has every entry whole.
exit codes: 0 shown (also when there is nothing to show), 1 the log or the config cannot be read,
2 bad command line
"""

_SINCE_RE: Final = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_ARGS_SHOWN: Final = 60  # characters of the arguments in the text view


def parse_since(text: str, now: float) -> float:
    """``--since``: the Unix time ``30m``/``12h``/``7d``/``2w`` before ``now``, or an ISO date or
    time (local unless it has an offset). ValueError says what is accepted."""
    m = _SINCE_RE.match(text.strip().lower())
    if m is not None and any(m.groups()):
        w, d, h, mins, s = (int(g) if g else 0 for g in m.groups())
        return now - ((((w * 7 + d) * 24 + h) * 60 + mins) * 60 + s)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a time back such as 30m, 12h or 7d, or a date such as 2026-11-01"
        ) from None
    return when.astimezone().timestamp()  # a naive time is local


def add_verbs(sub: Any) -> None:
    a = sub.add_parser(
        "audit",
        help="show who changed what, when, from where and why",
        description="Show the audit log: every pause, allow and resume (and what else changes "
        "the filtering), with the user, sudo and SSH origin, result and --comment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--since", type=_since_arg, metavar="WHEN", help="30m, 12h, 7d or a date")
    a.add_argument(
        "--verb",
        dest="only_verb",  # "verb" is the subcommand's own dest
        metavar="VERB",
        help="only this verb (pause, allow, resume, sync...)",
    )
    a.add_argument("--json", action="store_true", help="print JSON lines, one entry a line")
    a.add_argument(
        "--config", metavar="FILE", help="YAML config: the state directory (default: embedded)"
    )


def _since_arg(text: str) -> float:
    try:
        return parse_since(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from guardian_dns.compile import state_dir
    from guardian_dns.config import admin_config

    try:
        cfg = admin_config(args.config)
    except ConfigError as exc:
        for prob in exc.problems:
            print(f"guardian-dns: {prob}", file=sys.stderr)
        return 1
    except GuardianError as exc:
        print(f"guardian-dns audit: {exc}", file=sys.stderr)
        return 1
    directory = state_dir(cfg.server.state_dir, cfg.base_dir)
    try:
        entries = read(directory, args.since)
        shown = [e for e in entries if args.only_verb is None or e["verb"] == args.only_verb]
    except AuditLogError as exc:
        print(f"guardian-dns audit: {exc}", file=sys.stderr)
        print(
            "hint: run it with sudo, or as the state directory's owner or a member of its group",
            file=sys.stderr,
        )
        return 1
    if args.json:
        for e in shown:
            print(json.dumps(e, sort_keys=False))
    elif shown:
        _print_table(shown)
    else:
        which = f" of {args.only_verb!r}" if args.only_verb else ""
        when = " in that time" if args.since is not None else ""
        print(f"no audit entries{which}{when} in {log_path(directory)}")
    if entries.skipped:
        print(
            f"guardian-dns audit: {entries.skipped} damaged line(s) skipped in "
            f"{', '.join(entries.files)}",
            file=sys.stderr,
        )
    return 0


def _print_table(entries: list[dict[str, Any]]) -> None:
    rows: list[tuple[str, ...]] = [("TIME", "USER", "VERB", "ARGS", "RESULT", "COMMENT", "DETAIL")]
    for e in entries:
        args = e.get("args")
        text = args_text(args) if isinstance(args, dict) else ""
        rows.append(
            (
                datetime.fromtimestamp(e["time"]).strftime("%Y-%m-%d %H:%M:%S"),
                user_text(e),
                str(e["verb"]),
                _cut(text, _ARGS_SHOWN) or "-",
                str(e["result"]),
                str(e.get("comment") or "-"),
                str(e.get("detail") or "-"),
            )
        )
    rows = [tuple(_printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _printable(text: str) -> str:
    # A comment is typed by an admin, but shown on another admin's terminal: no escapes.
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


__all__ = [
    "AUDIT_FILE",
    "KEEP",
    "MAX_BYTES",
    "MAX_COMMENT",
    "RESULTS",
    "AuditLogError",
    "Entries",
    "Result",
    "add_verbs",
    "args_of",
    "args_text",
    "duration_text",
    "identity",
    "log_path",
    "parse_since",
    "read",
    "record",
    "run",
    "user_text",
]
