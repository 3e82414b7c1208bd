"""The safe-search table: the bundled data maps what the vendors document, and a bad table says
exactly where it is wrong.

Error texts are compared exactly: like the config's, they are the interface of a data file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from guardian_dns.errors import ConfigError
from guardian_dns.safesearch import (
    BUNDLED_TABLE,
    YOUTUBE_MODES,
    Engine,
    SafeSearchTable,
    load_table,
    load_table_text,
)

ALL = frozenset({"google", "youtube", "bing", "duckduckgo", "brave", "ecosia", "pixabay", "yandex"})
YOUTUBE_HOSTS = (
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
)


@pytest.fixture(scope="module")
def table() -> SafeSearchTable:
    return load_table()


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_table_text(text, "ss.yaml")
    return [str(p) for p in caught.value.problems]


# --- the bundled table -----------------------------------------------------------------------


def test_bundled_table_loads_with_every_engine(table: SafeSearchTable) -> None:
    assert BUNDLED_TABLE.name == "safesearch.yaml"
    assert table.source == str(BUNDLED_TABLE)
    assert {e.name for e in table.engines} == ALL
    for engine in table.engines:
        assert engine.source.startswith("https://"), engine.name


def test_every_google_search_domain_is_forced_to_safesearch(table: SafeSearchTable) -> None:
    google = table.engine("google")
    # Google's supported_domains list has some 190 search domains; a short table means lost data.
    assert len(google.names) > 180
    assert "google.com" in google.names
    for name in google.names:
        assert name == "google.com" or name.startswith("www.google."), name
        assert table.target(name, frozenset({"google"}), "moderate") == "forcesafesearch.google.com"
        assert table.target(name, frozenset({"google"}), "strict") == "forcesafesearch.google.com"


@pytest.mark.parametrize(
    "name",
    [
        "google.com",
        "www.google.com",
        "www.google.co.uk",
        "www.google.de",
        "www.google.fr",
        "www.google.com.au",
        "www.google.co.jp",
        "www.google.com.br",
        "www.google.co.in",
        "www.google.ca",
        "www.google.es",
        "www.google.co.za",
        "www.google.cat",
    ],
)
def test_common_google_country_sites_are_in_the_table(table: SafeSearchTable, name: str) -> None:
    assert table.target(name, frozenset({"google"}), "moderate") == "forcesafesearch.google.com"


@pytest.mark.parametrize("name", YOUTUBE_HOSTS)
@pytest.mark.parametrize(
    ("mode", "expected"),
    [("strict", "restrict.youtube.com"), ("moderate", "restrictmoderate.youtube.com")],
)
def test_youtube_follows_the_groups_restricted_mode(
    table: SafeSearchTable, name: str, mode: str, expected: str
) -> None:
    assert table.target(name, frozenset({"youtube"}), mode) == expected


@pytest.mark.parametrize(
    ("engine", "name", "expected"),
    [
        ("bing", "www.bing.com", "strict.bing.com"),
        ("duckduckgo", "duckduckgo.com", "safe.duckduckgo.com"),
        ("duckduckgo", "www.duckduckgo.com", "safe.duckduckgo.com"),
        ("brave", "search.brave.com", "forcesafe.search.brave.com"),
        ("ecosia", "www.ecosia.org", "strict-safe-search.ecosia.org"),
        ("pixabay", "pixabay.com", "safesearch.pixabay.com"),
    ],
)
def test_other_engines_point_at_their_enforcement_name(
    table: SafeSearchTable, engine: str, name: str, expected: str
) -> None:
    for mode in YOUTUBE_MODES:  # one target: the YouTube mode does not matter
        assert table.target(name, frozenset({engine}), mode) == expected


@pytest.mark.parametrize(
    ("name", "engines"),
    [
        pytest.param("www.google.com", frozenset({"bing", "youtube"}), id="engine-not-enforced"),
        pytest.param("www.google.com", frozenset(), id="no-engines"),
        pytest.param("mail.google.com", ALL, id="google-service-not-search"),
        pytest.param("images.google.com", ALL, id="subdomain-not-listed"),
        pytest.param("music.youtube.com", ALL, id="youtube-subdomain-not-listed"),
        pytest.param("bing.com", ALL, id="bing-apex-not-documented"),
        pytest.param("forcesafesearch.google.com", ALL, id="the-target-itself"),
        pytest.param("WWW.GOOGLE.COM", ALL, id="callers-lower-case-first"),
        pytest.param("example.com", ALL, id="unrelated"),
    ],
)
def test_names_outside_the_table_or_the_group_are_left_alone(
    table: SafeSearchTable, name: str, engines: frozenset[str]
) -> None:
    assert table.target(name, engines, "strict") is None


def test_yandex_has_no_dns_mechanism_so_its_names_are_blocked_instead(
    table: SafeSearchTable,
) -> None:
    yandex = table.engine("yandex")
    assert not yandex.enforceable
    assert (yandex.moderate, yandex.strict) == (None, None)
    assert "block" in yandex.note
    assert table.target("yandex.ru", ALL, "strict") is None
    blocked = table.unenforceable(["yandex"])
    assert {"yandex.ru", "www.yandex.ru", "yandex.com", "ya.ru"} <= blocked
    assert table.unenforceable(["google", "youtube"]) == frozenset()


def test_rewrites_for_a_group_agree_with_target(table: SafeSearchTable) -> None:
    engines = frozenset({"google", "youtube", "bing"})
    for mode in YOUTUBE_MODES:
        rewrites = table.rewrites(engines, mode)
        names = {n for e in table.engines if e.name in engines for n in e.names}
        assert set(rewrites) == names
        for name, target in rewrites.items():
            assert table.target(name, engines, mode) == target


def test_an_unknown_youtube_mode_is_a_programming_error(table: SafeSearchTable) -> None:
    with pytest.raises(ValueError, match="unknown YouTube mode 'lenient'"):
        table.target("www.youtube.com", frozenset({"youtube"}), "lenient")
    with pytest.raises(ValueError, match="unknown YouTube mode"):
        table.rewrites(["youtube"], "")


def test_an_unknown_engine_names_the_known_ones(table: SafeSearchTable) -> None:
    with pytest.raises(KeyError, match="known: google, youtube"):
        table.engine("altavista")


def test_the_table_cannot_be_changed_after_loading(table: SafeSearchTable) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.engines = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.engines[0].strict = "evil.example"  # type: ignore[misc]


def test_a_table_built_in_code_refuses_a_name_in_two_engines() -> None:
    a = Engine("a", "https://a.example", ("www.example.com",), "a.example", "a.example")
    b = Engine("b", "https://b.example", ("www.example.com",), "b.example", "b.example")
    with pytest.raises(ValueError, match="listed by both 'a' and 'b'"):
        SafeSearchTable((a, b))


# --- bad files ---------------------------------------------------------------------------------

GOOD_ENGINE = """\
  bing:
    source: https://help.example/bing
    target: strict.bing.com
    names: [www.bing.com]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: 1\nengines:\n" + GOOD_ENGINE + "colour: blue\n",
            ["ss.yaml:7: colour: unknown key (known: version, engines)"],
            id="unknown-top-level-key",
        ),
        pytest.param(
            "version: 1\n",
            ["ss.yaml:1: engines: missing"],
            id="no-engines",
        ),
        pytest.param(
            "version: 2\nengines:\n" + GOOD_ENGINE,
            ["ss.yaml:1: version: version 2 is not supported (this release reads 1)"],
            id="future-version",
        ),
        pytest.param(
            "version: one\nengines:\n" + GOOD_ENGINE,
            ["ss.yaml:1: version: expected a number, got 'one'"],
            id="version-not-a-number",
        ),
        pytest.param(
            "version: 1\nengines:\n" + GOOD_ENGINE + GOOD_ENGINE,
            ["ss.yaml:7: engines.bing: duplicate key, first at line 3"],
            id="engine-twice",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    target: strict.bing.com\n"
            "    target: strict.bing.com\n    names: [www.bing.com]\n",
            ["ss.yaml:6: engines.bing.target: duplicate key, first at line 5"],
            id="key-twice",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    tagret: strict.bing.com\n"
            "    names: [www.bing.com]\n",
            [
                "ss.yaml:4: engines.bing.target: missing: 'target' (one name, or null) or "
                "'targets' (moderate and strict)",
                "ss.yaml:5: engines.bing.tagret: unknown key (did you mean 'target'? known: "
                "source, target, targets, note, names)",
            ],
            id="misspelt-key",
        ),
        pytest.param(
            "version: 1\nengines:\n  Bing Search:\n    source: https://a\n",
            [
                "ss.yaml:3: engines.Bing Search: an engine id is 1-32 of a-z 0-9 _ -, "
                "starting a-z 0-9"
            ],
            id="bad-engine-id",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    target: strict.bing.com\n"
            "    targets: {moderate: a.example, strict: b.example}\n    names: [www.bing.com]\n",
            ["ss.yaml:6: engines.bing.targets: give either 'target' or 'targets', not both"],
            id="target-and-targets",
        ),
        pytest.param(
            "version: 1\nengines:\n  youtube:\n    source: https://a\n"
            "    targets:\n      moderate: restrictmoderate.youtube.com\n      lenient: x.example\n"
            "    names: [www.youtube.com]\n",
            [
                "ss.yaml:6: engines.youtube.targets.strict: missing",
                "ss.yaml:7: engines.youtube.targets.lenient: unknown key (known: moderate, strict)",
            ],
            id="targets-modes",
        ),
        pytest.param(
            "version: 1\nengines:\n  yandex:\n    source: https://a\n    target: null\n"
            "    names: [yandex.ru]\n",
            [
                "ss.yaml:5: engines.yandex.target: null (no DNS mechanism: block the engine "
                "instead) needs a 'note' saying why"
            ],
            id="null-target-without-note",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: ftp://a\n    target: strict.bing.com\n"
            "    names: [www.bing.com]\n",
            ["ss.yaml:4: engines.bing.source: expected the URL of the vendor's documentation"],
            id="source-not-a-url",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    target: strict.bing.com\n"
            "    names:\n      - WWW.Bing.com.\n      - 203.0.113.7\n      - 42\n      - ''\n",
            [
                "ss.yaml:7: engines.bing.names[0]: write 'WWW.Bing.com.' as 'www.bing.com' "
                "(lower case, no trailing dot)",
                "ss.yaml:8: engines.bing.names[1]: '203.0.113.7' is not a domain name",
                "ss.yaml:9: engines.bing.names[2]: expected a non-empty string, got '42'",
                "ss.yaml:10: engines.bing.names[3]: expected a non-empty string, got ''",
            ],
            id="bad-names",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    target: strict.bing.com\n"
            "    names: www.bing.com\n",
            ["ss.yaml:6: engines.bing.names: expected a list of names, got 'www.bing.com'"],
            id="names-not-a-list",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n    target: strict.bing.com\n"
            "    names: []\n",
            ["ss.yaml:6: engines.bing.names: no names listed"],
            id="names-empty",
        ),
        pytest.param(
            "version: 1\nengines:\n" + GOOD_ENGINE + "  other:\n    source: https://a\n"
            "    target: safe.example\n    names:\n      - www.bing.com\n",
            [
                "ss.yaml:11: engines.other.names[0]: 'www.bing.com' is already listed at line 6 "
                "(engine 'bing')"
            ],
            id="name-in-two-engines",
        ),
        pytest.param(
            "version: 1\nengines:\n" + GOOD_ENGINE + "  other:\n    source: https://a\n"
            "    target: www.bing.com\n    names: [www.other.example]\n",
            [
                "ss.yaml:9: engines.other.target: 'www.bing.com' is itself a name to rewrite "
                "(line 6, engine 'bing'): the rewrite would loop"
            ],
            id="target-is-a-listed-name",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing: [www.bing.com]\n",
            ["ss.yaml:3: engines.bing: expected a mapping, got a list"],
            id="engine-not-a-mapping",
        ),
        pytest.param(
            "version: 1\nengines:\n  bing:\n    source: https://a\n  names: [x\n",
            ["ss.yaml:6: YAML error: expected ',' or ']', but got '<stream end>'"],
            id="yaml-syntax",
        ),
        pytest.param(
            "- just\n- a list\n",
            ["ss.yaml:1: expected a mapping, got a list"],
            id="not-a-mapping",
        ),
        pytest.param("", ["ss.yaml: the file is empty (expected version, engines)"], id="empty"),
    ],
)
def test_a_bad_table_says_file_line_and_field(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = (
        "version: 1\n"
        "engines:\n"
        "  bing:\n"
        "    source: https://a\n"
        "    target: Strict.Bing.com\n"
        "    names: [www.bing.com]\n"
        "  ddg:\n"
        "    source: https://b\n"
        "    target: safe.duckduckgo.com\n"
        "    names: [duckduckgo.com, duckduckgo.com]\n"
        "colour: blue\n"
    )
    assert problems_of(text) == [
        "ss.yaml:5: engines.bing.target: write 'Strict.Bing.com' as 'strict.bing.com' "
        "(lower case, no trailing dot)",
        "ss.yaml:10: engines.ddg.names[1]: 'duckduckgo.com' is already listed at line 10 "
        "(this engine)",
        "ss.yaml:11: colour: unknown key (known: version, engines)",
    ]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    gone = tmp_path / "gone.yaml"
    with pytest.raises(ConfigError) as caught:
        load_table(gone)
    assert [str(p) for p in caught.value.problems] == [f"{gone}: no such file"]


def test_a_table_file_on_disk_reports_its_own_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("version: 1\nengines:\n  bing:\n    source: https://a\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:4: engines.bing.names: missing",
        f"{path}:4: engines.bing.target: missing: 'target' (one name, or null) or 'targets' "
        "(moderate and strict)",
    ]
