"""``guardian-dns sync`` and ``guardian-dns lists``: bring the downloaded lists up to date, and
show every list in force with its source, age and last error.

What it decides: what one sync run does (the feed, then every subscribed URL), its exit code,
and whether the running server is told to rebuild its table (SIGHUP, after a change).
What it reads: the config, the state directory, the network (feed and subscription URLs) and the
server's pid file.
What it must never do: change what is in force except through feed.py and subscribe.py (which
switch a complete new copy in by rename, or leave the old one), or signal a process that is not
a Guardian DNS server. The server runs this very verb in a child process on its own schedule
(``--no-signal``), so the DNS process never imports ``requests``.

Exit codes: 0 everything synced (changed or not), 1 something failed (the last good lists keep
serving; the JSON and stderr say which and why), 2 bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from guardian_dns.compile import state_dir as state_dir_of
from guardian_dns.config import Config, admin_config
from guardian_dns.errors import ConfigError

PID_FILE = "guardian-dns.pid"
EPILOG = """\
examples:
  guardian-dns sync                       # fetch what changed (conditional GET), then reload
  guardian-dns sync --now --json          # re-check everything, even an unchanged serial
  guardian-dns lists                      # every list: source, serial, entries, age, last error
  guardian-dns lists --json

exit codes: 0 ok, 1 a sync failed (the last good lists keep serving), 2 bad command line
"""


def add_verbs(sub: Any) -> None:
    s = sub.add_parser(
        "sync",
        help="update the feed's lists and subscribed URLs now",
        description="Fetch the feed and every subscribed list; verify, switch in, and tell the "
        "running server to rebuild its table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
    s.add_argument("--now", action="store_true", help="re-check everything (no conditional GET)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--no-signal", action="store_true", help=argparse.SUPPRESS)
    ls = sub.add_parser(
        "lists",
        help="show every list in force: source, serial, entries, age, last error",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
    ls.add_argument("--json", action="store_true", help="print as JSON")


def _config(args: argparse.Namespace) -> Config:
    return admin_config(args.config)


def sync_all(config: Config, state_dir: str, *, force: bool = False) -> dict[str, Any]:
    """Sync the feed and every subscription; a JSON-able report (``ok``, ``changed``, each)."""
    from guardian_dns import feed, subscribe
    from guardian_dns.sources import feed_config, subscriptions

    os.makedirs(state_dir, exist_ok=True)
    report: dict[str, Any] = {"ok": True, "changed": False, "feed": None, "subscriptions": []}
    cfg = feed_config(config)
    if cfg is not None:
        result = feed.sync(cfg, state_dir, force=force)
        report["feed"] = result.to_json()
        report["ok"] &= result.ok
        report["changed"] |= result.changed
    for sub in subscriptions(config):
        fetched = subscribe.fetch(sub, state_dir, force=force)
        report["subscriptions"].append(
            {
                "url": fetched.url,
                "name": fetched.name,
                "outcome": fetched.outcome,
                "entries": fetched.entries,
                "invalid": fetched.invalid,
                "error": None if fetched.error is None else fetched.error.to_json(),
                "warnings": list(fetched.warnings),
            }
        )
        report["ok"] &= fetched.ok
        report["changed"] |= fetched.changed
    return report


def _signal_server(state_dir: str) -> str:
    """SIGHUP the running server (its pid file) so it rebuilds from the new lists."""
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return "no running server found; the new lists are used at its next start"
    if b"guardian_dns" not in cmdline and b"guardian-dns" not in cmdline:
        return "the pid file names another program; not signalled"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return f"could not signal the server (pid {pid}): {exc.strerror}"
    return f"server (pid {pid}) told to rebuild its table"


def _sync(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(prob, file=sys.stderr)
        return 1
    if config.feed.url is None and not any(lc.url for lc in config.blocking.lists):
        print(
            "guardian-dns: nothing to sync: no feed.url and no list with a url",
            file=sys.stderr,
        )
        return 1
    directory = state_dir_of(config.server.state_dir, config.base_dir)
    # Parsing a large list is background work: let the DNS server on this box have the CPU.
    with contextlib.suppress(OSError):
        os.nice(10)
    report = sync_all(config, directory, force=args.now)
    if report["changed"] and not args.no_signal:
        report["server"] = _signal_server(directory)
    # Audited: a sync that put new lists in force, and an admin's sync that failed. Not the
    # server's scheduled failures (--no-signal): retried every interval, they would rotate the
    # admins' entries out of the log; 'lists' and the server's log show them.
    if report["changed"] or (not report["ok"] and not args.no_signal):
        _audit(args, directory, report)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    if not report["ok"]:
        failed = report["feed"] if report["feed"] and not report["feed"]["ok"] else None
        why = failed["message"] if failed else "a subscribed list failed (see above)"
        print(
            f"guardian-dns: sync failed: {why}; the last good lists keep serving", file=sys.stderr
        )
        return 1
    return 0


def _audit(args: argparse.Namespace, directory: str, report: dict[str, Any]) -> None:
    """One audit entry for this run: what it put in force, and what failed."""
    from guardian_dns import audit

    parts: list[str] = []
    fr = report["feed"]
    if fr is not None and fr["ok"] and fr["changed"]:
        parts.append(f"feed {fr['url']}: serial {fr['serial']} in force")
    elif fr is not None and not fr["ok"]:
        parts.append(f"feed {fr['url']}: failed: {fr['message']}")
    for sub in report["subscriptions"]:
        if sub["error"] is not None:
            parts.append(f"list {sub['url']}: failed: {sub['error']['message']}")
        elif sub["outcome"] == "updated":
            parts.append(f"list {sub['url']}: updated, {sub['entries']} entries")
    recorded = {"now": args.now, "scheduled": args.no_signal}  # scheduled: the server's own run
    warning = audit.record(
        directory,
        "sync",
        {key: True for key, given in recorded.items() if given},
        "ok" if report["ok"] else "error",
        "; ".join(parts),
    )
    if warning is not None:
        applied = "lists changed, but " if report["changed"] else ""
        print(f"guardian-dns sync: warning: {applied}{warning}", file=sys.stderr)


def _print_report(report: dict[str, Any]) -> None:
    fr = report["feed"]
    if fr is not None:
        if fr["ok"]:
            what = "new set in force" if fr["changed"] else "already current"
            print(f"feed {fr['url']}: serial {fr['serial']}, {what}")
        else:
            print(f"feed {fr['url']}: FAILED ({fr['error']}): {fr['message']}")
    for s in report["subscriptions"]:
        if s["error"] is None:
            print(f"list {s['url']}: {s['outcome']}, {s['entries']} entries")
        else:
            print(f"list {s['url']}: FAILED ({s['error']['code']}): {s['error']['message']}")
    if "server" in report:
        print(report["server"])


def _lists(args: argparse.Namespace) -> int:
    from guardian_dns import feed, subscribe
    from guardian_dns.sources import feed_config, subscription

    try:
        config = _config(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(prob, file=sys.stderr)
        return 1
    directory = state_dir_of(config.server.state_dir, config.base_dir)
    now = time.time()
    files: list[dict[str, Any]] = []
    subs: list[dict[str, Any]] = []
    for lc in config.blocking.lists:
        if lc.url is not None:
            subs.append(subscribe.status(subscription(config, lc), directory, now))
            continue
        age = None
        with contextlib.suppress(OSError):
            age = now - os.stat(lc.file).st_mtime
        files.append({"file": lc.file, "category": lc.category, "action": lc.action, "age": age})
    cfg = feed_config(config)
    doc: dict[str, Any] = {
        "files": files,
        "subscriptions": subs,
        "feed": None if cfg is None else feed.status(directory, cfg, now),
    }
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return 0
    for f in files:
        print(f"file  {f['file']}  [{f['category']}, {f['action']}]")
    for s in subs:
        err = s.get("last_error")
        err = err.get("message") if isinstance(err, dict) else err
        print(
            f"url   {s.get('url')}  [{s.get('category')}] {s.get('entries')} entries"
            + (f"  LAST ERROR: {err}" if err else "")
        )
    fs = doc["feed"]
    if fs is not None:
        print(
            f"feed  {fs.get('source')}  serial {fs.get('serial')}"
            + ("  STALE" if fs.get("stale") else "")
            + (f"  LAST ERROR: {fs.get('last_error')}" if fs.get("last_error") else "")
        )
        for item in fs.get("lists") or []:
            print(
                f"      {item['name']}  [{item['category']}] {item['entries']} entries, "
                f"fetched {item['age_seconds'] / 3600:.1f} h ago"
            )
        for warning in fs.get("warnings") or []:
            print(f"      warning: {warning}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _sync(args) if args.verb == "sync" else _lists(args)


__all__ = ["PID_FILE", "add_verbs", "run", "sync_all"]
