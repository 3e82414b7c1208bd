"""The ``guardian-dns`` command: one entry, one function per verb.

What it decides: exit codes and what a person or a script sees on stdout/stderr.
What it must never do: print a traceback for a user error. Errors go to stderr as one line of cause
(plus every config problem, one per line) and a hint; stdout is for results.

Exit codes:
  0  success
  1  error (bad config, cannot listen, ...)
  2  bad command line
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from guardian_dns import __version__
from guardian_dns.config import Config, apply_overrides, default_config, load_config
from guardian_dns.errors import ConfigError, GuardianError

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

exit codes: 0 success, 1 error, 2 bad command line
signals: SIGHUP reloads (a bad config or list keeps the old one serving), SIGTERM/SIGINT stop
"""


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "serve":
        return _serve(args)
    if args.verb == "check-config":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        return _check_config(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
