"""The decision: is this name blocked, answered locally, or forwarded?

What it decides: for one lower-case name, the verdict and the rule that caused it.
What it reads: the immutable domain table, the opt-in regular expressions and the policy mask of
the snapshot.
What it must never do: any I/O, or depend on anything but its arguments and the snapshot. The
admin's "why is this blocked" calls this very function, so it can never disagree with the server.

Precedence (``docs/blocklists.md`` has examples; tests/unit/test_filter.py checks each rule):

1. An administrator's own rule (a list with ``admin: true``) beats every downloaded list, at any
   depth: an admin block of ``example.com`` blocks ``www.example.com`` even when a list allows
   it, and an admin allow of ``example.com`` unblocks it whatever the category lists say.
   Between admin rules the most specific name wins, and at the same name block beats allow.
2. Between list rules the most specific name wins: an allow of ``cdn.example.com`` under a
   blocked ``example.com`` unblocks the CDN only, and a block of ``ads.example.com`` under an
   allowed ``example.com`` still blocks the ads host. At the same name allow beats block.
3. An allow only cancels the categories it names (an allowlist with ``category: games`` does not
   unblock a name that is also listed as adult); ``*`` and adblock ``@@`` allow every category.
4. Regular expressions (opt-in lists of format ``regex``) are consulted only for a name no rule
   above decided, so they never slow down the common case of a listed or allowed name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zlib import crc32

from guardian_dns.trie import (
    ESCAPE,
    FLAG_ADMIN,
    FLAG_TLD,
    LIST_BITS,
    LOW24,
    RULE_ENTRY,
    DomainTable,
    entry_rule_id,
)

if TYPE_CHECKING:
    from guardian_dns.regexrules import RegexRules

PASS = 0
BLOCK = 1
LOCAL_NXDOMAIN = 2  # answered by us, never forwarded (DoH canary, iCloud relay opt-out)
LOCAL_NODATA = 3  # answered by us with no data (DDR: resolver.arpa, RFC 9462 6.1)

RULE_BUILTIN = -2  # a verdict from the built-in bypass table, not from a list

# Signals that tell software a network filters DNS. Answering them ourselves is the documented
# opt-out: Firefox turns off its automatic DoH on NXDOMAIN for the canary, Apple devices turn off
# iCloud Private Relay, and DDR clients get no encrypted resolver to upgrade to.
BYPASS_NXDOMAIN = frozenset({"use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"})


class Filter:
    """Verdicts for the default group. Immutable; part of a snapshot."""

    def __init__(
        self,
        table: DomainTable,
        policy_mask: int,
        bypass_protection: bool,
        regex: RegexRules | None = None,
    ) -> None:
        self.table = table
        self.policy_mask = policy_mask
        self.bypass = BYPASS_NXDOMAIN if bypass_protection else frozenset()
        self.regex = regex
        self._tld = bool(table.flags & FLAG_TLD)
        self._admin = bool(table.flags & FLAG_ADMIN)

    def decide(self, name: str, policy: int = -1) -> tuple[int, int, int]:
        """(verdict, rule_id, category_mask) for a lower-case name without trailing dot.

        ``policy`` is the mask of categories blocked for the asking client right now (its
        group, schedules and budgets: policy.py); -1 means the default group's mask.
        rule_id is -1 for a name nothing decided; for an allowed name it names the allow rule.
        """
        if name in self.bypass:
            return LOCAL_NXDOMAIN, RULE_BUILTIN, 0
        if name == "resolver.arpa" or name.endswith(".resolver.arpa"):
            return LOCAL_NODATA, RULE_BUILTIN, 0
        table = self.table
        vals = table.vals
        combos = table.combos
        if policy < 0:
            policy = self.policy_mask
        # The table's probe (DomainTable.find) inlined: this runs for every name that is not in
        # the answer cache, and a method call per label would be a third of its cost.
        directory = table.directory
        crcs = table.crcs
        checks = table.checks
        shift = table.shift
        prime = table.prime
        from_bytes = int.from_bytes
        b = name.encode()
        # Walk down from the registrable level ("example.com"): the table holds every parent of
        # every listed name, so the first absent suffix ends the walk. A miss usually costs one
        # probe, a listed name with nothing listed below it one probe too. A CRC match is taken
        # on trust while walking (a collision only costs a probe); the name check (a modulo,
        # see trie) is made once, below, for the entries whose rules are actually used.
        first: tuple[int, bytes | None, tuple[int, ...]] | None = None  # (entry, suffix, combo)
        matches: list[tuple[int, bytes | None, tuple[int, ...]]] | None = None  # from a second
        cut = b.rfind(b".")
        if cut < 0:
            cut = 0
            if not self._tld:
                return self._regex(name, policy)
        elif self._tld:
            entry = table.find(b[cut + 1 :])  # a whole TLD listed (allow_tld); not interior
            if entry >= 0:
                first = (entry, None, table.combo_of(entry))
        while True:
            start = b.rfind(b".", 0, cut) + 1 if cut else 0
            suffix = b[start:] if start else b
            c = crc32(suffix)
            bucket = c >> shift
            c &= LOW24  # stored words: top byte = combo index, low 24 bits = CRC
            i = directory[bucket]
            end = directory[bucket + 1]
            entry = -1
            while i < end:
                w = crcs[i]
                k = w & LOW24
                if k < c:
                    i += 1
                    continue
                if k == c:
                    if i + 1 < end and crcs[i + 1] & LOW24 == c:  # two names share the CRC
                        check = from_bytes(suffix, "little") % prime
                        while i < end and crcs[i] & LOW24 == c:
                            if checks[i] == check:
                                entry = i
                                w = crcs[i]
                                break
                            i += 1
                    else:
                        entry = i
                break
            if entry < 0:
                break
            v = w >> 24
            co = combos[v if v != ESCAPE else vals[entry]]
            if co[10]:  # the name has rules (not only a parent of listed names)
                if first is None:
                    first = (entry, suffix, co)
                else:
                    if matches is None:
                        matches = [first]
                    matches.append((entry, suffix, co))
            if not start or not co[9]:
                break
            cut = start - 1
        if first is None:
            return self._regex(name, policy)
        if matches is None and not self._admin:
            # The common hit: one listed suffix, only list rules. Same verdict as the loop below;
            # the rule ids are trie.entry_rule_id, inlined.
            entry, suffix_or_none, co = first
            if (
                suffix_or_none is None
                or checks[entry] == from_bytes(suffix_or_none, "little") % prime
            ):
                hit = co[0] & policy & ~co[1]
                if hit:
                    return BLOCK, RULE_ENTRY | (entry << LIST_BITS) | co[4], hit
                if co[1]:
                    return PASS, RULE_ENTRY | (entry << LIST_BITS) | co[5], 0
            return self._regex(name, policy)
        # Decide from the most specific match up (the precedence in the module docstring).
        allowed = 0
        found = -1  # entry of the most specific list block still in force
        found_mask = 0
        allow_entry = -1
        found_list = allow_list = 0
        for entry, suffix_or_none, co in reversed(matches or [first]):
            if (
                suffix_or_none is not None
                and checks[entry] != from_bytes(suffix_or_none, "little") % prime
            ):
                continue  # only the CRC matched: not this name
            if co[2] & policy:  # admin block
                return BLOCK, entry_rule_id(entry, co[6]), co[2] & policy
            if co[3]:  # admin allow
                return PASS, entry_rule_id(entry, co[7]), 0
            if found < 0:
                if co[1]:
                    allowed |= co[1]
                    if allow_entry < 0:
                        allow_entry, allow_list = entry, co[5]
                hit = co[0] & policy & ~allowed
                if hit:
                    found, found_mask, found_list = entry, hit, co[4]
                    if not self._admin:
                        break  # only an admin rule further up could still change the verdict
        if found >= 0:
            return BLOCK, entry_rule_id(found, found_list), found_mask
        if allow_entry >= 0:
            return PASS, entry_rule_id(allow_entry, allow_list), 0
        return self._regex(name, policy)

    def _regex(self, name: str, policy: int) -> tuple[int, int, int]:
        if self.regex is not None:
            hit = self.regex.match(name)
            if hit is not None and hit[0] & policy:
                return BLOCK, hit[1], hit[0] & policy
        return PASS, -1, 0

    def category_index(self, mask: int) -> int:
        """The lowest category bit of a mask: the category a block is counted and shown under."""
        return (mask & -mask).bit_length() - 1
