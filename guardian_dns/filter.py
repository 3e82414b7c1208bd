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

import hashlib
from typing import TYPE_CHECKING
from zlib import crc32

from guardian_dns.trie import FLAG_ADMIN, FLAG_TLD, LIST_BITS, RULE_ENTRY, DomainTable

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
        self._full_walk = bool(table.flags & FLAG_ADMIN)
        self._tld = bool(table.flags & FLAG_TLD)

    def decide(self, name: str) -> tuple[int, int, int]:
        """(verdict, rule_id, category_mask) for a lower-case name without trailing dot.

        rule_id is -1 for a name nothing decided; for an allowed name it names the allow rule.
        """
        if name in self.bypass:
            return LOCAL_NXDOMAIN, RULE_BUILTIN, 0
        if name == "resolver.arpa" or name.endswith(".resolver.arpa"):
            return LOCAL_NODATA, RULE_BUILTIN, 0
        table = self.table
        vals = table.vals
        combos = table.combos
        policy = self.policy_mask
        full_walk = self._full_walk
        tld = self._tld
        # The table's probe (DomainTable.find) inlined: this loop runs for every name that is not
        # in the answer cache, and a method call per label is a third of its cost.
        directory = table.directory
        crcs = table.crcs
        checks = table.checks
        shift = table.shift
        blake = hashlib.blake2b
        from_bytes = int.from_bytes
        allowed = 0
        found = -1  # entry of the most specific list block still in force
        found_mask = 0
        allow_entry = -1
        b = name.encode()
        while True:
            dot = b.find(b".")
            if dot < 0 and not tld:
                break  # a single label (a TLD) is only listed with allow_tld
            c = crc32(b)
            bucket = c >> shift
            i = directory[bucket]
            end = directory[bucket + 1]
            entry = -1
            while i < end:
                k = crcs[i]
                if k < c:
                    i += 1
                    continue
                if k == c:
                    check = from_bytes(blake(b, digest_size=4).digest(), "little")
                    while i < end and crcs[i] == c:
                        if checks[i] == check:
                            entry = i
                            break
                        i += 1
                break
            if entry >= 0:
                co = combos[vals[entry]]
                if co[2] & policy:  # admin block
                    return BLOCK, self._rule(entry, co[6]), co[2] & policy
                if co[3]:  # admin allow
                    return PASS, self._rule(entry, co[7]), 0
                if found < 0:
                    if co[1]:
                        allowed |= co[1]
                        if allow_entry < 0:
                            allow_entry = entry
                    hit = co[0] & policy & ~allowed
                    if hit:
                        found, found_mask = entry, hit
                        if not full_walk:
                            break
            if dot < 0:
                break
            b = b[dot + 1 :]
        if found >= 0:
            return BLOCK, self._rule(found, combos[vals[found]][4]), found_mask
        if allow_entry >= 0:
            return PASS, self._rule(allow_entry, combos[vals[allow_entry]][5]), 0
        if self.regex is not None:
            hit_regex = self.regex.match(name)
            if hit_regex is not None and hit_regex[0] & policy:
                return BLOCK, hit_regex[1], hit_regex[0] & policy
        return PASS, -1, 0

    @staticmethod
    def _rule(entry: int, list_index: int) -> int:
        """The rule id of an entry; ``trie.rule_ref`` turns it into list and line for "why"."""
        return RULE_ENTRY | (entry << LIST_BITS) | list_index

    def category_index(self, mask: int) -> int:
        """The lowest category bit of a mask: the category a block is counted and shown under."""
        return (mask & -mask).bit_length() - 1
