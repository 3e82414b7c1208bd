"""Every list format against golden files, and the streaming reader's promises.

Each sample under tests/data/lists has a ``<name>.expected`` file: the format, the counts, then
every entry ``parse_stream`` hands over (``block LINE NAME`` / ``allow LINE NAME``, in order,
repeats included), every warning (``warn LINE MESSAGE``) and every regex (``regex LINE PATTERN``).
To regenerate after a deliberate change, run
``GUARDIAN_DNS_REGOLD=1 python -m pytest tests/unit/test_list_formats.py`` and read the diff
line by line before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import guardian_dns.lists as lists_mod
from guardian_dns.errors import ListError, Problem
from guardian_dns.lists import (
    FORMATS,
    MAX_LINE_BYTES,
    MAX_WARNINGS_KEPT,
    ListSummary,
    detect_format,
    parse_file,
    parse_stream,
    parse_text,
    parse_text_stream,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "lists"
REGOLD = os.environ.get("GUARDIAN_DNS_REGOLD") == "1"

# sample file, the format it is written in (what "auto" must detect)
SAMPLES = {
    "clefspeare13.hosts": "hosts",
    "sinfonietta.hosts": "hosts",
    "blocklistproject-drugs.hosts": "hosts",
    "windows.hosts": "hosts",
    "ut1-doh.domains": "domains",
    "blocklistproject-phishing.domains": "domains",
    "bad-lines.domains": "domains",
    "ultimatehosts.wildcard": "wildcard",
    "blocklistproject-drugs.adblock": "adblock",
    "hagezi-light.adblock": "adblock",
    "rules.adblock": "adblock",
    "blocklistproject-drugs.dnsmasq": "dnsmasq",
    "hagezi-personal.dnsmasq": "dnsmasq",
    "tricky.dnsmasq": "dnsmasq",
    "hagezi-personal.unbound": "unbound",
    "tricky.unbound": "unbound",
    "zone.rpz": "rpz",
    "hagezi-style.rpz": "rpz",
    "rules.regex": "regex",
}
NAMES = list(SAMPLES)

Entries = tuple[list[str], list[int], list[str], list[int]]


def _fmt(name: str) -> str:
    """Regex rules load only when asked for by name; every other sample is parsed as "auto"."""
    return "regex" if SAMPLES[name] == "regex" else "auto"


def _parse(path: Path, fmt: str = "auto", **kwargs: int) -> tuple[ListSummary, Entries]:
    entries: Entries = ([], [], [], [])
    calls: list[int] = []

    def sink(bn: list[str], bl: list[int], an: list[str], al: list[int]) -> None:
        assert bn or an, "no call for a chunk without entries"
        assert len(bn) == len(bl) and len(an) == len(al)
        assert bl == sorted(bl) and al == sorted(al), "each call is in line order"
        calls.append(len(bn) + len(an))
        for got, more in zip(entries, (bn, bl, an, al), strict=True):
            got.extend(more)  # type: ignore[arg-type]

    summary = parse_stream(path, fmt, sink, **kwargs)  # type: ignore[arg-type]
    assert summary.blocked == len(entries[0]) and summary.allowed == len(entries[2])
    return summary, entries


def _render(name: str, summary: ListSummary, entries: Entries) -> str:
    out = [
        f"# Golden output of guardian_dns.lists.parse_stream for {name}; regenerate with",
        "# GUARDIAN_DNS_REGOLD=1 python -m pytest tests/unit/test_list_formats.py; read the diff.",
        f"format {summary.format}",
        f"lines {summary.total_lines}",
        f"blocked {summary.blocked}",
        f"allowed {summary.allowed}",
        f"invalid {summary.invalid}",
        f"ignored_modifiers {summary.ignored_modifiers}",
    ]
    bn, bl, an, al = entries
    out += [f"block {line} {name}" for name, line in zip(bn, bl, strict=True)]
    out += [f"allow {line} {name}" for name, line in zip(an, al, strict=True)]
    out += [f"warn {w.line} {w.message}" for w in summary.warnings]
    out += [f"regex {line} {pattern}" for pattern, line in summary.regexes]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("name", NAMES)
def test_sample_parses_exactly_as_its_golden_file(name: str) -> None:
    summary, entries = _parse(DATA / name, _fmt(name))
    got = _render(name, summary, entries)
    golden = DATA / f"{name}.expected"
    if REGOLD:
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8")
    assert summary.format == SAMPLES[name]
    assert summary.invalid == len(summary.warnings)
    assert all(w.file == str(DATA / name) and w.field == "" for w in summary.warnings)


@pytest.mark.parametrize("name", NAMES)
def test_format_of_every_sample_is_detected(name: str) -> None:
    lines = (DATA / name).read_text(encoding="utf-8-sig", errors="replace").split("\n")
    assert detect_format(lines) == SAMPLES[name]


def test_every_format_has_a_sample() -> None:
    assert set(SAMPLES.values()) == set(FORMATS)


@pytest.mark.parametrize("name", NAMES)
def test_line_by_line_reading_gives_the_same_result(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk path is an optimisation: with it disabled every line goes through the exact
    per-line reader, and nothing may change."""
    fast = _parse(DATA / name, _fmt(name))
    monkeypatch.setattr(lists_mod, "_learn", lambda *args: None)
    assert _parse(DATA / name, _fmt(name)) == fast


