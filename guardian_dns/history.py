"""The query history: hourly counts of what each client asked and what was blocked, on disk.

What it decides: what of the query log is kept for reports (``guardian-dns report``) and for how
long. Per local hour, per client and group: how many queries and how many were blocked; for the
blocked ones only, per category and name, how many attempts. Allowed names are never stored
(privacy, and SD-card wear).
What it reads: the in-memory ring buffer (``querylog.QueryLog``), from a timer on the event loop
(``tick``, every ``READ_INTERVAL`` seconds), taking what was appended since its last read; the
group of a client and the category of a rule through two callables the server supplies.
What it must never do: slow the query path. The pipeline's append is unchanged; this module only
reads the buffer's ``total`` and ``pos`` afterwards. If more was appended than the buffer holds
between two reads, the overwritten records are counted as ``lost`` (in the file and in
``HistoryWriter.lost``), never waited for. Reading is O(new records) on the loop and decodes the
question name of blocked records only; the counts wait in memory, and every ``flush_interval``
seconds ``tick`` hands a ``Batch`` whose ``write`` does the file I/O (append, one fsync per day
file, retention) in an executor thread. Reading often and writing rarely is what keeps both
the buffer from wrapping on a busy school network and the SD card from wearing out.

Files: ``<state_dir>/history/YYYY-MM-DD.jsonl``, named by the local date of the hours they hold
(a flush just after midnight appends to two files). One JSON line per flush and day::

    {"v": 1, "at": "2026-03-02T14:05:00+00:00", "anonymised": false, "lost": 0,
     "hours": [{"hour": "2026-03-02T14:00+00:00",
                "totals": [[client, group, queries, blocked], ...],
                "blocked": [[client, group, category, name, attempts], ...]}]}

Counts of the same hour are spread over several lines (one per flush); readers add them up. The
hour carries its UTC offset, so the repeated hour when clocks go back stays two hours. A line
cut short by a power cut is skipped by readers; the next append starts on a new line.

Anonymised mode: the client is stored as a pseudonym, the first 12 hex digits of
HMAC-SHA256(secret, address), with a random secret kept in ``history/secret`` (mode 0600). The same
address always gets the same pseudonym, so safeguarding staff still see that one device keeps
trying the same sites, without the files naming the address. It protects the files (a report
or history copied off the box), not the box: whoever can read the secret can compute the
pseudonym of any address. Deleting the secret starts new pseudonyms. A device that changes
address (DHCP, IPv6 privacy addresses) gets a new pseudonym with it.

Categories of blocked attempts: a list rule names its list's category (``adult``,
``service:tiktok``...); a block that no list made is ``policy:<why>`` (``rule_category``), so the
metrics' single "policy" category is split by cause here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Final

from guardian_dns.errors import GuardianError
from guardian_dns.usage import fsync_dir

if TYPE_CHECKING:
    from guardian_dns.querylog import QueryLog
    from guardian_dns.snapshot import Snapshot

log = logging.getLogger(__name__)

HISTORY_DIR: Final = "history"  # below the state directory
SECRET_FILE: Final = "secret"
SCHEMA: Final = 1
PSEUDONYM_HEX: Final = 12
# How often the server's timer reads the ring buffer (``HistoryWriter.tick``): often enough
# that the default 10,000 records are not overwritten below 2,000 queries a second, whatever
# flush_interval is. A read costs about a microsecond per new record, on the loop.
READ_INTERVAL: Final = 5.0
FILE_RE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl\Z")
UNKNOWN_CATEGORY: Final = "unknown"  # a rule id the current snapshot has no list for

# Blocks that no list line made (policy.RULE_* and filter.RULE_BUILTIN), by rule id.
POLICY_CATEGORIES: Final[dict[int, str]] = {
    -2: "policy:bypass-protection",
    -7: "policy:group-block",
    -8: "policy:schedule",
    -10: "policy:time-budget",
    -11: "policy:safe-search",
}
POLICY_OTHER: Final = "policy"


class HistoryError(GuardianError):
    """The history directory or its secret cannot be used."""


def history_dir(state_dir: str) -> str:
    return os.path.join(state_dir, HISTORY_DIR)


def rule_category(snap: Snapshot, rule: int) -> str:
    """The category a blocked record's rule id stands for, under snapshot ``snap``.

    A list rule (id >= 0) names its list, whose category this is; policy blocks map through
    ``POLICY_CATEGORIES``. A record made under an older snapshot is mapped with the current
    one: after a reload that reorders the lists, a few records of the last interval may be
    counted under the wrong list category (or ``unknown``).
    """
    if rule < 0:
        return POLICY_CATEGORIES.get(rule, POLICY_OTHER)
    from guardian_dns.trie import rule_ref

    ref = rule_ref(snap.rules, rule)
    return ref.category if ref is not None else UNKNOWN_CATEGORY


def question_name(message: bytes) -> str:
    """The question name of a query the pipeline accepted: lower case, no trailing dot."""
    labels = []
    pos = 12
    end = len(message)
    while pos < end:
        ln = message[pos]
        if not ln:
            break
        labels.append(message[pos + 1 : pos + 1 + ln])
        pos += ln + 1
    return b".".join(labels).decode("latin-1").lower() or "."


def load_secret(directory: str, create: bool) -> bytes | None:
    """The pseudonym secret in ``directory`` (made, mode 0600, when ``create`` and missing).

    None when it does not exist and ``create`` is false. Raises HistoryError for a file that
    is not a secret, OSError when it cannot be read or made.
    """
    path = os.path.join(directory, SECRET_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read(200).strip()
    except FileNotFoundError:
        if not create:
            return None
        os.makedirs(directory, mode=0o750, exist_ok=True)
        key = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by another process since: use that one
            return load_secret(directory, create=False)
        try:
            os.write(fd, key + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return bytes.fromhex(key.decode())
    if not re.fullmatch(rb"[0-9a-f]{64}", text):
        raise HistoryError(
            f"{path}: not a history secret (64 hex digits); delete it to start new pseudonyms"
        )
    if create and os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others; now mode 0600", path)
    return bytes.fromhex(text.decode())


def pseudonym(secret: bytes, client: str) -> str:
    return hmac.new(secret, client.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


# -- writing ---------------------------------------------------------------------------------------
@dataclass
class Batch:
    """What one ``collect`` took from the ring buffer, ready to be appended (in any thread)."""

    writer: HistoryWriter
    at: float  # wall time of the collect
    lines: dict[str, bytes] = field(default_factory=dict)  # file date -> one JSON line
    records: int = 0
    lost: int = 0

    def write(self) -> None:
        """Append each line to its day's file (fsync each), then apply the retention.

        Raises OSError; the batch's counts are then not on disk (the caller logs it).
        """
        self.writer.write(self)


class HistoryWriter:
    """Reads the query log on a timer and appends hourly aggregates to the history files.

    ``tick``, ``collect``, ``take`` and ``flush`` must run in the thread that appends to the
    query log (the event loop), so the buffer cannot move under them; ``Batch.write`` may run
    anywhere (writes are serialised). A crash loses the counts not yet written: at most
    ``flush_interval`` seconds of them.
    """

    def __init__(
        self,
        qlog: QueryLog,
        directory: str,
        *,
        group_of: Callable[[str], str],
        category_of: Callable[[int], str],
        retention_days: int = 30,
        anonymise: bool = False,
        flush_interval: float = 300.0,
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``directory``: the history directory (``history_dir(state_dir)``), made if missing.
        ``flush_interval``: seconds between batches ``tick`` hands out for writing.

        ``group_of(ip)``: the client's group name; ``category_of(rule)``: a blocked record's
        category (``rule_category``). ``tz``: the zone of the hours (the policies' zone; None:
        the host's). ``clock`` is wall time and ``monotonic`` the clock of the records' times
        (the event loop's); the difference is taken at every collect, so hours stay right after
        the wall clock is stepped (a Raspberry Pi without a clock chip, corrected by NTP).
        Raises HistoryError or OSError when the directory or the secret cannot be used.
        """
        from guardian_dns.pipeline import R_BLOCKED

        if retention_days < 1:
            raise HistoryError(f"retention_days must be at least 1, not {retention_days}")
        if flush_interval <= 0:
            raise HistoryError(f"flush_interval must be above 0, not {flush_interval}")
        self.qlog = qlog
        self.directory = directory
        self.group_of = group_of
        self.category_of = category_of
        self.retention_days = retention_days
        self.anonymise = anonymise
        self.tz = tz
        self.clock = clock
        self.monotonic = monotonic
        self._blocked = R_BLOCKED
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self._secret = load_secret(directory, create=True) if anonymise else None
        self._pseudonyms: dict[str, str] = {}
        self._seen = qlog.total  # what was appended before we started is not ours
        self._lock = threading.Lock()
        self._hour = ("", 0.0, -1.0)  # the last hour key and its [start, end) in wall time
        self._hour_zone = tz
        self.flush_interval = flush_interval
        self._due = monotonic() + flush_interval
        # Pending until the next batch: (hour, client) -> [queries, blocked] and
        # (hour, client, rule, name) -> attempts; records read and records lost.
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._blocked_names: dict[tuple[str, str, int, str], int] = {}
        self._records = 0
        self._lost = 0
        # Counters for status and metrics (read them, never reset them).
        self.records = 0  # records aggregated
        self.lost = 0  # records overwritten in the buffer before a collect read them
        self.batches = 0  # lines written
        self.write_errors = 0
        self.last_write: float | None = None

    # -- on the event loop ---------------------------------------------------------------------
    def tick(self) -> Batch | None:
        """Every ``READ_INTERVAL`` seconds: read what is new; once ``flush_interval`` has passed
        since the last batch, the batch to write (else None)."""
        self.collect()
        now = self.monotonic()
        if now < self._due:
            return None
        self._due = now + self.flush_interval
        return self.take()

    def collect(self) -> None:
        """Add what the query log took since the last collect to the pending counts.

        O(new records). Records overwritten before this read are counted as lost.
        """
        qlog = self.qlog
        total = qlog.total
        new = total - self._seen
        self._seen = total
        if new > qlog.size:
            self._lost += new - qlog.size
            self.lost += new - qlog.size
            new = qlog.size
        buf = qlog.buf
        pos = qlog.pos
        start = pos - new
        records = buf[start:pos] if start >= 0 else buf[start:] + buf[:pos]  # oldest first
        offset = self.clock() - self.monotonic()
        blocked_reason = self._blocked
        if self._hour_zone is not self.tz:  # the server may set a new zone after a reload
            self._hour, self._hour_zone = ("", 0.0, -1.0), self.tz
        hour, h_start, h_end = self._hour
        totals = self._totals
        blocked = self._blocked_names
        n = 0
        for rec in records:
            if rec is None:
                continue
            t, client, message, reason, rule = rec
            w = t + offset
            if not h_start <= w < h_end:
                hour, h_start, h_end = self._hour = self._hour_of(w)
            n += 1
            counts = totals.get((hour, client))
            if counts is None:
                counts = totals[hour, client] = [0, 0]
            counts[0] += 1
            if reason == blocked_reason:
                counts[1] += 1
                key = (hour, client, rule, question_name(message))
                blocked[key] = blocked.get(key, 0) + 1
        self._records += n
        self.records += n

    def take(self) -> Batch:
        """The pending counts as a batch of lines (empty when nothing happened); starts afresh."""
        wall = self.clock()
        batch = Batch(self, wall, records=self._records, lost=self._lost)
        if self._totals or self._lost:
            hours = {hour for hour, _client in self._totals}
            first = min(hours, key=datetime.fromisoformat) if hours else self._hour_of(wall)[0]
            self._lines(batch, self._totals, self._blocked_names, first)
        self._totals = {}
        self._blocked_names = {}
        self._records = self._lost = 0
        return batch

    def _hour_of(self, w: float) -> tuple[str, float, float]:
        dt = datetime.fromtimestamp(w, UTC).astimezone(self.tz)
        start = dt.replace(minute=0, second=0, microsecond=0)
        begin = start.timestamp()
        return start.isoformat(timespec="minutes"), begin, begin + 3600.0

    def _lines(
        self,
        batch: Batch,
        totals: dict[tuple[str, str], list[int]],
        blocked: dict[tuple[str, str, int, str], int],
        first_hour: str,
    ) -> None:
        """The JSON line of each day: one lookup per client and per rule, not per record."""
        groups: dict[str, str] = {}
        categories: dict[int, str] = {}

        def who(client: str) -> tuple[str, str]:
            group = groups.get(client)
            if group is None:
                try:
                    group = groups[client] = self.group_of(client)
                except Exception:  # a client the matcher cannot place; never lose the batch
                    group = groups[client] = "?"
            return self._client_name(client), group

        hours: dict[str, dict[str, Any]] = {}
        for (hour, client), (queries, n_blocked) in sorted(totals.items()):
            entry = hours.setdefault(hour, {"hour": hour, "totals": [], "blocked": []})
            entry["totals"].append([*who(client), queries, n_blocked])
        merged: dict[tuple[str, str, str, str, str], int] = {}
        for (hour, client, rule, name), n in blocked.items():
            category = categories.get(rule)
            if category is None:
                try:
                    category = categories[rule] = self.category_of(rule)
                except Exception:
                    category = categories[rule] = UNKNOWN_CATEGORY
            key = (hour, *who(client), category, name)
            merged[key] = merged.get(key, 0) + n
        for (hour, client, group, category, name), n in sorted(merged.items()):
            hours[hour]["blocked"].append([client, group, category, name, n])
        by_day: dict[str, list[dict[str, Any]]] = {}
        for hour in sorted(hours, key=lambda h: datetime.fromisoformat(h)):
            by_day.setdefault(hour[:10], []).append(hours[hour])
        lost_day = first_hour[:10]
        by_day.setdefault(lost_day, [])
        at = datetime.fromtimestamp(batch.at, UTC).astimezone(self.tz)
        for day, entries in by_day.items():
            doc = {
                "v": SCHEMA,
                "at": at.isoformat(timespec="seconds"),
                "anonymised": self.anonymise,
                "lost": batch.lost if day == lost_day else 0,
                "hours": entries,
            }
            if entries or doc["lost"]:
                batch.lines[day] = (
                    json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"
                ).encode()

    def _client_name(self, client: str) -> str:
        if self._secret is None:
            return client
        name = self._pseudonyms.get(client)
        if name is None:
            if len(self._pseudonyms) >= 65536:
                self._pseudonyms.clear()  # a bound, not a cache policy: addresses are few
            name = self._pseudonyms[client] = pseudonym(self._secret, client)
        return name

    # -- anywhere (an executor thread) -----------------------------------------------------------
    def write(self, batch: Batch) -> None:
        with self._lock:
            try:
                # Made again if an administrator deleted it to clear the history.
                os.makedirs(self.directory, mode=0o750, exist_ok=True)
                for day, line in sorted(batch.lines.items()):
                    _append(os.path.join(self.directory, f"{day}.jsonl"), line)
                    self.batches += 1
            except OSError:
                self.write_errors += 1
                raise
            if batch.lines:
                self.last_write = batch.at
            self.expire(batch.at)

    def flush(self) -> Batch:
        """Read, take and write now, in this thread (at shutdown, on the loop; tests).

        Raises OSError.
        """
        self.collect()
        batch = self.take()
        batch.write()
        return batch

    def expire(self, now: float) -> list[str]:
        """Delete the files of days more than ``retention_days`` before today; their names."""
        today = datetime.fromtimestamp(now, UTC).astimezone(self.tz).date()
        oldest = today - timedelta(days=self.retention_days)
        removed = []
        for name, day in _history_files(self.directory):
            if day < oldest:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
                removed.append(name)
        if removed:
            log.info("history: %d day files past retention removed", len(removed))
        return removed


