"""The ``guardian-dns`` command: one entry, one function per verb.

What it decides: exit codes and what a person or a script sees on stdout/stderr.
What it must never do: print a traceback for a user error. Errors go to stderr as one line of cause
(plus every config problem, one per line) and a hint; stdout is for results.

Exit codes:
  0  success
  1  error (bad config, cannot listen, a refused edit, a failed sync, ...)
  2  bad command line
  3  the server is not running (status, reload, tail, stats, devices)
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from guardian_dns import __version__
from guardian_dns import report as report_verb
from guardian_dns.config import (
    DEFAULT_GROUP,
    Config,
    admin_config,
    apply_overrides,
    default_config,
    load_config,
)
from guardian_dns.errors import ConfigError, GuardianError
from guardian_dns.publish import add_feed_verbs as _add_feed_verbs
from guardian_dns.publish import run_feed_verb

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from guardian_dns.audit import Result
    from guardian_dns.usage import Override, Overrides, TargetKind

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

EPILOG = """\
examples:
  guardian-dns serve                                  # embedded default config
  guardian-dns serve --config /etc/guardian-dns/guardian.yaml
  guardian-dns serve --listen 127.0.0.1:5353 --upstream udp://127.0.0.1:53 \\
                     --blocklist adult=blocklists/adult.hosts
  guardian-dns check-config /etc/guardian-dns/guardian.yaml
  guardian-dns pause --group kids --for 15m           # no filtering for the kids for 15 minutes
  guardian-dns allow youtube.com --for 45m --group kids
  guardian-dns overrides                              # what is paused or allowed, until when
  guardian-dns resume --all
  guardian-dns explain www.youtube.com --client 192.168.1.23 --at "2026-11-24 21:30"
  guardian-dns audit --since 7d                       # who changed what, from where, and why
  guardian-dns block tiktok.com --group kids --comment "agreed at dinner"
  guardian-dns allow khanacademy.org                  # for every group, permanently
  guardian-dns remove tiktok.com --group kids
  guardian-dns list blocked
  guardian-dns status                                 # exit 0 running, 3 stopped
  guardian-dns tail -f --blocked                      # blocked queries, live
  guardian-dns stats; guardian-dns devices
  guardian-dns report --since 7d --format csv         # blocked attempts for safeguarding
  guardian-dns sync; guardian-dns lists               # feed and subscribed lists
  Pi-hole habits: -b NAME is block NAME, -w NAME is allow NAME

every verb has --help with examples, and --json for scripts.
exit codes: 0 success, 1 error (a refused edit changes nothing), 2 bad command line,
            3 the server is not running (status, reload, tail, stats, devices)