@pytest.mark.parametrize("chunk_lines", [1, 2, 7, 64])
@pytest.mark.parametrize("name", NAMES)
def test_small_chunks_give_the_same_result(name: str, chunk_lines: int) -> None:
    assert _parse(DATA / name, _fmt(name), chunk_lines=chunk_lines) == _parse(
        DATA / name, _fmt(name)
    )


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 333])
@pytest.mark.parametrize("name", NAMES)
def test_line_numbers_hold_across_read_blocks(name: str, block_bytes: int) -> None:
    """Blocks are cut at the last newline; a block with none carries over to the next read."""
    assert _parse(DATA / name, _fmt(name), block_bytes=block_bytes) == _parse(
        DATA / name, _fmt(name)
    )


@pytest.mark.parametrize("name", NAMES)
def test_text_stream_matches_file_stream(name: str) -> None:
    raw = (DATA / name).read_bytes().decode("utf-8", errors="replace")
    got: list[tuple[list[str], list[int], list[str], list[int]]] = []
    summary = parse_text_stream(
        raw, str(DATA / name), _fmt(name), lambda *e: got.append(e), block_chars=100
    )
    file_summary, entries = _parse(DATA / name, _fmt(name))
    assert summary == file_summary
    assert [x for call in got for x in call[0]] == entries[0]
    assert [x for call in got for x in call[1]] == entries[1]


def test_calls_cover_at_most_chunk_lines_lines() -> None:
    text = "".join(f"0.0.0.0 host{i}.example\n" for i in range(1000))
    spans: list[tuple[int, int]] = []
    summary = parse_text_stream(
        text, "x", "hosts", lambda bn, bl, an, al: spans.append((bl[0], bl[-1])), chunk_lines=300
    )
    assert spans == [(1, 300), (301, 600), (601, 900), (901, 1000)]
    assert summary.blocked == 1000


@pytest.mark.parametrize(
    ("names", "fmts"),
    [
        pytest.param(
            [
                "blocklistproject-drugs.hosts",
                "blocklistproject-drugs.dnsmasq",
                "blocklistproject-drugs.adblock",
            ],
            ["hosts", "dnsmasq", "adblock"],
            id="blocklistproject-drugs",
        ),
        pytest.param(
            ["hagezi-personal.dnsmasq", "hagezi-personal.unbound"],
            ["dnsmasq", "unbound"],
            id="hagezi-personal",
        ),
    ],
)
def test_one_list_in_several_syntaxes_blocks_the_same_names(
    names: list[str], fmts: list[str]
) -> None:
    parsed = [_parse(DATA / name)[1][0] for name in names]
    assert [_parse(DATA / name)[0].format for name in names] == fmts
    assert len(parsed[0]) > 20
    assert all(p == parsed[0] for p in parsed)


