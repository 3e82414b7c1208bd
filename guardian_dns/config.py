"""Configuration: one frozen dataclass per YAML section, and the strict loader that fills them.

What it decides: whether a configuration file can be used, and every value the server runs with.
What it reads: the YAML file, and /etc/resolv.conf when no upstream is configured.
What it must never do: start anything, bind anything, or keep going on a doubtful key. Unknown and
duplicate keys are errors (PyYAML silently keeps the last duplicate), and every problem is reported
at once as ``file:line: section.key: message`` so an administrator fixes them in one pass.

YAML keys are the field names below. Defaults here *are* the embedded default configuration;
``config/guardian.yaml`` spells the same values out (a test keeps the two in step).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import yaml

from guardian_dns import clients as clients_mod
from guardian_dns import lists as lists_mod
from guardian_dns import schedule as schedule_mod
from guardian_dns import services as services_mod
from guardian_dns.errors import ConfigError, GuardianError, Problem

# Loopback, RFC 1918, CGNAT is deliberately absent (a home LAN never uses it), link-local, ULA.
DEFAULT_ALLOW_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)

# Names whose private answers are expected (home routers, mDNS-style and RFC 8375 names).
DEFAULT_LOCAL_DOMAINS: tuple[str, ...] = ("lan", "local", "home.arpa", "internal", "localdomain")

BLOCK_MODES: tuple[str, ...] = ("nxdomain", "null_ip", "custom_ip", "refused")
ACL_ACTIONS: tuple[str, ...] = ("refuse", "drop")
LIST_FORMATS: tuple[str, ...] = ("auto", *lists_mod.FORMATS)
LIST_ACTIONS: tuple[str, ...] = ("block", "allow")
ALL_CATEGORIES: Final = "*"  # an allowlist's category meaning "every category"
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
UPSTREAM_SCHEMES: tuple[str, ...] = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class ServerConfig:
    """Where we listen and who may ask."""

    listen: tuple[str, ...] = ("127.0.0.1:5353",)  # "ADDR:PORT" or "[V6]:PORT", UDP and TCP each
    allow_networks: tuple[str, ...] = DEFAULT_ALLOW_NETWORKS
    acl_action: str = "refuse"  # refuse | drop, for clients outside allow_networks
    udp_max_size: int = 1232  # DNS Flag Day 2020; 512..4096
    tcp_idle_timeout: float = 10.0  # seconds without a complete query before we close
    tcp_max_connections_per_client: int = 16
    tcp_max_connections: int = 512
    tcp_max_queries_in_flight: int = 64  # per connection: pipelining, but bounded
    rate_limit: int = 1000  # UDP queries per second per client (IPv6: per /64); 0 = off
    rate_limit_exempt: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # e.g. a local dnsmasq
    # Where the compiled domain table (and later feed state) lives. None: $STATE_DIRECTORY (set
    # by systemd's StateDirectory=), else $XDG_STATE_HOME/guardian-dns or ~/.local/state/...
    state_dir: str | None = None
    # The CLI's channel to the running server (control.py): a Unix socket, never a network
    # port. None: $RUNTIME_DIRECTORY/control.sock (systemd), else <state_dir>/control.sock.
    control_socket: str | None = None
    control_group: str | None = None  # e.g. guardian-admin: its members may use the socket
    # Local forwarders whose queries may name the client in EDNS (dnsmasq's add-mac and
    # add-subnet, edns_client.py); empty: nobody's. OpenWrt beside dnsmasq: 127.0.0.1 and ::1.
    trusted_forwarders: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamConfig:
    """Where misses go. Empty ``servers`` means the nameservers of /etc/resolv.conf."""

    servers: tuple[str, ...] = ()  # udp://H:P, tcp://H:P, tls://H:P#server-name; ports 53/853
    timeout: float = 3.0  # total budget per client query, all attempts included
    attempt_timeout: float = 1.0  # one attempt on one server before failing over
    down_backoff: float = 5.0  # seconds a failing server is tried last
    tls_ca_file: str | None = None  # CA bundle for tls:// upstreams (default: the system's)


@dataclass(frozen=True)
class CacheConfig:
    """Answer cache, negative and failure caching, serve-stale (RFC 2308, 9520, 8767)."""

    size: int = 20000  # entries (LRU)
    min_ttl: int = 0
    max_ttl: int = 86400
    negative_max_ttl: int = 3600
    servfail_ttl: int = 5  # RFC 9520: at least 1 s, at most 5 min
    serve_stale: bool = True
    stale_max_age: int = 86400  # how long past expiry an answer may still be served stale
    stale_answer_ttl: int = 30
    stale_client_timeout: float = 1.8  # answer stale after this long waiting upstream


@dataclass(frozen=True)
class ListConfig:
    """One blocklist file and the category it belongs to."""

    file: str  # relative paths are relative to the config file's directory
    category: str = "default"  # for an allowlist: the category it allows, "*" (default) = all
    format: str = "auto"  # auto (detected from the content) or one of lists.FORMATS
    action: str = "block"  # block | allow
    admin: bool = False  # the administrator's own list: beats every downloaded list
    allow_tld: bool = False  # accept single-label names such as "zip" (a whole TLD)
    url: str | None = None  # a subscription: fetched by `guardian-dns sync`, "file" unused


@dataclass(frozen=True)
class BlockingConfig:
    """What is blocked for the default group, and how a block looks to the client."""

    lists: tuple[ListConfig, ...] = ()
    block_categories: tuple[str, ...] = ()  # empty: every category of every list is blocked
    mode: str = "nxdomain"  # nxdomain | null_ip | custom_ip | refused
    custom_ipv4: str | None = None  # block page address for mode custom_ip
    custom_ipv6: str | None = None
    ttl: int = 5  # short, so an unblock reaches clients fast
    extended_errors: bool = True  # RFC 8914 EDE 15 "Blocked" in blocked answers
    cname_inspection: bool = True
    rebinding_protection: bool = True
    local_domains: tuple[str, ...] = DEFAULT_LOCAL_DOMAINS  # private answers allowed under these
    bypass_protection: bool = True  # DoH canary, resolver.arpa (DDR), iCloud Private Relay
    # The administrator's own allow/block files (adminlists.py; guardian-dns block/allow edit
    # them). None: admin/ beside the config file (the state directory for the embedded config).
    admin_dir: str | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint. Loopback by default: children on the LAN must not read it."""

    enabled: bool = True
    listen: str = "127.0.0.1:9153"
    username: str | None = None  # HTTP basic auth; required when listen is not loopback
    password: str | None = None


