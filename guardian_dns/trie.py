"""The compiled domain table: millions of listed names in about 12 bytes each, loaded with mmap.

What it decides: whether exactly this name is listed, and where its entry is (category masks of
every kind of rule, the lists and the line that listed it).
What it reads: normalised names handed to ``TableBuilder`` and the file it writes; never a list
file, never the configuration.
What it must never do: change after it is loaded (a table is shared by every query of a snapshot,
and a reload builds a new file aside and maps that), or claim a name it cannot tell apart from a
listed one (see "False positives").

Layout (version 1, little-endian; every section 8-byte aligned)::

    header   magic "GDNSTBL1", version, flags, entries, bucket bits, combos, meta length,
             SHA-256 of everything after the header
    dir      u32[2**bits + 1]   first entry of each bucket (bucket = top bits of the CRC-32)
    crcs     u32[entries]       CRC-32 of the name (``name_crc``), sorted
    checks   u32[entries]       the first 4 bytes of BLAKE2b(name), same order
    vals     u16[entries]       index into the combos (u32 when flag VALS32 is set)
    combos   40 bytes each      block, allow, admin-block, admin-allow category masks (u64) and
                                 the first list of each of those four kinds (u16, 0xFFFF = none)
    meta     JSON               categories, lists, what the caller stored (fingerprint, counts)
    lines    u32[entries]       line of the entry's first rule: read only by "why", so its pages
                                 are never faulted in by the query path and cost no resident memory

Resident cost per name: 4 (CRC) + 4 (check) + 2 (combo) + 1 to 2 (directory, two to four names
per bucket) = about 12 bytes, against 100-500 for the peers' tree or hash-set of strings.

False positives: a name counts as listed only when both its CRC-32 and a 32-bit BLAKE2b check
equal a stored entry's. An unlisted name meets a stored CRC in its bucket with probability about
(names per bucket) / 2**32 (2 / 4.3e9; the bucket already fixed the top bits, so in practice about
2 / 4096 of the remaining 12), and must then also match the independent cryptographic check:
2**-32. So about 1e-13 per probe for ordinary names, and even a name crafted to collide the CRC
has 1 chance in 4.3e9. ``docs/blocklists.md`` has the arithmetic and
``bench/table_bench.py --verify`` measures it at 2 million names.

Lookups cost a CRC (a C call, about 70 ns) per suffix and a BLAKE2b only when a CRC matches,
which for a miss is about 1 probe in 2000.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from zlib import crc32

from guardian_dns.errors import GuardianError

MAGIC: Final = b"GDNSTBL1"
VERSION: Final = 1
_HEADER: Final = struct.Struct("<8sIIQIII4x32s")  # 72 bytes
_COMBO: Final = struct.Struct("<QQQQHHHH")  # 40 bytes
FLAG_VALS32: Final = 1
FLAG_ADMIN: Final = 2  # some entry is an admin rule: the walk must visit every parent
FLAG_TLD: Final = 4  # some entry is a single label: the walk must look up the last label too

MAX_CATEGORIES: Final = 64
LIST_BITS: Final = 12  # a rule id names one of up to 4096 lists, and a line in it
MAX_LISTS: Final = 1 << LIST_BITS
NO_LIST: Final = 0xFFFF
ALL_CATEGORIES: Final = (1 << MAX_CATEGORIES) - 1

# Rule kinds, in the order of the masks in a combo.
BLOCK: Final = 0
ALLOW: Final = 1
ADMIN_BLOCK: Final = 2
ADMIN_ALLOW: Final = 3
KINDS: Final = ("block", "allow", "admin-block", "admin-allow")

if sys.byteorder != "little":  # pragma: no cover - every board we target is little-endian
    raise ImportError("guardian_dns.trie maps little-endian tables; this machine is big-endian")


class TableError(GuardianError):
    """A table file that cannot be used: not ours, another version, truncated or corrupt."""


def name_crc(name: bytes) -> int:
    """The CRC-32 of a name: what places it in a bucket and orders it there."""
    return crc32(name)


def name_check(name: bytes) -> int:
    """The 32-bit BLAKE2b check of a name: what tells two names with the same CRC apart."""
    return int.from_bytes(hashlib.blake2b(name, digest_size=4).digest(), "little")


def _bucket_bits(entries: int) -> int:
    """Two to four names per bucket: 1-2 bytes of directory per name, a few CRCs per probe."""
    bits = 0
    while (2 << bits) * 2 <= entries and bits < 31:
        bits += 1
    return bits


def _align(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True)
class Combo:
    """What every rule on one name says: four category masks and the first list of each kind."""

    masks: tuple[int, int, int, int]
    lists: tuple[int, int, int, int]


class DomainTable:
    """A loaded, immutable table. ``find`` is the probe; the rest is for "why".

    ``directory``, ``crcs``, ``checks``, ``vals``, ``combos`` and ``shift`` are public because
    ``filter.Filter.decide`` inlines ``find`` over them (one call fewer per label).
    """

    __slots__ = (
        "_map",
        "_views",
        "checks",
        "combos",
        "crcs",
        "directory",
        "flags",
        "lines",
        "meta",
        "path",
        "shift",
        "size",
        "vals",
    )

    def __init__(self, data: mmap.mmap | bytes, path: str) -> None:
        """Map an already verified table (``load`` and ``from_bytes`` verify)."""
        self.path = path
        self._map = data
        (_, _, flags, entries, bits, n_combos, meta_len, _) = _HEADER.unpack_from(data, 0)
        self.flags: int = flags
        self.size: int = entries
        view = memoryview(data)
        off = _HEADER.size
        dir_len = (1 << bits) + 1
        self.directory = view[off : off + 4 * dir_len].cast("I")
        off = _align(off + 4 * dir_len)
        self.crcs = view[off : off + 4 * entries].cast("I")
        off = _align(off + 4 * entries)
        self.checks = view[off : off + 4 * entries].cast("I")
        off = _align(off + 4 * entries)
        width = 4 if flags & FLAG_VALS32 else 2
        self.vals = view[off : off + width * entries].cast("I" if width == 4 else "H")
        off = _align(off + width * entries)
        combos = []
        for i in range(n_combos):
            fields = _COMBO.unpack_from(data, off + i * _COMBO.size)
            # The ninth field, the first list of any kind, is the list whose line ``lines`` has.
            combos.append((*fields, min(fields[4:])))
        # Plain tuples: the decision reads four masks with one index, no attribute lookups.
        self.combos: tuple[tuple[int, ...], ...] = tuple(combos)
        off = _align(off + n_combos * _COMBO.size)
        self.meta: dict[str, Any] = json.loads(bytes(view[off : off + meta_len]))
        off = _align(off + meta_len)
        self.lines = view[off : off + 4 * entries].cast("I")
        self.shift = 32 - bits
        self._views = (view,)

    def find(self, name: bytes) -> int:
        """The entry of exactly this name (ASCII, lower case, no trailing dot), or -1."""
        c = name_crc(name)
        b = c >> self.shift
        d = self.directory
        i: int = d[b]
        end: int = d[b + 1]
        crcs = self.crcs
        while i < end:
            k = crcs[i]
            if k < c:
                i += 1
                continue
            if k > c:
                return -1
            check = int.from_bytes(hashlib.blake2b(name, digest_size=4).digest(), "little")
            checks = self.checks
            while i < end and crcs[i] == c:
                if checks[i] == check:
                    return i
                i += 1
            return -1
        return -1

    def line(self, entry: int) -> int:
        """The line of the entry's first rule in its first list (cold pages: "why" only)."""
        return int(self.lines[entry])

    def combo(self, entry: int) -> Combo:
        """The rules on an entry, as a readable value (for "why" and tests)."""
        c = self.combos[self.vals[entry]]
        return Combo((c[0], c[1], c[2], c[3]), (c[4], c[5], c[6], c[7]))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.meta["categories"])

    @property
    def lists(self) -> list[dict[str, Any]]:
        return list(self.meta["lists"])

    def __len__(self) -> int:
        return self.size

    def __contains__(self, name: object) -> bool:
        """Whether exactly this name is listed (not a parent of it), by any kind of rule."""
        return isinstance(name, str) and self.find(name.encode()) >= 0

    def mask_for(self, categories: Iterable[str]) -> int:
        """The OR of the named categories' bits; names no list uses are ignored, not errors."""
        index = {name: bit for bit, name in enumerate(self.meta["categories"])}
        mask = 0
        for name in categories:
            bit = index.get(name)
            if bit is not None:
                mask |= 1 << bit
        return mask


