"""The decision: is this name blocked, answered locally, or forwarded?

What it decides: for one lower-case name, the verdict and the rule that caused it.
What it reads: the immutable domain trie, allow entries and the policy mask of the snapshot.
What it must never do: any I/O, or depend on anything but its arguments and the snapshot. The
admin's "why is this blocked" calls this very function, so it can never disagree with the server.
"""

from __future__ import annotations

from guardian_dns.trie import DomainTrie

PASS = 0
BLOCK = 1
LOCAL_NXDOMAIN = 2  # answered by us, never forwarded (DoH canary, iCloud relay opt-out)
LOCAL_NODATA = 3  # answered by us with no data (DDR: resolver.arpa, RFC 9462 6.1)

RULE_BUILTIN = -2  # a verdict from the built-in bypass table, not from a list

# Signals that tell software a network filters DNS. Answering them ourselves is the documented
# opt-out: Firefox turns off its automatic DoH on NXDOMAIN for the canary, Apple devices turn off
# iCloud Private Relay, and DDR clients get no encrypted resolver to upgrade to.
BYPASS_NXDOMAIN = frozenset({"use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"})


def _suffixes(name: str) -> list[str]:
    out = [name]
    dot = name.find(".")
    while dot >= 0:
        name = name[dot + 1 :]
        out.append(name)
        dot = name.find(".")
    return out


class Filter:
    """Verdicts for the default group. Immutable; part of a snapshot."""

    def __init__(
        self,
        trie: DomainTrie,
        allows: frozenset[str],
        policy_mask: int,
        bypass_protection: bool,
    ) -> None:
        self.trie = trie
        self.allows = allows
        self.policy_mask = policy_mask
        self.bypass = BYPASS_NXDOMAIN if bypass_protection else frozenset()

    def decide(self, name: str) -> tuple[int, int, int]:
        """(verdict, rule_id, category_mask) for a lower-case name without trailing dot."""
        if name in self.bypass:
            return LOCAL_NXDOMAIN, RULE_BUILTIN, 0
        if name == "resolver.arpa" or name.endswith(".resolver.arpa"):
            return LOCAL_NODATA, RULE_BUILTIN, 0
        if self.allows and any(s in self.allows for s in _suffixes(name)):
            return PASS, -1, 0
        hit = self.trie.lookup(name)
        if hit is not None:
            mask, rule = hit
            if mask & self.policy_mask:
                return BLOCK, rule, mask & self.policy_mask
        return PASS, -1, 0

    def category_index(self, mask: int) -> int:
        """The lowest category bit of a mask: the category a block is counted and shown under."""
        return (mask & -mask).bit_length() - 1
