"""``guardian-dns block / deny / remove / list`` and ``allow`` without ``--for``: the
administrator's permanent edits, made in plain files (adminlists.py), never in the YAML.

What it decides: which admin file an edit goes to, what is printed, and the exit codes.
What it reads: the config (to find the admin directory and the groups and categories).
What it must never do: write when any name of the command is invalid (all or nothing), or claim
an effect it did not have: the running server picks the files up within a second (it checks
them every second), and ``explain`` reads the same files.

Exit codes: 0 done (or already so), 1 error (refused: nothing changed), 2 bad command line.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import Any

from guardian_dns import adminlists
from guardian_dns.adminlists import AdminEditError, check_label, check_name, file_name
from guardian_dns.config import DEFAULT_GROUP, Config, admin_config
from guardian_dns.errors import ConfigError, GuardianError
from guardian_dns.snapshot import admin_dir

EPILOG = """\
examples:
  guardian-dns block tiktok.com --comment "agreed with the parents"   # for every group
  guardian-dns block roblox.com --group kids
  guardian-dns block casino.example --category gambling  # for the groups that block gambling
  guardian-dns allow khanacademy.org                     # for every group, permanently
  guardian-dns allow minecraft.net --group teens
  guardian-dns remove roblox.com --group kids
  guardian-dns list blocked --json

Pi-hole users: 'pihole -b NAME' is 'guardian-dns block NAME', 'pihole -w NAME' is
'guardian-dns allow NAME'. Changes land in plain files under the admin directory (one name per
line; comments kept) and take effect in the running server within a second.

