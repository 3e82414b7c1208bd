"""The config loader: what an administrator sees for a good file, a bad file, and the CLI flags.

Error texts are compared exactly, because they are the user interface of a config file.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from guardian_dns import config
from guardian_dns.config import (
    BUNDLED_LISTS,
    REPO_ROOT,
    Config,
    ListConfig,
    apply_overrides,
    default_config,
    effective_upstreams,
    load_config,
    load_config_text,
    parse_listen,
    parse_upstream_url,
    system_resolvers,
)
from guardian_dns.errors import ConfigError

SHIPPED_CONFIGS = sorted((REPO_ROOT / "config").glob("**/*.yaml"))
SECTIONS = "server, upstream, cache, blocking, metrics, query_log, logging, policy, feed"


def problems_of(text: str, base_dir: Path) -> list[str]:
    """The problems an administrator would read for ``text`` saved as cfg.yaml in ``base_dir``."""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="cfg.yaml", base_dir=str(base_dir))
    return [str(p) for p in caught.value.problems]


def make_lists(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text("example.com\n")


# --- the shipped files ---------------------------------------------------------------------------


def test_there_are_shipped_configs_to_check() -> None:
    names = {p.relative_to(REPO_ROOT / "config").as_posix() for p in SHIPPED_CONFIGS}
    assert {"guardian.yaml", "examples/home-pi.yaml", "examples/school.yaml"} <= names


@pytest.mark.parametrize(
    "path", SHIPPED_CONFIGS, ids=[p.relative_to(REPO_ROOT).as_posix() for p in SHIPPED_CONFIGS]
)
def test_every_shipped_config_loads_without_problems(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert len(cfg.blocking.lists) == len(BUNDLED_LISTS)


def _copy_with_bundled_lists(tmp_path: Path) -> Path:
    """The repository's config/ beside stub bundled lists, so this test does not need real lists."""
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    for rel, _category in BUNDLED_LISTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("example.com\n")
    return tmp_path / "config" / "guardian.yaml"


def test_shipped_default_file_spells_out_the_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = load_config(_copy_with_bundled_lists(tmp_path))
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    built_in = default_config()
    assert shipped.blocking.lists == built_in.blocking.lists
    assert [
        (Path(e.file).relative_to(tmp_path).as_posix(), e.category) for e in built_in.blocking.lists
    ] == list(BUNDLED_LISTS)
    assert replace(shipped, source="", base_dir="") == replace(built_in, source="", base_dir="")


def test_shipped_default_file_sets_the_documented_essentials(tmp_path: Path) -> None:
    cfg = load_config(_copy_with_bundled_lists(tmp_path))
    assert cfg.server.listen == ("127.0.0.1:5353",)
    assert cfg.upstream.servers == ()
    assert cfg.blocking.block_categories == ()
    assert (cfg.metrics.enabled, cfg.metrics.listen) == (True, "127.0.0.1:9153")


def test_default_config_skips_bundled_lists_that_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "blocklists").mkdir()
    make_lists(tmp_path / "blocklists", "gambling.hosts", "scam.txt")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    cfg = default_config()
    assert cfg.blocking.lists == (
        ListConfig(file=str(tmp_path / "blocklists" / "gambling.hosts"), category="gambling"),
        ListConfig(file=str(tmp_path / "blocklists" / "scam.txt"), category="scam"),
    )
    assert cfg.source == "<defaults>"
    assert replace(cfg, blocking=Config().blocking, base_dir=".") == Config()


def test_default_config_never_fails_without_any_bundled_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    assert default_config().blocking.lists == ()


# --- what a good file turns into -----------------------------------------------------------------