@dataclass(frozen=True)
class FeedSettings:
    """The central feed the category lists are kept current from (docs/feed.md), and the checks
    applied to lists subscribed to by URL (``blocking.lists`` entries with ``url:``)."""

    url: str | None = None  # the feed directory (manifest.json under it); None: no feed
    keys: tuple[str, ...] = ()  # trusted public keys: files (relative to the config) or "RW..."
    interval: float = 3600.0  # seconds between syncs, each +- jitter so a campus does not stampede
    jitter: float = 0.2
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_list_bytes: int = 200 * 1024 * 1024
    max_age: float = 7 * 86400.0  # a list older than this is shown (status, metrics) as stale
    ca_file: str | None = None  # a private CA for an https feed (a school's own server)
    categories: tuple[str, ...] = ()  # what the feed publishes, so groups can name them
    subscription_min_lines: int = 100  # a subscribed list with fewer valid entries is refused
    subscription_max_shrink: float = 0.5  # ... and one that shrinks by more than this share


@dataclass(frozen=True)
class QueryLogConfig:
    """In-memory ring buffer of recent decisions; no log line per query."""

    size: int = 10000
    history: bool = True  # hourly counts on disk for 'guardian-dns report' (history.py)
    retention_days: int = 30  # day files older than this are deleted
    anonymise: bool = False  # store a stable pseudonym instead of each client's address
    flush_interval: float = 300.0  # seconds between appends (SD-card wear vs. what a crash loses)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"  # debug | info | warning | error


SAFE_SEARCH_MODES: tuple[str, ...] = ("off", "moderate", "strict")
EVERYTHING: Final = "*"  # a schedule rule's ``block: "*"``: everything but its ``except`` names
SERVICE_PREFIX: Final = "service:"  # in category lists, "service:tiktok" names a blocked service


@dataclass(frozen=True)
class ScheduleRule:
    """What changes for a group while one named schedule is active.

    ``block`` adds categories (or ``service:ID``) during the window; ``("*",)`` blocks every
    name except ``except_names`` (homework time with a study allowlist). ``allow`` removes
    categories during the window (``allow_during``: YouTube on weekend afternoons).
    """

    during: str
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    except_names: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class GroupConfig:
    """One group of clients and the rules they get (a family's "kids", a school's "students")."""

    name: str
    clients: tuple[str, ...] = ()  # addresses, CIDRs, MACs or names from policy.devices
    client_lines: tuple[int, ...] = ()
    filtering: bool = True  # false: nothing blocked at all (the parents' own devices)
    # None: the default group's blocking.block_categories (empty there means every list category)
    block_categories: tuple[str, ...] | None = None
    block_services: tuple[str, ...] = ()  # ids of blocklists/services/*.txt
    safe_search: str = "off"  # off | moderate | strict (YouTube Restricted Mode level)
    allow: tuple[str, ...] = ()  # this group's own allowed domains (and everything below them)
    block: tuple[str, ...] = ()  # this group's own blocked domains
    schedules: tuple[ScheduleRule, ...] = ()
    budgets: tuple[tuple[str, int], ...] = ()  # (category or service:ID, minutes per day)
    line: int = 0


DEFAULT_GROUP: Final = "default"


