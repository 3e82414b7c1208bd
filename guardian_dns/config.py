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

from dataclasses import dataclass, field

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
LIST_FORMATS: tuple[str, ...] = ("auto", "hosts", "domains", "adblock")


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


@dataclass(frozen=True)
class UpstreamConfig:
    """Where misses go. Empty ``servers`` means the nameservers of /etc/resolv.conf."""

    servers: tuple[str, ...] = ()  # udp://H:P, tcp://H:P, tls://H:P#server-name (port defaults 53/853)
    timeout: float = 3.0  # total budget per client query, all attempts included
    attempt_timeout: float = 1.0  # one attempt on one server before failing over
    down_backoff: float = 5.0  # seconds a failing server is tried last


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
    category: str = "default"
    format: str = "auto"  # auto | hosts | domains | adblock


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


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint. Loopback by default: children on the LAN must not read it."""

    enabled: bool = True
    listen: str = "127.0.0.1:9153"


@dataclass(frozen=True)
class QueryLogConfig:
    """In-memory ring buffer of recent decisions; no log line per query."""

    size: int = 10000


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"  # debug | info | warning | error


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
    source: str = "<defaults>"
    base_dir: str = "."  # directory relative list paths are resolved against


# ---------------------------------------------------------------------------------------------
# Loader (below): load_config(path) -> Config, default_config() -> Config,
# apply_overrides(cfg, listen=..., upstreams=..., blocklists=...) -> Config,
# system_resolvers(path="/etc/resolv.conf") -> tuple[str, ...]
# ---------------------------------------------------------------------------------------------