signals: SIGHUP reloads (a bad config or list keeps the old one serving), SIGTERM/SIGINT stop
"""


# Pi-hole's flags, accepted with a hint (its users type them from habit).
PIHOLE_FLAGS = {"-b": "block", "-w": "allow"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardian-dns",
        description="Guardian DNS: a parental-control DNS filter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"guardian-dns {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    s = sub.add_parser(
        "serve",
        help="run the DNS server",
        description="Run the DNS server in the foreground. Flags override the config file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded one)")
    s.add_argument("--listen", action="append", default=[], metavar="ADDR:PORT", help="repeatable")
    s.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        help="udp://H:P, tcp://H:P or tls://H:P#name; repeatable",
    )
    s.add_argument(
        "--blocklist",
        action="append",
        default=[],
        metavar="[CATEGORY=]FILE",
        help="repeatable; replaces the config's lists",
    )
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    c = sub.add_parser(
        "check-config",
        help="validate a config file and its lists without starting anything",
        description="Load FILE with the server's own loader; print every problem; exit 1 if any.",
    )
    c.add_argument("file", metavar="FILE")
    _add_policy_verbs(sub)
    _add_feed_verbs(sub)
    from guardian_dns import sync

    sync.add_verbs(sub)
    report_verb.add_verbs(sub)
    from guardian_dns import manage

    manage.add_verbs(sub)
    from guardian_dns import edits

    edits.add_verbs(sub)
    sub.add_parser(
        "completion",
        help="print the bash completion script",
        description="Print the bash completion script (shipped as "
        "deploy/bash-completion/guardian-dns; the installer puts it in place).",
    )
    from guardian_dns import audit

    audit.add_verbs(sub)
    return p


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config) if args.config else default_config()
    return apply_overrides(
        cfg, listen=args.listen, upstreams=args.upstream, blocklists=args.blocklist
    )


def _serve(args: argparse.Namespace) -> int:
    from guardian_dns.server import run_server, write_ready

    try:
        cfg = _load(args)
    except ConfigError as exc:
        for prob in exc.problems:
            print(f"guardian-dns: {prob}", file=sys.stderr)
        print(
            "hint: fix the lines above, then run 'guardian-dns check-config FILE'", file=sys.stderr
        )
        return EXIT_ERROR
    level = (args.log_level or cfg.logging.level).upper()
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ready = write_ready(args.ready_fd) if args.ready_fd is not None else None
    try:
        return run_server(cfg, lambda: _load(args), ready)
    except GuardianError as exc:
        print(f"guardian-dns: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    from guardian_dns.snapshot import build_snapshot

    try:
        cfg = load_config(args.file)
        # The lists are part of the config: parse them too (no sockets, no state written).
        snap = build_snapshot(cfg, 0)
    except ConfigError as exc:
        for prob in exc.problems:
            print(prob, file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return EXIT_ERROR
    except GuardianError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    warnings = sum(info.warnings for info in snap.lists)
    print(
        f"{args.file}: OK ({snap.domains} domains from {len(snap.lists)} lists, "
        f"{warnings} bad list lines skipped)"
    )
    return EXIT_OK


# --- pause, allow, resume, overrides, explain ------------------------------------------------
#
# Every one takes --config (for the state directory and the groups) and --json. On success stdout
# holds the result (one JSON object with --json); on failure stderr says why and stdout is empty.

PAUSE_EPILOG = """\
examples:
  guardian-dns pause --group kids                     # 15 minutes, the default
  guardian-dns pause --client 192.168.1.23 --for 1h30m
  guardian-dns pause --client aa:bb:cc:dd:ee:01 --for 2h --who "dad"
  guardian-dns pause --group kids --for 15m --json
  guardian-dns pause --group kids --for 1h --comment "school trip, no filter on the bus"

A second pause of the same target replaces the first (its time is not added).
Durations: 90s, 45m, 2h, 1h30m, 1d; at least 1 minute, at most 7 days.
exit codes: 0 paused, 1 error (unknown group, bad config, state file unusable), 2 bad command line
"""

ALLOW_EPILOG = """\
examples:
  guardian-dns allow youtube.com --for 45m --group kids
  guardian-dns allow khanacademy.org kastatic.org --for 2h --client 192.168.1.23
  guardian-dns allow youtube.com --for 1h --group kids --json
  guardian-dns allow scratch.mit.edu --for 2h --group kids --comment "ticket 4411, art class"

An allow covers the name and every name below it (youtube.com covers www.youtube.com).
Allowing the same name for the same target again replaces the earlier allow.
Permanent allows are not available yet: --for is required.
exit codes: 0 allowed, 1 error (a bad name: nothing is written), 2 bad command line
"""

RESUME_EPILOG = """\
examples:
  guardian-dns resume 3f9a1c2e                        # one override, by the id pause/allow printed
  guardian-dns resume --group kids                    # every pause and allow of the group
  guardian-dns resume --client 192.168.1.23
  guardian-dns resume --all --comment "trip is over"

exit codes: 0 ended, 1 nothing matched (nothing is changed), 2 bad command line
"""

OVERRIDES_EPILOG = """\
examples:
  guardian-dns overrides
  guardian-dns overrides --config /etc/guardian-dns/guardian.yaml --json

