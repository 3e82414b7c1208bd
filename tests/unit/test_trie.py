"""The domain table: suffix matching, category bits, rule ids; a property test against a model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian_dns.errors import ConfigError
from guardian_dns.lists import parse_text
from guardian_dns.trie import (
    DomainTrie,
    RuleRef,
    TrieBuilder,
    build_from_lists,
    rule_id_for,
    rule_ref,
)


def _trie(*entries: tuple[str, str, int]) -> DomainTrie:
    builder = TrieBuilder()
    for domain, category, rule in entries:
        builder.add(domain, builder.add_category(category), rule)
    return builder.build()


SAMPLE = _trie(
    ("example.com", "adult", 1),
    ("ads.example.com", "ads", 2),
    ("x.y.ads.example.com", "adult", 3),
    ("casino.example", "gambling", 4),
    ("co.uk", "odd", 5),
)
ADULT, ADS, GAMBLING, ODD = 1, 2, 4, 8


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("example.com", (ADULT, 1), id="listed-name-itself"),
        pytest.param("www.example.com", (ADULT, 1), id="subdomain"),
        pytest.param("a.b.c.example.com", (ADULT, 1), id="deep-subdomain"),
        pytest.param("ads.example.com", (ADS, 2), id="more-specific-listed-name"),
        pytest.param("tracker.ads.example.com", (ADS, 2), id="most-specific-suffix-wins"),
        pytest.param("y.ads.example.com", (ADS, 2), id="between-two-listed-names"),
        pytest.param("z.x.y.ads.example.com", (ADULT, 3), id="deepest-listed-suffix"),
        pytest.param("badexample.com", None, id="no-match-inside-a-label"),
        pytest.param("example.com.evil.net", None, id="listed-name-as-prefix"),
        pytest.param("com", None, id="parent-of-listed"),
        pytest.param("xample.com", None, id="shorter-label"),
        pytest.param("bbc.co.uk", (ODD, 5), id="two-label-suffix"),
        pytest.param("", None, id="root"),
        pytest.param("casino.example", (GAMBLING, 4), id="other-category"),
    ],
)
def test_lookup(name: str, expected: tuple[int, int] | None) -> None:
    assert SAMPLE.lookup(name) == expected


def test_categories_are_bits_in_first_use_order() -> None:
    assert SAMPLE.categories == ("adult", "ads", "gambling", "odd")
    assert len(SAMPLE) == 5


def test_same_domain_in_two_categories_ors_bits_and_keeps_first_rule() -> None:
    trie = _trie(("a.example", "adult", 7), ("a.example", "scam", 9), ("a.example", "adult", 11))
    assert trie.lookup("www.a.example") == (0b11, 7)
    assert len(trie) == 1


def test_same_category_name_gets_the_same_bit() -> None:
    builder = TrieBuilder()
    assert [builder.add_category(n) for n in ("a", "b", "a", "c", "b")] == [0, 1, 0, 2, 1]


def test_more_than_64_categories_is_refused() -> None:
    builder = TrieBuilder()
    for i in range(64):
        assert builder.add_category(f"c{i}") == i
    with pytest.raises(ValueError, match="more than 64"):
        builder.add_category("c64")


def test_bit_63_round_trips() -> None:
    builder = TrieBuilder()
    for i in range(64):
        builder.add_category(f"c{i}")
    builder.add("a.example", 63, 12345)
    assert builder.build().lookup("a.example") == (1 << 63, 12345)


@pytest.mark.parametrize(
    ("names", "mask"),
    [
        pytest.param(["adult"], ADULT, id="one"),
        pytest.param(["adult", "gambling"], ADULT | GAMBLING, id="two"),
        pytest.param(["gambling", "nope"], GAMBLING, id="unknown-ignored"),
        pytest.param([], 0, id="none"),
        pytest.param(["odd", "ads", "adult", "gambling"], 15, id="all"),
    ],
)
def test_mask_for(names: list[str], mask: int) -> None:
    assert SAMPLE.mask_for(names) == mask


def test_build_from_lists_points_rules_at_list_and_line() -> None:
    adult = parse_text("# header\nporn.example\n\nsex.example\n", "adult.txt", "domains")
    ads = parse_text("||ads.example^\n@@||ok.porn.example^\n||sex.example^\n", "ads.txt")
    trie, rules, allows = build_from_lists([(adult, "adult"), (ads, "ads")])
    assert trie.categories == ("adult", "ads")
    assert rules == (RuleRef("adult.txt", 0, "adult"), RuleRef("ads.txt", 0, "ads"))
    assert allows == frozenset({"ok.porn.example"})
    mask, rule = trie.lookup("www.sex.example") or (0, -1)
    assert mask == 0b11
    assert rule_ref(rules, rule) == RuleRef("adult.txt", 4, "adult")  # first list wins
    _, rule = trie.lookup("ads.example") or (0, -1)
    assert rule_ref(rules, rule) == RuleRef("ads.txt", 1, "ads")
    assert rule == rule_id_for(1, 1)


@pytest.mark.parametrize(
    "rule_id", [-1, -2, rule_id_for(5, 10)], ids=["none", "builtin", "no-list"]
)
def test_rule_ref_of_an_id_no_list_made_is_none(rule_id: int) -> None:
    assert rule_ref((RuleRef("a", 0, "c"),), rule_id) is None


def test_build_from_lists_with_no_lists() -> None:
    trie, rules, allows = build_from_lists([])
    assert (len(trie), trie.categories, rules, allows) == (0, (), (), frozenset())
    assert trie.lookup("a.example") is None


def test_too_many_categories_names_the_list() -> None:
    parsed = [(parse_text("", f"list{i}.txt"), f"c{i}") for i in range(65)]
    with pytest.raises(ConfigError, match=r"list64\.txt: category: more than 64 categories"):
        build_from_lists(parsed)


# --- property: the table agrees with a brute-force model --------------------------------------

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


def _model(listed: dict[str, int], name: str) -> int | None:
    labels = name.split(".")
    for i in range(len(labels)):
        rule = listed.get(".".join(labels[i:]))
        if rule is not None:
            return rule
    return None


@settings(max_examples=200, deadline=None)
@given(
    domains=st.lists(DOMAIN, min_size=1, max_size=40),
    prefixes=st.lists(st.lists(LABEL, min_size=0, max_size=3).map(".".join), min_size=1),
    others=st.lists(DOMAIN, max_size=40),
)
def test_lookup_matches_the_suffix_model(
    domains: list[str], prefixes: list[str], others: list[str]
) -> None:
    builder = TrieBuilder()
    bit = builder.add_category("c")
    listed: dict[str, int] = {}
    for rule, domain in enumerate(domains):
        builder.add(domain, bit, rule)
        listed.setdefault(domain, rule)
    trie = builder.build()
    assert len(trie) == len(listed)
    for i, domain in enumerate(domains):
        prefix = prefixes[i % len(prefixes)]
        name = f"{prefix}.{domain}" if prefix else domain
        hit = trie.lookup(name)
        assert hit is not None  # every listed name and every subdomain of it is found
        assert hit == (1, _model(listed, name))  # ...by its most specific listed suffix
    for name in others:
        expected = _model(listed, name)
        hit = trie.lookup(name)
        if expected is None:
            assert hit is None  # no suffix listed: never found
        else:
            assert hit == (1, expected)