exit codes: 0 done, 1 refused (nothing changed), 2 bad command line
"""


def add_verbs(sub: Any) -> None:
    for verb in ("block", "deny"):
        b = sub.add_parser(
            verb,
            help="block names for everyone, a group, or a category's groups"
            + (" (alias of block)" if verb == "deny" else ""),
            description="Block NAME and every name below it.",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(b)
        b.add_argument("names", nargs="+", metavar="NAME")
        scope = b.add_mutually_exclusive_group()
        scope.add_argument("--group", metavar="GROUP", help="only for this group")
        scope.add_argument(
            "--category", metavar="CATEGORY", help="for the groups that block this category"
        )
        scope.add_argument(
            "--client", metavar="IP|MAC", help="only this device (with --for: temporary)"
        )
        b.add_argument(
            "--for",
            dest="duration",
            metavar="DURATION",
            help="a temporary block (15m, 2h, 1d): ends by itself, 'overrides' shows it",
        )
        b.add_argument("--comment", metavar="TEXT", help="why (kept in the file and the audit)")
    r = sub.add_parser(
        "remove",
        help="remove names from the administrator's allow and block files",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(r)
    r.add_argument("names", nargs="+", metavar="NAME")
    scope = r.add_mutually_exclusive_group()
    scope.add_argument("--group", metavar="GROUP", help="only from this group's files")
    scope.add_argument("--category", metavar="CATEGORY", help="only from this category's file")
    r.add_argument("--comment", metavar="TEXT", help="why (for the audit log)")
    ls = sub.add_parser(
        "list",
        help="the administrator's allowed and blocked names, with file:line",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(ls)
    ls.add_argument("which", nargs="?", choices=["blocked", "allowed"], help="only these")
    ls.add_argument("--group", metavar="GROUP", help="only this group's (and everyone's)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _config(args: argparse.Namespace) -> Config:
    return admin_config(args.config)


def _group(config: Config, group: str | None) -> str | None:
    if group is None:
        return None
    known = [DEFAULT_GROUP, *(g.name for g in config.policy.groups)]
    if group not in known:
        close = difflib.get_close_matches(group, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise AdminEditError(f"no group {group!r} ({hint}known: {', '.join(known)})")
    return check_label("group", group)


def _category(config: Config, category: str | None) -> str | None:
    if category is None:
        return None
    known = sorted({lc.category for lc in config.blocking.lists} | set(config.feed.categories))
    if category not in known:
        close = difflib.get_close_matches(category, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise AdminEditError(f"no list has category {category!r} ({hint}known: {', '.join(known)})")
    return check_label("category", category)


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(prob, file=sys.stderr)
        return 1
    try:
        if args.verb == "list":
            return _list(config, args)
        if args.verb == "remove":
            return _remove(config, args)
        # block, deny, or allow without --for (cli.py hands that one over).
        action = "allow" if args.verb == "allow" else "block"
        if action == "block" and args.duration is not None:
            return _temporary_block(config, args)
        if args.client is not None:
            print(
                f"guardian-dns: a permanent {action} is for a group or everyone, not one "
                f"device; for a device use --for (a temporary {action}) or put it in a group",
                file=sys.stderr,
            )
            return 2
        return _add(config, args, action)
    except (AdminEditError, GuardianError, OSError) as exc:
        print(f"guardian-dns: {exc}; nothing was changed", file=sys.stderr)
        _audit(config, args, "refused", str(exc))
        return 1


def _add(config: Config, args: argparse.Namespace, action: str) -> int:
    group = _group(config, getattr(args, "group", None))
    category = _category(config, getattr(args, "category", None))
    names = [check_name(n) for n in args.names]  # all valid, or nothing is written
    target = file_name(action, group, category)
    comment = (args.comment or "").replace("\n", " ").strip() or None
    directory = admin_dir(config)

    def change(e: adminlists.Edit) -> list[str]:
        return [n for n in names if e.add(target, n, comment)]

    added = adminlists.edit(directory, change)
    scope = f"group {group}" if group else f"category {category}" if category else "every group"
    already = [n for n in names if n not in added]
    detail = f"{action}ed for {scope}: {', '.join(added) or 'nothing new'}"
    _audit(config, args, "ok", detail)
    doc = {
        "action": action,
        "scope": scope,
        "added": added,
        "already": already,
        "file": f"{directory}/{target}",
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for n in added:
            print(f"{action}ed {n} for {scope} ({directory}/{target})")
        for n in already:
            print(f"{n} was already {action}ed for {scope}")
        print("the running server applies it within a second")
    return 0


def _temporary_block(config: Config, args: argparse.Namespace) -> int:
    """``block NAME --for 2h``: an override (overrides.py), ended by time or ``resume``."""
    import time

    from guardian_dns.cli import _duration
    from guardian_dns.compile import state_dir
    from guardian_dns.overrides import client_target, edit_overrides
    from guardian_dns.usage import Override, Overrides

    if args.category is not None:
        raise AdminEditError("--category and --for: a temporary block is for a group or a device")
    try:
        seconds = _duration(args.duration)
        client = None if args.client is None else client_target(args.client)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise AdminEditError(str(exc)) from None
    group = _group(config, args.group)
    names = [check_name(n) for n in args.names]
    if client is not None:
        targets = [("client", client)]
    elif group is not None:
        targets = [("group", group)]
    else:
        targets = [("group", g) for g in [DEFAULT_GROUP, *(g.name for g in config.policy.groups)]]
    now = time.time()

    def change(ov: Overrides) -> list[Override]:
        return [
            ov.add("block", tk, target, name, now, seconds / 60)  # type: ignore[arg-type]
            for tk, target in targets
            for name in names
        ]

    added = edit_overrides(state_dir(config.server.state_dir, config.base_dir), now, change)
    scope = f"client {client}" if client else f"group {group}" if group else "every group"
    _audit(config, args, "ok", f"blocked {', '.join(names)} for {scope} for {args.duration}")
    if args.json:
        print(json.dumps({"added": [o.as_json() for o in added]}, indent=2))
    else:
        print(
            f"blocked {', '.join(names)} for {scope} for {args.duration}; "
            f"ids {', '.join(o.id for o in added)} (end early: guardian-dns resume ID)"
        )
    return 0


def _remove(config: Config, args: argparse.Namespace) -> int:
    group = _group(config, args.group)
    category = _category(config, args.category)
    names = [check_name(n) for n in args.names]
    directory = admin_dir(config)

    def change(e: adminlists.Edit) -> dict[str, list[str]]:
        if group is not None:
            files = [file_name("allow", group), file_name("block", group)]
        elif category is not None:
            files = [file_name("block", None, category)]
        else:
            files = e.files()
        removed: dict[str, list[str]] = {}
        for f in files:
            for n in names:
                if e.remove(f, n):
                    removed.setdefault(n, []).append(f)
        return removed

    removed = adminlists.edit(directory, change)
    missing = [n for n in names if n not in removed]
    _audit(
        config,
        args,
        "ok" if removed else "refused",
        f"removed {', '.join(removed) or 'nothing'}",
    )
    if args.json:
        print(json.dumps({"removed": removed, "not_found": missing}, indent=2))
    else:
        for n, files in removed.items():
            print(f"removed {n} from {', '.join(files)}")
        for n in missing:
            print(f"{n}: not in any admin file" + (" of that scope" if group or category else ""))
    return 0 if removed else 1


def _list(config: Config, args: argparse.Namespace) -> int:
    names = adminlists.load(admin_dir(config))
    rows = []
    for e in names.entries:
        if args.which == "blocked" and e.action != "block":
            continue
        if args.which == "allowed" and e.action != "allow":
            continue
        if args.group is not None and e.group not in (None, args.group):
            continue
        rows.append(
            {
                "name": e.name,
                "action": e.action,
                "group": e.group,
                "category": e.category,
                "where": f"{e.file}:{e.line}",
                "comment": e.comment,
            }
        )
    if args.json:
        print(json.dumps({"entries": rows, "problems": list(names.problems)}, indent=2))
        return 0
    if not rows:
        print(f"no admin entries ({admin_dir(config)})")
    for r in rows:
        scope = (
            f"group {r['group']}"
            if r["group"]
            else (f"category {r['category']}" if r["category"] else "everyone")
        )
        comment = f"  # {r['comment']}" if r["comment"] else ""
        print(f"{r['action']:<6} {r['name']:<40} {scope:<20} {r['where']}{comment}")
    for p in names.problems:
        print(f"warning: {p}", file=sys.stderr)
    return 0


def _audit(config: Config, args: argparse.Namespace, result: str, detail: str) -> None:
    """Every change and refusal goes to the audit log (audit.py), when it is there."""
    try:
        from guardian_dns import audit
        from guardian_dns.compile import state_dir
    except ImportError:
        return
    record: Any = getattr(audit, "record", None)
    if record is None:
        return
    directory = state_dir(config.server.state_dir, config.base_dir)
    fields = {
        k: v
        for k, v in vars(args).items()
        if k in ("names", "group", "category", "which") and v is not None
    }
    warning = record(directory, args.verb, fields, result, detail, getattr(args, "comment", None))
    if warning:
        print(f"guardian-dns: warning: {warning}", file=sys.stderr)


__all__ = ["add_verbs", "run"]