exit codes: 0 listed (also when there are none), 1 error (bad config, unreadable state file)
"""

EXPLAIN_EPILOG = """\
examples:
  guardian-dns explain www.youtube.com --client 192.168.1.23
  guardian-dns explain roblox.com --group kids --at "2026-11-24 21:30"
  guardian-dns explain example.com --client aa:bb:cc:dd:ee:01 --at 07:15 --json

It builds the lists in this process and asks the server's own decision function, with the
overrides in force at that instant. It cannot know a client's budget use today: a name blocked
only by a budgeted category shows as allowed while the budget lasts.
exit codes: 0 answered (whatever the verdict), 1 config or list error, 2 bad command line
(a bad name, a bad --at, an unknown group)
"""

_DURATION_RE: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
DEFAULT_PAUSE_SECONDS: Final = 15 * 60


class _Refused(Exception):
    """A policy verb cannot do what was asked: the message for stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def _duration(text: str) -> float:
    """``--for``: seconds, from ``90s``, ``45m``, ``2h``, ``1h30m`` or ``1d``."""
    from guardian_dns.usage import MAX_OVERRIDE_MINUTES

    m = _DURATION_RE.match(text.strip().lower())
    if m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration such as 15m, 2h, 1h30m or 90s"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 60:
        raise argparse.ArgumentTypeError(f"{text!r}: an override lasts at least 1 minute")
    if total > MAX_OVERRIDE_MINUTES * 60:
        raise argparse.ArgumentTypeError(f"{text!r}: an override lasts at most 7 days (7d)")
    return float(total)


def _client_arg(text: str) -> str:
    from guardian_dns.overrides import client_target

    try:
        return client_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _comment_arg(text: str) -> str:
    from guardian_dns.audit import MAX_COMMENT

    if len(text) > MAX_COMMENT:
        raise argparse.ArgumentTypeError(f"at most {MAX_COMMENT} characters")
    return text


def _add_policy_verbs(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config: the groups and the state directory (default: the embedded one)",
    )
    common.add_argument("--json", action="store_true", help="print the result as one JSON object")
    raw = argparse.RawDescriptionHelpFormatter

    def target(p: argparse.ArgumentParser, required: bool) -> None:
        g = p.add_mutually_exclusive_group(required=required)
        g.add_argument(
            "--client", type=_client_arg, metavar="IP|MAC", help="one device, by address or MAC"
        )
        g.add_argument("--group", metavar="GROUP", help="every device of a group")

    who_help = "who did it, for the overrides list (default: $SUDO_USER or the login user)"
    comment_help = "why, for the audit log ('guardian-dns audit' shows it)"
    p = sub.add_parser(
        "pause",
        parents=[common],
        help="stop filtering for a device or a group for a while",
        description="Stop all filtering for one device or one group, for a while.",
        epilog=PAUSE_EPILOG,
        formatter_class=raw,
    )
    p.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        default=float(DEFAULT_PAUSE_SECONDS),
        metavar="DURATION",
        help="how long (default 15m)",
    )
    target(p, True)
    p.add_argument("--who", metavar="TEXT", help=who_help)
    p.add_argument("--comment", type=_comment_arg, metavar="TEXT", help=comment_help)

    a = sub.add_parser(
        "allow",
        parents=[common],
        help="let names through for a device or a group for a while",
        description="Let NAME and every name below it through, for a while.",
        epilog=ALLOW_EPILOG,
        formatter_class=raw,
    )
    a.add_argument("names", nargs="+", metavar="NAME", help="a domain such as youtube.com")
    a.add_argument("--for", dest="duration", type=_duration, metavar="DURATION", help="how long")
    target(a, False)
    a.add_argument("--who", metavar="TEXT", help=who_help)
    a.add_argument("--comment", type=_comment_arg, metavar="TEXT", help=comment_help)

    r = sub.add_parser(
        "resume",
        parents=[common],
        help="end pauses and allows before their time",
        description="End pauses and temporary allows: by id, by device or group, or all.",
        epilog=RESUME_EPILOG,
        formatter_class=raw,
    )
    r.add_argument("ids", nargs="*", metavar="ID", help="ids as 'overrides' lists them")
    target(r, False)
    r.add_argument("--all", action="store_true", help="every pause and allow in force")
    r.add_argument("--comment", type=_comment_arg, metavar="TEXT", help=comment_help)

    sub.add_parser(
        "overrides",
        parents=[common],
        help="list the pauses and temporary allows in force",
        description="List the pauses and temporary allows in force, with when each ends.",
        epilog=OVERRIDES_EPILOG,
        formatter_class=raw,
    )

    e = sub.add_parser(
        "explain",
        parents=[common],
        help="say why a name is blocked or allowed for a device at a time",
        description="Why NAME gets its answer: client, group, schedule, overrides, list rules.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=raw,
    )
    e.add_argument("name", metavar="NAME", help="the name asked for, such as www.youtube.com")
    e.add_argument("--client", type=_client_arg, metavar="IP|MAC", help="the asking device")
    e.add_argument("--group", metavar="GROUP", help="explain for this group (wins over --client)")
    e.add_argument(
        "--at",
        metavar="TIME",
        help="local time in the policy's zone, '2026-11-24 21:30' or '21:30' (default: now)",
    )


