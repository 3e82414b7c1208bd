"""The snapshot: everything that can change at run time, built aside and swapped in one reference.

What it decides: whether a configuration and its lists can be put in force (build fully, or raise).
What it reads: the configuration and a domain table already in force (``compile.Result``); the
list files only when no table is handed over (tools and tests: built in this process, not saved).
What it must never do: touch the running server. Reload, a CLI edit or a feed sync builds a new
snapshot while the old one keeps serving; only a complete, validated snapshot is ever swapped in.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from dataclasses import dataclass

from guardian_dns import adminlists
from guardian_dns import compile as compile_mod
from guardian_dns.answer import AnswerPolicy, BlockStyle, BlockTemplates
from guardian_dns.clients import ClientMatcher
from guardian_dns.config import (
    SERVICE_PREFIX,
    Config,
    client_matcher,
    effective_upstreams,
    parse_upstream_url,
)
from guardian_dns.errors import ListError
from guardian_dns.filter import Filter
from guardian_dns.policy import Policies, all_lists, compile_policies
from guardian_dns.regexrules import RegexRules
from guardian_dns.safesearch import SafeSearchTable
from guardian_dns.safesearch import load_table as load_safe_search
from guardian_dns.trie import LIST_BITS, RuleRef

log = logging.getLogger(__name__)

POLICY_CATEGORY = "policy"
MAX_WARNINGS_LOGGED = 5  # per list; the rest are counted, so a broken list cannot flood the log

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ListInfo:
    """What ``lists`` and metrics show about one loaded list."""

    source: str
    category: str
    format: str
    entries: int  # rules that block (allowlists: that allow)
    warnings: int  # lines skipped as unusable
    action: str = "block"


@dataclass(frozen=True)
class Snapshot:
    gen: int
    policies: Policies
    clients: ClientMatcher  # which group each client is in (policy.groups' members)
    safe_search: SafeSearchTable | None  # loaded when a group uses safe search
    admin: adminlists.AdminNames  # the administrator's own names (guardian-dns block/allow)
    config: Config
    filter: Filter
    categories: tuple[str, ...]
    rules: tuple[RuleRef, ...]
    block_style: BlockStyle
    blocks: BlockTemplates
    answer_policy: AnswerPolicy
    allow_networks: tuple[IPNetwork, ...]
    rate_exempt_networks: tuple[IPNetwork, ...]
    acl_drop: bool
    upstreams: tuple[str, ...]
    lists: tuple[ListInfo, ...]
    cname_inspection: bool
    domains: int
    build_seconds: float

    def block_category(self, mask: int) -> int:
        """The category a block is counted and shown under: the lowest list category of the
        mask, or ``policy`` for a block no list made (mask 0)."""
        return self.filter.category_index(mask) if mask else len(self.categories) - 1

    def client_allowed(self, ip: str) -> bool:
        """Whether an address may query us (RFC 5358: never an open resolver)."""
        return _in_any(ip, self.allow_networks)

    def rate_limit_exempt(self, ip: str) -> bool:
        return _in_any(ip, self.rate_exempt_networks)

    @staticmethod
    def rate_bucket(ip: str) -> str:
        """What a client's queries are counted against: its address, or its /64 for IPv6."""
        addr = _address(ip)
        if addr is None or addr.version == 4:
            return ip
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def _in_any(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    addr = _address(ip)
    if addr is None:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


def admin_dir(config: Config) -> str:
    """Where ``guardian-dns block/allow`` keep their files for ``config`` (adminlists.py)."""
    configured = config.blocking.admin_dir
    if configured:
        return os.path.join(config.base_dir, configured)
    if os.path.isfile(config.source):
        return os.path.join(config.base_dir, adminlists.ADMIN_DIR)
    directory = compile_mod.state_dir(config.server.state_dir, config.base_dir)
    return os.path.join(directory, adminlists.ADMIN_DIR)


def build_snapshot(config: Config, gen: int, lists: compile_mod.Result | None = None) -> Snapshot:
    """Put a config and its table together. Raises ListError for a list that cannot be read.

    Without ``lists`` the table is built here and now, in this process and not saved: that is
    for ``check-config`` and tests; the server hands over a table built in a child process.
    """
    start = time.monotonic()
    if lists is None:
        lists = compile_mod.table_in_process(compile_mod.specs_of(all_lists(config)), None)
    trie = lists.table
    infos = []
    rules = []
    for report in lists.reports:
        if not lists.built:
            # Shown when the table was built from these very files; a restart that reuses it
            # says so once instead of repeating every bad line on every start.
            if report.invalid:
                log.info(
                    "%s: %d bad lines skipped (guardian-dns check-config lists them)",
                    report.source,
                    report.invalid,
                )
        else:
            for w in report.warnings[:MAX_WARNINGS_LOGGED]:
                log.warning("skipped bad line: %s", w)
            if report.invalid > MAX_WARNINGS_LOGGED:
                log.warning(
                    "%s: %d more bad lines skipped",
                    report.source,
                    report.invalid - min(report.invalid, MAX_WARNINGS_LOGGED),
                )
        # An allowlist's entries all allow, whatever its syntax calls them.
        entries = report.blocked + report.allowed if report.action == "allow" else report.blocked
        infos.append(
            ListInfo(
                report.source,
                report.category,
                report.format,
                entries,
                report.invalid,
                report.action,
            )
        )
        rules.append(RuleRef(report.source, 0, report.category))
    regex = None
    patterns = trie.meta.get("regexes") or []
    if patterns:
        regex = RegexRules.build(
            [(p, bit, (line << LIST_BITS) | index) for p, bit, index, line in patterns]
        )
    bc = config.blocking
    if bc.block_categories:
        unknown = sorted(set(bc.block_categories) - set(trie.categories))
        if unknown:
            log.warning("block_categories names categories no list has: %s", ", ".join(unknown))
        policy_mask = trie.mask_for(bc.block_categories)
    else:
        # Every list category; services are blocked only for groups that name them.
        policy_mask = trie.mask_for(c for c in trie.categories if not c.startswith(SERVICE_PREFIX))
    local = tuple(d.strip(".").lower() for d in bc.local_domains)
    upstreams = effective_upstreams(config)
    trusted = bool(upstreams) and all(
        parse_upstream_url(u)[1] in ("::1", "localhost")
        or parse_upstream_url(u)[1].startswith("127.")
        for u in upstreams
    )
    cc = config.cache
    # The last category stands for blocks by a policy rule (a group's own block, a schedule that
    # blocks everything, a spent budget's service...): counted and shown as "policy".
    categories = (*(trie.categories or ("default",)), POLICY_CATEGORY)
    style = BlockStyle.from_config(
        bc.mode, bc.ttl, bc.custom_ipv4, bc.custom_ipv6, bc.extended_errors
    )
    safe_search = None
    if any(g.safe_search != "off" for g in config.policy.groups):
        safe_search = load_safe_search()
    admin = adminlists.load(admin_dir(config))
    for problem in admin.problems[:MAX_WARNINGS_LOGGED]:
        log.warning("admin list: %s", problem)
    policies = compile_policies(config, trie, policy_mask, safe_search, admin)
    return Snapshot(
        gen=gen,
        policies=policies,
        clients=client_matcher(config),
        safe_search=safe_search,
        admin=admin,
        config=config,
        filter=Filter(trie, policy_mask, bc.bypass_protection, regex),
        categories=categories,
        rules=tuple(rules),
        block_style=style,
        blocks=BlockTemplates(style, categories),
        answer_policy=AnswerPolicy(
            min_ttl=cc.min_ttl,
            max_ttl=cc.max_ttl,
            negative_max_ttl=cc.negative_max_ttl,
            servfail_ttl=cc.servfail_ttl,
            stale_max_age=cc.stale_max_age if cc.serve_stale else 0,
            rebinding_protection=bc.rebinding_protection,
            local_suffixes=tuple("." + d for d in local),
            local_names=frozenset(local),
            pass_ad=trusted,
        ),
        allow_networks=tuple(
            ipaddress.ip_network(n, strict=False) for n in config.server.allow_networks
        ),
        rate_exempt_networks=tuple(
            ipaddress.ip_network(n, strict=False) for n in config.server.rate_limit_exempt
        ),
        acl_drop=config.server.acl_action == "drop",
        upstreams=upstreams,
        lists=tuple(infos),
        cname_inspection=bc.cname_inspection,
        domains=len(trie),
        build_seconds=lists.seconds + (time.monotonic() - start),
    )


__all__ = ["ListError", "ListInfo", "Snapshot", "build_snapshot"]
