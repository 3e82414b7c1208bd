"""Lists from a config to a decision, through the real compile path (parse, table, snapshot).

The table and the precedence rules have their own tests; these check the wiring: list actions,
admin lists, regex lists and their reports reach the filter and the snapshot's list info.
"""

from __future__ import annotations

from pathlib import Path

from guardian_dns.config import load_config_text
from guardian_dns.filter import BLOCK, PASS
from guardian_dns.snapshot import Snapshot, build_snapshot
from guardian_dns.trie import rule_ref


def _snapshot(tmp_path: Path, files: dict[str, str], lists_yaml: str) -> Snapshot:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = load_config_text(
        f"blocking:\n  lists:\n{lists_yaml}", source="cfg.yaml", base_dir=str(tmp_path)
    )
    return build_snapshot(config, 1)


def test_block_allow_admin_and_regex_lists_reach_the_filter(tmp_path: Path) -> None:
    snap = _snapshot(
        tmp_path,
        {
            "adult.hosts": "0.0.0.0 adult.example\n0.0.0.0 cdn.adult.example\n",
            "allow.txt": "cdn.adult.example\n",
            "mine.txt": "# my own\nhomework-blocker.example\nadult.example\n",
            "rules.regex": "# opt-in\n(.*\\.)?casino[0-9]+\\.example\n",
        },
        "    - {file: adult.hosts, category: adult}\n"
        "    - {file: allow.txt, action: allow}\n"
        "    - {file: mine.txt, category: custom, admin: true}\n"
        "    - {file: rules.regex, category: gambling, format: regex}\n",
    )
    decide = snap.filter.decide
    assert decide("www.adult.example")[0] == BLOCK  # admin list blocks it too, and wins
    assert decide("img.cdn.adult.example")[0] == BLOCK  # admin block of the parent beats allow
    assert decide("x.homework-blocker.example")[0] == BLOCK
    verdict, rule, mask = decide("www.casino42.example")
    assert verdict == BLOCK
    assert snap.categories[snap.filter.category_index(mask)] == "gambling"
    ref = rule_ref(snap.rules, rule, snap.filter.table)
    assert ref is not None and ref.list_source.endswith("rules.regex") and ref.line == 2
    assert decide("casino.example")[0] == PASS
    _, rule, _ = decide("homework-blocker.example")
    ref = rule_ref(snap.rules, rule, snap.filter.table)
    assert ref is not None and ref.list_source.endswith("mine.txt") and ref.line == 2
    infos = {Path(i.source).name: i for i in snap.lists}
    assert infos["allow.txt"].action == "allow" and infos["allow.txt"].entries == 1
    assert infos["adult.hosts"].entries == 2


def test_an_allowlist_under_a_list_block_unblocks_only_its_subtree(tmp_path: Path) -> None:
    snap = _snapshot(
        tmp_path,
        {"adult.txt": "adult.example\n", "allow.txt": "safe.adult.example\n"},
        "    - adult=adult.txt\n    - {file: allow.txt, action: allow, category: adult}\n",
    )
    assert snap.filter.decide("www.adult.example")[0] == BLOCK
    assert snap.filter.decide("a.safe.adult.example")[0] == PASS


def test_a_bad_regex_is_a_counted_warning_not_a_failure(tmp_path: Path) -> None:
    snap = _snapshot(
        tmp_path,
        {"rules.regex": "ok[0-9]\\.example\n(unclosed\n"},
        "    - {file: rules.regex, category: ads, format: regex}\n",
    )
    assert snap.filter.decide("ok1.example")[0] == BLOCK
    assert snap.lists[0].warnings == 1


def test_a_blocked_answer_stays_cached_for_its_generation_with_a_constant_ttl(
    tmp_path: Path,
) -> None:
    """Re-deciding a blocked name every block TTL (5 s) made most blocked queries misses."""
    snap = _snapshot(tmp_path, {"adult.txt": "adult.example\n"}, "    - adult=adult.txt\n")
    entry = snap.blocks.entry(0, 1, False, 100.0, snap.gen, -1)
    assert entry.expires == float("inf")
    assert entry.body_at(100.0) == entry.body_at(100.0 + 3600)  # the client's TTL never ages
