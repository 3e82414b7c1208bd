"""List parsing against golden files cut from real lists, and the edge cases of names."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardian_dns.errors import ListError
from guardian_dns.lists import detect_format, normalise_domain, parse_file, parse_text

DATA = Path(__file__).resolve().parent.parent / "data" / "lists"

# file, the format auto-detection must pick, {line: words its warning must contain}
GOLDEN = [
    pytest.param("clefspeare13.hosts", "hosts", {}, id="hosts-clefspeare13"),
    pytest.param(
        "sinfonietta.hosts",
        "hosts",
        {19: "IP address", 41: "single label"},
        id="hosts-sinfonietta-quirks",
    ),
    pytest.param(
        "ut1-doh.domains",
        "domains",
        {n: "IP address" for n in (15, 22, 26, 33, 34, 35, 37, 39, 40, 42)},
        id="domains-ut1-doh",
    ),
    pytest.param("blocklistproject-phishing.domains", "domains", {}, id="domains-phishing"),
    pytest.param("ultimatehosts.wildcard", "wildcard", {}, id="wildcard-ultimatehosts"),
    pytest.param("blocklistproject-drugs.adblock", "adblock", {}, id="adblock-drugs"),
    pytest.param(
        "rules.adblock",
        "adblock",
        {
            12: "cosmetic",
            13: "cosmetic",
            14: "regular-expression",
            15: "not a whole-domain rule",
            16: "not a whole-domain rule",
            17: "badfilter",
            22: "'*'",
            23: "IP address",
        },
        id="adblock-synthetic-rules",
    ),
    pytest.param(
        "bad-lines.domains",
        "domains",
        {
            13: "label of 64 characters",
            15: "name of 254 characters",
            16: "'*' alone",
            17: "IP address",
            18: "IP address",
            19: "single label",
            20: "empty label",
            21: "empty label",
            22: "empty label",
            23: "character '!'",
            24: "all digits",
            25: "more than one word",
            26: "internationalised",
        },
        id="domains-synthetic-bad-lines",
    ),
]


def _golden(name: str) -> tuple[list[str], list[str]]:
    """Blocked and allowed names of a golden file (see test_list_formats), repeats removed."""
    blocks: dict[str, None] = {}
    allows: dict[str, None] = {}
    for line in (DATA / f"{name}.expected").read_text(encoding="utf-8").splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("block", "allow"):
            (blocks if kind == "block" else allows).setdefault(rest.split(" ", 1)[1], None)
    return list(blocks), list(allows)


@pytest.mark.parametrize(("name", "fmt", "warnings"), GOLDEN)
def test_list_loads_exactly_the_golden_domains(
    name: str, fmt: str, warnings: dict[int, str]
) -> None:
    parsed = parse_file(DATA / name)
    domains, allows = _golden(name)
    assert parsed.format == fmt
    assert list(parsed.domains) == domains
    assert list(parsed.allows) == allows
    assert len(parsed.lines) == len(parsed.domains)
    got = {w.line: w.message for w in parsed.warnings}
    assert sorted(got) == sorted(warnings), "\n".join(str(w) for w in parsed.warnings)
    for line, words in warnings.items():
        assert words in got[line]
    assert all(w.file == str(DATA / name) and w.field == "" for w in parsed.warnings)


@pytest.mark.parametrize(("name", "fmt", "warnings"), GOLDEN)
def test_format_is_detected_from_the_first_lines(
    name: str, fmt: str, warnings: dict[int, str]
) -> None:
    lines = (DATA / name).read_text(encoding="utf-8-sig").splitlines()
    assert detect_format(lines) == fmt


@pytest.mark.parametrize(("name", "fmt", "warnings"), GOLDEN)
def test_each_domain_points_at_the_line_it_came_from(
    name: str, fmt: str, warnings: dict[int, str]
) -> None:
    parsed = parse_file(DATA / name)
    raw = (DATA / name).read_text(encoding="utf-8-sig").split("\n")
    assert parsed.total_lines == len(raw) - (raw[-1] == "")
    for domain, line in zip(parsed.domains, parsed.lines, strict=True):
        text = raw[line - 1].lower()
        assert domain in text or domain.startswith("xn--"), (domain, line, text)


def test_bad_lines_file_keeps_every_valid_line_with_its_line_number() -> None:
    parsed = parse_file(DATA / "bad-lines.domains")
    where = dict(zip(parsed.domains, parsed.lines, strict=True))
    assert where["good.example.com"] == 4  # the BOM does not hide line 1, and the repeat on 29
    assert where["upper.example.com"] == 5
    assert where["trailing.example.org"] == 6
    assert where["xn--bcher-kva.example"] == 7  # the punycode spelling on line 8 is a repeat
    assert where["wild.example.net"] == 9
    assert where["spaced.example.com"] == 28
    assert parsed.total_lines == 29


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("example.com", "example.com", id="plain"),
        pytest.param("WWW.Example.COM", "www.example.com", id="upper-case"),
        pytest.param("example.com.", "example.com", id="trailing-dot"),
        pytest.param("  example.com\r", "example.com", id="whitespace-and-cr"),
        pytest.param("bücher.example", "xn--bcher-kva.example", id="idn"),
        pytest.param("BÜCHER.example", "xn--bcher-kva.example", id="idn-upper-case"),
        pytest.param("пример.рф", "xn--e1afmkfd.xn--p1ai", id="idn-cyrillic"),
        pytest.param("_dmarc.example.com", "_dmarc.example.com", id="underscore"),
        pytest.param("a-.example.com", "a-.example.com", id="hyphen-at-label-end"),
        pytest.param("1.2.3.example", "1.2.3.example", id="digit-labels"),
        pytest.param("x.123abc", "x.123abc", id="digits-then-letters-in-tld"),
        pytest.param("a" * 63 + ".com", "a" * 63 + ".com", id="label-63"),
        pytest.param("a" * 64 + ".com", None, id="label-64"),
        pytest.param(
            ".".join(["b" * 63] * 3 + ["c" * 61]),
            ".".join(["b" * 63] * 3 + ["c" * 61]),
            id="name-253",
        ),
        pytest.param(".".join(["b" * 63] * 3 + ["c" * 62]), None, id="name-254"),
        pytest.param("com", None, id="bare-tld"),
        pytest.param("*", None, id="star"),
        pytest.param("*.example.com", None, id="wildcard-needs-domains-format"),
        pytest.param("10.0.0.1", None, id="ipv4"),
        pytest.param("::1", None, id="ipv6"),
        pytest.param("a..b", None, id="empty-label"),
        pytest.param("", None, id="empty"),
        pytest.param("exa mple.com", None, id="space"),
        pytest.param("example.com/path", None, id="slash"),
        pytest.param("\u05d0a.example", None, id="idna-failure"),
        pytest.param("a\ufffd.example", None, id="undecodable-byte"),
    ],
)
def test_normalise_domain(text: str, expected: str | None) -> None:
    assert normalise_domain(text) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], "domains", id="empty"),
        pytest.param(["# only", "# comments"], "domains", id="only-comments"),
        pytest.param(["[Adblock Plus 2.0]"], "adblock", id="adblock-header"),
        pytest.param(["! c", "@@||a.com^", "||b.com^$important"], "adblock", id="adblock-rules"),
        pytest.param(
            ["127.0.0.1 localhost", "a.com", "b.com", "0.0.0.0 c.com", "d.com"],
            "domains",
            id="majority-wins",
        ),
        pytest.param(
            ["127.0.0.1 localhost", "::1 localhost", "0.0.0.0 c.com", "d.com"],
            "hosts",
            id="hosts-majority",
        ),
        pytest.param(["\ufeff0.0.0.0 a.com"], "hosts", id="bom"),
        pytest.param(["*.a.com", "*.b.com"], "wildcard", id="wildcard"),
        pytest.param(["*.a.com", "b.com", "c.com"], "domains", id="some-wildcards"),
        pytest.param(["# c", "address=/a.com/#", "server=/b.com/"], "dnsmasq", id="dnsmasq"),
        pytest.param(["server:", 'local-zone: "a.com." always_null'], "unbound", id="unbound"),
        pytest.param(
            ["$TTL 2h", "@ SOA ns. admin. 1 2 3 4 5", "a.com CNAME .", "*.a.com CNAME ."],
            "rpz",
            id="rpz",
        ),
        pytest.param(["; c", r"(^|\.)a\.com$", r"ads?[0-9]*\..+"], "regex", id="regex"),
        pytest.param(["||a.com^", "@@||b.com^", "c.com^"], "adblock", id="adblock-not-regex"),
    ],
)
def test_detect_format(lines: list[str], expected: str) -> None:
    assert detect_format(lines) == expected


def test_detect_format_reads_only_the_first_lines() -> None:
    lines = ["a.com"] * 300 + ["||b.com^"] * 1000
    assert detect_format(lines) == "domains"


def test_hosts_lines_with_several_names_and_comments() -> None:
    text = (
        "127.0.0.1 localhost localhost.localdomain\n"
        "::1 ip6-localhost ip6-loopback ip6-real.example\n"
        "0.0.0.0 a.example b.example # c.example is a comment\n"
        ":: v6.example\n"
        "0.0.0.0\n"
        "not-an-address x.example\n"
        "bare.example\n"
    )
    parsed = parse_text(text, "h", "hosts")
    assert parsed.domains == (
        "ip6-real.example",
        "a.example",
        "b.example",
        "v6.example",
        "bare.example",
    )
    assert parsed.lines == (2, 3, 3, 4, 7)
    assert [(w.line, w.message.split(": ")[-1]) for w in parsed.warnings] == [
        (5, "an address with no name after it"),
        (6, "expected 'ADDRESS NAME...'"),
    ]


def test_given_format_wins_over_detection() -> None:
    parsed = parse_text("0.0.0.0 a.example\n", "x", "domains")
    assert parsed.format == "domains"
    assert parsed.domains == ()
    assert len(parsed.warnings) == 1


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown list format"):
        parse_text("a.example", "x", "bind")


def test_adblock_counts_ignored_modifiers() -> None:
    parsed = parse_file(DATA / "rules.adblock")
    assert parsed.ignored_modifiers == 3  # $important twice, $third-party,important; not $badfilter


def test_duplicates_keep_the_first_line() -> None:
    parsed = parse_text("a.example\nb.example\nA.EXAMPLE\na.example.\n", "x")
    assert parsed.domains == ("a.example", "b.example")
    assert parsed.lines == (1, 2)


def test_form_feed_does_not_shift_line_numbers() -> None:
    parsed = parse_text("a.example\n\x0c\nb.example\n", "x", "domains")
    assert parsed.lines == (1, 3)


def test_bytes_that_are_not_utf8_spoil_only_their_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good.example\nb\xfccher.example\nalso.example\n")
    parsed = parse_file(path)
    assert parsed.domains == ("good.example", "also.example")
    assert [(w.line, "not UTF-8" in w.message) for w in parsed.warnings] == [(2, True)]


def test_missing_list_is_a_list_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(ListError) as info:
        parse_file(path)
    assert info.value.problem.file == str(path)
    assert info.value.problem.line == 0
    assert info.value.problem.message == "cannot read: no such file"


def test_directory_is_a_list_error(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="cannot read: is a directory"):
        parse_file(tmp_path)


def test_empty_file_loads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    parsed = parse_file(path)
    assert (parsed.domains, parsed.warnings, parsed.total_lines) == ((), (), 0)