def test_rpz_pairs_block_each_name_twice_in_line_order() -> None:
    summary, (bn, bl, _, _) = _parse(DATA / "hagezi-style.rpz")
    assert summary.invalid == 0
    assert bn[0::2] == bn[1::2]  # 'x CNAME .' then '*.x CNAME .': the same name
    assert bl == list(range(8, 8 + 36))


# --- single lines, table-driven -----------------------------------------------------------------


def _one(fmt: str, text: str, **kwargs: bool) -> tuple[list[str], list[str], list[str]]:
    """(blocked, allowed, warning messages) of a small text in one format."""
    entries: Entries = ([], [], [], [])

    def sink(bn: list[str], bl: list[int], an: list[str], al: list[int]) -> None:
        entries[0].extend(bn)
        entries[2].extend(an)

    summary = parse_text_stream(text, "t", fmt, sink, **kwargs)  # type: ignore[arg-type]
    return entries[0], entries[2], [w.message.rsplit(": ", 1)[-1] for w in summary.warnings]


@pytest.mark.parametrize(
    ("text", "blocked", "allowed", "warning"),
    [
        pytest.param("address=/a.example/#", ["a.example"], [], "", id="address-hash"),
        pytest.param("address=/a.example/0.0.0.0", ["a.example"], [], "", id="address-zero"),
        pytest.param("address=/a.example/::", ["a.example"], [], "", id="address-v6"),
        pytest.param("address=/a.example/", ["a.example"], [], "", id="address-empty"),
        pytest.param("address=/a.ex/b.ex/#", ["a.ex", "b.ex"], [], "", id="several-names"),
        pytest.param("server=/a.example/", ["a.example"], [], "", id="server-local-only"),
        pytest.param("local=/a.example/", ["a.example"], [], "", id="local"),
        pytest.param("server=/a.example/#", [], ["a.example"], "", id="server-hash-allows"),
        pytest.param(
            "server=/a.example/1.2.3.4",
            [],
            [],
            "forwards to the server '1.2.3.4', which is not a block",
            id="server-forwards",
        ),
        pytest.param("address=/*.a.example/#", ["a.example"], [], "", id="star"),
        pytest.param(
            "address=/a.example/pi.hole", [], [], "'pi.hole' is not an address", id="not-an-ip"
        ),
        pytest.param(
            "bogus-nxdomain=1.2.3.4",
            [],
            [],
            "expected 'address=/name/...', 'server=/name/' or 'local=/name/'",
            id="other-option",
        ),
    ],
)
def test_dnsmasq_lines(text: str, blocked: list[str], allowed: list[str], warning: str) -> None:
    assert _one("dnsmasq", text) == (blocked, allowed, [warning] if warning else [])


@pytest.mark.parametrize(
    ("text", "blocked", "allowed", "warning"),
    [
        *(
            pytest.param(f'local-zone: "a.example." {kind}', ["a.example"], [], "", id=kind)
            for kind in (
                "always_nxdomain",
                "always_refuse",
                "always_null",
                "refuse",
                "static",
                "deny",
                "inform_deny",
                "always_nodata",
            )
        ),
        *(
            pytest.param(f'local-zone: "a.example." {kind}', [], ["a.example"], "", id=kind)
            for kind in ("transparent", "always_transparent")
        ),
        pytest.param("server:", [], [], "", id="server-header"),
        pytest.param('local-data: "a.example. A 0.0.0.0"', [], [], "", id="local-data"),
        pytest.param(
            'local-zone: "a.example." redirect',
            [],
            [],
            "zone type 'redirect' is neither a block nor an allow",
            id="redirect",
        ),
        pytest.param(
            'local-zone: "." always_null', [], [], "the root zone would cover every name", id="root"
        ),
    ],
)
def test_unbound_lines(text: str, blocked: list[str], allowed: list[str], warning: str) -> None:
    assert _one("unbound", text) == (blocked, allowed, [warning] if warning else [])


