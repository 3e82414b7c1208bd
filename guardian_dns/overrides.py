"""The overrides file: temporary allows and pauses, written by the CLI and read by the server.

What it decides: what ``<state_dir>/overrides.json`` holds, and that two edits at once both land.
What it reads: that file, in the very format of :class:`usage.UsageState` ("guardian-dns usage",
version 1) with an empty ``budgets`` list, and the instants its callers pass (never the clock).
What it must never do: write the file in place (:func:`usage.write_atomically` replaces it whole,
so the server never reads half of one); drop what is there because it cannot be read (an edit
refuses, naming the file and the reason, and the admin decides); or, when reading, move, create or
rewrite anything: the server polls :func:`file_mark` and calls :func:`read_overrides`, and a
reader that "repaired" the file could lose an edit the CLI is making at that moment.

Who writes: only the CLI (``guardian-dns pause|allow|resume``), under an exclusive ``flock`` on
``overrides.lock`` beside the file, so concurrent edits are serialised: each one reads what the
previous one wrote. Readers take no lock; the rename makes every read see one whole file.

Ownership: the CLI is usually run with sudo while the server runs as its own user (the systemd
unit's ``User=``). When root edits a state directory owned by someone else, the edit runs with
the directory owner's effective uid and gid, so the file and the lock belong to the server's user
and the server can read them, without any moment at which a root-owned file is in place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from guardian_dns import clients, usage
from guardian_dns.errors import GuardianError
from guardian_dns.usage import Overrides, UsageState, write_atomically

OVERRIDES_FILE: Final = "overrides.json"
LOCK_FILE: Final = "overrides.lock"
LOCK_MODE: Final = 0o660
# An edit holds the lock for milliseconds; a longer wait means another edit is stuck (a CLI
# stopped with Ctrl-Z): say so instead of hanging the admin's terminal.
LOCK_TIMEOUT: Final = 10.0
_LOCK_POLL: Final = 0.02

T = TypeVar("T")


class OverridesFileError(GuardianError):
    """The overrides file (or its lock) cannot be used; names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def client_target(text: str) -> str:
    """The spelling of a client an override names: ``clients.client_key`` for an address, the
    lower-case colon form for a MAC. ValueError says what to write instead.

    The server compares override targets with client keys spelled the same way, so an override
    for ``::ffff:192.0.2.7`` or ``AA-BB-CC-DD-EE-01`` applies to the device it means.
    """
    s = text.strip()
    try:
        return clients.client_key(s)
    except ValueError:
        pass
    try:
        return clients.parse_mac(s)
    except ValueError as exc:
        if str(exc) != f"{s!r} is not a MAC address":
            raise  # meant as a MAC: parse_mac says precisely what is wrong with it
    raise ValueError(
        f"{s!r} is not an IP address (192.168.1.23, fd00::23) or a MAC address (aa:bb:cc:dd:ee:ff)"
    )


def overrides_path(directory: str) -> str:
    """``<directory>/overrides.json``."""
    return os.path.join(directory, OVERRIDES_FILE)


def file_mark(directory: str) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of the file, or None when there is none (or it cannot be seen).

    Every edit replaces the file by rename, which gives it a new inode, so any edit changes the
    mark; the server compares marks once a second and reads only when it changed.
    """
    try:
        st = os.stat(overrides_path(directory))
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_overrides(directory: str, t: float) -> tuple[Overrides, str | None]:
    """The overrides that have not ended by ``t``, and None; or empty ones and why not.

    A missing file is no overrides and no error. A file that cannot be read or used gives empty
    overrides and a message naming the file and the reason: the server logs it and keeps the
    overrides it had. Never changes anything on disk.
    """
    path = overrides_path(directory)
    try:
        return _load(path, t), None
    except FileNotFoundError:
        return Overrides(), None
    except OverridesFileError as exc:
        return Overrides(), str(exc)


def edit_overrides(directory: str, t: float, change: Callable[[Overrides], T]) -> T:
    """Apply ``change`` to the file's overrides under the lock, write them back, return its result.

    ``t`` is the current time: overrides that ended by then are dropped from the file. A missing
    file (and directory) starts empty. Raises :class:`OverridesFileError` when the file cannot be
    read or used (it is left as it is: fix or delete it by hand) or the new one cannot be
    written. When ``change`` raises, nothing is written and its exception propagates.
    """
    path = overrides_path(directory)
    with _as_owner_of(directory), _locked(directory):
        usage._remove_stale_temporaries(path)  # a crashed edit's; only edits write, and we lock
        try:
            overrides = _load(path, t, all_entries=True)
        except FileNotFoundError:
            overrides = Overrides()
        dropped = overrides.expire(t)
        version = overrides.version
        result = change(overrides)
        if not dropped and overrides.version == version:
            return result  # nothing to write: no new mark for the server to chase
        data = _state(path, overrides).encode(t)
        try:
            write_atomically(path, data)
        except OSError as exc:
            raise OverridesFileError(path, f"cannot write: {exc.strerror or exc}") from None
        return result


def _state(path: str, overrides: Overrides) -> UsageState:
    # The usage file's format with no budgets: a Budgets with no limits exports an empty list.
    return UsageState(path, usage.Budgets(ZoneInfo("UTC"), {}), overrides)


def _load(path: str, t: float, *, all_entries: bool = False) -> Overrides:
    """The file's overrides; FileNotFoundError when there is none, else OverridesFileError.

    ``all_entries`` keeps the ones that ended by ``t`` too (the caller counts what it drops).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(usage.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise OverridesFileError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > usage.MAX_FILE_BYTES:
        raise OverridesFileError(path, f"larger than {usage.MAX_FILE_BYTES} bytes")
    try:
        tallies, items = usage._parse(data)
    except ValueError as exc:
        raise OverridesFileError(path, str(exc)) from None
    if tallies:
        raise OverridesFileError(
            path, f"budgets: {len(tallies)} entries, an overrides file has none (is it usage.json?)"
        )
    overrides = Overrides()
    overrides._install(items, -float("inf") if all_entries else t)
    return overrides


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Hold the exclusive lock on ``<directory>/overrides.lock`` (created 0660 if missing)."""
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        fd = _open_lock(lock_path)
    except OSError as exc:
        raise OverridesFileError(
            lock_path, f"cannot open the lock: {exc.strerror or exc}"
        ) from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OverridesFileError(lock_path, f"cannot lock: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                raise OverridesFileError(
                    lock_path,
                    f"another edit has held the lock for {LOCK_TIMEOUT:g} s "
                    "(a stopped guardian-dns command?)",
                )
            time.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock(lock_path: str) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, LOCK_MODE)
    except FileExistsError:
        return os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        os.fchmod(fd, LOCK_MODE)  # the umask narrowed it; the group may edit too
    return fd


@contextlib.contextmanager
def _as_owner_of(directory: str) -> Iterator[None]:
    """As root, run the block with the effective uid and gid of the directory's owner."""
    try:
        st = os.stat(directory)
    except OSError:
        st = None
    if os.geteuid() != 0 or st is None or st.st_uid == 0:
        yield
        return
    gid = os.getegid()
    os.setegid(st.st_gid)
    try:
        os.seteuid(st.st_uid)
    except OSError:
        os.setegid(gid)
        raise
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(gid)


__all__ = [
    "LOCK_FILE",
    "OVERRIDES_FILE",
    "OverridesFileError",
    "client_target",
    "edit_overrides",
    "file_mark",
    "overrides_path",
    "read_overrides",
]