@dataclass(frozen=True)
class PolicyConfig:
    """Who is who on the network, and what each group may reach when."""

    timezone: str | None = None  # schedules and budgets; None: the system's (TZ, /etc/localtime)
    neighbour_table: str = "/proc/net/arp"  # MAC lookups: a file, or "ip" (ip neigh: IPv6 too)
    neighbour_refresh: float = 10.0  # seconds between reads of the neighbour table
    default_group: str = DEFAULT_GROUP  # what an unknown client gets
    schedules: tuple[tuple[str, tuple[str, ...], int], ...] = ()  # (name, specs, line)
    devices: tuple[tuple[str, tuple[str, ...], int], ...] = ()  # (name, members, line)
    groups: tuple[GroupConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``source`` is the file it came from ("<defaults>" if none)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    blocking: BlockingConfig = field(default_factory=BlockingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    query_log: QueryLogConfig = field(default_factory=QueryLogConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    feed: FeedSettings = field(default_factory=FeedSettings)
    source: str = "<defaults>"
    base_dir: str = "."  # directory relative list paths are resolved against


# ---------------------------------------------------------------------------------------------
# Loader (below): load_config(path) -> Config, default_config() -> Config,
# apply_overrides(cfg, listen=..., upstreams=..., blocklists=...) -> Config,
# system_resolvers(path="/etc/resolv.conf") -> tuple[str, ...]
# ---------------------------------------------------------------------------------------------

# The lists shipped in the repository, relative to its root, and the category each feeds.
REPO_ROOT: Final[Path] = Path(__file__).resolve().parent.parent
BUNDLED_LISTS: Final[tuple[tuple[str, str], ...]] = (
    ("blocklists/adult.hosts", "adult"),
    ("blocklists/gambling.hosts", "gambling"),
    ("blocklists/bypass.txt", "bypass"),
    ("blocklists/bypass-ut1-doh.txt", "bypass"),
    ("blocklists/scam.txt", "scam"),
)
# The "file" of a problem that came from a command-line flag rather than a config file.
COMMAND_LINE: Final = "<command line>"

# Categories end up as metric labels and in the admin UI: short, lowercase, no surprises.
_CATEGORY_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}\Z")


# --- addresses -------------------------------------------------------------------------------


def _split_host_port(text: str) -> tuple[str, str | None]:
    """Split ``H:P``, ``[V6]:P``, ``H`` or ``[V6]``; brackets keep IPv6 colons apart."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']'")
        return host, rest[1:]
    if text.count(":") > 1:
        raise ValueError("an IPv6 address needs brackets, as in [2001:db8::1]:53")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _parse_port(text: str, *, allow_zero: bool = False) -> int:
    if not _PORT_RE.match(text):
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not (1 <= port <= 65535 or (allow_zero and port == 0)):
        raise ValueError(f"port {port} is out of range (1..65535)")
    return port


def _is_hostname(name: str) -> bool:
    name = name[:-1] if name.endswith(".") else name
    return 0 < len(name) <= 253 and all(_LABEL_RE.match(label) for label in name.split("."))


def parse_listen(addr: str) -> tuple[str, int]:
    """Turn ``ADDR:PORT`` into what a socket binds.

    The host must be an explicit IP address: a name could resolve to something else tomorrow, and
    an empty host (``:53``) would mean every interface. A filter must never end up reachable from
    the guest Wi-Fi by accident, so ``0.0.0.0:53`` works only when written out.

    Port 0 (the kernel picks a free port) is accepted here because tests start the daemon with
    ``--listen 127.0.0.1:0`` and learn the port through the readiness report; the config loader
    refuses it, since in a file it is always a mistake (no client could find us).
    """
    try:
        host, port_text = _split_host_port(addr)
        if not host:
            raise ValueError(
                "no address before the port; Guardian DNS never listens on every interface "
                "unless told to (write 0.0.0.0:53 or [::]:53 to mean that)"
            )
        if port_text is None:
            shown = f"[{host}]" if ":" in host else host
            raise ValueError(f"no port (write {shown}:53)")
        port = _parse_port(port_text, allow_zero=True)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{host!r} is not an IP address (a name could change what we bind)"
            ) from None
    except ValueError as exc:
        raise ValueError(f"invalid listen address {addr!r}: {exc}") from None
    return str(ip), port


def parse_upstream_url(url: str) -> tuple[str, str, int, str | None]:
    """Split an upstream URL into (scheme, host, port, TLS server name).

    udp:// and tcp:// need an IP address: resolving a name would need a resolver, and we are the
    resolver. tls:// needs a name to verify the certificate against, either ``#name`` or the host.
    """
    try:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("missing scheme (write udp://, tcp:// or tls:// before the address)")
        scheme = scheme.lower()
        if scheme not in UPSTREAM_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r} (allowed: {', '.join(UPSTREAM_SCHEMES)})")
        rest, has_name, name = rest.partition("#")
        if any(c in rest for c in "/?@ "):
            raise ValueError("only HOST or HOST:PORT may follow the scheme")
        host, port_text = _split_host_port(rest)
        if not host:
            raise ValueError("no host")
        port = _parse_port(port_text) if port_text is not None else (853 if scheme == "tls" else 53)
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            host = str(ip)
        elif scheme != "tls":
            raise ValueError(
                f"{host!r} is not an IP address; {scheme}:// upstreams need one "
                "(a name would need a resolver to find the resolver)"
            )
        elif not _is_hostname(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name")
        server_name: str | None = None
        if has_name:
            if scheme != "tls":
                raise ValueError("'#name' only applies to tls:// upstreams")
            if not _is_hostname(name):
                raise ValueError(f"{name!r} is not a valid TLS server name")
            server_name = name
        elif scheme == "tls":
            if ip is not None:
                raise ValueError(
                    "tls:// needs a server name to check the certificate against "
                    f"(write tls://{rest}#dns.example, or use a host name)"
                )
            server_name = host
    except ValueError as exc:
        raise ValueError(f"invalid upstream {url!r}: {exc}") from None
    return scheme, host, port, server_name


def system_resolvers(
    path: str = "/etc/resolv.conf", *, own_listen: Sequence[str] = ()
) -> tuple[str, ...]:
    """The nameservers the host already uses, as upstream URLs, for when none are configured.

    A nameserver that is one of our own port-53 listen addresses (in ``own_listen``) is skipped:
    a Pi that lists itself in resolv.conf would otherwise forward every query to itself, forever.
    A wildcard listen address on port 53 also catches loopback nameservers. A missing or unreadable
    file gives ``()``; the caller decides whether running without upstreams is acceptable.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    own: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    wildcard = False
    for addr in own_listen:
        try:
            host, port = parse_listen(addr)
        except ValueError:
            continue
        if port == 53:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
            wildcard = wildcard or ip.is_unspecified
            own.add(ip)
    found: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            # The scope (%eth0) is dropped: upstream URLs carry no scope.
            ns = ipaddress.ip_address(words[1].split("%", 1)[0])
        except ValueError:
            continue
        if ns in own or (wildcard and ns.is_loopback):
            continue
        url = f"udp://[{ns}]:53" if ns.version == 6 else f"udp://{ns}:53"
        if url not in found:
            found.append(url)
    return tuple(found)


def effective_upstreams(cfg: Config) -> tuple[str, ...]:
    """The upstreams the server will really use: configured ones win, else the host's own."""
    if cfg.upstream.servers:
        return cfg.upstream.servers
    return system_resolvers(own_listen=cfg.server.listen)


# --- value checks: each returns a message, or None when the value is fine --------------------

_Check = Callable[[Any], str | None]


def _between(lo: int, hi: int) -> _Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v!r}"


def _at_least(lo: int) -> _Check:
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v!r}"


def _above(lo: int) -> _Check:
    return lambda v: None if v > lo else f"must be > {lo}, got {v!r}"