def _run_policy_verb(args: argparse.Namespace, handler: Callable[[argparse.Namespace], int]) -> int:
    """The CLI edge of the policy verbs: every error becomes a message and an exit code.

    Every run of a verb that changes something (``_AUDITED``) is recorded in the audit log, the
    refused and failed ones too; a handler that changed something says what in
    ``args.audit_detail``.
    """
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    result: Result = "error"
    detail = "did not finish"
    try:
        code = handler(args)
        result, detail = "ok", getattr(args, "audit_detail", "")
        return code
    except _Refused as exc:
        print(f"guardian-dns {args.verb}: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        result, detail = "refused", str(exc)
        return exc.code
    except ConfigError as exc:
        for prob in exc.problems:
            print(f"guardian-dns: {prob}", file=sys.stderr)
        print(
            "hint: fix the lines above, then run 'guardian-dns check-config FILE'", file=sys.stderr
        )
        return EXIT_ERROR  # not audited: with no config there is no state directory to write to
    except GuardianError as exc:
        print(f"guardian-dns {args.verb}: {exc}", file=sys.stderr)
        detail = str(exc)
        return EXIT_ERROR
    except OSError as exc:  # the state directory itself (its owner cannot be taken on, ...)
        print(f"guardian-dns {args.verb}: {exc}", file=sys.stderr)
        detail = str(exc)
        return EXIT_ERROR
    finally:
        if args.verb in _AUDITED:
            _audit(args, result, detail)


_AUDITED: Final = frozenset({"pause", "allow", "resume"})


def _audit(args: argparse.Namespace, result: Result, detail: str) -> None:
    """Record this run; a log that cannot be written is a warning, never a changed exit code."""
    from guardian_dns import audit

    try:
        directory = _state_directory(_policy_config(args))
    except (GuardianError, OSError):
        return  # the config cannot be loaded: nothing was changed, and no state directory known
    warning = audit.record(directory, args.verb, audit.args_of(args), result, detail, args.comment)
    if warning is not None:
        applied = "change applied, but " if result == "ok" else ""
        print(f"guardian-dns {args.verb}: warning: {applied}{warning}", file=sys.stderr)


def _policy_config(args: argparse.Namespace) -> Config:
    return admin_config(args.config)


def _state_directory(cfg: Config) -> str:
    from guardian_dns.compile import state_dir

    return state_dir(cfg.server.state_dir, cfg.base_dir)


def _zone(cfg: Config) -> ZoneInfo:
    """The policies' zone (as ``policy.compile_policies`` picks it), without building lists."""
    from zoneinfo import ZoneInfo

    from guardian_dns.policy import system_timezone

    return ZoneInfo(cfg.policy.timezone) if cfg.policy.timezone else system_timezone()


def _group_names(cfg: Config) -> list[str]:
    names = [g.name for g in cfg.policy.groups]
    return names if DEFAULT_GROUP in names else [DEFAULT_GROUP, *names]


def _target(args: argparse.Namespace, cfg: Config) -> tuple[TargetKind, str]:
    """(target kind, target) of --client/--group; a group must exist in the config."""
    if args.client is not None:
        return "client", str(args.client)
    known = _group_names(cfg)
    if args.group not in known:
        close = difflib.get_close_matches(args.group, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise _Refused(f"no group {args.group!r} in {cfg.source} ({hint}known: {', '.join(known)})")
    return "group", str(args.group)


def _who(args: argparse.Namespace) -> str | None:
    from guardian_dns.usage import MAX_WHO

    if args.who is not None:
        if len(args.who) > MAX_WHO:
            raise _Refused(f"--who: at most {MAX_WHO} characters", EXIT_USAGE)
        return args.who or None
    user = os.environ.get("SUDO_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no login name and no passwd entry (some containers)
            user = f"uid {os.getuid()}"
    if os.environ.get("SSH_CONNECTION"):
        user += " via ssh"
    return user[:MAX_WHO]


def _override_json(o: Override, tz: ZoneInfo, now: float) -> dict[str, Any]:
    from datetime import datetime

    return {
        **o.as_json(),
        "expires_local": datetime.fromtimestamp(o.expires, tz).isoformat(),
        "remaining_seconds": max(0.0, round(o.expires - now, 3)),
    }


def _ends(o: Override, tz: ZoneInfo, now: float) -> str:
    from guardian_dns.explain import from_now, local_time

    return f"{local_time(o.expires, tz)}, {from_now(o.expires, now)}"


def _until(o: Override, tz: ZoneInfo) -> str:
    from guardian_dns.explain import local_time

    return local_time(o.expires, tz)


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _config_flag(args: argparse.Namespace) -> str:
    return f" --config {args.config}" if args.config else ""


def _print_json(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def _end_same(
    ov: Overrides, now: float, kind: str, tk: str, target: str, domain: str | None
) -> list[str]:
    """End the overrides a new one replaces (same kind, target and domain); their ids."""
    same = [
        o.id
        for o in ov.active(now)
        if (o.kind, o.target_kind, o.target, o.domain) == (kind, tk, target, domain)
    ]
    for override_id in same:
        ov.remove(override_id)
    return same


def _pause(args: argparse.Namespace) -> int:
    from guardian_dns.overrides import edit_overrides, overrides_path

    cfg = _policy_config(args)
    tk, target = _target(args, cfg)
    who = _who(args)
    directory = _state_directory(cfg)
    now = time.time()

    def change(ov: Overrides) -> tuple[Override, list[str]]:
        replaced = _end_same(ov, now, "pause", tk, target, None)
        return ov.add("pause", tk, target, None, now, args.duration / 60, who), replaced

    new, replaced = edit_overrides(directory, now, change)
    tz = _zone(cfg)
    args.audit_detail = f"paused {tk} {target!r} until {_until(new, tz)}; id {new.id}"
    if args.json:
        _print_json(
            {
                "added": [_override_json(new, tz, now)],
                "replaced": replaced,
                "file": overrides_path(directory),
            }
        )
        return EXIT_OK
    print(f"paused filtering for {tk} {target!r} until {_ends(new, tz, now)}; id {new.id}")
    if replaced:
        print(f"(replaces {', '.join(replaced)})")
    print(f"end it early: guardian-dns resume {new.id}{_config_flag(args)}")
    return EXIT_OK


def _allow(args: argparse.Namespace) -> int:
    from guardian_dns.overrides import edit_overrides, overrides_path
    from guardian_dns.usage import check_domain

    if args.duration is None:
        raise _Refused(
            "permanent allows are not available yet",
            EXIT_USAGE,
            hint=f"allow it for a while: guardian-dns allow {args.names[0]} --for 45m ...",
        )
    domains: list[str] = []
    bad: list[str] = []
    for text in args.names:
        name = text.strip().lower()
        name = name[:-1] if name.endswith(".") else name
        try:
            check_domain(name)
        except ValueError as exc:
            bad.append(str(exc))
            continue
        if name not in domains:
            domains.append(name)
    if bad:
        raise _Refused("; ".join(bad) + " (nothing was allowed)")
    cfg = _policy_config(args)
    tk, target = _target(args, cfg)
    who = _who(args)
    directory = _state_directory(cfg)
    now = time.time()

    def change(ov: Overrides) -> tuple[list[Override], list[str]]:
        added, replaced = [], []
        for domain in domains:
            replaced += _end_same(ov, now, "allow", tk, target, domain)
            added.append(ov.add("allow", tk, target, domain, now, args.duration / 60, who))
        return added, replaced

    added, replaced = edit_overrides(directory, now, change)
    tz = _zone(cfg)
    args.audit_detail = f"allowed {', '.join(domains)} for {tk} {target!r} until " + (
        f"{_until(added[0], tz)}; id {' '.join(o.id for o in added)}"
    )
    if args.json:
        _print_json(
            {
                "added": [_override_json(o, tz, now) for o in added],
                "replaced": replaced,
                "file": overrides_path(directory),
            }
        )
        return EXIT_OK
    for o in added:
        print(f"allowed {o.domain} for {tk} {target!r} until {_ends(o, tz, now)}; id {o.id}")
    if replaced:
        print(f"(replaces {', '.join(replaced)})")
    ids = " ".join(o.id for o in added)
    print(f"end it early: guardian-dns resume {ids}{_config_flag(args)}")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    from guardian_dns.explain import override_text
    from guardian_dns.overrides import edit_overrides

    ids = list(dict.fromkeys(i.strip().lower() for i in args.ids))
    has_target = args.client is not None or args.group is not None
    if sum((bool(ids), has_target, args.all)) != 1:
        raise _Refused(
            "name what to end: IDs, --client or --group, or --all (one of them)", EXIT_USAGE
        )
    cfg = _policy_config(args)
    tk, target = ("client", args.client) if args.client is not None else ("group", args.group)
    directory = _state_directory(cfg)
    now = time.time()

    def change(ov: Overrides) -> tuple[list[Override], list[str]]:
        active = ov.active(now)
        if ids:
            missing = [i for i in ids if ov.get(i) is None]
            if missing:
                return [], missing  # all or nothing: a typo must not end half of what was meant
            chosen = [o for o in active if o.id in ids]
        elif args.all:
            chosen = active
        else:
            chosen = [o for o in active if o.target_kind == tk and o.target == target]
        for o in chosen:
            ov.remove(o.id)
        return chosen, []

    ended, missing = edit_overrides(directory, now, change)
    listing = f"guardian-dns overrides{_config_flag(args)} lists them"
    if missing:
        raise _Refused(
            f"no override in force with id {', '.join(missing)}; nothing was ended", hint=listing
        )
    if not ended:
        what = "in force" if args.all else f"for {tk} {target!r}"
        raise _Refused(f"no pause or allow {what}", hint=listing)
    tz = _zone(cfg)
    args.audit_detail = "ended " + "; ".join(f"{o.id}: {override_text(o)}" for o in ended)
    if args.json:
        _print_json({"ended": [_override_json(o, tz, now) for o in ended]})
        return EXIT_OK
    for o in ended:
        print(f"ended {o.id}: {override_text(o)} (it was to end {_ends(o, tz, now)})")
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> int:
    from guardian_dns.explain import from_now, local_time
    from guardian_dns.overrides import overrides_path, read_overrides

    cfg = _policy_config(args)
    directory = _state_directory(cfg)
    now = time.time()
    ov, error = read_overrides(directory, now)
    if error is not None:
        raise _Refused(error, hint="fix or delete the file; pause and allow refuse to replace it")
    active = ov.active(now)
    tz = _zone(cfg)
    if args.json:
        _print_json(
            {
                "overrides": [_override_json(o, tz, now) for o in active],
                "file": overrides_path(directory),
                "now": now,
            }
        )
        return EXIT_OK
    if not active:
        print("no pauses or temporary allows in force")
        return EXIT_OK
    rows = [("ID", "KIND", "TARGET", "DOMAIN", "ENDS", "", "WHO")]
    for o in active:
        rows.append(
            (
                o.id,
                o.kind,
                f"{o.target_kind} {o.target}",
                o.domain or "-",
                local_time(o.expires, tz),
                from_now(o.expires, now),
                o.who or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from guardian_dns import explain as ex
    from guardian_dns.overrides import read_overrides
    from guardian_dns.safesearch import load_table
    from guardian_dns.snapshot import build_snapshot

    try:
        name = ex.normalise_name(args.name)
    except ValueError as exc:
        raise _Refused(str(exc), EXIT_USAGE) from None
    cfg = _policy_config(args)
    snap = build_snapshot(cfg, 0)
    policies = snap.policies
    notes: list[str] = []
    try:
        if args.group is not None:
            ex.find_group(policies, args.group)
        now = time.time()
        t = now
        if args.at is not None:
            t, note = ex.parse_at(args.at, policies.tz, now)
            if note:
                notes.append(note)
    except ValueError as exc:
        raise _Refused(str(exc), EXIT_USAGE) from None
    neighbours: dict[str, str] = {}
    if args.client is not None and snap.clients.uses_macs and _is_address(args.client):
        neighbours, note = ex.read_neighbours(cfg.policy.neighbour_table)
        if note:
            notes.append(note)
    overrides, error = read_overrides(_state_directory(cfg), t)
    if error is not None:
        notes.append(f"overrides not applied: {error}")
    table = None
    if any(g.safe_search != "off" for g in policies.groups):
        table = load_table()
    explanation = ex.explain(
        snap,
        name,
        t,
        client=args.client,
        group=args.group,
        neighbours=neighbours,
        overrides=overrides,
        safe_search=table,
        notes=notes,
    )
    if args.json:
        _print_json(explanation.as_json())
    else:
        print(ex.render(explanation))
    return EXIT_OK


_POLICY_VERBS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "pause": _pause,
    "allow": _allow,
    "resume": _resume,
    "overrides": _overrides,
    "explain": _explain,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PIHOLE_FLAGS:
        verb = PIHOLE_FLAGS[argv[0]]
        print(f"hint: 'pihole {argv[0]}' is 'guardian-dns {verb}' here", file=sys.stderr)
        argv[0] = verb
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "completion":
        from guardian_dns.completion import render

        sys.stdout.write(render(parser))
        return EXIT_OK
    if args.verb in ("block", "deny", "remove", "list"):
        from guardian_dns import edits

        return edits.run(args)
    if args.verb == "allow" and args.duration is None:
        from guardian_dns import edits

        return edits.run(args)  # a permanent allow: the admin files
    if args.verb == "allow" and args.client is None and args.group is None:
        print("guardian-dns: a temporary allow needs --group G or --client X", file=sys.stderr)
        return EXIT_USAGE
    if args.verb == "serve":
        return _serve(args)
    if args.verb == "check-config":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        return _check_config(args)
    if args.verb == "feed":
        return run_feed_verb(args)
    if args.verb == "report":
        return report_verb.run(args)
    if args.verb in ("status", "reload", "tail", "stats", "devices"):
        from guardian_dns import manage

        return manage.run(args)
    if args.verb in ("sync", "lists"):
        from guardian_dns import sync

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        return sync.run(args)
    if args.verb == "audit":
        from guardian_dns import audit

        return audit.run(args)
    handler = _POLICY_VERBS.get(args.verb)
    if handler is not None:
        return _run_policy_verb(args, handler)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