def _append(path: str, line: bytes) -> None:
    """Append one line and fsync. A file whose last line was cut short gets a newline first."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    size = 0
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if not size:
        fsync_dir(os.path.dirname(path))


def _history_files(directory: str) -> Iterator[tuple[str, date]]:
    """(file name, its date) of every day file in ``directory``; other files are ignored."""
    for name in sorted(os.listdir(directory)):
        m = FILE_RE.match(name)
        if m is None:
            continue
        try:
            yield name, date.fromisoformat(m.group(1))
        except ValueError:
            continue


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class History:
    """What a reader found: the rows of the hours asked for, summed over flushes."""

    # (hour, client, group) -> [queries, blocked]
    totals: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    # (hour, client, group, category, name) -> attempts
    blocked: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    files: int = 0
    lines: int = 0
    corrupt: int = 0  # lines skipped: cut short or not ours
    lost: int = 0  # queries the writer could not read (the buffer wrapped)
    anonymised: bool = False  # some line stores pseudonyms
    plain: bool = False  # some line stores addresses


def read_history(
    directory: str,
    since: float,
    *,
    group: str | None = None,
    clients: frozenset[str] | None = None,
) -> History:
    """Sum the rows of every hour that ends after ``since`` (Unix time), filtered by group and
    by client (any of ``clients``: an address and its pseudonym).

    Raises OSError when the directory or a file cannot be read; a missing directory is an
    empty history. Corrupt lines are counted and skipped.
    """
    out = History()
    try:
        files = list(_history_files(directory))
    except FileNotFoundError:
        return out
    # The file date is the local date of its hours: one day of margin covers any UTC offset.
    first = datetime.fromtimestamp(since, UTC).date() - timedelta(days=1)
    for name, day in files:
        if day < first:
            continue
        out.files += 1
        with open(os.path.join(directory, name), "rb") as f:
            for raw in f:
                out.lines += 1
                if not _read_line(raw, since, group, clients, out):
                    out.corrupt += 1
    return out


def _read_line(
    raw: bytes, since: float, group: str | None, clients: frozenset[str] | None, out: History
) -> bool:
    """Add one line's rows to ``out``; False (nothing added) for a line that is not valid."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != SCHEMA:
            return False
        totals: list[tuple[tuple[str, str, str], int, int]] = []
        blocked: list[tuple[tuple[str, str, str, str, str], int]] = []
        for entry in doc["hours"]:
            hour = entry["hour"]
            if not isinstance(hour, str):
                return False
            if datetime.fromisoformat(hour).timestamp() + 3600.0 <= since:
                continue
            for c, g, queries, n in entry["totals"]:
                if not (_strs(c, g) and _counts(queries, n)):
                    return False
                if (group is None or g == group) and (clients is None or c in clients):
                    totals.append(((hour, c, g), queries, n))
            for c, g, category, name, n in entry["blocked"]:
                if not (_strs(c, g, category, name) and _counts(n)):
                    return False
                if (group is None or g == group) and (clients is None or c in clients):
                    blocked.append(((hour, c, g, category, name), n))
        lost = doc.get("lost", 0)
        at = datetime.fromisoformat(doc["at"]).timestamp()
        if not _counts(lost):
            return False
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    for key, queries, n in totals:
        counts = out.totals.get(key)
        if counts is None:
            counts = out.totals[key] = [0, 0]
        counts[0] += queries
        counts[1] += n
    for bkey, n in blocked:
        out.blocked[bkey] = out.blocked.get(bkey, 0) + n
    if at >= since:
        out.lost += lost
    if doc.get("anonymised") is True:
        out.anonymised = True
    else:
        out.plain = True
    return True


def _strs(*values: object) -> bool:
    return all(isinstance(v, str) for v in values)


def _counts(*values: object) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


__all__ = [
    "HISTORY_DIR",
    "POLICY_CATEGORIES",
    "READ_INTERVAL",
    "Batch",
    "History",
    "HistoryError",
    "HistoryWriter",
    "history_dir",
    "load_secret",
    "pseudonym",
    "question_name",
    "read_history",
    "rule_category",
]