@pytest.mark.parametrize(
    ("text", "blocked", "allowed", "warnings"),
    [
        pytest.param("a.example CNAME .", ["a.example"], [], [], id="nxdomain"),
        pytest.param("*.a.example CNAME .", ["a.example"], [], [], id="wildcard"),
        pytest.param("a.example CNAME *.", ["a.example"], [], [], id="nodata"),
        pytest.param("a.example CNAME rpz-passthru.", [], ["a.example"], [], id="passthru"),
        pytest.param(
            "$ORIGIN rpz.test.\na.example.rpz.test. CNAME .", ["a.example"], [], [], id="origin"
        ),
        pytest.param(
            "$ORIGIN rpz.test.\na.example CNAME .", ["a.example"], [], [], id="relative-owner"
        ),
        pytest.param(
            "@ SOA ns. admin. (\n1 ; serial\n  a.example CNAME .\n 2 )\nb.example CNAME .",
            ["b.example"],
            [],
            [],
            id="multi-line-soa",
        ),
        pytest.param("$TTL 1h\n@ NS localhost.\n  NS other.", [], [], [], id="header-only"),
        pytest.param(
            "a.example A 1.2.3.4",
            [],
            [],
            ["a record of type A; only CNAME policy rules are read"],
            id="a-record",
        ),
        pytest.param(
            "24.0.0.0.10.rpz-ip CNAME .",
            [],
            [],
            ["an IP-address or name-server trigger, not a domain"],
            id="ip-trigger",
        ),
    ],
)
def test_rpz_lines(text: str, blocked: list[str], allowed: list[str], warnings: list[str]) -> None:
    assert _one("rpz", text) == (blocked, allowed, warnings)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        pytest.param("domains", "com\n", id="domains"),
        pytest.param("wildcard", "*.com\n", id="wildcard"),
        pytest.param("hosts", "0.0.0.0 com\n", id="hosts"),
        pytest.param("adblock", "||com^\n", id="adblock"),
        pytest.param("dnsmasq", "address=/com/#\n", id="dnsmasq"),
        pytest.param("unbound", 'local-zone: "com." always_null\n', id="unbound"),
        pytest.param("rpz", "com CNAME .\n", id="rpz"),
    ],
)
def test_bare_tld_needs_allow_tld(fmt: str, text: str) -> None:
    assert _one(fmt, text) == (
        [],
        [],
        ["a single label would block a whole top-level domain"],
    )
    assert _one(fmt, text, allow_tld=True) == (["com"], [], [])


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        pytest.param("a" * 64 + ".example", "label of 64 characters (the limit is 63)", id="label"),
        pytest.param(
            ".".join(["b" * 63] * 3 + ["c" * 62]),
            "name of 254 characters (the limit is 253)",
            id="name",
        ),
        pytest.param("192.0.2.1", "an IP address, not a domain name", id="ipv4"),
        pytest.param("2001:db8::1", "an IP address, not a domain name", id="ipv6"),
        pytest.param("example", "a single label would block a whole top-level domain", id="tld"),
    ],
)
def test_invalid_names_are_counted_and_named(text: str, warning: str) -> None:
    summary = parse_text_stream(f"good.example\n{text}\nother.example\n", "list.txt", "domains")
    assert (summary.blocked, summary.invalid) == (2, 1)
    assert [(w.file, w.line, w.message.rsplit(": ", 1)[1]) for w in summary.warnings] == [
        ("list.txt", 2, warning)
    ]


