"""``guardian-dns report``: blocked attempts by category, client, name and hour, for schools and
parents, from the query history on disk (``history.py``).

What it decides: what the report shows and its exit code.
What it reads: the config (for the state directory and the policies' time zone) and the files
in ``<state_dir>/history``; the pseudonym secret only to find an address asked for with
``--client`` in an anonymised history. It works the same whether the server runs or not.
What it must never do: write anything, or show an address the history stores as a pseudonym.

Exit codes: 0 report shown (also when there is nothing to show: it says so), 1 the config or
the history cannot be read, 2 bad command line.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from guardian_dns.config import Config
    from guardian_dns.history import History

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_SINCE: Final = "7d"
DEFAULT_TOP: Final = 10
BAR_WIDTH: Final = 40

EPILOG = """\
examples:
  guardian-dns report                               # the last 7 days, every group
  guardian-dns report --since 24h --group kids
  guardian-dns report --since 2026-09-01 --group students --top 20
  guardian-dns report --client 192.168.1.23 --since 30d
  guardian-dns report --format csv > blocked.csv    # one row per hour, client, category, name
  guardian-dns report --since 7d --json             # the same figures as JSON (--format json)

--since: a duration (90m, 24h, 7d, 2w, 1d12h), a local date (2026-09-01) or "all".
The history is written by the server every query_log.flush_interval seconds (and when it
stops), so the last few minutes are not in it yet. Only blocked names are stored; allowed
queries are counted, never named. With query_log.anonymise the report shows pseudonyms: the
same device keeps the same pseudonym, so patterns stay visible without addresses.
exit codes: 0 report shown (also when empty), 1 config or history unreadable, 2 bad command line
"""

_SPAN_RE: Final = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?\Z")


def add_verbs(sub: Any) -> None:
    r = sub.add_parser(
        "report",
        help="blocked attempts by category, client, name and hour (from the history files)",
        description="Summarise the query history: totals, blocked attempts by category, "
        "client, name and hour of day. Reads the files only; the server may be stopped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
    r.add_argument(
        "--since",
        type=_since_arg,
        default=_since_arg(DEFAULT_SINCE),
        metavar="SPAN|DATE",
        help=f"how far back: 24h, 7d, 2w, a date 2026-09-01, or all (default {DEFAULT_SINCE})",
    )
    r.add_argument("--group", metavar="GROUP", help="only the devices of this group")
    r.add_argument(
        "--client",
        metavar="IP|PSEUDONYM",
        help="only this device: its address, or the pseudonym an anonymised report shows",
    )
    r.add_argument("--format", choices=("text", "csv", "json"), default="text", help="default text")
    r.add_argument("--json", action="store_true", help="same as --format json")
    r.add_argument(
        "--top",
        type=_top_arg,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"rows in each top list (default {DEFAULT_TOP}; 0: all)",
    )


@dataclass(frozen=True)
class Since:
    """What --since said: a span back from now, a local date, or everything."""

    text: str
    seconds: float | None = None  # a span
    day: str | None = None  # a local date (midnight in the policies' zone)

    def instant(self, now: float, tz: ZoneInfo) -> float:
        if self.seconds is not None:
            return now - self.seconds
        if self.day is not None:
            return datetime.fromisoformat(self.day).replace(tzinfo=tz).timestamp()
        return 0.0


def _since_arg(text: str) -> Since:
    value = text.strip().lower()
    if value == "all":
        return Since(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a date") from None
        return Since(value, day=value)
    m = _SPAN_RE.match(value)
    if m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a span such as 24h, 7d, 2w or 1d12h, a date such as "
            "2026-09-01, or all"
        )
    weeks, days, hours, minutes = (int(g) if g else 0 for g in m.groups())
    seconds = float((((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a span must be longer than zero")
    return Since(value, seconds=seconds)


def _top_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 (all) or more")
    return n


class _Unreadable(Exception):
    """The config or the history cannot be read: the message for stderr, and a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def run(args: argparse.Namespace) -> int:
    from guardian_dns.errors import ConfigError

    fmt = "json" if args.json else args.format
    try:
        report = _build(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(f"guardian-dns: {prob}", file=sys.stderr)
        print(
            "hint: fix the lines above, then run 'guardian-dns check-config FILE'", file=sys.stderr
        )
        return EXIT_ERROR
    except _Unreadable as exc:
        print(f"guardian-dns report: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    if fmt == "json":
        print(json.dumps(report.as_json(), indent=2))
    elif fmt == "csv":
        _print_csv(report)
    else:
        print(_render(report))
    return EXIT_OK


# -- gathering -------------------------------------------------------------------------------------
@dataclass
class Report:
    directory: str
    since: float
    until: float
    since_text: str
    tz: tzinfo
    zone: str
    group: str | None
    client: str | None
    top: int
    history: History
    found: bool  # the history directory exists
    notes: list[str] = field(default_factory=list)

    # -- aggregates -----------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        queries = sum(c[0] for c in self.history.totals.values())
        blocked = sum(c[1] for c in self.history.totals.values())
        clients = {k[1] for k in self.history.totals} | {k[1] for k in self.history.blocked}
        return {"queries": queries, "blocked": blocked, "clients": len(clients)}

    def _cut(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return rows[: self.top] if self.top else rows

    def categories(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        who: dict[str, set[str]] = {}
        for (_h, client, _g, category, _n), n in self.history.blocked.items():
            counts[category] = counts.get(category, 0) + n
            who.setdefault(category, set()).add(client)
        rows = [
            {"category": c, "blocked": n, "clients": len(who[c])}
            for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return self._cut(rows)

    def clients(self) -> list[dict[str, Any]]:
        """Devices with blocked attempts, most first; their group is the latest one seen."""
        stats: dict[str, list[int]] = {}
        group: dict[str, tuple[float, str]] = {}
        for (hour, client, g), (queries, blocked) in self.history.totals.items():
            s = stats.setdefault(client, [0, 0])
            s[0] += queries
            s[1] += blocked
            t = _hour_start(hour)
            if client not in group or t >= group[client][0]:
                group[client] = (t, g)
        ranked = sorted(
            ((c, q, b) for c, (q, b) in stats.items() if b > 0),
            key=lambda r: (-r[2], -r[1], r[0]),
        )
        rows = [
            {"client": c, "group": group[c][1], "queries": q, "blocked": b} for c, q, b in ranked
        ]
        return self._cut(rows)

    def names(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str], int] = {}
        who: dict[tuple[str, str], set[str]] = {}
        for (_h, client, _g, category, name), n in self.history.blocked.items():
            counts[name, category] = counts.get((name, category), 0) + n
            who.setdefault((name, category), set()).add(client)
        rows = [
            {"name": name, "category": category, "blocked": n, "clients": len(who[name, category])}
            for (name, category), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return self._cut(rows)

    def hours_of_day(self) -> list[dict[str, int]]:
        """By local hour of day (as the server's clock read it), 0 to 23."""
        queries = [0] * 24
        blocked = [0] * 24
        for (hour, _c, _g), (q, b) in self.history.totals.items():
            h = int(hour[11:13])
            queries[h] += q
            blocked[h] += b
        return [{"hour": h, "queries": queries[h], "blocked": blocked[h]} for h in range(24)]

    def days(self) -> list[dict[str, Any]]:
        by_day: dict[str, list[int]] = {}
        for (hour, _c, _g), (q, b) in self.history.totals.items():
            d = by_day.setdefault(hour[:10], [0, 0])
            d[0] += q
            d[1] += b
        return [{"date": d, "queries": q, "blocked": b} for d, (q, b) in sorted(by_day.items())]

    def rows(self) -> list[tuple[str, str, str, str, str, int]]:
        """Every (hour, client, group, category, name, attempts), oldest hour first."""
        return sorted(
            ((*key, n) for key, n in self.history.blocked.items()),
            key=lambda r: (_hour_start(r[0]), r[1:]),
        )

    def as_json(self) -> dict[str, Any]:
        h = self.history
        return {
            "since": _iso(self.since, self.tz),
            "until": _iso(self.until, self.tz),
            "zone": self.zone,
            "group": self.group,
            "client": self.client,
            "directory": self.directory,
            "files": h.files,
            "anonymised": h.anonymised,
            "totals": self.totals(),
            "categories": self.categories(),
            "clients": self.clients(),
            "names": self.names(),
            "hours_of_day": self.hours_of_day(),
            "days": self.days(),
            "lost": h.lost,
            "corrupt_lines": h.corrupt,
            "notes": self.notes,
        }


def _hour_start(hour: str) -> float:
    return datetime.fromisoformat(hour).timestamp()


def _iso(t: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t, UTC).astimezone(tz).isoformat(timespec="seconds")


def _config(args: argparse.Namespace) -> Config:
    from guardian_dns.config import admin_config

    return admin_config(args.config)


def _build(args: argparse.Namespace) -> Report:
    from zoneinfo import ZoneInfo

    from guardian_dns.compile import state_dir
    from guardian_dns.history import history_dir, load_secret, pseudonym, read_history
    from guardian_dns.policy import system_timezone

    cfg = _config(args)
    tz = ZoneInfo(cfg.policy.timezone) if cfg.policy.timezone else system_timezone()
    directory = history_dir(state_dir(cfg.server.state_dir, cfg.base_dir))
    now = time.time()
    since = args.since.instant(now, tz)
    notes: list[str] = []
    clients: frozenset[str] | None = None
    if args.client is not None:
        wanted = {args.client}
        if _is_address(args.client):
            try:
                secret = load_secret(directory, create=False)
            except (OSError, ValueError) as exc:
                secret = None
                notes.append(
                    f"the pseudonym secret cannot be read ({getattr(exc, 'strerror', exc)}): "
                    f"in an anonymised history, pass the pseudonym the report shows"
                )
            if secret is not None:
                wanted.add(pseudonym(secret, args.client))
        clients = frozenset(wanted)
    try:
        history = read_history(directory, since, group=args.group, clients=clients)
    except OSError as exc:
        where = exc.filename or directory
        raise _Unreadable(
            f"cannot read {where}: {exc.strerror}",
            hint="run it as the server's user, or with sudo",
        ) from None
    found = os.path.isdir(directory)
    if history.corrupt:
        notes.append(f"{history.corrupt} unreadable line(s) skipped (cut short by a power cut?)")
    if history.anonymised and history.plain:
        notes.append(
            "query_log.anonymise changed during this period: part of it shows addresses, "
            "part pseudonyms"
        )
    if history.lost:
        notes.append(
            f"{history.lost} queries were not recorded: the query log buffer filled between "
            "two flushes (raise query_log.size or lower query_log.flush_interval)"
        )
    if args.group is not None:
        from guardian_dns.config import DEFAULT_GROUP

        known = {g.name for g in cfg.policy.groups} | {DEFAULT_GROUP}
        if args.group not in known:
            notes.append(
                f"no group {args.group!r} in the config (known: {', '.join(sorted(known))})"
            )
    return Report(
        directory=directory,
        since=since,
        until=now,
        since_text=args.since.text,
        tz=tz,
        zone=tz.key,
        group=args.group,
        client=args.client,
        top=args.top,
        history=history,
        found=found,
        notes=notes,
    )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- output ----------------------------------------------------------------------------------------
def _print_csv(report: Report) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["hour", "client", "group", "category", "name", "count"])
    for hour, client, group, category, name, n in report.rows():
        name = printable(name)
        if name.startswith(_FORMULA):
            name = "'" + name  # a spreadsheet must not run a name a device asked for
        out.writerow([hour, client, group, category, name, n])


_FORMULA: Final = ("=", "+", "-", "@")


def printable(text: str) -> str:
    """``text`` with control characters as ``\\xNN``: a name is whatever bytes a device sent,
    and must not drive the administrator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _n(value: int) -> str:
    return f"{value:,}"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out


def _render(report: Report) -> str:
    h = report.history
    scope = []
    if report.group is not None:
        scope.append(f"group {report.group}")
    if report.client is not None:
        scope.append(f"client {report.client}")
    start = "the start" if report.since <= 0 else _local(report.since, report.tz)
    lines = [
        f"Guardian DNS report: {start} to {_local(report.until, report.tz)} ({report.zone})"
        + (f", {', '.join(scope)}" if scope else "")
    ]
    totals = report.totals()
    if not totals["queries"] and not h.blocked:
        if not report.found:
            lines.append(
                f"no history in {report.directory}: is query_log.history on, and has the "
                "server written it yet (every query_log.flush_interval seconds, and when it stops)?"
            )
        else:
            lines.append(f"no queries recorded in this period ({h.files} history file(s) read)")
        lines += [f"note: {n}" for n in report.notes]
        return "\n".join(lines)
    share = 100.0 * totals["blocked"] / totals["queries"] if totals["queries"] else 0.0
    lines.append(
        f"{_n(totals['queries'])} queries from {_n(totals['clients'])} device(s); "
        f"{_n(totals['blocked'])} blocked ({share:.1f}%)"
    )
    if h.anonymised:
        lines.append(
            "devices are shown as pseudonyms: the same device keeps the same pseudonym, "
            "so repeated attempts stay visible"
        )
    if not totals["blocked"]:
        lines.append("no blocked attempts in this period")
    else:
        lines += ["", "Blocked attempts by category"]
        rows = [["category", "attempts", "devices"]]
        rows += [[c["category"], _n(c["blocked"]), _n(c["clients"])] for c in report.categories()]
        lines += _table(rows, {1, 2})
        lines += ["", "Devices with the most blocked attempts"]
        rows = [["device", "group", "blocked", "of queries"]]
        rows += [
            [c["client"], c["group"], _n(c["blocked"]), _n(c["queries"])] for c in report.clients()
        ]
        lines += _table(rows, {2, 3})
        lines += ["", "Most blocked names"]
        rows = [["name", "category", "attempts", "devices"]]
        rows += [
            [printable(c["name"]), c["category"], _n(c["blocked"]), _n(c["clients"])]
            for c in report.names()
        ]
        lines += _table(rows, {2, 3})
        lines += ["", "Blocked attempts by hour of day (local time)"]
        hours = report.hours_of_day()
        most = max(x["blocked"] for x in hours)
        for x in hours:
            bar = "#" * (round(BAR_WIDTH * x["blocked"] / most) if x["blocked"] else 0)
            if x["blocked"] and not bar:
                bar = "."
            lines.append(f"  {x['hour']:02d}  {bar.ljust(BAR_WIDTH)}  {_n(x['blocked'])}".rstrip())
    if report.notes:
        lines.append("")
        lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _local(t: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M")


__all__ = ["EPILOG", "Report", "add_verbs", "run"]
