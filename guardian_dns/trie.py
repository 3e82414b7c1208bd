"""The compiled domain table: millions of listed names in 12-16 bytes each, loaded with mmap.

What it decides: whether exactly this name is listed, and where its entry is (category masks of
every kind of rule, the lists and the line that listed it).
What it reads: normalised names handed to ``TableBuilder`` and the file it writes; never a list
file, never the configuration.
What it must never do: change after it is loaded (a table is shared by every query of a snapshot,
and a reload builds a new file aside and maps that), or claim a name it cannot tell apart from a
listed one (see "False positives").

Layout (version 3, little-endian; every section 8-byte aligned)::

    header   magic "GDNSTBL1", version, flags, entries, bucket bits, combos, meta length,
             SHA-256 of everything after the header
    dir      u32[2**bits + 1]   first entry of each bucket (bucket = top bits of the CRC-32,
                                 at least 8 of them)
    crcs     u32[entries]       low 24 bits: the CRC-32 of the name (sorted; the bucket holds
                                 its top bits); top 8 bits: the entry's combo index, or 0xFF
    checks   u32[entries]       the name read as an integer, modulo a random 32-bit prime
    vals     u16/u32[entries]   combo indexes, only when there are more than 255 combos
    combos   48 bytes each      block, allow, admin-block, admin-allow category masks (u64), the
                                 first list of each of those four kinds (u16, 0xFFFF = none) and
                                 flags (COMBO_DEEPER: something is listed below this name)
    meta     JSON               categories, lists, names, the check prime, what the caller
                                 stored (fingerprint, per-list counts)
    lines    u32[entries]       line of the entry's first rule: read only by "why", so its pages
                                 are never faulted in by the query path and cost no resident memory

Entries are the listed names and every parent of one (two labels or more, ``INTERIOR``), so a
lookup can walk down from "example.com" and stop at the first absent suffix: a miss is usually
one probe. Resident cost: 4 (CRC word) + 4 (check) + 1 to 2 (directory) bytes per entry, with
parents 11.5 to 16 bytes per listed name (bench/table_bench.py), against 100-500 for the peers'
trees or hash sets of strings.

False positives: a name counts as listed only when its CRC-32 equals a stored entry's and the
name read as an integer (its bytes, little-endian) leaves the same remainder modulo a prime ``p``
drawn at random from [2**31, 2**32) when the table is built. Two different names of at most 253
bytes differ by a nonzero integer below 2**2024, which has at most 65 prime factors that large;
there are about 98 million primes in the range, so the remainders agree with probability at
most 65 / 98e6 = 6.7e-7 for *any* pair of names, crafted or not. An unlisted name must also meet
an entry with its exact CRC (about 4 in 2**13 per probe for ordinary names): together about
3e-10 per probe as a proven bound, about 1e-13 in practice. ``docs/blocklists.md`` has the
arithmetic and ``tests/unit/test_table_scale.py`` checks 2 million unlisted names.

Lookups cost a CRC (a C call, about 70 ns) per suffix and one modulo (about 130 ns) for a name
whose rules are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import random
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from zlib import crc32

from guardian_dns.errors import GuardianError

MAGIC: Final = b"GDNSTBL1"
VERSION: Final = 3
_HEADER: Final = struct.Struct("<8sIIQIII4x32s")  # 72 bytes
_COMBO: Final = struct.Struct("<QQQQHHHHH6x")  # 48 bytes
FLAG_VALS32: Final = 1  # combo indexes are u32 (more than 65535 combos)
FLAG_PACKED: Final = 8  # every combo index fits in the CRC word's top byte: no vals section
ESCAPE: Final = 0xFF  # top byte meaning "the combo index is in the vals section"
LOW24: Final = 0xFFFFFF
MIN_BITS: Final = 8  # buckets fix at least the CRC's top 8 bits, so the word can reuse them
FLAG_ADMIN: Final = 2  # some entry is an admin rule: the walk must visit every parent
FLAG_TLD: Final = 4  # some entry is a single label: the walk must look up the last label too

MAX_CATEGORIES: Final = 64
_SPILL: Final = 1 << 16  # output entries kept in memory before a build spills them to disk
LIST_BITS: Final = 12  # a rule id names one of up to 4096 lists, and a line in it
MAX_LISTS: Final = 1 << LIST_BITS
NO_LIST: Final = 0xFFFF
ALL_CATEGORIES: Final = (1 << MAX_CATEGORIES) - 1

# Rule kinds, in the order of the masks in a combo.
BLOCK: Final = 0
ALLOW: Final = 1
ADMIN_BLOCK: Final = 2
ADMIN_ALLOW: Final = 3
INTERIOR: Final = 4  # not a rule: a parent of a listed name, so the walk must go deeper
COMBO_DEEPER: Final = 1  # combo flag: some listed name lies below this one

if sys.byteorder != "little":  # pragma: no cover - every board we target is little-endian
    raise ImportError("guardian_dns.trie maps little-endian tables; this machine is big-endian")


class TableError(GuardianError):
    """A table file that cannot be used: not ours, another version, truncated or corrupt."""


def name_crc(name: bytes) -> int:
    """The CRC-32 of a name: what places it in a bucket and orders it there."""
    return crc32(name)


def random_prime(rng: random.Random | None = None) -> int:
    """A prime drawn uniformly from [2**31, 2**32): the modulus of the name checks.

    Miller-Rabin with bases 2, 7 and 61 is exact below 4,759,123,141, so no probable primes.
    """
    draw = rng or random.SystemRandom()
    while True:
        n = draw.randrange(1 << 31, 1 << 32) | 1
        if _is_prime(n):
            return n


def _is_prime(n: int) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 7, 61):
        if a % n == 0:
            continue
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def name_check(name: bytes, prime: int) -> int:
    """The check of a name (the name as an integer, modulo the table's prime): what tells two
    names with the same CRC apart, with the bound proven in the module docstring."""
    return int.from_bytes(name, "little") % prime


def _bucket_bits(entries: int) -> int:
    """Two to four names per bucket: 1-2 bytes of directory per name, a few CRCs per probe."""
    bits = 0
    while (2 << bits) * 2 <= entries and bits < 31:
        bits += 1
    return bits


def _vals_width(flags: int) -> tuple[int, Literal["H", "I"]]:
    if flags & FLAG_VALS32:
        return 4, "I"
    if flags & FLAG_PACKED:
        return 0, "H"
    return 2, "H"


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
        "prime",
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
        width, code = _vals_width(flags)
        self.vals = view[off : off + width * entries].cast(code)  # empty when FLAG_PACKED
        off = _align(off + width * entries)
        combos = []
        for i in range(n_combos):
            fields = _COMBO.unpack_from(data, off + i * _COMBO.size)
            # Fields 0-7 as stored; 8: the first list of any kind (the one whose line ``lines``
            # keeps); 9: COMBO_DEEPER or 0; 10: whether the name has any rule (1) or is only a
            # parent of listed names (0). Precomputed: the walk reads 9 and 10 at every level.
            has_rules = 1 if fields[0] or fields[1] or fields[2] or fields[3] else 0
            combos.append((*fields[:8], min(fields[4:8]), fields[8] & COMBO_DEEPER, has_rules))
        # Plain tuples: the decision reads four masks with one index, no attribute lookups.
        self.combos: tuple[tuple[int, ...], ...] = tuple(combos)
        off = _align(off + n_combos * _COMBO.size)
        try:
            self.meta: dict[str, Any] = json.loads(bytes(view[off : off + meta_len]))
            self.prime: int = int(self.meta["check_prime"])
            if not isinstance(self.meta["categories"], list) or not isinstance(
                self.meta["lists"], list
            ):
                raise TypeError("categories and lists must be lists")
        except (ValueError, KeyError, TypeError) as exc:
            raise TableError(f"{path}: unreadable metadata ({exc!r})") from None
        off = _align(off + meta_len)
        self.lines = view[off : off + 4 * entries].cast("I")
        self.shift = 32 - bits
        self._views = (view,)

    def find(self, name: bytes) -> int:
        """The entry of exactly this name (ASCII, lower case, no trailing dot), or -1.

        Parents of listed names are entries too (without rules, see ``INTERIOR``).
        """
        c = crc32(name)
        b = c >> self.shift
        c &= LOW24  # the top byte is the bucket's; the stored word's top byte is the combo
        d = self.directory
        i: int = d[b]
        end: int = d[b + 1]
        crcs = self.crcs
        while i < end:
            k = crcs[i] & LOW24
            if k < c:
                i += 1
                continue
            if k > c:
                return -1
            check = name_check(name, self.prime)
            checks = self.checks
            while i < end and crcs[i] & LOW24 == c:
                if checks[i] == check:
                    return i
                i += 1
            return -1
        return -1

    def combo_of(self, entry: int) -> tuple[int, ...]:
        """The combo tuple of an entry: from its CRC word's top byte, or the vals section."""
        v = self.crcs[entry] >> 24
        return self.combos[v if v != ESCAPE else self.vals[entry]]

    def line(self, entry: int) -> int:
        """The line of the entry's first rule in its first list (cold pages: "why" only)."""
        return int(self.lines[entry])

    def combo(self, entry: int) -> Combo:
        """The rules on an entry, as a readable value (for "why" and tests)."""
        c = self.combo_of(entry)
        return Combo((c[0], c[1], c[2], c[3]), (c[4], c[5], c[6], c[7]))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.meta["categories"])

    @property
    def lists(self) -> list[dict[str, Any]]:
        return list(self.meta["lists"])

    def __len__(self) -> int:
        """Names with a rule (a table also holds parents of listed names, without rules)."""
        return int(self.meta.get("names", self.size))

    def __contains__(self, name: object) -> bool:
        """Whether exactly this name is listed (not a parent of it), by any kind of rule."""
        if not isinstance(name, str):
            return False
        entry = self.find(name.encode())
        return entry >= 0 and any(self.combo_of(entry)[:4])

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
    width = _vals_width(flags)[0]
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
    """Collects rules list by list, then writes a table. Memory: 14 bytes per rule or parent.

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
        self.prime = random_prime()

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
        """Add rules of one list: normalised names and their lines. Repeats are merged at write.

        Every proper parent of a name (two labels or more) is added too, as an INTERIOR
        occurrence: the table then holds every suffix a listed name has, so a lookup can walk
        from the registrable domain down and stop at the first suffix that is absent.
        """
        admin = self._lists[list_index]["admin"]
        kind = (ADMIN_ALLOW if allow else ADMIN_BLOCK) if admin else (ALLOW if allow else BLOCK)
        self._kinds_seen |= 1 << kind
        tag = (kind << LIST_BITS) | list_index
        interior_tag = INTERIOR << LIST_BITS
        crcs = self.crcs.append
        checks = self.checks.append
        tags = self._tags.append
        out_lines = self._lines.append
        prime = self.prime
        fb = int.from_bytes
        parents: set[bytes] = set()  # per chunk: siblings share parents
        for name, line in zip(names, lines, strict=True):
            b = name.encode()
            crcs(crc32(b))
            checks(fb(b, "little") % prime)
            tags(tag)
            out_lines(line)
            dot = b.find(b".")
            if dot < 0:
                self._tld = True
                continue
            while True:
                parent = b[dot + 1 :]
                nxt = parent.find(b".")
                if nxt < 0 or parent in parents:
                    break  # a TLD is never interior; a known parent has its parents already
                parents.add(parent)
                crcs(crc32(parent))
                checks(fb(parent, "little") % prime)
                tags(interior_tag)
                out_lines(0)
                dot += nxt + 1

    def write(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> int:
        """Write the table atomically (temp file, fsync, rename); returns the number of names."""
        target = os.fspath(path)
        directory = os.path.dirname(target) or "."
        fd, tmp = tempfile.mkstemp(prefix=".table-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                entries = self._write_to(f, meta or {}, directory)
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

    def _write_to(self, f: Any, meta: dict[str, Any], spill_dir: str | None = None) -> int:
        """Merge repeats and write; the output columns go through temporary files.

        Only the sort's arrays stay in memory: the four output columns (about 14 bytes per name)
        are spilled every SPILL entries, which keeps a 2-million-name build's peak near the
        4x-the-table budget instead of adding a second copy of the table to it. They go beside
        the table (``spill_dir``), not to /tmp, which is RAM on many small boards.
        """
        with contextlib.ExitStack() as stack:
            columns = [
                stack.enter_context(tempfile.TemporaryFile(dir=spill_dir)) for _ in range(4)
            ]  # crcs, checks, vals, lines
            return self._merge_and_write(f, meta, columns)

    def _merge_and_write(self, f: Any, meta: dict[str, Any], columns: list[Any]) -> int:
        crcs, checks, tags, lines = self.crcs, self.checks, self._tags, self._lines
        # The bucket count depends on distinct names, which are not known before merging; the
        # occurrence count is an upper bound, and the saved directory is coarsened to fit below.
        bits = max(MIN_BITS, _bucket_bits(len(crcs)))
        starts, order = self._order(bits)
        masks = self._masks
        out_dir = array("I", [0]) * ((1 << bits) + 1)
        out = [array("I") for _ in range(4)]
        out_crcs, out_checks, out_vals, out_lines = out
        entries = 0
        names = 0
        combo_index: dict[tuple[int, ...], int] = {}
        list_mask = MAX_LISTS - 1
        for b in range(1 << bits):
            out_dir[b] = entries + len(out_crcs)
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
                deeper = 0
                line = 0
                while j < n and crcs[group[j]] == key_c and checks[group[j]] == key_k:
                    tag = tags[group[j]]
                    kind = tag >> LIST_BITS
                    if kind == INTERIOR:
                        deeper = COMBO_DEEPER
                    else:
                        li = tag & list_mask
                        m[kind] |= masks[li][kind & 1]
                        if ls[kind] == NO_LIST:
                            ls[kind] = li
                        if not line:
                            line = lines[group[j]]
                    j += 1
                if m[0] or m[1] or m[2] or m[3]:
                    names += 1
                combo = (m[0], m[1], m[2], m[3], ls[0], ls[1], ls[2], ls[3], deeper)
                idx = combo_index.get(combo)
                if idx is None:
                    idx = combo_index[combo] = len(combo_index)
                # The bucket already fixes the CRC's top byte: it carries the combo instead.
                out_crcs.append(((idx if idx < ESCAPE else ESCAPE) << 24) | (key_c & LOW24))
                out_checks.append(key_k)
                out_vals.append(idx)
                out_lines.append(line)
            if len(out_crcs) >= _SPILL:
                entries += len(out_crcs)
                for column, values in zip(columns, out, strict=True):
                    values.tofile(column)
                    del values[:]
        out_dir[1 << bits] = entries + len(out_crcs)
        entries += len(out_crcs)
        for column, values in zip(columns, out, strict=True):
            values.tofile(column)
            del values[:]
            column.seek(0)
        del order, starts
        # The sort's buckets were sized for every occurrence (repeats and parents included);
        # the saved directory is sized for the distinct names: every 2**k-th boundary.
        final_bits = max(MIN_BITS, min(bits, _bucket_bits(entries)))
        out_dir = out_dir[:: 1 << (bits - final_bits)]
        bits = final_bits
        flags = 0
        if len(combo_index) > 0x10000:
            flags |= FLAG_VALS32
        elif len(combo_index) <= ESCAPE:
            flags |= FLAG_PACKED
        vals_code = _vals_width(flags)[1]
        if self._kinds_seen & ((1 << ADMIN_BLOCK) | (1 << ADMIN_ALLOW)):
            flags |= FLAG_ADMIN
        if self._tld:
            flags |= FLAG_TLD
        combo_bytes = b"".join(_COMBO.pack(*c) for c in combo_index)
        meta_bytes = json.dumps(
            {
                "categories": list(self._categories),
                "lists": self._lists,
                "names": names,
                "check_prime": self.prime,
                **meta,
            },
            separators=(",", ":"),
        ).encode()
        h = hashlib.sha256()

        def emit(data: bytes) -> None:
            f.write(data)
            h.update(data)

        def emit_column(column: Any, code: str) -> None:
            size = 0
            while chunk := column.read(1 << 20):
                values = array("I")
                values.frombytes(chunk)
                data = values.tobytes() if code == "I" else array(code, values).tobytes()
                size += len(data)
                emit(data)
            emit(b"\0" * (_align(size) - size))

        f.write(b"\0" * _HEADER.size)
        dir_bytes = out_dir.tobytes()
        emit(dir_bytes + b"\0" * (_align(len(dir_bytes)) - len(dir_bytes)))
        emit_column(columns[0], "I")
        emit_column(columns[1], "I")
        if flags & FLAG_PACKED:
            columns[2].truncate(0)  # every index is in the CRC words
        emit_column(columns[2], vals_code)
        emit(combo_bytes + b"\0" * (_align(len(combo_bytes)) - len(combo_bytes)))
        emit(meta_bytes + b"\0" * (_align(len(meta_bytes)) - len(meta_bytes)))
        while chunk := columns[3].read(1 << 20):
            emit(chunk)
        f.seek(0)
        f.write(
            _HEADER.pack(
                MAGIC, VERSION, flags, entries, bits, len(combo_index), len(meta_bytes), h.digest()
            )
        )
        f.seek(0, os.SEEK_END)
        return names


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
        if table is not None and entry < table.size and table.combo_of(entry)[8] == index:
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
    "random_prime",
    "rule_id_for",
    "rule_ref",
]
