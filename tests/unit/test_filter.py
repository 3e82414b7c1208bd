"""The decision over the compiled table: suffix matching, categories and the precedence rules.

Each precedence rule of ``guardian_dns/filter.py``'s docstring has a test here, named after it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian_dns.filter import BLOCK, LOCAL_NODATA, LOCAL_NXDOMAIN, PASS, RULE_BUILTIN, Filter
from guardian_dns.trie import ALL_CATEGORIES, RuleRef, TableBuilder, from_bytes, rule_ref

# (source, category or None for "every category", admin, allow, names)
ListDef = tuple[str, str | None, bool, bool, list[str]]


def _filter(*lists: ListDef, policy: list[str] | None = None, bypass: bool = True) -> Filter:
    builder = TableBuilder()
    for source, category, admin, allow, names in lists:
        index = builder.add_list(source, category, admin=admin)
        builder.add(names, list(range(1, len(names) + 1)), index, allow=allow)
    table = from_bytes(builder.to_bytes())
    mask = table.mask_for(policy) if policy is not None else ALL_CATEGORIES
    return Filter(table, mask, bypass)


def _why(f: Filter, rule_id: int) -> tuple[int, int]:
    """(list index, line) of a rule id, the way "why was this blocked" resolves it."""
    rules = [RuleRef(lst["source"], 0, lst["category"] or "*") for lst in f.table.lists]
    ref = rule_ref(rules, rule_id, f.table)
    assert ref is not None
    return [r.list_source for r in rules].index(ref.list_source), ref.line


def _verdict(f: Filter, name: str) -> int:
    return f.decide(name)[0]


SUFFIXES = _filter(
    ("adult.txt", "adult", False, False, ["example.com", "x.y.ads.example.com"]),
    ("ads.txt", "ads", False, False, ["ads.example.com"]),
    ("gambling.txt", "gambling", False, False, ["casino.example"]),
    ("odd.txt", "odd", False, False, ["co.uk"]),
)
ADULT, ADS, GAMBLING, ODD = 1, 2, 4, 8


@pytest.mark.parametrize(
    ("name", "mask", "rule"),
    [
        pytest.param("example.com", ADULT, (1, 0), id="listed-name-itself"),
        pytest.param("www.example.com", ADULT, (1, 0), id="subdomain"),
        pytest.param("a.b.c.example.com", ADULT, (1, 0), id="deep-subdomain"),
        pytest.param("ads.example.com", ADS, (1, 1), id="more-specific-listed-name"),
        pytest.param("tracker.ads.example.com", ADS, (1, 1), id="most-specific-suffix-wins"),
        pytest.param("y.ads.example.com", ADS, (1, 1), id="between-two-listed-names"),
        pytest.param("z.x.y.ads.example.com", ADULT, (2, 0), id="deepest-listed-suffix"),
        pytest.param("bbc.co.uk", ODD, (1, 3), id="two-label-suffix"),
        pytest.param("casino.example", GAMBLING, (1, 2), id="other-category"),
    ],
)
def test_a_listed_name_blocks_itself_and_its_subdomains(
    name: str, mask: int, rule: tuple[int, int]
) -> None:
    line, list_index = rule
    verdict, rule_id, got_mask = SUFFIXES.decide(name)
    assert (verdict, got_mask) == (BLOCK, mask)
    assert _why(SUFFIXES, rule_id) == (list_index, line)


@pytest.mark.parametrize(
    "name",
    ["badexample.com", "example.com.evil.net", "com", "xample.com", "", "uk", "co.uk.example"],
)
def test_no_match_inside_a_label_or_above_a_listed_name(name: str) -> None:
    assert SUFFIXES.decide(name) == (PASS, -1, 0)


def test_only_the_categories_in_the_policy_block() -> None:
    f = _filter(
        ("adult.txt", "adult", False, False, ["both.example"]),
        ("games.txt", "games", False, False, ["both.example", "game.example"]),
        policy=["games"],
    )
    assert f.decide("both.example")[0::2] == (BLOCK, 0b10)  # counted under the policy's category
    assert _verdict(f, "game.example") == BLOCK
    g = _filter(("adult.txt", "adult", False, False, ["a.example"]), policy=["games"])
    assert _verdict(g, "a.example") == PASS


def test_bypass_names_are_answered_locally() -> None:
    f = _filter()
    assert f.decide("use-application-dns.net") == (LOCAL_NXDOMAIN, RULE_BUILTIN, 0)
    assert f.decide("mask-h2.icloud.com")[0] == LOCAL_NXDOMAIN
    assert f.decide("_dns.resolver.arpa")[0] == LOCAL_NODATA
    off = _filter(bypass=False)
    assert _verdict(off, "use-application-dns.net") == PASS


# --- precedence -------------------------------------------------------------------------------


def test_rule2_a_more_specific_allow_under_a_blocked_parent_wins() -> None:
    f = _filter(
        ("adult.txt", "adult", False, False, ["example.com"]),
        ("allow.txt", None, False, True, ["cdn.example.com"]),
    )
    assert _verdict(f, "cdn.example.com") == PASS
    assert _verdict(f, "img.cdn.example.com") == PASS
    assert _verdict(f, "www.example.com") == BLOCK
    _, rule, _ = f.decide("img.cdn.example.com")
    assert _why(f, rule) == (1, 1)  # "why": the allowlist, its line 1


def test_rule2_a_more_specific_block_under_an_allowed_parent_still_blocks() -> None:
    f = _filter(
        ("ads.txt", "ads", False, False, ["ads.example.com"]),
        ("allow.txt", None, False, True, ["example.com"]),
    )
    assert _verdict(f, "ads.example.com") == BLOCK
    assert _verdict(f, "x.ads.example.com") == BLOCK
    assert _verdict(f, "www.example.com") == PASS


def test_rule2_at_the_same_name_a_list_allow_beats_a_list_block() -> None:
    f = _filter(
        ("adult.txt", "adult", False, False, ["same.example"]),
        ("allow.txt", None, False, True, ["same.example"]),
    )
    assert _verdict(f, "same.example") == PASS
    assert _verdict(f, "www.same.example") == PASS


def test_rule1_an_admin_block_beats_a_list_allow_at_any_depth() -> None:
    f = _filter(
        ("allow.txt", None, False, True, ["www.example.com", "example.org"]),
        ("custom.txt", "custom", True, False, ["example.com", "example.org"]),
    )
    assert _verdict(f, "www.example.com") == BLOCK  # allow is deeper, admin block still wins
    assert _verdict(f, "example.org") == BLOCK  # same name
    _, rule, mask = f.decide("www.example.com")
    assert mask == 1
    assert _why(f, rule) == (1, 1)  # the admin list, line 1 (example.com)
    _, rule, _ = f.decide("example.org")
    assert _why(f, rule) == (1, 0)  # the admin list; the line kept is the allowlist's (first)


def test_rule1_an_admin_allow_beats_list_blocks_at_any_depth() -> None:
    f = _filter(
        ("adult.txt", "adult", False, False, ["m.video.example", "video.example"]),
        ("mine.txt", None, True, True, ["video.example"]),
    )
    assert _verdict(f, "m.video.example") == PASS
    assert _verdict(f, "x.m.video.example") == PASS


def test_rule1_between_admin_rules_the_most_specific_wins_and_block_beats_allow() -> None:
    f = _filter(
        ("custom-block.txt", "custom", True, False, ["example.com", "both.example"]),
        ("custom-allow.txt", None, True, True, ["homework.example.com", "both.example"]),
    )
    assert _verdict(f, "www.example.com") == BLOCK
    assert _verdict(f, "homework.example.com") == PASS
    assert _verdict(f, "a.homework.example.com") == PASS
    assert _verdict(f, "both.example") == BLOCK


def test_rule3_a_category_allow_only_cancels_that_category() -> None:
    f = _filter(
        ("adult.txt", "adult", False, False, ["both.example"]),
        ("games.txt", "games", False, False, ["both.example", "game.example"]),
        ("allow-games.txt", "games", False, True, ["both.example", "game.example"]),
    )
    assert _verdict(f, "game.example") == PASS
    verdict, _, mask = f.decide("both.example")
    assert (verdict, mask) == (BLOCK, 0b01)  # still adult


def test_single_label_names_block_only_when_listed() -> None:
    f = _filter(("tld.txt", "risky", False, False, ["zip"]))
    assert _verdict(f, "evil.zip") == BLOCK
    assert _verdict(f, "zip") == BLOCK
    assert _verdict(f, "example.com") == PASS


# --- the walk against a model ---------------------------------------------------------------------

_label = st.sampled_from(["a", "b", "c", "ab", "x-1"])
_name = st.lists(_label, min_size=1, max_size=4).map(".".join)
# (category index or None, admin, allow) of one list
_LISTS = [
    ("adult", False, False),
    ("games", False, False),
    (None, False, True),
    ("games", False, True),
    ("custom", True, False),
    (None, True, True),
]


def _model(rules: dict[str, list[int]], name: str, policy: int, cats: dict[str, int]) -> int:
    """The precedence of the module docstring, written the slow, obvious way."""
    labels = name.split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels))]  # most specific first
    for s in suffixes:  # rule 1: the most specific admin rule, block before allow
        kinds = [_LISTS[i] for i in rules.get(s, [])]
        if any(admin and not allow and cats[c or ""] & policy for c, admin, allow in kinds):
            return BLOCK
        if any(admin and allow for _, admin, allow in kinds):
            return PASS
    allowed = 0
    for s in suffixes:  # rules 2-3
        kinds = [_LISTS[i] for i in rules.get(s, []) if not _LISTS[i][1]]
        for c, _, allow in kinds:
            if allow:
                allowed |= cats[c] if c else -1
        block = 0
        for c, _, allow in kinds:
            if not allow:
                block |= cats[c or ""]
        if block & policy & ~allowed:
            return BLOCK
    return PASS


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(st.tuples(_name, st.integers(0, len(_LISTS) - 1)), max_size=25),
    probes=st.lists(_name, min_size=1, max_size=25),
    policy_names=st.sets(st.sampled_from(["adult", "games", "custom"])),
)
def test_decide_agrees_with_the_model(
    entries: list[tuple[str, int]], probes: list[str], policy_names: set[str]
) -> None:
    builder = TableBuilder()
    indexes = [builder.add_list(f"{i}.txt", c, admin=a) for i, (c, a, _) in enumerate(_LISTS)]
    rules: dict[str, list[int]] = {}
    for name, li in entries:
        builder.add([name], [1], indexes[li], allow=_LISTS[li][2])
        rules.setdefault(name, []).append(li)
    table = from_bytes(builder.to_bytes())
    cats = {c: 1 << bit for bit, c in enumerate(table.categories)}
    policy = 0
    for c in policy_names:
        policy |= cats.get(c, 0)
    f = Filter(table, policy, bypass_protection=False)
    for name in [*probes, *(n for n, _ in entries), *("z." + n for n, _ in entries)]:
        assert f.decide(name)[0] == _model(rules, name, policy, cats), name


def test_decisions_are_the_same_past_255_combos() -> None:
    lists: list[ListDef] = [
        (f"{i}.txt", "adult", False, False, [f"n{i}.example"]) for i in range(300)
    ]
    lists.append(("allow.txt", None, False, True, ["ok.n299.example"]))
    f = _filter(*lists)
    assert all(_verdict(f, f"www.n{i}.example") == BLOCK for i in range(300))
    assert _verdict(f, "ok.n299.example") == PASS
    _, rule, _ = f.decide("x.n280.example")
    assert _why(f, rule) == (280, 1)
