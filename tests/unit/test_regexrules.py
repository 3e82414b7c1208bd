"""Opt-in regex rules: whole-name matching, categories, limits, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardian_dns.errors import ListError
from guardian_dns.lists import parse_stream
from guardian_dns.regexrules import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    RegexRules,
    check_pattern,
    checked,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "lists"

RULES = RegexRules.build(
    [
        (r"(.*\.)?casino[0-9]*\..+", 0, 101),  # gambling
        (r"ad[sx]?[0-9]*\..+", 1, 102),  # ads
        (r"(.*\.)?(bet|poker)[a-z0-9-]*\.(com|net)", 0, 103),  # gambling
        (r"ads\.casino\.example", 2, 104),  # a third category on one exact name
    ]
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("casino.example", (0b001, 101), id="plain"),
        pytest.param("www.casino7.example", (0b001, 101), id="subdomain"),
        pytest.param("ads.example", (0b010, 102), id="second-pattern"),
        pytest.param("ads.casino.example", (0b111, 101), id="all-categories-first-rule"),
        pytest.param("betway.com", (0b001, 103), id="third-pattern"),
        pytest.param("betway.org", None, id="miss"),
        pytest.param("mycasino.example", None, id="no-search-semantics"),
        pytest.param("casino", None, id="whole-name-needed"),
        pytest.param("CASINO.example", None, id="names-arrive-lower-case"),
        pytest.param("", None, id="empty"),
    ],
)
def test_match_is_whole_name_and_ors_categories(
    name: str, expected: tuple[int, int] | None
) -> None:
    assert RULES.match(name) == expected


def test_empty_rule_set_matches_nothing() -> None:
    rules = RegexRules.build([])
    assert len(rules) == 0
    assert rules.match("anything.example") is None
    assert rules.match("") is None


def test_groups_of_one_pattern_do_not_leak_into_another() -> None:
    rules = RegexRules.build([(r"(a|b)x\.example", 0, 1), (r"(c)(d)\.example", 3, 2)])
    assert rules.match("bx.example") == (1, 1)
    assert rules.match("cd.example") == (8, 2)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        pytest.param(r"(.*\.)?casino\..+", "", id="good"),
        pytest.param(r"[A-Z0-9]+\.example", "", id="upper-case-in-a-class"),
        pytest.param(r"(?i:Casino)\.example", "", id="scoped-ignore-case"),
        pytest.param(r"(?<=a)b\.example", "", id="lookbehind"),
        pytest.param("", "empty pattern", id="empty"),
        pytest.param("[unclosed", "not a valid regular expression", id="invalid"),
        pytest.param(r"(a)\1\.example", "back-references", id="backreference"),
        pytest.param(r"(?P<x>a)(?P=x)", "named groups", id="named-group"),
        pytest.param(r"(a)?(?(1)b|c)", "conditional groups", id="conditional"),
        pytest.param(r"Casino\.example", "upper-case 'C' can never match", id="upper-case"),
        pytest.param(r"(?i)casino\.example", "global flags not at the start", id="global-flag"),
        pytest.param("a" * (MAX_PATTERN_LENGTH + 1), "characters (the limit is", id="too-long"),
    ],
)
def test_check_pattern(pattern: str, why: str) -> None:
    got = check_pattern(pattern)
    assert (why in got) if why else got == ""


def test_bad_patterns_of_a_list_are_named_by_file_and_line() -> None:
    summary = parse_stream(DATA / "rules.regex", "regex")
    good, problems = checked(summary)
    assert [line for _, line in good] == [3, 4, 5, 6, 8, 9]
    assert [(p.file, p.line) for p in problems] == [
        (str(DATA / "rules.regex"), n) for n in (11, 12, 13, 14)
    ]
    assert "not a valid regular expression" in problems[0].message
    rules = RegexRules.build([(pattern, 5, line) for pattern, line in good])
    assert rules.match("www.casino.example") == (1 << 5, 3)
    assert rules.match("a.b.telemetry-1.example") == (1 << 5, 8)  # ^...$ anchors still work
    assert rules.match("x.spaced.example") == (1 << 5, 9)  # the line's blanks are not the pattern


def test_build_refuses_a_bad_pattern() -> None:
    with pytest.raises(ListError, match=r"kids.regex: rule 7: '\[x': not a valid"):
        RegexRules.build([("ok\\.example", 0, 1), ("[x", 0, 7)], source="kids.regex")


def test_build_refuses_too_many_patterns() -> None:
    rules = [(f"p{i}\\.example", 0, i) for i in range(MAX_PATTERNS + 1)]
    with pytest.raises(ListError, match=f"{MAX_PATTERNS + 1} regular expressions"):
        RegexRules.build(rules)
    assert len(RegexRules.build(rules[:MAX_PATTERNS])) == MAX_PATTERNS


@pytest.mark.parametrize("bit", [-1, 64])
def test_build_refuses_a_category_bit_out_of_range(bit: int) -> None:
    with pytest.raises(ListError, match="category bit"):
        RegexRules.build([("a\\.example", bit, 1)])


def test_list_with_too_many_patterns_keeps_the_first_and_warns(tmp_path: Path) -> None:
    path = tmp_path / "many.regex"
    path.write_text("".join(f"p{i}\\.example\n" for i in range(MAX_PATTERNS + 3)))
    summary = parse_stream(path, "regex")
    assert len(summary.regexes) == MAX_PATTERNS
    assert summary.invalid == 3
    assert summary.warnings[0].line == MAX_PATTERNS + 1
