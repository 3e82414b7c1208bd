"""The verbs that ask the running server: status, reload, tail, stats, devices.

What it decides: what an administrator sees, and the exit codes a script relies on. ``status``
exits 0 when the server runs, 3 when it does not, 1 on an error (as ``unbound-control`` does),
so ``ssh pi guardian-dns status || alert`` works.
What it reads: the config (to find the control socket, control.py), and the server's replies.
What it must never do: pretend. When no server answers, each verb says so and exits 3; the
verbs that can work from files alone (``lists``, ``explain``, ``overrides``, ``audit``,
``report``) are separate and do.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from guardian_dns.config import Config, admin_config
from guardian_dns.control import ControlUnavailable, request, socket_path, stream
from guardian_dns.errors import ConfigError, GuardianError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3

EPILOG = """\
examples:
  guardian-dns status                     # exit 0 running, 3 stopped, 1 error
  guardian-dns status --json | jq .queries
  guardian-dns reload                     # verify-then-swap the config and lists
  guardian-dns tail -f --blocked          # follow blocked queries live
  guardian-dns tail --client 192.168.1.23 -n 50
  guardian-dns stats                      # counts since start, top blocked names and clients
  guardian-dns devices                    # clients seen recently: MAC, group, last seen

exit codes: 0 ok, 1 error, 2 bad command line, 3 the server is not running
"""


def add_verbs(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
        p.add_argument("--json", action="store_true", help="print JSON")

    for verb, text in (
        ("status", "is the server running, and what is in force (exit 3: not running)"),
        ("reload", "re-read the config and lists in the running server (verify, then swap)"),
        ("stats", "query counts since start; top blocked names, rules and clients"),
        ("devices", "clients seen recently: address, MAC, group, queries, last seen"),
    ):
        p = sub.add_parser(
            verb,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common(p)
        if verb == "stats":
            p.add_argument(
                "--since",
                metavar="WHEN",
                help="from the query history on disk instead (24h, 7d, an ISO date); "
                "works when the server is stopped",
            )
    t = sub.add_parser(
        "tail",
        help="recent queries, and with -f new ones as they come",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(t)
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new queries")
    t.add_argument("-n", "--lines", type=int, default=20, help="recent queries first (20)")
    t.add_argument("--client", metavar="IP", help="only this client's queries")
    t.add_argument("--blocked", action="store_true", help="only blocked queries")


def _config(args: argparse.Namespace) -> Config:
    return admin_config(args.config)


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(prob, file=sys.stderr)
        return EXIT_ERROR
    path = socket_path(config)
    if args.verb == "stats" and args.since:
        return _stats_from_history(config, args)
    try:
        if args.verb == "tail":
            return _tail(path, args)
        reply = request(path, args.verb, {})
    except ControlUnavailable as exc:
        if args.json:
            print(json.dumps({"running": False, "error": str(exc)}))
        print(f"guardian-dns: not running ({exc})", file=sys.stderr)
        if args.verb == "reload":
            print("hint: the next start reads the config; nothing to reload", file=sys.stderr)
        return EXIT_STOPPED
    except (GuardianError, OSError, ValueError) as exc:
        print(f"guardian-dns: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.verb == "reload":
        _audit_reload(config, reply)
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True, default=str))
    else:
        {"status": _print_status, "reload": _print_reload, "stats": _print_stats}.get(
            args.verb, _print_devices
        )(reply)
    if not reply.get("ok"):
        if not args.json:
            print(f"guardian-dns: {reply.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _stats_from_history(config: Config, args: argparse.Namespace) -> int:
    """``stats --since``: the top blocked names, categories and clients from history.py's
    files, so it answers for last week and when the server is stopped."""
    import time
    from collections import Counter

    from guardian_dns.audit import parse_since
    from guardian_dns.compile import state_dir
    from guardian_dns.history import history_dir, read_history

    try:
        since = parse_since(args.since, time.time())
    except ValueError as exc:
        print(f"guardian-dns: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    directory = history_dir(state_dir(config.server.state_dir, config.base_dir))
    try:
        h = read_history(directory, since)
    except OSError as exc:
        print(f"guardian-dns: {directory}: cannot read: {exc}", file=sys.stderr)
        return EXIT_ERROR
    names: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    for (_hour, client, _group, category, name), n in h.blocked.items():
        names[name] += n
        categories[category] += n
        clients[client] += n
    queries = sum(v[0] for v in h.totals.values())
    blocked = sum(v[1] for v in h.totals.values())
    doc: dict[str, Any] = {
        "ok": True,
        "since": since,
        "queries": queries,
        "blocked": blocked,
        "top_blocked_names": names.most_common(10),
        "top_blocked_categories": categories.most_common(10),
        "top_blocked_clients": clients.most_common(10),
        "lost": h.lost,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(f"since {_when(since)}: {queries:,} queries, {blocked:,} blocked")
    for title, key in (
        ("top blocked names", "top_blocked_names"),
        ("top blocked categories", "top_blocked_categories"),
        ("top blocked clients", "top_blocked_clients"),
    ):
        if doc[key]:
            print(f"  {title}:")
            for item, n in doc[key]:
                print(f"    {n:>7,}  {item}")
    return EXIT_OK


def _audit_reload(config: Config, reply: dict[str, Any]) -> None:
    """A reload is a change an administrator made: the audit log has it (audit.py)."""
    from guardian_dns import audit
    from guardian_dns.compile import state_dir

    ok = bool(reply.get("ok"))
    detail = (
        f"generation {reply.get('generation')} in force"
        if ok
        else f"refused: {reply.get('error')}; generation {reply.get('generation')} kept"
    )
    directory = state_dir(config.server.state_dir, config.base_dir)
    warning = audit.record(directory, "reload", {}, "ok" if ok else "error", detail)
    if warning:
        print(f"guardian-dns: warning: {warning}", file=sys.stderr)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _print_status(r: dict[str, Any]) -> None:
    if not r.get("ok"):
        return
    q = r["queries"]
    total = sum(q.values())
    print(f"guardian-dns {r['version']} running (pid {r['pid']}, up {r['uptime'] / 3600:.1f} h)")
    print(f"listening   {', '.join(r['listen'])}")
    print(
        f"lists       {r['domains']:,} domains from {len(r['lists'])} lists, "
        f"generation {r['generation']}"
    )
    print(f"upstreams   {', '.join(r['upstreams']) or 'NONE'}")
    print(f"queries     {total:,}: " + ", ".join(f"{k} {v:,}" for k, v in q.items() if v))
    pol = r["policy"]
    print(f"policy      time zone {pol['timezone']}, unknown clients: {pol['default_group']}")
    for c in pol["contexts"]:
        who = f"client {c['client']} ({c['group']})" if c["client"] else f"group {c['group']}"
        until = f", until {_when(c['until'])}" if c["until"] else ""
        print(f"  {who}: {c['state']}{until}")
    for o in pol["overrides"]:
        what = f"allow {o['domain']}" if o["kind"] == "allow" else "pause"
        print(
            f"  override {o['id']}: {what} for {o['target_kind']} {o['target']} "
            f"until {_when(o['expires'])}"
        )
    if r.get("syncs"):
        print("syncs       " + ", ".join(f"{k} {v}" for k, v in sorted(r["syncs"].items())))


def _print_reload(r: dict[str, Any]) -> None:
    if r.get("ok"):
        print(f"reloaded: generation {r['generation']}, {r['domains']:,} domains")


def _print_stats(r: dict[str, Any]) -> None:
    if not r.get("ok"):
        return
    since = r["since_start"]
    print("since start: " + ", ".join(f"{k} {v:,}" for k, v in since["queries"].items() if v))
    cats = {k: v for k, v in since["blocked_by_category"].items() if v}
    if cats:
        print("blocked by category: " + ", ".join(f"{k} {v:,}" for k, v in cats.items()))
    recent = r["recent"]
    print(f"recent ({recent['records']:,} queries since {_when(recent['oldest'])}):")
    for title, key in (
        ("top blocked names", "top_blocked_names"),
        ("top blocked clients", "top_blocked_clients"),
        ("top blocking rules", "top_blocked_rules"),
    ):
        if recent[key]:
            print(f"  {title}:")
            for item, n in recent[key]:
                print(f"    {n:>7,}  {item}")


def _print_devices(r: dict[str, Any]) -> None:
    if not r.get("ok"):
        return
    print(
        f"{'client':<40} {'name':<16} {'mac':<18} {'group':<12} {'queries':>8} {'blocked':>8}"
        "  last seen"
    )
    for d in r["devices"]:
        print(
            f"{d['client']:<40} {d['name'] or '-':<16} {d['mac'] or '-':<18} {d['group']:<12} "
            f"{d['queries']:>8} {d['blocked']:>8}  {_when(d['last_seen'])}"
        )


def _tail(path: str, args: argparse.Namespace) -> int:
    spec = {
        "lines": args.lines,
        "follow": args.follow,
        "client": args.client,
        "blocked": args.blocked,
    }
    colour = sys.stdout.isatty()
    try:
        for reply in stream(path, "tail", spec):
            if not reply.get("ok"):
                print(f"guardian-dns: {reply.get('error')}", file=sys.stderr)
                return EXIT_ERROR
            if reply.get("end"):
                break
            rec = reply["record"]
            if args.json:
                print(json.dumps(rec), flush=True)
                continue
            line = (
                f"{datetime.fromtimestamp(rec['time']).strftime('%H:%M:%S')} "
                f"{rec['client']:<16} {rec['reason']:<9} {rec['name']} "
                f"{'(' + rec['why'] + ')' if rec['why'] else ''}"
            )
            if colour and rec["reason"] == "blocked":
                line = f"\033[31m{line}\033[0m"
            print(line, flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_OK


__all__ = ["EXIT_STOPPED", "add_verbs", "run"]