def _verify(data: bytes | mmap.mmap, source: str, body_digest: bytes | None) -> None:
    if len(data) < _HEADER.size:
        raise TableError(f"{source}: not a Guardian DNS table (too short)")
    magic, version, flags, entries, bits, n_combos, meta_len, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise TableError(f"{source}: not a Guardian DNS table (bad magic {magic[:8]!r})")
    if version != VERSION:
        raise TableError(f"{source}: table version {version}, this program reads {VERSION}")
    if bits > 31:
        raise TableError(f"{source}: corrupt header (bucket bits {bits})")
    width = 4 if flags & FLAG_VALS32 else 2
    need = _HEADER.size + _align(4 * ((1 << bits) + 1))
    need += 2 * _align(4 * entries) + _align(width * entries)
    need += _align(n_combos * _COMBO.size) + _align(meta_len) + 4 * entries
    if len(data) != need:
        raise TableError(f"{source}: truncated or padded ({len(data)} bytes, header says {need})")
    if body_digest is None:
        body_digest = hashlib.sha256(memoryview(data)[_HEADER.size :]).digest()
    if body_digest != digest:
        raise TableError(f"{source}: checksum mismatch (corrupt or partly written)")


def load(path: str | os.PathLike[str]) -> DomainTable:
    """Map a table file after checking magic, version, size and SHA-256; raises TableError.

    The checksum is computed by reading the file, not through the mapping, so the cold "lines"
    pages are not faulted into this process (the page cache holds them; RSS does not count them).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_HEADER.size)
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
            if size < _HEADER.size:
                _verify(header, source, None)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise TableError(f"{source}: no such file") from None
    except (OSError, ValueError) as exc:
        raise TableError(f"{source}: cannot read: {exc}") from None
    try:
        _verify(mm, source, h.digest())
    except TableError:
        mm.close()
        raise
    return DomainTable(mm, source)


def from_bytes(data: bytes, source: str = "<memory>") -> DomainTable:
    """A table held in memory (tests, and a server whose state directory is not writable)."""
    _verify(data, source, None)
    return DomainTable(data, source)


class TableBuilder:
    """Collects rules list by list, then writes a table. Memory: about 14 bytes per rule.

    Names are hashed as they arrive and never kept, so a 2-million-name build holds arrays of
    integers, not 2 million strings (which would be over 100 MB).
    """

    def __init__(self) -> None:
        self.crcs = array("I")
        self.checks = array("I")
        self._tags = array("H")  # kind << 12 | list index
        self._lines = array("I")
        self._categories: dict[str, int] = {}
        self._lists: list[dict[str, Any]] = []
        self._masks: list[tuple[int, int]] = []  # per list: (block mask, allow mask)
        self._kinds_seen = 0
        self._tld = False

    def category_bit(self, name: str) -> int:
        """The category's bit, allocated on first use; raises ValueError past 64 categories."""
        bit = self._categories.get(name)
        if bit is None:
            bit = len(self._categories)
            if bit >= MAX_CATEGORIES:
                raise ValueError(f"more than {MAX_CATEGORIES} categories (adding {name!r})")
            self._categories[name] = bit
        return bit

    def add_list(
        self, source: str, category: str | None, *, admin: bool = False, **info: Any
    ) -> int:
        """Register a list; returns its index. ``category`` None means "every category".

        A block rule from this list blocks ``category``; an allow rule allows it (or every
        category when None, which is what an allowlist without a category means).
        """
        if len(self._lists) >= MAX_LISTS:
            raise ValueError(f"more than {MAX_LISTS} lists")
        if category is None:
            block = allow = ALL_CATEGORIES
        else:
            block = allow = 1 << self.category_bit(category)
        self._masks.append((block, allow))
        self._lists.append({"source": source, "category": category, "admin": admin, **info})
        return len(self._lists) - 1

    def add(
        self, names: Sequence[str], lines: Sequence[int], list_index: int, allow: bool = False
    ) -> None:
        """Add rules of one list: normalised names and their lines. Repeats are merged at write."""
        admin = self._lists[list_index]["admin"]
        kind = (ADMIN_ALLOW if allow else ADMIN_BLOCK) if admin else (ALLOW if allow else BLOCK)
        self._kinds_seen |= 1 << kind
        tag = (kind << LIST_BITS) | list_index
        crcs = self.crcs.append
        checks = self.checks.append
        blake = hashlib.blake2b
        fb = int.from_bytes
        for name in names:
            b = name.encode()
            crcs(crc32(b))
            checks(fb(blake(b, digest_size=4).digest(), "little"))
            if not self._tld and b"." not in b:
                self._tld = True
        self._tags.extend([tag] * len(names))
        self._lines.extend(lines)

    @property
    def rules(self) -> int:
        return len(self.crcs)

    def write(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> int:
        """Write the table atomically (temp file, fsync, rename); returns the number of names."""
        target = os.fspath(path)
        directory = os.path.dirname(target) or "."
        fd, tmp = tempfile.mkstemp(prefix=".table-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                entries = self._write_to(f, meta or {})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:
            return entries
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return entries

    def to_bytes(self, meta: dict[str, Any] | None = None) -> bytes:
        """The table as bytes, for ``from_bytes`` (tests and small in-memory tables)."""
        import io

        out = io.BytesIO()
        self._write_to(out, meta or {})
        return out.getvalue()

    def _order(self, bits: int) -> tuple[array[int], array[int]]:
        """Rule indexes grouped by bucket (a counting sort: no list of millions of ints)."""
        shift = 32 - bits
        counts = array("I", bytes(4 * ((1 << bits) + 1)))
        for c in self.crcs:
            counts[(c >> shift) + 1] += 1
        total = 0
        for i in range(len(counts)):
            total += counts[i]
            counts[i] = total
        pos = array("I", counts)
        order = array("I", bytes(4 * len(self.crcs)))
        for i, c in enumerate(self.crcs):
            b = c >> shift
            order[pos[b]] = i
            pos[b] += 1
        return counts, order

    def _write_to(self, f: Any, meta: dict[str, Any]) -> int:
        crcs, checks, tags, lines = self.crcs, self.checks, self._tags, self._lines
        # The bucket count depends on distinct names, which are not known before merging; the
        # rule count is an upper bound and within a few percent for real lists.
        bits = _bucket_bits(len(crcs))
        starts, order = self._order(bits)
        masks = self._masks
        out_dir = array("I", [0]) * ((1 << bits) + 1)
        out_crcs = array("I")
        out_checks = array("I")
        out_vals = array("I")
        out_lines = array("I")
        combo_index: dict[tuple[int, ...], int] = {}
        list_mask = MAX_LISTS - 1
        for b in range(1 << bits):
            out_dir[b] = len(out_crcs)
            lo, hi = starts[b], starts[b + 1]
            if lo == hi:
                continue
            if hi - lo == 1:
                group = [order[lo]]
            else:
                # Stable: equal names keep list order, so the first rule stays first.
                group = sorted(order[lo:hi], key=lambda i: (crcs[i], checks[i]))
            j = 0
            n = len(group)
            while j < n:
                first = group[j]
                key_c, key_k = crcs[first], checks[first]
                m = [0, 0, 0, 0]
                ls = [NO_LIST, NO_LIST, NO_LIST, NO_LIST]
                while j < n and crcs[group[j]] == key_c and checks[group[j]] == key_k:
                    tag = tags[group[j]]
                    kind = tag >> LIST_BITS
                    li = tag & list_mask
                    m[kind] |= masks[li][kind & 1]
                    if ls[kind] == NO_LIST:
                        ls[kind] = li
                    j += 1
                combo = (m[0], m[1], m[2], m[3], ls[0], ls[1], ls[2], ls[3])
                idx = combo_index.get(combo)
                if idx is None:
                    idx = combo_index[combo] = len(combo_index)
                out_crcs.append(key_c)
                out_checks.append(key_k)
                out_vals.append(idx)
                out_lines.append(lines[first])
        out_dir[1 << bits] = len(out_crcs)
        del order, starts
        entries = len(out_crcs)
        flags = 0
        if len(combo_index) > 0xFFFF:
            flags |= FLAG_VALS32
            vals_bytes = out_vals.tobytes()
        else:
            vals_bytes = array("H", out_vals).tobytes()
        if self._kinds_seen & ((1 << ADMIN_BLOCK) | (1 << ADMIN_ALLOW)):
            flags |= FLAG_ADMIN
        if self._tld:
            flags |= FLAG_TLD
        combo_bytes = b"".join(_COMBO.pack(*c) for c in combo_index)
        meta_bytes = json.dumps(
            {"categories": list(self._categories), "lists": self._lists, **meta},
            separators=(",", ":"),
        ).encode()
        sections = [
            out_dir.tobytes(),
            out_crcs.tobytes(),
            out_checks.tobytes(),
            vals_bytes,
            combo_bytes,
            meta_bytes,
        ]
        h = hashlib.sha256()
        f.write(b"\0" * _HEADER.size)
        for s in sections:
            pad = b"\0" * (_align(len(s)) - len(s))
            f.write(s)
            f.write(pad)
            h.update(s)
            h.update(pad)
        tail = out_lines.tobytes()
        f.write(tail)
        h.update(tail)
        f.seek(0)
        f.write(
            _HEADER.pack(
                MAGIC, VERSION, flags, entries, bits, len(combo_index), len(meta_bytes), h.digest()
            )
        )
        f.seek(0, os.SEEK_END)
        return entries


@dataclass(frozen=True)
class RuleRef:
    """What a rule id points at: the list, the line in it, and the category it was loaded as.

    Line 0 means "somewhere in this list": the table keeps one line per name, that of its first
    rule, so a name listed by several lists has an exact line only for the first.
    """

    list_source: str
    line: int
    category: str


RULE_ENTRY: Final = 1 << 62  # marks a rule id that names a table entry, not a line


def rule_id_for(list_index: int, line: int) -> int:
    """The rule id of a line of a list (regex rules): what the query log keeps, not an object."""
    return (line << LIST_BITS) | list_index


def entry_rule_id(entry: int, list_index: int) -> int:
    """The rule id of a table entry as decided by one of its lists.

    The line is not read here: the lines section is cold (never faulted in by queries), so the
    query path records the entry and ``rule_ref`` reads the line when someone asks "why".
    """
    return RULE_ENTRY | (entry << LIST_BITS) | list_index


def rule_ref(
    rules: Sequence[RuleRef], rule_id: int, table: DomainTable | None = None
) -> RuleRef | None:
    """The list and line a rule id names, or None for an id that no list produced (e.g. -1).

    An entry rule id needs the table of the generation that produced it; its line is exact when
    the deciding list is the entry's first (the table keeps one line per name), else 0.
    """
    if rule_id < 0:
        return None
    index = rule_id & (MAX_LISTS - 1)
    if index >= len(rules):
        return None
    ref = rules[index]
    if rule_id & RULE_ENTRY:
        entry = (rule_id & ~RULE_ENTRY) >> LIST_BITS
        line = 0
        if table is not None and entry < len(table) and table.combos[table.vals[entry]][8] == index:
            line = table.line(entry)
        return RuleRef(ref.list_source, line, ref.category)
    return RuleRef(ref.list_source, rule_id >> LIST_BITS, ref.category)


__all__ = [
    "ADMIN_ALLOW",
    "ADMIN_BLOCK",
    "ALLOW",
    "ALL_CATEGORIES",
    "BLOCK",
    "LIST_BITS",
    "MAX_CATEGORIES",
    "MAX_LISTS",
    "NO_LIST",
    "RULE_ENTRY",
    "Combo",
    "DomainTable",
    "RuleRef",
    "TableBuilder",
    "TableError",
    "entry_rule_id",
    "from_bytes",
    "load",
    "name_check",
    "name_crc",
    "rule_id_for",
    "rule_ref",
]