def test_loaded_values_are_tuples_with_absolute_list_paths(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    make_lists(tmp_path / "lists", "a.txt", "b.txt", "c.txt")
    path = tmp_path / "guardian.yaml"
    path.write_text(
        "server:\n"
        "  listen: ['127.0.0.1:5300', '[::1]:5300']\n"
        "blocking:\n"
        "  lists:\n"
        "    - {file: lists/a.txt, category: adult, format: hosts}\n"
        "    - social=lists/b.txt\n"
        "    - lists/c.txt\n"
        "  block_categories: [adult, social]\n"
    )
    cfg = load_config(path)
    assert cfg.server.listen == ("127.0.0.1:5300", "[::1]:5300")
    assert cfg.blocking.lists == (
        ListConfig(file=str(tmp_path / "lists" / "a.txt"), category="adult", format="hosts"),
        ListConfig(file=str(tmp_path / "lists" / "b.txt"), category="social"),
        ListConfig(file=str(tmp_path / "lists" / "c.txt"), category="default"),
    )
    assert cfg.blocking.block_categories == ("adult", "social")
    assert (cfg.source, cfg.base_dir) == (str(path), str(tmp_path))
    hash(cfg)  # frozen all the way down


def test_keys_left_out_keep_their_defaults(tmp_path: Path) -> None:
    cfg = load_config_text("cache:\n  size: 5\nserver:\n", base_dir=str(tmp_path))
    assert cfg.cache == replace(default_config().cache, size=5)
    assert cfg.server == default_config().server
    assert cfg.blocking == default_config().blocking


def test_integers_are_accepted_where_seconds_are_fractional(tmp_path: Path) -> None:
    cfg = load_config_text("upstream:\n  timeout: 4\n", base_dir=str(tmp_path))
    assert cfg.upstream.timeout == 4.0
    assert isinstance(cfg.upstream.timeout, float)


def test_anchors_and_merge_keys_work_as_in_yaml(tmp_path: Path) -> None:
    text = (
        "server:\n"
        "  allow_networks: &lan ['192.168.0.0/16']\n"
        "cache: &c\n"
        "  size: 7\n"
        "  min_ttl: 1\n"
        "upstream:\n"
        "  timeout: 2\n"
    )
    cfg = load_config_text(text, base_dir=str(tmp_path))
    assert cfg.server.allow_networks == ("192.168.0.0/16",)
    cfg = load_config_text(
        "cache:\n  <<: {size: 7, min_ttl: 1}\n  size: 9\n", base_dir=str(tmp_path)
    )
    assert (cfg.cache.size, cfg.cache.min_ttl) == (9, 1)


# --- every kind of problem, exactly as the administrator reads it ---------------------------------

ONE_PROBLEM = [
    pytest.param(
        "server:\n  udp_max_size: big\n",
        "cfg.yaml:2: server.udp_max_size: expected an integer, got 'big'",
        id="integer-expected",
    ),
    pytest.param(
        "cache:\n  size: true\n",
        "cfg.yaml:2: cache.size: expected an integer, got true",
        id="boolean-is-not-an-integer",
    ),
    pytest.param(
        "cache:\n  size: 1.5\n",
        "cfg.yaml:2: cache.size: expected an integer, got 1.5",
        id="fraction-is-not-an-integer",
    ),
    pytest.param(
        "upstream:\n  timeout: fast\n",
        "cfg.yaml:2: upstream.timeout: expected a number, got 'fast'",
        id="number-expected",
    ),
    pytest.param(
        "cache:\n  serve_stale: sometimes\n",
        "cfg.yaml:2: cache.serve_stale: expected true or false, got 'sometimes'",
        id="boolean-expected",
    ),
    pytest.param(
        "metrics:\n  listen: 9153\n",
        "cfg.yaml:2: metrics.listen: expected a string, got 9153",
        id="string-expected",
    ),
    pytest.param(
        "logging:\n  level:\n",
        "cfg.yaml:2: logging.level: expected a string, got nothing (null)",
        id="null-is-not-a-string",
    ),
    pytest.param(
        "server:\n  listen: '127.0.0.1:53'\n",
        "cfg.yaml:2: server.listen: expected a list, got '127.0.0.1:53'",
        id="list-expected",
    ),
    pytest.param(
        "server:\n  listen: ['127.0.0.1:53', 53]\n",
        "cfg.yaml:2: server.listen[1]: expected a string, got 53",
        id="list-item-string-expected",
    ),
    pytest.param(
        "server: 5\n",
        "cfg.yaml:1: server: expected a mapping, got 5",
        id="section-not-a-mapping",
    ),
    pytest.param(
        "server:\n  udp_max_size: 9000\n",
        "cfg.yaml:2: server.udp_max_size: must be between 512 and 4096, got 9000",
        id="udp-size-too-big",
    ),
    pytest.param(
        "server:\n  udp_max_size: 511\n",
        "cfg.yaml:2: server.udp_max_size: must be between 512 and 4096, got 511",
        id="udp-size-too-small",
    ),
    pytest.param(
        "cache:\n  min_ttl: -1\n",
        "cfg.yaml:2: cache.min_ttl: must be >= 0, got -1",
        id="negative-ttl",
    ),
    pytest.param(
        "blocking:\n  ttl: -5\n",
        "cfg.yaml:2: blocking.ttl: must be >= 0, got -5",
        id="negative-block-ttl",
    ),
    pytest.param(
        "cache:\n  size: -1\n",
        "cfg.yaml:2: cache.size: must be >= 0, got -1",
        id="negative-cache-size",
    ),
    pytest.param(
        "upstream:\n  timeout: 0\n",
        "cfg.yaml:2: upstream.timeout: must be > 0, got 0",
        id="zero-timeout",
    ),
    pytest.param(
        "server:\n  tcp_idle_timeout: -0.5\n",
        "cfg.yaml:2: server.tcp_idle_timeout: must be > 0, got -0.5",
        id="negative-idle-timeout",
    ),
    pytest.param(
        "upstream:\n  timeout: 2\n  attempt_timeout: 2.5\n",
        "cfg.yaml:3: upstream.attempt_timeout: must not exceed upstream.timeout (2), got 2.5",
        id="attempt-longer-than-total",
    ),
    pytest.param(
        "cache:\n  servfail_ttl: 0\n",
        "cfg.yaml:2: cache.servfail_ttl: must be between 1 and 300, got 0",
        id="servfail-ttl-zero",
    ),
    pytest.param(
        "cache:\n  servfail_ttl: 301\n",
        "cfg.yaml:2: cache.servfail_ttl: must be between 1 and 300, got 301",
        id="servfail-ttl-too-long",
    ),
    pytest.param(
        "cache:\n  min_ttl: 600\n  max_ttl: 60\n",
        "cfg.yaml:2: cache.min_ttl: must not exceed cache.max_ttl (60), got 600",
        id="min-ttl-above-max-ttl",
    ),
    pytest.param(
        "server:\n  tcp_max_connections: 4\n  tcp_max_connections_per_client: 8\n",
        "cfg.yaml:3: server.tcp_max_connections_per_client: must not exceed "
        "server.tcp_max_connections (4), got 8",
        id="per-client-above-total",
    ),
    pytest.param(
        "server:\n  listen: ['127.0.0.1:70000']\n",
        "cfg.yaml:2: server.listen[0]: invalid listen address '127.0.0.1:70000': "
        "port 70000 is out of range (1..65535)",
        id="port-out-of-range",
    ),
    pytest.param(
        "server:\n  listen: ['127.0.0.1:0']\n",
        "cfg.yaml:2: server.listen[0]: invalid listen address '127.0.0.1:0': "
        "port 0 is out of range (1..65535; a random port is only for --listen in tests)",
        id="random-port-in-a-file",
    ),
    pytest.param(
        "server:\n  listen:\n    - '127.0.0.1:53'\n    - ':53'\n",
        "cfg.yaml:4: server.listen[1]: invalid listen address ':53': no address before the port; "
        "Guardian DNS never listens on every interface unless told to "
        "(write 0.0.0.0:53 or [::]:53 to mean that)",
        id="listen-on-every-interface-by-omission",
    ),
    pytest.param(
        "server:\n  listen: []\n",
        "cfg.yaml:2: server.listen: must name at least one address to listen on",
        id="listen-nowhere",
    ),
    pytest.param(
        "metrics:\n  listen: localhost:9153\n",
        "cfg.yaml:2: metrics.listen: invalid listen address 'localhost:9153': "
        "'localhost' is not an IP address (a name could change what we bind)",
        id="metrics-listen-by-name",
    ),
    pytest.param(
        "server:\n  listen: ['127.0.0.1:9153']\n",
        "cfg.yaml:2: metrics.listen: 127.0.0.1:9153 is also a DNS listen address "
        "(both bind TCP there)",
        id="metrics-and-dns-on-one-port",
    ),
    pytest.param(
        "blocking:\n  mode: nxdomian\n",
        "cfg.yaml:2: blocking.mode: unknown value 'nxdomian' "
        "(allowed: nxdomain, null_ip, custom_ip, refused)",
        id="unknown-block-mode",
    ),
    pytest.param(
        "server:\n  acl_action: ignore\n",
        "cfg.yaml:2: server.acl_action: unknown value 'ignore' (allowed: refuse, drop)",
        id="unknown-acl-action",
    ),
    pytest.param(
        "logging:\n  level: loud\n",
        "cfg.yaml:2: logging.level: unknown value 'loud' (allowed: debug, info, warning, error)",
        id="unknown-log-level",
    ),
    pytest.param(
        "server:\n  allow_networks:\n    - 127.0.0.0/8\n    - 10.0.0.300/8\n",
        "cfg.yaml:4: server.allow_networks[1]: invalid network '10.0.0.300/8' "
        "(expected an address or a CIDR such as 192.168.1.0/24)",
        id="bad-cidr",
    ),
    pytest.param(
        "server:\n  allow_networks: [192.168.1.1/24]\n",
        "cfg.yaml:2: server.allow_networks[0]: invalid network '192.168.1.1/24': "
        "host bits are set (did you mean 192.168.1.0/24?)",
        id="cidr-with-host-bits",
    ),
    pytest.param(
        "server:\n  allow_networks: []\n",
        "cfg.yaml:2: server.allow_networks: must name at least one network "
        "(an empty list refuses everyone)",
        id="allow-nobody",
    ),
    pytest.param(
        "blocking:\n  mode: null_ip\n  custom_ipv4: 192.0.2.300\n",
        "cfg.yaml:3: blocking.custom_ipv4: invalid IPv4 address '192.0.2.300'",
        id="bad-custom-ipv4",
    ),
    pytest.param(
        "blocking:\n  custom_ipv6: 192.0.2.1\n",
        "cfg.yaml:2: blocking.custom_ipv6: invalid IPv6 address '192.0.2.1'",
        id="ipv4-as-custom-ipv6",
    ),
    pytest.param(
        "blocking:\n  mode: custom_ip\n",
        "cfg.yaml:2: blocking.mode: custom_ip needs blocking.custom_ipv4 or blocking.custom_ipv6 "
        "(the block page)",
        id="custom-ip-without-ip",
    ),
    pytest.param(
        "blocking:\n  local_domains: [lan, 'bad domain']\n",
        "cfg.yaml:2: blocking.local_domains[1]: invalid domain name 'bad domain'",
        id="bad-local-domain",
    ),
    pytest.param(
        "upstream:\n  servers: ['https://dns.example/dns-query']\n",
        "cfg.yaml:2: upstream.servers[0]: invalid upstream 'https://dns.example/dns-query': "
        "unknown scheme 'https' (allowed: udp, tcp, tls)",
        id="upstream-unknown-scheme",
    ),
    pytest.param(
        "upstream:\n  servers:\n    - udp://192.0.2.1\n    - tls://192.0.2.2\n",
        "cfg.yaml:4: upstream.servers[1]: invalid upstream 'tls://192.0.2.2': tls:// needs a "
        "server name to check the certificate against "
        "(write tls://192.0.2.2#dns.example, or use a host name)",
        id="tls-upstream-without-name",
    ),
    pytest.param(
        "",
        f"cfg.yaml: the file is empty (expected sections: {SECTIONS})",
        id="empty-file",
    ),
    pytest.param(
        "# everything commented out\n# server:\n",
        f"cfg.yaml: the file is empty (expected sections: {SECTIONS})",
        id="only-comments",
    ),
    pytest.param(
        "- server\n- cache\n",
        f"cfg.yaml:1: expected a mapping of sections ({SECTIONS}), got a list",
        id="not-a-mapping",
    ),
    pytest.param(
        "server:\n  listen: ['127.0.0.1:53'\ncache:\n  size: 1\n",
        "cfg.yaml:3: YAML syntax error: expected ',' or ']', but got '<scalar>' "
        "(while parsing a flow sequence at line 2)",
        id="yaml-syntax-error",
    ),
    pytest.param(
        "server:\n\tlisten: []\n",
        "cfg.yaml:2: YAML syntax error: found character '\\t' that cannot start any token "
        "(while scanning for the next token)",
        id="tab-indentation",
    ),
    pytest.param(
        "server:\n  lisen: ['127.0.0.1:53']\n",
        "cfg.yaml:2: server.lisen: unknown key (did you mean 'listen'? known: listen, "
        "allow_networks, acl_action, udp_max_size, tcp_idle_timeout, "
        "tcp_max_connections_per_client, tcp_max_connections, tcp_max_queries_in_flight, "
        "rate_limit, rate_limit_exempt, state_dir, control_socket, control_group, "
        "trusted_forwarders)",
        id="unknown-key-did-you-mean",
    ),
    pytest.param(
        "metrics:\n  port: 9153\n",
        "cfg.yaml:2: metrics.port: unknown key (known: enabled, listen, username, password)",
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        "blockng:\n  mode: null_ip\n",
        f"cfg.yaml:1: blockng: unknown key (did you mean 'blocking'? known: {SECTIONS})",
        id="unknown-section-did-you-mean",
    ),
    pytest.param(
        "cache:\n  size: 1\n  size: 2\n",
        "cfg.yaml:3: cache.size: duplicate key, first at line 2 "
        "(YAML would silently keep only the last)",
        id="duplicate-key",
    ),
    pytest.param(
        "logging: {level: info}\nlogging: {level: debug}\n",
        "cfg.yaml:2: logging: duplicate key, first at line 1 "
        "(YAML would silently keep only the last)",
        id="duplicate-section",
    ),
    pytest.param(
        "blocking:\n  lists:\n    - category: adult\n",
        "cfg.yaml:3: blocking.lists[0].file: missing (every list entry needs a file or a url)",
        id="list-entry-without-file",
    ),
    pytest.param(
        "blocking:\n  lists: [5]\n",
        "cfg.yaml:2: blocking.lists[0]: expected a mapping {file, category, format, action} "
        "or a string '[CATEGORY=]FILE', got 5",
        id="list-entry-of-wrong-type",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ONE_PROBLEM)
def test_a_bad_file_names_file_line_field_and_problem(
    text: str, expected: str, tmp_path: Path
) -> None:
    assert problems_of(text, tmp_path) == [expected]


LIST_PROBLEMS = [
    pytest.param(
        "    - file: lists/missing.txt\n",
        "cfg.yaml:6: blocking.lists[2].file: no such file: {dir}/lists/missing.txt",
        id="missing-list-file",
    ),
    pytest.param(
        "    - adult=missing.txt\n",
        "cfg.yaml:6: blocking.lists[2].file: no such file: {dir}/missing.txt",
        id="missing-list-file-in-string-entry",
    ),
    pytest.param(
        "    - file: lists\n",
        "cfg.yaml:6: blocking.lists[2].file: not a regular file: {dir}/lists",
        id="list-file-is-a-directory",
    ),
    pytest.param(
        "    - {file: lists/a.txt, format: csv}\n",
        "cfg.yaml:6: blocking.lists[2].format: unknown value 'csv' "
        "(allowed: auto, hosts, domains, wildcard, adblock, dnsmasq, rpz, unbound, regex)",
        id="unknown-list-format",
    ),
    pytest.param(
        "    - Adult=lists/a.txt\n",
        "cfg.yaml:6: blocking.lists[2].category: invalid category 'Adult' (use up to 32 "
        "lowercase letters, digits, '-' and '_'; categories become metric labels)",
        id="bad-category",
    ),
    pytest.param(
        "    - {file: lists/a.txt, formt: hosts}\n",
        "cfg.yaml:6: blocking.lists[2].formt: unknown key (did you mean 'format'? "
        "known: file, category, format, action, admin, allow_tld, url)",
        id="list-entry-did-you-mean",
    ),
    pytest.param(
        "    - {file: lists/a.txt, category: 5}\n",
        "cfg.yaml:6: blocking.lists[2].category: expected a string, got 5",
        id="category-not-a-string",
    ),
    pytest.param(
        "  block_categories: [adlt]\n",
        "cfg.yaml:6: blocking.block_categories[0]: no list has category 'adlt' "
        "(did you mean 'adult'? known: adult, gambling)",
        id="unknown-block-category",
    ),
]


@pytest.mark.parametrize(("tail", "expected"), LIST_PROBLEMS)
def test_list_problems_name_the_entry(tail: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    make_lists(tmp_path / "lists", "a.txt", "b.txt")
    text = (
        "blocking:\n"
        "  mode: nxdomain\n"
        "  lists:\n"
        "    - {file: lists/a.txt, category: adult}\n"
        "    - gambling=lists/b.txt\n" + tail
    )
    assert problems_of(text, tmp_path) == [expected.format(dir=tmp_path)]


def test_every_problem_in_a_file_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = (
        "server:\n"
        "  udp_max_size: big\n"
        "  listen: [':53']\n"
        "upstream:\n"
        "  servers: ['8.8.8.8']\n"
        "cache:\n"
        "  servfail_ttl: 0\n"
        "blocking:\n"
        "  mode: nxdomian\n"
        "  lists: [missing.txt]\n"
        "loging:\n"
        "  level: info\n"
    )
    found = problems_of(text, tmp_path)
    assert [p.split(": ")[0:2] for p in found] == [
        ["cfg.yaml:2", "server.udp_max_size"],
        ["cfg.yaml:3", "server.listen[0]"],
        ["cfg.yaml:5", "upstream.servers[0]"],
        ["cfg.yaml:7", "cache.servfail_ttl"],
        ["cfg.yaml:9", "blocking.mode"],
        ["cfg.yaml:10", "blocking.lists[0].file"],
        ["cfg.yaml:11", "loging"],
    ]
    assert found[2] == (
        "cfg.yaml:5: upstream.servers[0]: invalid upstream '8.8.8.8': "
        "missing scheme (write udp://, tcp:// or tls:// before the address)"
    )


def test_the_error_message_lists_every_problem_one_per_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("cache:\n  size: -1\n  min_ttl: x\n", "cfg.yaml", str(tmp_path))
    assert str(caught.value) == (
        "cfg.yaml:2: cache.size: must be >= 0, got -1\n"
        "cfg.yaml:3: cache.min_ttl: expected an integer, got 'x'"
    )


def test_an_unknown_block_category_is_reported_on_its_own_line(tmp_path: Path) -> None:
    make_lists(tmp_path, "a.txt")
    text = "blocking:\n  lists: [adult=a.txt]\n  block_categories:\n    - adult\n    - scams\n"
    assert problems_of(text, tmp_path) == [
        "cfg.yaml:5: blocking.block_categories[1]: no list has category 'scams' (known: adult)"
    ]


def test_duplicate_keys_report_both_lines_at_every_depth(tmp_path: Path) -> None:
    text = (
        "server:\n"  # 1
        "  listen: ['127.0.0.1:53']\n"  # 2
        "  acl_action: drop\n"  # 3
        "  listen: ['127.0.0.1:54']\n"  # 4
        "blocking:\n"  # 5
        "  lists:\n"  # 6
        "    - {file: a.txt, file: b.txt}\n"  # 7
        "server:\n"  # 8
        "  acl_action: refuse\n"  # 9
    )
    make_lists(tmp_path, "a.txt", "b.txt")
    assert problems_of(text, tmp_path) == [
        "cfg.yaml:4: server.listen: duplicate key, first at line 2 "
        "(YAML would silently keep only the last)",
        "cfg.yaml:7: blocking.lists[0].file: duplicate key, first at line 7 "
        "(YAML would silently keep only the last)",
        "cfg.yaml:8: server: duplicate key, first at line 1 "
        "(YAML would silently keep only the last)",
    ]


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        pytest.param("server:\n  udp_max_sise: 1232\n", "udp_max_size", id="typo-in-key"),
        pytest.param("cache:\n  servestale: true\n", "serve_stale", id="missing-underscore"),
        pytest.param("upstreams:\n  servers: []\n", "upstream", id="plural-section"),
        pytest.param("blocking:\n  categories: []\n", "block_categories", id="short-name"),
    ],
)
def test_unknown_keys_suggest_the_closest_known_key(
    text: str, suggestion: str, tmp_path: Path
) -> None:
    (problem,) = problems_of(text, tmp_path)
    assert f"unknown key (did you mean {suggestion!r}? known: " in problem


def test_keys_that_are_not_names_are_reported_as_yaml_spells_them(tmp_path: Path) -> None:
    assert problems_of("yes: 1\n[a]: 2\n", tmp_path) == [
        f"cfg.yaml:1: true: unknown key (known: {SECTIONS})",
        "cfg.yaml:2: a list cannot be a key",
    ]


def test_unsafe_yaml_tags_are_refused_with_their_line(tmp_path: Path) -> None:
    (problem,) = problems_of("logging:\n  level: !!python/name:os.system info\n", tmp_path)
    assert problem.startswith("cfg.yaml:2: YAML error: could not determine a constructor")


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(caught.value) == f"{tmp_path}/nope.yaml: no such file"


def test_a_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "guardian.yaml"
    path.write_bytes(b"server:\n  listen: [\xff]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (invalid start byte at byte 19)"


def test_problems_name_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "guardian.yaml").write_text("blocking:\n  mode: nxdomian\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("config/guardian.yaml")
    assert str(caught.value).startswith("config/guardian.yaml:2: blocking.mode: unknown value")


# --- command-line overrides -------------------------------------------------------------------


@pytest.fixture
def file_cfg(tmp_path: Path) -> Config:
    make_lists(tmp_path, "file.txt")
    return load_config_text(
        "server:\n  listen: ['127.0.0.1:5353']\n"
        "upstream:\n  servers: ['udp://192.0.2.1']\n"
        "blocking:\n  lists: [adult=file.txt]\n",
        "cfg.yaml",
        str(tmp_path),
    )


def test_no_flags_keep_the_file_values(file_cfg: Config) -> None:
    assert apply_overrides(file_cfg) == file_cfg


def test_flags_replace_the_file_values(
    file_cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    make_lists(tmp_path / "cwd", "mine.txt", "kids.txt")
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = apply_overrides(
        file_cfg,
        listen=["127.0.0.1:53", "[::1]:53"],
        upstreams=["tls://dns.example"],
        blocklists=["mine.txt", "adult=kids.txt"],
    )
    assert cfg.server.listen == ("127.0.0.1:53", "[::1]:53")
    assert cfg.upstream.servers == ("tls://dns.example",)
    assert cfg.blocking.lists == (
        ListConfig(file=str(tmp_path / "cwd" / "mine.txt"), category="default"),
        ListConfig(file=str(tmp_path / "cwd" / "kids.txt"), category="adult"),
    )
    assert cfg.cache == file_cfg.cache
    assert cfg.source == file_cfg.source


def test_tests_may_listen_on_a_random_port_from_the_command_line(file_cfg: Config) -> None:
    assert apply_overrides(file_cfg, listen=["127.0.0.1:0"]).server.listen == ("127.0.0.1:0",)


def test_one_flag_leaves_the_other_settings_alone(file_cfg: Config) -> None:
    cfg = apply_overrides(file_cfg, upstreams=["udp://127.0.0.1:5300"])
    assert cfg.upstream.servers == ("udp://127.0.0.1:5300",)
    assert cfg.server == file_cfg.server
    assert cfg.blocking == file_cfg.blocking


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(
            {"listen": [":53"]},
            "<command line>: --listen: invalid listen address ':53': no address before the "
            "port; Guardian DNS never listens on every interface unless told to "
            "(write 0.0.0.0:53 or [::]:53 to mean that)",
            id="listen-without-address",
        ),
        pytest.param(
            {"listen": ["127.0.0.1:9153"]},
            "<command line>: --listen: 127.0.0.1:9153 is also a DNS listen address "
            "(both bind TCP there)",
            id="listen-on-the-metrics-port",
        ),
        pytest.param(
            {"upstreams": ["udp://dns.example"]},
            "<command line>: --upstream: invalid upstream 'udp://dns.example': 'dns.example' "
            "is not an IP address; udp:// upstreams need one "
            "(a name would need a resolver to find the resolver)",
            id="udp-upstream-by-name",
        ),
        pytest.param(
            {"blocklists": ["gone.txt"]},
            "<command line>: --blocklist: 'gone.txt': no such file: {cwd}/gone.txt",
            id="missing-blocklist",
        ),
        pytest.param(
            {"blocklists": ["Bad Category=present.txt"]},
            "<command line>: --blocklist: 'Bad Category=present.txt': invalid category "
            "'Bad Category' (use up to 32 lowercase letters, digits, '-' and '_'; "
            "categories become metric labels)",
            id="bad-blocklist-category",
        ),
    ],
)
def test_bad_flags_are_config_errors_naming_the_flag(
    flags: dict[str, list[str]],
    expected: str,
    file_cfg: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_lists(tmp_path, "present.txt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        apply_overrides(file_cfg, **flags)
    assert [str(p) for p in caught.value.problems] == [expected.format(cwd=tmp_path)]


def test_every_bad_flag_is_reported_at_once(file_cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(
            file_cfg,
            listen=["127.0.0.1:53", "0.0.0.0"],
            upstreams=["ftp://192.0.2.1"],
            blocklists=[str(tmp_path / "gone.txt")],
        )
    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [
        ("<command line>", 0, "--listen"),
        ("<command line>", 0, "--upstream"),
        ("<command line>", 0, "--blocklist"),
    ]


def test_a_blocklist_flag_that_would_block_nothing_is_refused(tmp_path: Path) -> None:
    make_lists(tmp_path, "a.txt", "mine.txt")
    cfg = load_config_text(
        "blocking:\n  lists: [adult=a.txt]\n  block_categories: [adult]\n",
        "cfg.yaml",
        str(tmp_path),
    )
    with pytest.raises(ConfigError) as caught:
        apply_overrides(cfg, blocklists=[str(tmp_path / "mine.txt")])
    assert str(caught.value) == (
        f"<command line>: --blocklist: '{tmp_path}/mine.txt': category 'default' is not in "
        "blocking.block_categories (adult), so it would block nothing"
    )


# --- /etc/resolv.conf ----------------------------------------------------------------------


RESOLV_CONF = """\
# Generated by NetworkManager
search lan
options edns0 trust-ad
nameserver 192.0.2.1
nameserver 2001:db8::53%eth0   # IPv6 with a scope
; a commented-out nameserver 192.0.2.99
#nameserver 192.0.2.98
nameserver 192.0.2.1
nameserver not-an-address
nameserver
nameserver fe80::1%wlan0
"""


@pytest.mark.parametrize(
    ("text", "own_listen", "expected"),
    [
        pytest.param(
            RESOLV_CONF,
            (),
            ("udp://192.0.2.1:53", "udp://[2001:db8::53]:53", "udp://[fe80::1]:53"),
            id="ipv4-ipv6-scope-comments-duplicates",
        ),
        pytest.param(
            "nameserver 127.0.0.1\nnameserver 192.0.2.1\n",
            ("127.0.0.1:53",),
            ("udp://192.0.2.1:53",),
            id="our-own-listen-address-is-skipped",
        ),
        pytest.param(
            "nameserver 192.168.1.2\nnameserver 192.0.2.1\n",
            ("192.168.1.2:53", "127.0.0.1:53"),
            ("udp://192.0.2.1:53",),
            id="the-pi-lists-itself",
        ),
        pytest.param(
            "nameserver 127.0.0.1\n",
            ("127.0.0.1:5353",),
            ("udp://127.0.0.1:53",),
            id="same-address-other-port-is-not-us",
        ),
        pytest.param(
            "nameserver ::1\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n",
            ("0.0.0.0:53",),
            ("udp://192.0.2.1:53",),
            id="wildcard-listen-skips-loopback",
        ),
        pytest.param(
            "nameserver ::1\n",
            ("[::1]:53",),
            (),
            id="only-ourselves",
        ),
        pytest.param("", (), (), id="empty-file"),
    ],
)
def test_system_resolvers(
    text: str, own_listen: tuple[str, ...], expected: tuple[str, ...], tmp_path: Path
) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    assert system_resolvers(str(path), own_listen=own_listen) == expected


def test_system_resolvers_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert system_resolvers(str(tmp_path / "resolv.conf")) == ()


def test_configured_upstreams_win_over_resolv_conf() -> None:
    cfg = Config(upstream=replace(Config().upstream, servers=("udp://127.0.0.1:5300",)))
    assert effective_upstreams(cfg) == ("udp://127.0.0.1:5300",)


def test_no_configured_upstreams_means_resolv_conf_without_ourselves() -> None:
    cfg = Config()
    assert effective_upstreams(cfg) == system_resolvers(own_listen=cfg.server.listen)


# --- address syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("udp://192.0.2.1", ("udp", "192.0.2.1", 53, None), id="udp-default-port"),
        pytest.param("udp://192.0.2.1:5300", ("udp", "192.0.2.1", 5300, None), id="udp-port"),
        pytest.param("TCP://192.0.2.1:53", ("tcp", "192.0.2.1", 53, None), id="scheme-any-case"),
        pytest.param("udp://[2001:db8::1]", ("udp", "2001:db8::1", 53, None), id="udp-ipv6"),
        pytest.param(
            "tcp://[2001:db8::1]:5353", ("tcp", "2001:db8::1", 5353, None), id="tcp-ipv6-port"
        ),
        pytest.param(
            "tls://dns.example", ("tls", "dns.example", 853, "dns.example"), id="tls-by-name"
        ),
        pytest.param(
            "tls://192.0.2.1#dns.example",
            ("tls", "192.0.2.1", 853, "dns.example"),
            id="tls-ip-with-name",
        ),
        pytest.param(
            "tls://[2001:db8::1]:8853#dns.example",
            ("tls", "2001:db8::1", 8853, "dns.example"),
            id="tls-ipv6-port-name",
        ),
        pytest.param(
            "tls://127.0.0.1:853#resolver.example",
            ("tls", "127.0.0.1", 853, "resolver.example"),
            id="tls-loopback",
        ),
    ],
)
def test_parse_upstream_url(url: str, expected: tuple[str, str, int, str | None]) -> None:
    assert parse_upstream_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param(
            "192.0.2.1",
            "missing scheme (write udp://, tcp:// or tls:// before the address)",
            id="no-scheme",
        ),
        pytest.param(
            "https://dns.example", "unknown scheme 'https' (allowed: udp, tcp, tls)", id="doh"
        ),
        pytest.param("udp://", "no host", id="no-host"),
        pytest.param("udp://192.0.2.1:0", "port 0 is out of range (1..65535)", id="port-zero"),
        pytest.param("udp://192.0.2.1:dns", "port 'dns' is not a number", id="port-name"),
        pytest.param(
            "udp://2001:db8::1",
            "an IPv6 address needs brackets, as in [2001:db8::1]:53",
            id="ipv6-without-brackets",
        ),
        pytest.param(
            "udp://[2001:db8::1", "missing ']' after the IPv6 address", id="unclosed-bracket"
        ),
        pytest.param(
            "tcp://dns.example",
            "'dns.example' is not an IP address; tcp:// upstreams need one "
            "(a name would need a resolver to find the resolver)",
            id="tcp-by-name",
        ),
        pytest.param(
            "udp://192.0.2.1#dns.example",
            "'#name' only applies to tls:// upstreams",
            id="name-on-udp",
        ),
        pytest.param(
            "tls://192.0.2.1",
            "tls:// needs a server name to check the certificate against "
            "(write tls://192.0.2.1#dns.example, or use a host name)",
            id="tls-without-name",
        ),
        pytest.param(
            "tls://192.0.2.1#bad_name!", "'bad_name!' is not a valid TLS server name", id="bad-sni"
        ),
        pytest.param(
            "tls://-bad-.example",
            "'-bad-.example' is neither an IP address nor a host name",
            id="bad-host-name",
        ),
        pytest.param(
            "udp://192.0.2.1/dns-query",
            "only HOST or HOST:PORT may follow the scheme",
            id="path",
        ),
    ],
)
def test_parse_upstream_url_rejects(url: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_upstream_url(url)
    assert str(caught.value) == f"invalid upstream {url!r}: {reason}"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        pytest.param("127.0.0.1:5353", ("127.0.0.1", 5353), id="ipv4"),
        pytest.param("[::1]:53", ("::1", 53), id="ipv6"),
        pytest.param("0.0.0.0:53", ("0.0.0.0", 53), id="all-ipv4-when-explicit"),
        pytest.param("[::]:53", ("::", 53), id="all-ipv6-when-explicit"),
        pytest.param("[fe80::1%eth0]:53", ("fe80::1%eth0", 53), id="link-local-with-scope"),
        pytest.param("127.0.0.1:0", ("127.0.0.1", 0), id="random-port-for-tests"),
    ],
)
def test_parse_listen(addr: str, expected: tuple[str, int]) -> None:
    assert parse_listen(addr) == expected


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        pytest.param(
            ":53",
            "no address before the port; Guardian DNS never listens on every interface unless "
            "told to (write 0.0.0.0:53 or [::]:53 to mean that)",
            id="no-address",
        ),
        pytest.param("127.0.0.1", "no port (write 127.0.0.1:53)", id="no-port"),
        pytest.param("[::1]", "no port (write [::1]:53)", id="ipv6-no-port"),
        pytest.param(
            "::1:53", "an IPv6 address needs brackets, as in [2001:db8::1]:53", id="no-brackets"
        ),
        pytest.param(
            "pi.lan:53",
            "'pi.lan' is not an IP address (a name could change what we bind)",
            id="name",
        ),
        pytest.param("127.0.0.1:65536", "port 65536 is out of range (1..65535)", id="port-high"),
        pytest.param("127.0.0.1:", "port '' is not a number", id="empty-port"),
        pytest.param("[::1]x", "unexpected 'x' after ']'", id="junk-after-bracket"),
    ],
)
def test_parse_listen_rejects(addr: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_listen(addr)
    assert str(caught.value) == f"invalid listen address {addr!r}: {reason}"


METRICS_AUTH = [
    pytest.param(
        'metrics:\n  listen: "0.0.0.0:9153"\n',
        "cfg.yaml:2: metrics.listen: 0.0.0.0:9153 is reachable from the network: set "
        "metrics.username and metrics.password (HTTP basic auth), or listen on 127.0.0.1",
        id="lan-metrics-without-password",
    ),
    pytest.param(
        "metrics:\n  username: admin\n",
        "cfg.yaml:1: metrics.password: username and password must be set together",
        id="username-without-password",
    ),
]


@pytest.mark.parametrize(("text", "expected"), METRICS_AUTH)
def test_metrics_beyond_loopback_need_a_password(text: str, expected: str, tmp_path: Path) -> None:
    assert problems_of(text, tmp_path) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('metrics:\n  listen: "127.0.0.1:9153"\n', id="loopback-no-password"),
        pytest.param('metrics:\n  listen: "[::1]:9153"\n', id="v6-loopback-no-password"),
        pytest.param(
            'metrics:\n  listen: "0.0.0.0:9153"\n  username: u\n  password: p\n',
            id="lan-with-password",
        ),
        pytest.param('upstream:\n  tls_ca_file: "/etc/ssl/certs/ca.pem"\n', id="tls-ca-file"),
    ],
)
def test_metrics_and_tls_settings_that_are_fine(text: str, tmp_path: Path) -> None:
    cfg = load_config_text(text, source="cfg.yaml", base_dir=str(tmp_path))
    assert cfg.metrics.listen in ("127.0.0.1:9153", "[::1]:9153", "0.0.0.0:9153")