def _feed_url_check(url: str) -> str | None:
    """A feed or subscription URL: http(s), a host, no credentials (they would be logged)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("https", "http"):
        return f"expected an https:// (or http://) URL, got {url!r}"
    if not parts.hostname:
        return f"no host in {url!r}"
    if parts.username or parts.password:
        return "credentials in the URL would be logged; use a URL without them"
    return None


def _one_of(allowed: Sequence[str]) -> _Check:
    shown = ", ".join(allowed)
    return lambda v: None if v in allowed else f"unknown value {v!r} (allowed: {shown})"


def _ip_check(version: int) -> _Check:
    def check(v: str | None) -> str | None:
        if v is None:
            return None
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            ip = None
        if ip is None or ip.version != version:
            return f"invalid IPv{version} address {v!r}"
        return None

    return check


def _message_of(parse: Callable[[str], object]) -> _Check:
    def check(v: str) -> str | None:
        try:
            parse(v)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def _listen_check(v: str) -> str | None:
    try:
        _, port = parse_listen(v)
    except ValueError as exc:
        return str(exc)
    if port == 0:
        return (
            f"invalid listen address {v!r}: port 0 is out of range (1..65535; a random port "
            "is only for --listen in tests)"
        )
    return None


def _network_check(v: str) -> str | None:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            return f"invalid network {v!r} (expected an address or a CIDR such as 192.168.1.0/24)"
        return f"invalid network {v!r}: host bits are set (did you mean {net}?)"
    return None


def _address_check(v: str) -> str | None:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return f"invalid address {v!r} (one IP address such as 127.0.0.1, not a network)"
    return None


def _category_check(v: str) -> str | None:
    if _CATEGORY_RE.match(v):
        return None
    return (
        f"invalid category {v!r} (use up to 32 lowercase letters, digits, '-' and '_'; "
        "categories become metric labels)"
    )


def _domain_check(v: str) -> str | None:
    return None if _is_hostname(v) else f"invalid domain name {v!r}"


def _group_name_check(v: str) -> str | None:
    if _CATEGORY_RE.match(v):
        return None
    return f"invalid group name {v!r} (use up to 32 lowercase letters, digits, '-' and '_')"


def _timezone_check(v: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {v!r} (use an IANA name such as Europe/London)"
    return None


# Per-field value checks, applied after the type is known to be right. Keyed by dotted path.
_CHECKS: Final[dict[str, _Check]] = {
    "server.acl_action": _one_of(ACL_ACTIONS),
    "server.udp_max_size": _between(512, 4096),
    "server.tcp_idle_timeout": _above(0),
    "server.tcp_max_connections_per_client": _at_least(1),
    "server.tcp_max_connections": _at_least(1),
    "server.tcp_max_queries_in_flight": _at_least(1),
    "server.rate_limit": _at_least(0),
    "upstream.timeout": _above(0),
    "upstream.attempt_timeout": _above(0),
    "upstream.down_backoff": _at_least(0),
    "cache.size": _at_least(0),
    "cache.min_ttl": _at_least(0),
    "cache.max_ttl": _at_least(0),
    "cache.negative_max_ttl": _at_least(0),
    "cache.servfail_ttl": _between(1, 300),
    "cache.stale_max_age": _at_least(0),
    "cache.stale_answer_ttl": _at_least(0),
    "cache.stale_client_timeout": _above(0),
    "blocking.mode": _one_of(BLOCK_MODES),
    "blocking.custom_ipv4": _ip_check(4),
    "blocking.custom_ipv6": _ip_check(6),
    "blocking.ttl": _at_least(0),
    "metrics.listen": _listen_check,
    "feed.url": _feed_url_check,
    "feed.interval": _at_least(60),
    "feed.connect_timeout": _above(0),
    "feed.read_timeout": _above(0),
    "feed.max_list_bytes": _at_least(1024),
    "feed.max_age": _above(0),
    "feed.jitter": _between(0, 1),
    "feed.subscription_max_shrink": _between(0, 1),
    "feed.subscription_min_lines": _at_least(0),
    "query_log.size": _at_least(0),
    "query_log.retention_days": _between(1, 3660),
    "query_log.flush_interval": _between(1, 3600),
    "logging.level": _one_of(LOG_LEVELS),
}
# Checks for each item of a list-valued field.
_ITEM_CHECKS: Final[dict[str, _Check]] = {
    "server.listen": _listen_check,
    "server.allow_networks": _network_check,
    "server.rate_limit_exempt": _network_check,
    "server.trusted_forwarders": _address_check,
    "upstream.servers": _message_of(parse_upstream_url),
    "blocking.block_categories": _category_check,
    "blocking.local_domains": _domain_check,
    "feed.categories": _category_check,
}
# Lists that must not be empty, and why.
_NON_EMPTY: Final[dict[str, str]] = {
    "server.listen": "must name at least one address to listen on",
    "server.allow_networks": "must name at least one network (an empty list refuses everyone)",
}


# --- blocklist entries, shared by the file and the --blocklist flag --------------------------


def _split_category(spec: str) -> tuple[str, str]:
    """``CATEGORY=FILE`` or ``FILE``; an ``=`` after a ``/`` belongs to the file name."""
    head, sep, tail = spec.partition("=")
    if sep and "/" not in head:
        return head, tail
    return "default", spec


def _resolve_list_file(file: str, base_dir: str) -> tuple[str, str | None]:
    """Absolute path of a list file, and what is wrong with it (checked now, not at first query)."""
    if not file:
        return file, "must name a file"
    resolved = os.path.abspath(os.path.join(base_dir, file))
    if not os.path.exists(resolved):
        return resolved, f"no such file: {resolved}"
    if not os.path.isfile(resolved):
        return resolved, f"not a regular file: {resolved}"
    return resolved, None


def _listen_clash(listen: Sequence[str], metrics: MetricsConfig) -> str | None:
    """The DNS listener binds TCP too, so the metrics endpoint cannot share an address with it."""
    if not metrics.enabled or metrics.listen not in listen:
        return None
    return f"{metrics.listen} is also a DNS listen address (both bind TCP there)"


def _metrics_auth_problem(metrics: MetricsConfig) -> tuple[str, str] | None:
    """Metrics show what children browse by category: beyond loopback they need a password."""
    if (metrics.username is None) != (metrics.password is None):
        return "metrics.password", "username and password must be set together"
    if not metrics.enabled or metrics.username is not None:
        return None
    try:
        host, _port = parse_listen(metrics.listen)
    except ValueError:
        return None  # reported by the listen check
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        "metrics.listen",
        f"{metrics.listen} is reachable from the network: set metrics.username and "
        "metrics.password (HTTP basic auth), or listen on 127.0.0.1",
    )


# --- the strict YAML loader ------------------------------------------------------------------


class _LineMap(dict[Any, Any]):
    """A YAML mapping that remembers where it and its keys were written, so problems can say so."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int, int]] = []  # (key, first line, repeated line)
        self.bad_keys: list[tuple[int, str]] = []  # (line, message) for keys that cannot be keys


class _LineList(list[Any]):
    """A YAML sequence that remembers the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers and reports duplicate keys instead of dropping one."""


