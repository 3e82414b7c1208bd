"""The lists shipped in blocklists/: they parse cleanly, blocklists/README.md tells the truth about
them, and the bypass lists never take away what a family's ordinary browsing needs.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from guardian_dns.config import BUNDLED_LISTS, REPO_ROOT
from guardian_dns.lists import ParsedList, parse_file

BUNDLED = REPO_ROOT / "blocklists"
README = BUNDLED / "README.md"
NOT_LISTS = {"README.md", "safesearch.yaml"}
LIST_FILES = sorted(p for p in BUNDLED.iterdir() if p.is_file() and p.name not in NOT_LISTS)
BYPASS_FILES = [p for p in LIST_FILES if p.name.startswith("bypass")]

# The warnings blocklists/README.md documents, by file: every one must carry this reason, and
# their number must be the README's "skipped" count. Any other file must parse without warnings.
DOCUMENTED_WARNINGS = {"bypass-ut1-doh.txt": "an IP address, not a domain name"}

# Names a parent's ordinary browsing, mail, school work or phone needs. A bypass list that blocks
# one of them (or a domain above it, which blocks it too) makes parents turn the filter off.
NEVER_BLOCK = (
    "google.com",
    "www.google.com",
    "accounts.google.com",
    "mail.google.com",
    "googleapis.com",
    "gmail.com",
    "youtube.com",
    "www.youtube.com",
    "icloud.com",
    "www.icloud.com",
    "apple.com",
    "www.apple.com",
    "cloudflare.com",
    "www.cloudflare.com",
    "microsoft.com",
    "www.microsoft.com",
    "login.microsoftonline.com",
    "office.com",
    "outlook.com",
    "proton.me",
    "mail.proton.me",
    "opendns.com",
    "mozilla.org",
    "support.mozilla.org",
    "wikipedia.org",
    "github.com",
    "amazon.com",
    "zoom.us",
)

# A row of the README's counts table: | `file` | lines | domains | skipped... |
_COUNT_ROW = re.compile(r"^\| `([^`]+)` \| ([\d,]+) \| ([\d,]+) \| (\d+)", re.MULTILINE)
# A row of the README's sources table: | `file` | category | ... (a count is not a category).
_SOURCE_ROW = re.compile(r"^\| `([^`]+)` \| ([a-z][a-z0-9_-]*) \|", re.MULTILINE)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@functools.cache
def _parsed(path: Path) -> ParsedList:
    """Parsing the adult list takes a moment; every test of the module shares one parse."""
    return parse_file(path)


def _readme_counts() -> dict[str, tuple[int, int, int]]:
    text = README.read_text(encoding="utf-8")
    return {
        m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", "")), int(m[4]))
        for m in _COUNT_ROW.finditer(text)
    }


def test_the_bundled_directory_holds_the_lists_the_default_config_loads() -> None:
    names = {p.name for p in LIST_FILES}
    assert {Path(rel).name for rel, _category in BUNDLED_LISTS} <= names
    assert {"bypass.txt", "bypass-ut1-doh.txt"} <= names


@pytest.mark.parametrize("path", LIST_FILES, ids=_ids(LIST_FILES))
def test_every_bundled_list_parses_with_only_documented_warnings(path: Path) -> None:
    parsed = _parsed(path)
    assert parsed.domains, f"{path.name} blocks nothing"
    reason = DOCUMENTED_WARNINGS.get(path.name)
    if reason is None:
        assert [str(w) for w in parsed.warnings] == []
    else:
        assert parsed.warnings
        assert [str(w) for w in parsed.warnings if reason not in w.message] == []


@pytest.mark.parametrize("path", LIST_FILES, ids=_ids(LIST_FILES))
def test_the_readme_counts_match_each_list(path: Path) -> None:
    counts = _readme_counts()
    assert path.name in counts, f"blocklists/README.md has no counts row for {path.name}"
    parsed = _parsed(path)
    actual = (parsed.total_lines, len(parsed.domains), len(parsed.warnings))
    assert counts[path.name] == actual, "update the counts table in blocklists/README.md"


@pytest.mark.parametrize("path", LIST_FILES, ids=_ids(LIST_FILES))
def test_the_readme_says_where_each_list_comes_from(path: Path) -> None:
    rows = {m[1]: m[2] for m in _SOURCE_ROW.finditer(README.read_text(encoding="utf-8"))}
    assert path.name in rows, f"blocklists/README.md has no source row for {path.name}"


def test_the_readme_gives_each_default_list_its_configured_category() -> None:
    rows = {m[1]: m[2] for m in _SOURCE_ROW.finditer(README.read_text(encoding="utf-8"))}
    for rel, category in BUNDLED_LISTS:
        assert rows.get(Path(rel).name) == category, rel


@pytest.mark.parametrize("path", BYPASS_FILES, ids=_ids(BYPASS_FILES))
def test_bypass_lists_never_block_what_ordinary_browsing_needs(path: Path) -> None:
    listed = set(_parsed(path).domains)
    blocked = []
    for name in NEVER_BLOCK:
        labels = name.split(".")
        above = {".".join(labels[i:]) for i in range(len(labels) - 1)}  # the name and its parents
        blocked += [f"{name} (by {entry})" for entry in sorted(above & listed)]
    assert blocked == []


def test_curated_bypass_list_carries_the_opt_out_signals() -> None:
    listed = set(_parsed(BUNDLED / "bypass.txt").domains)
    signals = {"use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"}
    assert signals | {"mask-api.icloud.com"} <= listed


def test_curated_bypass_list_names_each_entry_once_under_a_sourced_group() -> None:
    """Hand-edited: a repeated name means a merge went wrong; a name before any group has no
    source, and every group must say where its names come from (a URL or UT1)."""
    path = BUNDLED / "bypass.txt"
    entries: list[str] = []
    group_sourced = False
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("# ---"):
            group_sourced = False
        elif line.startswith("#"):
            group_sourced = group_sourced or "http" in line or "UT1" in line
        elif line:
            assert group_sourced, f"bypass.txt:{n}: {line} sits in a group that names no source"
            entries.append(line)
    assert len(entries) == len(set(entries)) == len(_parsed(path).domains)