# --- allowlists and admin lists ----------------------------------------------------------------


def test_allowlists_default_to_every_category_and_carry_their_flags(tmp_path: Path) -> None:
    make_lists(tmp_path, "allow.txt", "mine.txt", "games-ok.txt", "tld.txt")
    cfg = load_config_text(
        "blocking:\n"
        "  lists:\n"
        "    - {file: allow.txt, action: allow}\n"
        "    - {file: mine.txt, category: custom, admin: true}\n"
        "    - {file: games-ok.txt, action: allow, category: games, format: rpz}\n"
        "    - {file: tld.txt, category: risky, allow_tld: true}\n",
        source="cfg.yaml",
        base_dir=str(tmp_path),
    )
    allow, mine, games, tld = cfg.blocking.lists
    assert (allow.action, allow.category, allow.admin) == ("allow", "*", False)
    assert (mine.action, mine.category, mine.admin) == ("block", "custom", True)
    assert (games.action, games.category, games.format) == ("allow", "games", "rpz")
    assert tld.allow_tld and not mine.allow_tld


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            "{file: a.txt, category: '*'}",
            "cfg.yaml:3: blocking.lists[0].category: '*' (every category) is for allowlists; "
            "a blocklist names one category",
            id="star-on-a-blocklist",
        ),
        pytest.param(
            "{file: a.txt, action: permit}",
            "cfg.yaml:3: blocking.lists[0].action: unknown value 'permit' (allowed: block, allow)",
            id="bad-action",
        ),
        pytest.param(
            "{file: a.txt, admin: 'yes'}",
            "cfg.yaml:3: blocking.lists[0].admin: expected true or false, got 'yes'",
            id="admin-not-a-bool",
        ),
        pytest.param(
            "{file: a.txt, format: pihole}",
            "cfg.yaml:3: blocking.lists[0].format: unknown value 'pihole' (allowed: auto, "
            + ", ".join(config.lists_mod.FORMATS)
            + ")",
            id="bad-format",
        ),
    ],
)
def test_list_entry_field_problems(entry: str, expected: str, tmp_path: Path) -> None:
    make_lists(tmp_path, "a.txt")
    assert problems_of(f"blocking:\n  lists:\n    - {entry}\n", tmp_path) == [expected]