def test_warnings_are_capped_but_every_bad_line_is_counted() -> None:
    bad = MAX_WARNINGS_KEPT + 500
    text = "ok.example\n" + "10.0.0.1\n" * bad + "last.example\n"
    summary = parse_text_stream(text, "x", "domains")
    assert summary.invalid == bad
    assert len(summary.warnings) == MAX_WARNINGS_KEPT
    assert summary.warnings[-1].line == MAX_WARNINGS_KEPT + 1
    assert summary.blocked == 2
    # The whole-list form keeps them all: its callers count warnings.
    assert len(parse_text(text, "x", "domains").warnings) == bad


def test_overlong_line_is_skipped_without_shifting_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"a.example\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\nb.example\n")
    summary, (bn, bl, _, _) = _parse(path, "domains", block_bytes=4096)
    assert (bn, bl) == (["a.example", "b.example"], [1, 3])
    assert summary.total_lines == 3
    assert [(w.line, "more than" in w.message) for w in summary.warnings] == [(2, True)]


def test_overlong_last_line_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"a.example\n" + b"x" * (MAX_LINE_BYTES + 10))
    summary, _ = _parse(path, "domains", block_bytes=4096)
    assert (summary.total_lines, summary.invalid) == (2, 1)


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        pytest.param(b"", 0, id="empty"),
        pytest.param(b"\xef\xbb\xbf", 0, id="bom-only"),
        pytest.param(b"\n", 1, id="one-empty-line"),
        pytest.param(b"a.example", 1, id="no-final-newline"),
        pytest.param(b"a.example\r\n\r\n", 2, id="crlf"),
    ],
)
def test_line_count_counts_only_newlines(tmp_path: Path, data: bytes, lines: int) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes(data)
    assert parse_stream(path, "domains").total_lines == lines


def test_file_that_only_looks_like_regexes_loads_nothing() -> None:
    summary = parse_stream(DATA / "rules.regex")  # "auto": regexes are opt-in
    assert summary.format == "regex"
    assert summary.regexes == ()
    assert summary.warnings[0] == Problem(
        str(DATA / "rules.regex"),
        0,
        "",
        "looks like regular expressions, which load only with format 'regex'",
    )
    opted_in = parse_stream(DATA / "rules.regex", "regex")
    assert summary.invalid == len(opted_in.regexes) + opted_in.invalid


def test_parsed_list_counts_invalid_and_keeps_regexes() -> None:
    parsed = parse_file(DATA / "rules.regex", "regex")
    assert parsed.domains == ()
    assert len(parsed.regexes) == 10
    assert parsed.invalid == len(parsed.warnings) == 1


def test_unreadable_file_is_a_list_error(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="cannot read: no such file"):
        parse_stream(tmp_path / "missing.txt")
    with pytest.raises(ListError, match="cannot read: is a directory"):
        parse_stream(tmp_path)


def test_unknown_format_and_bad_chunk_size_are_programming_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown list format"):
        parse_stream(DATA / "zone.rpz", "bind")
    with pytest.raises(ValueError, match="chunk_lines"):
        parse_stream(DATA / "zone.rpz", "rpz", chunk_lines=0)


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_line_limit_is_exact_across_blocks(tmp_path: Path, extra: int) -> None:
    path = tmp_path / "edge.txt"
    path.write_bytes(b"a.example\n" + b"x" * (MAX_LINE_BYTES + extra) + b"\nb.example\n")
    summary, (bn, bl, _, _) = _parse(path, "domains", block_bytes=4096)
    assert (bn, bl) == (["a.example", "b.example"], [1, 3])
    dropped = [w.line for w in summary.warnings if "more than" in w.message]
    assert dropped == ([2] if extra > 0 else [])


def test_an_error_in_the_consumer_is_not_a_read_error() -> None:
    def sink(bn: list[str], bl: list[int], an: list[str], al: list[int]) -> None:
        raise OSError("disk full while building the table")

    with pytest.raises(OSError, match="disk full"):
        parse_stream(DATA / "clefspeare13.hosts", "hosts", sink)
