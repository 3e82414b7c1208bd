"""The compiled domain table: exact lookups, merging of repeated names, the file and its checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian_dns import trie
from guardian_dns.trie import (
    ALL_CATEGORIES,
    NO_LIST,
    RuleRef,
    TableBuilder,
    TableError,
    from_bytes,
    load,
    rule_id_for,
    rule_ref,
)


def _table(entries: dict[str, list[str]]) -> trie.DomainTable:
    """One list per category, names in the order given."""
    builder = TableBuilder()
    for category, names in entries.items():
        index = builder.add_list(f"{category}.txt", category)
        builder.add(names, list(range(1, len(names) + 1)), index)
    return from_bytes(builder.to_bytes())


def test_find_is_exact_never_a_suffix_or_a_prefix() -> None:
    table = _table({"adult": ["example.com", "x.y.example.org"]})
    assert table.find(b"example.com") >= 0
    assert table.find(b"x.y.example.org") >= 0
    for name in (b"www.example.com", b"com", b"org", b"", b"xample.com", b"z.example.org"):
        assert table.find(name) == -1, name
    assert "example.com" in table
    assert "www.example.com" not in table
    assert len(table) == 2


def test_parents_of_listed_names_are_interior_entries_without_rules() -> None:
    """What lets a lookup stop at the first absent suffix: every parent is in the table."""
    table = _table({"adult": ["x.y.example.org", "example.net"]})
    for parent in ("y.example.org", "example.org"):
        entry = table.find(parent.encode())
        assert entry >= 0
        assert parent not in table  # no rule of its own
        assert table.combo(entry).masks == (0, 0, 0, 0)
        assert table.combo_of(entry)[9] & trie.COMBO_DEEPER
    assert not table.combo_of(table.find(b"x.y.example.org"))[9]
    assert not table.combo_of(table.find(b"example.net"))[9]
    assert len(table) == 2 and table.size == 4


def test_repeated_names_merge_categories_and_keep_the_first_rule() -> None:
    builder = TableBuilder()
    adult = builder.add_list("adult.txt", "adult")
    scam = builder.add_list("scam.txt", "scam")
    allow = builder.add_list("allow.txt", None)
    builder.add(["a.example", "b.example", "a.example"], [7, 8, 9], adult)
    builder.add(["a.example"], [3], scam)
    builder.add(["a.example"], [5], allow, allow=True)
    table = from_bytes(builder.to_bytes())
    assert len(table) == 2
    entry = table.find(b"a.example")
    combo = table.combo(entry)
    assert combo.masks == (0b11, ALL_CATEGORIES, 0, 0)
    assert combo.lists == (adult, allow, NO_LIST, NO_LIST)
    assert table.line(entry) == 7  # the first rule, in list order
    assert table.categories == ("adult", "scam")
    assert table.mask_for(["scam", "nope"]) == 0b10


def test_admin_lists_set_their_own_kinds_and_flag() -> None:
    builder = TableBuilder()
    mine = builder.add_list("custom.txt", "custom", admin=True)
    builder.add(["blocked.example"], [1], mine)
    builder.add(["allowed.example"], [2], mine, allow=True)
    table = from_bytes(builder.to_bytes())
    assert table.flags & trie.FLAG_ADMIN
    assert table.combo(table.find(b"blocked.example")).masks == (0, 0, 1, 0)
    assert table.combo(table.find(b"allowed.example")).masks == (0, 0, 0, 1)


def test_single_label_names_set_the_tld_flag() -> None:
    assert not _table({"a": ["example.com"]}).flags & trie.FLAG_TLD
    assert _table({"a": ["zip"]}).flags & trie.FLAG_TLD


def test_empty_table() -> None:
    table = from_bytes(TableBuilder().to_bytes())
    assert len(table) == 0
    assert table.find(b"example.com") == -1
    assert table.categories == ()


def test_sixty_five_categories_are_refused() -> None:
    builder = TableBuilder()
    for i in range(64):
        builder.add_list(f"{i}.txt", f"c{i}")
    with pytest.raises(ValueError, match="more than 64 categories"):
        builder.add_list("65.txt", "c64")


def test_file_round_trip_and_metadata(tmp_path: Path) -> None:
    builder = TableBuilder()
    index = builder.add_list("adult.txt", "adult", format="hosts")
    builder.add([f"n{i}.example" for i in range(5000)], list(range(1, 5001)), index)
    path = tmp_path / "domains.table"
    assert builder.write(path, {"fingerprint": "abc"}) == 5000
    table = load(path)
    assert table.meta["fingerprint"] == "abc"
    assert table.meta["lists"][0]["format"] == "hosts"
    assert all(table.find(f"n{i}.example".encode()) >= 0 for i in range(5000))
    assert table.line(table.find(b"n4999.example")) == 5000
    assert [p.name for p in tmp_path.iterdir()] == ["domains.table"]  # no temp file left


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    builder = TableBuilder()
    index = builder.add_list("adult.txt", "adult")
    builder.add([f"n{i}.example" for i in range(300)], list(range(300)), index)
    path = tmp_path / "domains.table"
    builder.write(path)
    return path


def test_a_flipped_byte_anywhere_is_a_checksum_error(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    for offset in (100, len(data) // 2, len(data) - 1):  # directory, entries, cold lines
        broken = bytearray(data)
        broken[offset] ^= 0x40
        saved.write_bytes(broken)
        with pytest.raises(TableError, match="checksum mismatch"):
            load(saved)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        pytest.param(lambda d: d[:-8], "truncated", id="truncated"),
        pytest.param(lambda d: d + b"\0" * 8, "truncated or padded", id="padded"),
        pytest.param(lambda d: b"PK\x03\x04" + d[4:], "not a Guardian DNS table", id="foreign"),
        pytest.param(lambda d: d[:10], "too short", id="too-short"),
        pytest.param(lambda d: b"", "too short", id="empty"),
        pytest.param(
            lambda d: d[:8] + (99).to_bytes(4, "little") + d[12:], "version 99", id="version"
        ),
    ],
)
def test_damaged_files_are_rejected_with_the_reason(
    saved: Path, mangle: object, message: str
) -> None:
    assert callable(mangle)
    saved.write_bytes(mangle(saved.read_bytes()))
    with pytest.raises(TableError, match=message) as info:
        load(saved)
    assert str(saved) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such file"):
        load(tmp_path / "nope.table")


def test_a_rebuilt_file_replaces_the_old_while_the_old_mapping_keeps_working(saved: Path) -> None:
    old = load(saved)
    builder = TableBuilder()
    index = builder.add_list("other.txt", "other")
    builder.add(["other.example"], [1], index)
    builder.write(saved)
    new = load(saved)
    assert old.find(b"n1.example") >= 0 and old.find(b"other.example") == -1
    assert new.find(b"other.example") >= 0 and new.find(b"n1.example") == -1


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()
    builder = TableBuilder()
    builder.add_list("x.txt", "x")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        builder.write(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


_label = st.text("abcz019-", min_size=1, max_size=6)
_name = st.lists(_label, min_size=1, max_size=4).map(".".join)


@settings(max_examples=60, deadline=None)
@given(listed=st.sets(_name, max_size=60), probes=st.lists(_name, max_size=60))
def test_find_agrees_with_a_set(listed: set[str], probes: list[str]) -> None:
    table = _table({"c": sorted(listed)})
    assert len(table) == len(listed)
    parents = {
        ".".join(labels[i:])
        for labels in (n.split(".") for n in listed)
        for i in range(1, len(labels) - 1)
    }
    for name in [*listed, *probes]:
        assert (name in table) == (name in listed), name
        assert (table.find(name.encode()) >= 0) == (name in listed or name in parents), name


def test_bucket_sizes() -> None:
    assert trie._bucket_bits(0) == 0
    assert trie._bucket_bits(3) == 0
    assert trie._bucket_bits(4) == 1
    assert trie._bucket_bits(2_000_000) == 19  # 2 to 4 names per bucket


def test_entry_rule_ids_read_the_line_only_when_asked() -> None:
    builder = TableBuilder()
    first = builder.add_list("a.txt", "adult")
    second = builder.add_list("b.txt", "scam")
    builder.add(["x.example", "y.example"], [4, 9], first)
    builder.add(["y.example"], [2], second)
    table = from_bytes(builder.to_bytes())
    rules = (RuleRef("a.txt", 0, "adult"), RuleRef("b.txt", 0, "scam"))
    x, y = table.find(b"x.example"), table.find(b"y.example")
    assert rule_ref(rules, trie.entry_rule_id(x, first), table) == RuleRef("a.txt", 4, "adult")
    assert rule_ref(rules, trie.entry_rule_id(y, first), table) == RuleRef("a.txt", 9, "adult")
    # The second list also lists y; the table keeps one line per name (the first list's).
    assert rule_ref(rules, trie.entry_rule_id(y, second), table) == RuleRef("b.txt", 0, "scam")
    assert rule_ref(rules, trie.entry_rule_id(x, first)) == RuleRef("a.txt", 0, "adult")


def test_rule_ids_round_trip() -> None:
    rules = (RuleRef("adult.txt", 0, "adult"), RuleRef("ads.txt", 0, "ads"))
    assert rule_ref(rules, rule_id_for(1, 42)) == RuleRef("ads.txt", 42, "ads")
    assert rule_ref(rules, -1) is None
    assert rule_ref(rules, rule_id_for(7, 1)) is None


def test_more_than_255_combos_use_the_vals_section() -> None:
    """Combo indexes past 254 cannot sit in the CRC word's top byte: they escape to ``vals``."""
    builder = TableBuilder()
    for i in range(300):
        index = builder.add_list(f"{i}.txt", "adult")
        builder.add([f"n{i}.example"], [i + 1], index)
    table = from_bytes(builder.to_bytes())
    assert not table.flags & trie.FLAG_PACKED
    assert len(table.vals) == table.size
    for i in range(300):
        entry = table.find(f"n{i}.example".encode())
        assert table.combo(entry).lists[0] == i
        assert table.line(entry) == i + 1
    small = _table({"adult": ["a.example"]})
    assert small.flags & trie.FLAG_PACKED and len(small.vals) == 0