def _construct_map(loader: _StrictLoader, node: yaml.MappingNode) -> _LineMap:
    result = _LineMap(node.start_mark.line + 1)
    # Keys brought in by a merge (<<: *anchor) may be overridden; keys written here may not repeat.
    own = {id(key_node) for key_node, _ in node.value}
    loader.flatten_mapping(node)
    first_seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            result.bad_keys.append((line, f"a {_describe(key)[2:]} cannot be a key"))
            continue
        if id(key_node) in own:
            if key in first_seen:
                result.duplicates.append((key, first_seen[key], line))
                continue
            first_seen[key] = line
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: _StrictLoader, node: yaml.SequenceNode) -> _LineList:
    result = _LineList(node.start_mark.line + 1)
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)
    return result


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_StrictLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _describe(value: Any) -> str:
    """How a wrong value is shown back to the administrator: as YAML would spell it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _join(path: str, key: object) -> str:
    name = key if isinstance(key, str) else _describe(key)  # an unquoted `yes:` key reads "true"
    return f"{path}.{name}" if path else name


def _unknown_key(key: object, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}known: {', '.join(known)})"


_SECTIONS: Final[tuple[str, ...]] = tuple(
    f.name for f in fields(Config) if f.name not in ("source", "base_dir")
)
_LIST_KEYS: Final[tuple[str, ...]] = tuple(f.name for f in fields(ListConfig))
_BAD: Final = object()  # a value that failed its check; the field keeps its default


class _Reader:
    """Walks parsed YAML against the schema, collecting every problem instead of stopping early."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}  # dotted path -> line of its key, for cross-field checks

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, line, path, message))

    def line_of(self, *paths: str) -> int:
        return next((self.lines[p] for p in paths if p in self.lines), 0)

    def keys(
        self, data: _LineMap, path: str, known: Sequence[str]
    ) -> Iterator[tuple[str, Any, int]]:
        """The known keys of a mapping; unknown, duplicate and unusable keys become problems."""
        for line, message in data.bad_keys:
            self.problem(line, path, message)
        for key, first, again in data.duplicates:
            self.problem(
                again,
                _join(path, key),
                f"duplicate key, first at line {first} (YAML would silently keep only the last)",
            )
        for key, value in data.items():
            line = data.key_lines[key]
            if not isinstance(key, str) or key not in known:
                self.problem(line, _join(path, key), _unknown_key(key, known))
                continue
            self.lines[_join(path, key)] = line
            yield key, value, line

    def section(self, value: Any, path: str, line: int, base: Any) -> Any:
        if value is None:  # "server:" with every key commented out: all defaults
            return base
        if not isinstance(value, _LineMap):
            self.problem(line, path, f"expected a mapping, got {_describe(value)}")
            return base
        hints = _hints(type(base))
        changes: dict[str, Any] = {}
        for key, raw, key_line in self.keys(value, path, tuple(hints)):
            converted = self.value(hints[key], raw, _join(path, key), key_line)
            if converted is not _BAD:
                changes[key] = converted
        return replace(base, **changes)

    def value(self, hint: Any, raw: Any, path: str, line: int) -> Any:
        if hint == tuple[ListConfig, ...]:
            return self.lists(raw, path, line)
        if hint == tuple[str, ...]:
            return self.strings(raw, path, line)
        if hint == (str | None) and raw is None:
            return None
        expected = _expect(hint, raw)
        if expected:
            self.problem(line, path, f"expected {expected}, got {_describe(raw)}")
            return _BAD
        check = _CHECKS.get(path)
        message = check(raw) if check else None  # on the raw value: messages echo what was written
        if message:
            self.problem(line, path, message)
            return _BAD
        return float(raw) if hint is float else raw

    def strings(self, raw: Any, path: str, line: int) -> Any:
        if not isinstance(raw, _LineList):
            self.problem(line, path, f"expected a list, got {_describe(raw)}")
            return _BAD
        if not raw and path in _NON_EMPTY:
            self.problem(line, path, _NON_EMPTY[path])
            return _BAD
        check = _ITEM_CHECKS.get(path)
        ok = True
        for i, (item, item_line) in enumerate(zip(raw, raw.item_lines, strict=True)):
            self.lines[f"{path}[{i}]"] = item_line
            message = (
                f"expected a string, got {_describe(item)}"
                if not isinstance(item, str)
                else (check(item) if check else None)
            )
            if message:
                self.problem(item_line, f"{path}[{i}]", message)
                ok = False
        return tuple(raw) if ok else _BAD

    def lists(self, raw: Any, path: str, line: int) -> Any:
        if not isinstance(raw, _LineList):
            self.problem(line, path, f"expected a list, got {_describe(raw)}")
            return _BAD
        entries = (
            self.list_entry(item, f"{path}[{i}]", item_line)
            for i, (item, item_line) in enumerate(zip(raw, raw.item_lines, strict=True))
        )
        return tuple(entry for entry in entries if entry is not None)

    def list_entry(self, item: Any, path: str, line: int) -> ListConfig | None:
        values: dict[str, tuple[Any, int]] = {}
        if isinstance(item, str):
            category, file = _split_category(item)
            values = {"file": (file, line), "category": (category, line)}
        elif isinstance(item, _LineMap):
            for key, raw, key_line in self.keys(item, path, _LIST_KEYS):
                want = bool if key in ("admin", "allow_tld") else str
                if isinstance(raw, want):
                    values[key] = (raw, key_line)
                else:
                    kind = "true or false" if want is bool else "a string"
                    self.problem(
                        key_line, f"{path}.{key}", f"expected {kind}, got {_describe(raw)}"
                    )
            if "file" not in item and "url" not in item:
                self.problem(
                    line, f"{path}.file", "missing (every list entry needs a file or a url)"
                )
            elif "file" in item and "url" in item:
                self.problem(line, f"{path}.url", "a list entry has a file or a url, not both")
        else:
            self.problem(
                line,
                path,
                "expected a mapping {file, category, format, action} or a string "
                f"'[CATEGORY=]FILE', got {_describe(item)}",
            )
            return None
        before = len(self.problems)
        file, fmt, action = "", "auto", "block"
        if "action" in values:
            action, action_line = values["action"]
            message = _one_of(LIST_ACTIONS)(action)
            if message:
                self.problem(action_line, f"{path}.action", message)
        category = ALL_CATEGORIES if action == "allow" else "default"
        if "file" in values:
            file, file_line = values["file"]
            file, message = _resolve_list_file(file, self.base_dir)
            if message:
                self.problem(file_line, f"{path}.file", message)
        url = None
        if "url" in values:
            url, url_line = values["url"]
            message = _feed_url_check(url)
            if message:
                self.problem(url_line, f"{path}.url", message)
        if "category" in values:
            category, category_line = values["category"]
            if category == ALL_CATEGORIES and action != "allow":
                message = "'*' (every category) is for allowlists; a blocklist names one category"
            else:
                message = None if category == ALL_CATEGORIES else _category_check(category)
            if message:
                self.problem(category_line, f"{path}.category", message)
        if "format" in values:
            fmt, format_line = values["format"]
            message = _one_of(LIST_FORMATS)(fmt)
            if message:
                self.problem(format_line, f"{path}.format", message)
        if len(self.problems) > before or ("file" not in values and url is None):
            return None
        return ListConfig(
            url=url,
            file=file,
            category=category,
            format=fmt,
            action=action,
            admin=bool(values.get("admin", (False, 0))[0]),
            allow_tld=bool(values.get("allow_tld", (False, 0))[0]),
        )

    # --- policy: groups, devices, schedules ------------------------------------------------

    def policy(self, value: Any, line: int) -> PolicyConfig:
        base = PolicyConfig()
        if value is None:
            return base
        if not isinstance(value, _LineMap):
            self.problem(line, "policy", f"expected a mapping, got {_describe(value)}")
            return base
        known = (
            "timezone",
            "neighbour_table",
            "neighbour_refresh",
            "default_group",
            "schedules",
            "devices",
            "groups",
        )
        changes: dict[str, Any] = {}
        for key, raw, key_line in self.keys(value, "policy", known):
            path = f"policy.{key}"
            if key == "neighbour_refresh":
                if (
                    isinstance(raw, bool)
                    or not isinstance(raw, int | float)
                    or not 1 <= raw <= 3600
                ):
                    self.problem(
                        key_line, path, f"expected seconds from 1 to 3600, got {_describe(raw)}"
                    )
                    continue
                changes[key] = float(raw)
            elif key in ("timezone", "neighbour_table", "default_group"):
                if raw is None and key == "timezone":
                    continue
                if not isinstance(raw, str) or not raw:
                    self.problem(key_line, path, f"expected a string, got {_describe(raw)}")
                    continue
                message = None
                if key == "timezone":
                    message = _timezone_check(raw)
                elif key == "default_group":
                    message = _group_name_check(raw)
                if message:
                    self.problem(key_line, path, message)
                    continue
                changes[key] = raw
            elif key in ("schedules", "devices"):
                changes[key] = self.named_lists(raw, path, key_line)
            else:
                changes[key] = self.groups(raw, path, key_line)
        return replace(base, **changes)

    def named_lists(
        self, raw: Any, path: str, line: int
    ) -> tuple[tuple[str, tuple[str, ...], int], ...]:
        """``name: item`` or ``name: [items]`` entries (schedules, devices)."""
        if raw is None:
            return ()
        if not isinstance(raw, _LineMap):
            self.problem(line, path, f"expected a mapping of names, got {_describe(raw)}")
            return ()
        out = []
        for key, item, key_line in self.keys(raw, path, [k for k in raw if isinstance(k, str)]):
            where = f"{path}.{key}"
            message = _group_name_check(key)
            if message:
                self.problem(key_line, where, message.replace("group", "name"))
                continue
            items = [item] if isinstance(item, str) else item
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(i, str) and i for i in items)
            ):
                self.problem(
                    key_line,
                    where,
                    f"expected a string or a list of strings, got {_describe(item)}",
                )
                continue
            if path.endswith("schedules"):
                try:
                    for spec in items:
                        schedule_mod.parse_spec(spec)
                except ValueError as exc:
                    self.problem(key_line, where, str(exc))
                    continue
            out.append((key, tuple(items), key_line))
        return tuple(out)

    def groups(self, raw: Any, path: str, line: int) -> tuple[GroupConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, _LineMap):
            self.problem(line, path, f"expected a mapping of group names, got {_describe(raw)}")
            return ()
        out = []
        for name, body, key_line in self.keys(raw, path, [k for k in raw if isinstance(k, str)]):
            where = f"{path}.{name}"
            message = _group_name_check(name)
            if message:
                self.problem(key_line, where, message)
                continue
            group = self.group(name, body, where, key_line)
            if group is not None:
                out.append(group)
        return tuple(out)

    def group(self, name: str, body: Any, path: str, line: int) -> GroupConfig | None:
        if body is None:
            body = _LineMap(line)
        if not isinstance(body, _LineMap):
            self.problem(line, path, f"expected a mapping, got {_describe(body)}")
            return None
        known = (
            "clients",
            "filtering",
            "block_categories",
            "block_services",
            "safe_search",
            "allow",
            "block",
            "schedules",
            "budgets",
        )
        changes: dict[str, Any] = {"name": name, "line": line}
        for key, raw, key_line in self.keys(body, path, known):
            where = f"{path}.{key}"
            if key == "filtering":
                if not isinstance(raw, bool):
                    self.problem(key_line, where, f"expected true or false, got {_describe(raw)}")
                else:
                    changes[key] = raw
            elif key == "safe_search":
                if raw is False:  # YAML reads an unquoted `off` as false
                    raw = "off"
                message = (
                    _one_of(SAFE_SEARCH_MODES)(raw)
                    if isinstance(raw, str)
                    else f"expected one of {', '.join(SAFE_SEARCH_MODES)}, got {_describe(raw)}"
                )
                if message:
                    self.problem(key_line, where, message)
                else:
                    changes[key] = raw
            elif key == "schedules":
                changes[key] = self.schedule_rules(raw, where, key_line)
            elif key == "budgets":
                changes[key] = self.budgets(raw, where, key_line)
            else:
                items = self.string_items(raw, where, key_line)
                if items is None:
                    continue
                values = tuple(v for v, _ in items)
                if key == "clients":
                    changes["client_lines"] = tuple(item_line for _, item_line in items)
                elif key in ("allow", "block"):
                    values = tuple(v.lower().rstrip(".") for v in values)
                    for v, item_line in items:
                        bad = _domain_check(v.lower().rstrip("."))
                        if bad:
                            self.problem(item_line, where, bad)
                elif key == "block_categories":
                    for v, item_line in items:
                        # "*" (every list category) and service:ID are checked with the lists.
                        if v == EVERYTHING or v.startswith(SERVICE_PREFIX):
                            continue
                        bad = _category_check(v)
                        if bad:
                            self.problem(item_line, where, bad)
                changes[key] = values
        return GroupConfig(**changes)

    def string_items(self, raw: Any, path: str, line: int) -> list[tuple[str, int]] | None:
        if isinstance(raw, str):
            return [(raw, line)]
        if not isinstance(raw, _LineList):
            self.problem(line, path, f"expected a list, got {_describe(raw)}")
            return None
        out = []
        for i, (item, item_line) in enumerate(zip(raw, raw.item_lines, strict=True)):
            if not isinstance(item, str) or not item:
                self.problem(item_line, f"{path}[{i}]", f"expected a string, got {_describe(item)}")
                continue
            out.append((item, item_line))
        return out

    def schedule_rules(self, raw: Any, path: str, line: int) -> tuple[ScheduleRule, ...]:
        if not isinstance(raw, _LineList):
            self.problem(line, path, f"expected a list of rules, got {_describe(raw)}")
            return ()
        out = []
        known = ("during", "block", "allow", "except")
        for i, (item, item_line) in enumerate(zip(raw, raw.item_lines, strict=True)):
            where = f"{path}[{i}]"
            if not isinstance(item, _LineMap):
                self.problem(
                    item_line,
                    where,
                    f"expected a mapping {{during, block, allow, except}}, got {_describe(item)}",
                )
                continue
            values: dict[str, Any] = {"line": item_line}
            for key, value, key_line in self.keys(item, where, known):
                if key == "during":
                    if not isinstance(value, str):
                        self.problem(
                            key_line,
                            f"{where}.during",
                            f"expected a schedule name, got {_describe(value)}",
                        )
                    else:
                        values["during"] = value
                    continue
                items = self.string_items(value, f"{where}.{key}", key_line)
                if items is None:
                    continue
                names = tuple(v for v, _ in items)
                if key == "except":
                    for v, v_line in items:
                        bad = _domain_check(v.lower().rstrip("."))
                        if bad:
                            self.problem(v_line, f"{where}.except", bad)
                    values["except_names"] = tuple(v.lower().rstrip(".") for v in names)
                else:
                    values[key] = names
            if "during" not in values:
                self.problem(item_line, f"{where}.during", "missing (which schedule?)")
                continue
            rule = ScheduleRule(**values)
            if not rule.block and not rule.allow:
                self.problem(item_line, where, "a rule needs block or allow (or both)")
                continue
            if rule.except_names and rule.block != (EVERYTHING,):
                self.problem(
                    item_line, f"{where}.except", 'only goes with block: "*" (everything but these)'
                )
                continue
            out.append(rule)
        return tuple(out)

    def budgets(self, raw: Any, path: str, line: int) -> tuple[tuple[str, int], ...]:
        if not isinstance(raw, _LineMap):
            self.problem(
                line, path, f"expected a mapping of category: minutes, got {_describe(raw)}"
            )
            return ()
        out = []
        for key, value, key_line in self.keys(raw, path, [k for k in raw if isinstance(k, str)]):
            where = f"{path}.{key}"
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1440:
                self.problem(
                    key_line, where, f"expected minutes per day (1..1440), got {_describe(value)}"
                )
                continue
            out.append((key, value))
        return tuple(out)

    def cross_check(self, cfg: Config) -> None:
        """Rules that tie two keys together; reported at the key most likely to be the mistake."""
        up = cfg.upstream
        if up.attempt_timeout > up.timeout:
            self.problem(
                self.line_of("upstream.attempt_timeout", "upstream.timeout", "upstream"),
                "upstream.attempt_timeout",
                f"must not exceed upstream.timeout ({up.timeout:g}), got {up.attempt_timeout:g}",
            )
        if cfg.cache.min_ttl > cfg.cache.max_ttl:
            self.problem(
                self.line_of("cache.min_ttl", "cache.max_ttl", "cache"),
                "cache.min_ttl",
                f"must not exceed cache.max_ttl ({cfg.cache.max_ttl}), got {cfg.cache.min_ttl}",
            )
        server = cfg.server
        if server.tcp_max_connections_per_client > server.tcp_max_connections:
            self.problem(
                self.line_of("server.tcp_max_connections_per_client", "server"),
                "server.tcp_max_connections_per_client",
                f"must not exceed server.tcp_max_connections ({server.tcp_max_connections}), "
                f"got {server.tcp_max_connections_per_client}",
            )
        blocking = cfg.blocking
        if blocking.mode == "custom_ip" and not (blocking.custom_ipv4 or blocking.custom_ipv6):
            self.problem(
                self.line_of("blocking.mode", "blocking"),
                "blocking.mode",
                "custom_ip needs blocking.custom_ipv4 or blocking.custom_ipv6 (the block page)",
            )
        self.feed_cross_check(cfg)
        # The feed's categories are only known after a sync: the config declares them.
        known = sorted({entry.category for entry in blocking.lists} | set(cfg.feed.categories))
        if known:
            for i, category in enumerate(blocking.block_categories):
                if category not in known:
                    close = difflib.get_close_matches(category, known, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    self.problem(
                        self.line_of(f"blocking.block_categories[{i}]", "blocking"),
                        f"blocking.block_categories[{i}]",
                        f"no list has category {category!r} ({hint}known: {', '.join(known)})",
                    )
        self.policy_cross_check(cfg, known)
        clash = _listen_clash(server.listen, cfg.metrics)
        if clash:
            line = self.line_of("metrics.listen", "server.listen", "metrics", "server")
            self.problem(line, "metrics.listen", clash)
        auth = _metrics_auth_problem(cfg.metrics)
        if auth:
            field_name, message = auth
            self.problem(self.line_of(field_name, "metrics"), field_name, message)

    def feed_cross_check(self, cfg: Config) -> None:
        """A feed needs keys that load, now rather than at the first sync hours later."""
        fs = cfg.feed
        if fs.url is None:
            return
        if not fs.keys:
            self.problem(
                self.line_of("feed.url", "feed"),
                "feed.keys",
                "a feed needs at least one trusted public key (a .pub file or its RW... line)",
            )
            return
        from guardian_dns import feed as feed_mod

        for i, key in enumerate(fs.keys):
            where = key if key.startswith("RW") else os.path.join(self.base_dir, key)
            try:
                feed_mod.load_keys([where])
            except GuardianError as exc:
                self.problem(
                    self.line_of(f"feed.keys[{i}]", "feed.keys"), f"feed.keys[{i}]", str(exc)
                )

    def policy_cross_check(self, cfg: Config, list_categories: Sequence[str]) -> None:
        """Names a group uses must exist: schedules, services, categories, the default group."""
        pol = cfg.policy
        services = services_mod.load_services()
        schedules = {name for name, _specs, _line in pol.schedules}
        groups = {g.name for g in pol.groups}
        categories = list(list_categories)

        def hint(word: str, known: Sequence[str]) -> str:
            close = difflib.get_close_matches(word, list(known), n=1)
            shown = ", ".join(sorted(known)) or "none"
            return f"{'did you mean ' + repr(close[0]) + '? ' if close else ''}known: {shown}"

        def category_ok(name: str, path: str, line: int, *, everything: bool = False) -> None:
            if everything and name == EVERYTHING:
                return
            if name.startswith(SERVICE_PREFIX):
                sid = name[len(SERVICE_PREFIX) :]
                if sid not in services:
                    self.problem(line, path, f"no service {sid!r} ({hint(sid, list(services))})")
            elif name not in categories:
                self.problem(
                    line,
                    path,
                    f"no list has category {name!r} ({hint(name, categories)}; "
                    f"a service is written {SERVICE_PREFIX}ID)",
                )

        if pol.default_group != DEFAULT_GROUP and pol.default_group not in groups:
            self.problem(
                self.line_of("policy.default_group", "policy"),
                "policy.default_group",
                f"no group {pol.default_group!r} ({hint(pol.default_group, list(groups))})",
            )
        for g in pol.groups:
            path = f"policy.groups.{g.name}"
            line = g.line
            for cat in g.block_categories or ():
                category_ok(
                    cat,
                    f"{path}.block_categories",
                    self.line_of(f"{path}.block_categories") or line,
                    everything=True,
                )
            for sid in g.block_services:
                if sid not in services:
                    self.problem(
                        self.line_of(f"{path}.block_services") or line,
                        f"{path}.block_services",
                        f"no service {sid!r} ({hint(sid, list(services))})",
                    )
            for i, rule in enumerate(g.schedules):
                where = f"{path}.schedules[{i}]"
                if rule.during not in schedules:
                    self.problem(
                        rule.line,
                        f"{where}.during",
                        f"no schedule {rule.during!r} in policy.schedules "
                        f"({hint(rule.during, list(schedules))})",
                    )
                for cat in rule.block:
                    category_ok(cat, f"{where}.block", rule.line, everything=True)
                for cat in rule.allow:
                    category_ok(cat, f"{where}.allow", rule.line)
            for key, _minutes in g.budgets:
                category_ok(
                    key, f"{path}.budgets.{key}", self.line_of(f"{path}.budgets.{key}") or line
                )
        # Every member parsed, and a device in two groups reported with both lines (clients.py).
        try:
            _matcher(pol, self.source)
        except ConfigError as exc:
            self.problems.extend(exc.problems)


def _matcher(pol: PolicyConfig, source: str) -> clients_mod.ClientMatcher:
    members = {
        g.name: [
            clients_mod.Member(text, source, line, f"policy.groups.{g.name}.clients")
            for text, line in zip(g.clients, g.client_lines, strict=True)
        ]
        for g in pol.groups
    }
    device_members = {
        name: [clients_mod.Member(text, source, line, f"policy.devices.{name}") for text in items]
        for name, items, line in pol.devices
    }
    return clients_mod.ClientMatcher.build(members, device_members)


def client_matcher(config: Config) -> clients_mod.ClientMatcher:
    """The groups' members indexed for lookup (the loader has checked them: no error here)."""
    return _matcher(config.policy, config.source)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expect(hint: Any, raw: Any) -> str | None:
    """What the schema wanted, if ``raw`` is not that. YAML's true/false are not numbers here."""
    if hint is bool:
        return None if isinstance(raw, bool) else "true or false"
    if isinstance(raw, bool):
        return {int: "an integer", float: "a number"}.get(hint, "a string")
    if hint is int:
        return None if isinstance(raw, int) else "an integer"
    if hint is float:
        ok = isinstance(raw, int | float) and raw == raw and abs(raw) != float("inf")
        return None if ok else "a number"
    if hint is str or hint == (str | None):
        return None if isinstance(raw, str) else "a string"
    raise TypeError(f"the config schema uses a type the loader does not know: {hint!r}")


# --- public entry points ---------------------------------------------------------------------


SYSTEM_CONFIG: Final = "/etc/guardian-dns/guardian.yaml"  # where deploy/ installs it
CONFIG_ENV: Final = "GUARDIAN_DNS_CONFIG"


def admin_config(path: str | None) -> Config:
    """The config an administrator's verb means: ``--config``, else $GUARDIAN_DNS_CONFIG, else
    the installed /etc/guardian-dns/guardian.yaml, else the embedded default. On the installed
    box ``guardian-dns status`` then reaches the service without typing its config's path."""
    if path:
        return load_config(path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return load_config(env)
    if os.path.isfile(SYSTEM_CONFIG):
        return load_config(SYSTEM_CONFIG)
    return default_config()


def default_config() -> Config:
    """The configuration with no file at all: the dataclass defaults plus the bundled lists.

    Built from code, not by reading ``config/guardian.yaml``, so it cannot fail and works when only
    the package is installed; a test keeps that file in step with it. A bundled list that is not
    there is skipped rather than reported, because there is nobody to report it to yet.
    """
    lists = tuple(
        ListConfig(file=str(REPO_ROOT / rel), category=category)
        for rel, category in BUNDLED_LISTS
        if (REPO_ROOT / rel).is_file()
    )
    return Config(blocking=BlockingConfig(lists=lists), base_dir=str(REPO_ROOT))


def load_config_text(text: str, source: str = "<string>", base_dir: str = ".") -> Config:
    """Parse and validate YAML text; keys left out keep their ``default_config()`` values.

    Raises ConfigError listing every problem, sorted by line, so one edit fixes them all.
    Has no side effects: ``check-config`` and reload call it before anything is swapped in.
    """
    base = os.path.abspath(base_dir)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or "cannot parse"
        if exc.context:
            where = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{where})"
        line = mark.line + 1 if mark else 0
        # An unknown or unsafe tag is well-formed YAML, just not ours: no "syntax" in its name.
        kind = (
            "YAML error"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "YAML syntax error"
        )
        raise ConfigError([Problem(source, line, "", f"{kind}: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, 0, "", f"YAML error: {exc}")]) from None
    if data is None:
        message = f"the file is empty (expected sections: {', '.join(_SECTIONS)})"
        raise ConfigError([Problem(source, 0, "", message)])
    if not isinstance(data, _LineMap):
        raise ConfigError(
            [
                Problem(
                    source,
                    getattr(data, "line", 1),
                    "",
                    f"expected a mapping of sections ({', '.join(_SECTIONS)}), "
                    f"got {_describe(data)}",
                )
            ]
        )
    reader = _Reader(source, base)
    defaults = default_config()
    sections: dict[str, Any] = {
        key: (
            reader.policy(value, line)
            if key == "policy"
            else reader.section(value, key, line, getattr(defaults, key))
        )
        for key, value, line in reader.keys(data, "", _SECTIONS)
    }
    cfg = replace(defaults, **sections, source=source, base_dir=base)
    reader.cross_check(cfg)
    if reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line))
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load a configuration file; relative list paths are relative to the file's own directory."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([Problem(source, 0, "", "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(source, 0, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(source, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    return load_config_text(text, source, os.path.dirname(os.path.abspath(source)))


def apply_overrides(
    cfg: Config,
    *,
    listen: Sequence[str] = (),
    upstreams: Sequence[str] = (),
    blocklists: Sequence[str] = (),
) -> Config:
    """Let command-line flags win over the file, validated as strictly as the file is.

    A non-empty flag list replaces the whole setting rather than adding to it: someone who types
    ``--listen`` means "listen here", not "here as well". ``--blocklist`` paths are relative to the
    current directory, because that is where the person typing them is.
    """
    problems: list[Problem] = []

    def check(flag: str, message: str | None) -> None:
        if message:
            problems.append(Problem(COMMAND_LINE, 0, flag, message))

    server, upstream, blocking = cfg.server, cfg.upstream, cfg.blocking
    if listen:
        for addr in listen:
            check("--listen", _message_of(parse_listen)(addr))
        server = replace(server, listen=tuple(listen))
        check("--listen", _listen_clash(server.listen, cfg.metrics))
    if upstreams:
        for url in upstreams:
            check("--upstream", _message_of(parse_upstream_url)(url))
        upstream = replace(upstream, servers=tuple(upstreams))
    if blocklists:
        lists: list[ListConfig] = []
        for spec in blocklists:
            category, file = _split_category(spec)
            bad_category = _category_check(category)
            resolved, bad_file = _resolve_list_file(file, os.getcwd())
            check("--blocklist", bad_category and f"{spec!r}: {bad_category}")
            check("--blocklist", bad_file and f"{spec!r}: {bad_file}")
            if blocking.block_categories and category not in blocking.block_categories:
                check(
                    "--blocklist",
                    f"{spec!r}: category {category!r} is not in blocking.block_categories "
                    f"({', '.join(blocking.block_categories)}), so it would block nothing",
                )
            lists.append(ListConfig(file=resolved, category=category))
        blocking = replace(blocking, lists=tuple(lists))
    if problems:
        raise ConfigError(problems)
    return replace(cfg, server=server, upstream=upstream, blocking=blocking)
