"""Regular-expression rules: the opt-in, last-resort matcher for names no domain list decided.

What it decides: whether a queried name matches one of a small set of patterns, and if so the OR
of the matching patterns' category bits and the rule id of the first (in build order) that matched.
What it reads: (pattern, category bit, rule id) triples handed to ``RegexRules.build``; the
patterns come from lists whose format is ``regex`` (``lists.parse_stream`` collects them as
``(pattern, line)`` pairs and never puts them on the domain table).
What it must never do: run for a name the domain table already decided (blocked, or allowed by an
allow entry): the table is exact and cheap, a pattern is neither, so the filter consults these
rules only on the table's miss; accept a list as regex rules unless its format says ``regex``
(auto-detection reports such a file but loads nothing from it); or let one pattern change what
another means.

Semantics: a pattern must match the whole name (``re.fullmatch``), which is the lower-case,
punycode form without the trailing dot (``www.example.com``). Pi-hole regex lists are written
for search semantics, so ``(^|\\.)example\\.com$`` works here as written but ``^ad`` must be
written ``ad.*`` to keep meaning "starts with ad".

Cost: all patterns are compiled into one alternation, so a miss (the common case: most names are
not blocked) is a single C-level ``fullmatch``; only a hit walks the patterns one by one to find
every category. Patterns are capped in length and in number, and back-references, named groups
and conditionals are refused because they would change meaning inside the alternation.
Catastrophic backtracking is bounded only by the 253-character name: a list of regexes is trusted
configuration, which is one more reason these rules are opt-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from guardian_dns.errors import ListError, Problem

if TYPE_CHECKING:
    from guardian_dns.lists import ListSummary

MAX_PATTERN_LENGTH: Final = 512
MAX_PATTERNS: Final = 1000
MAX_CATEGORY_BIT: Final = 63  # the table's masks are 64 bits; so are ours
SHOWN: Final = 80

_Matcher = Callable[[str], "re.Match[str] | None"]


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _structure_problem(pattern: str) -> str:
    """Why the pattern cannot sit inside a shared alternation or can never match, or "".

    Group numbers and names are global to a compiled expression, so ``\\1`` or ``(?P=x)`` in the
    second pattern would silently point into the first one. An upper-case letter outside a
    character class can never match a lower-case name, which is a mistake worth reporting.
    """
    folds_case = re.search(r"\(\?[aimsux-]*i", pattern) is not None  # (?i:...) makes A match a
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n and pattern[i + 1] in "123456789":
                return "back-references (\\1...) are not supported"
            i += 2
            continue
        if c == "[":  # skip the class: [A-Z] in a class is harmless, and ']' first is literal
            i += 2 if pattern.startswith("[^", i) else 1
            i += 1 if i < n and pattern[i] == "]" else 0
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            lookbehind = pattern.startswith(("(?<=", "(?<!"), i)
            if pattern.startswith(("(?P<", "(?<"), i) and not lookbehind:
                return "named groups are not supported (use (?:...))"
            if pattern.startswith("(?P=", i):
                return "back-references (?P=name) are not supported"
            if pattern.startswith("(?(", i):
                return "conditional groups are not supported"
        if "A" <= c <= "Z" and not folds_case:
            return f"upper-case {c!r} can never match: names are matched in lower case"
        i += 1
    return ""


def check_pattern(pattern: str) -> str:
    """Why ``pattern`` cannot be a rule, or "" when it can. Never raises.

    The pattern is compiled the way ``build`` will use it, inside ``(?:...)``: a global flag
    such as ``(?i)`` compiles alone but not there, and the message should say so now.
    """
    if not pattern:
        return "empty pattern"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern of {len(pattern)} characters (the limit is {MAX_PATTERN_LENGTH})"
    why = _structure_problem(pattern)
    if why:
        return why
    try:
        re.compile(f"(?:{pattern})")
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    except (RecursionError, OverflowError):
        return "too deeply nested to compile"
    return ""


def checked(summary: ListSummary) -> tuple[list[tuple[str, int]], list[Problem]]:
    """The usable ``(pattern, line)`` pairs of a parsed regex list, and a problem per bad one.

    This is where a bad pattern gets its ``file:line``: ``build`` only sees triples, so callers
    filter through here first and report the problems as warnings, like bad lines of any list.
    """
    good: list[tuple[str, int]] = []
    problems: list[Problem] = []
    for pattern, line in summary.regexes:
        why = check_pattern(pattern)
        if why:
            problems.append(Problem(summary.source, line, "", f"skipped {_shown(pattern)}: {why}"))
        else:
            good.append((pattern, line))
    return good, problems


class RegexRules:
    """An immutable set of compiled patterns; build it with ``RegexRules.build``."""

    __slots__ = ("_any", "_rules")

    def __init__(self, combined: _Matcher | None, rules: tuple[tuple[_Matcher, int, int], ...]):
        self._any = combined
        self._rules = rules

    @classmethod
    def build(
        cls, rules: Sequence[tuple[str, int, int]], source: str = "regex rules"
    ) -> RegexRules:
        """Compile ``(pattern, category_bit, rule_id)`` triples, in the order given.

        Raises ListError naming ``source`` for a bad pattern, too many patterns or a category bit
        out of range: by this point the patterns should have gone through ``checked``, so a bad
        one is a caller's mistake that must not become a silently smaller rule set.
        """
        if len(rules) > MAX_PATTERNS:
            message = f"{len(rules)} regular expressions (the limit is {MAX_PATTERNS})"
            raise ListError(Problem(source, 0, "", message))
        compiled: list[tuple[_Matcher, int, int]] = []
        for pattern, bit, rule_id in rules:
            why = check_pattern(pattern)
            if why:
                message = f"rule {rule_id}: {_shown(pattern)}: {why}"
                raise ListError(Problem(source, 0, "", message))
            if not 0 <= bit <= MAX_CATEGORY_BIT:
                message = f"rule {rule_id}: category bit {bit} (must be 0..{MAX_CATEGORY_BIT})"
                raise ListError(Problem(source, 0, "", message))
            compiled.append((re.compile(pattern).fullmatch, 1 << bit, rule_id))
        if not compiled:
            return cls(None, ())
        combined = re.compile("|".join(f"(?:{pattern})" for pattern, _, _ in rules)).fullmatch
        return cls(combined, tuple(compiled))

    def match(self, name: str) -> tuple[int, int] | None:
        """(category_mask, rule_id) for a lower-case name without trailing dot, or None.

        The mask ORs every matching pattern's category, as the domain table ORs the categories
        of a name listed twice; the rule id is the first match's, so "why" is stable.
        """
        combined = self._any
        if combined is None or combined(name) is None:
            return None
        mask = 0
        first = -1
        for fullmatch, bit, rule_id in self._rules:
            if fullmatch(name) is not None:
                if not mask:
                    first = rule_id
                mask |= bit
        return mask, first

    def __len__(self) -> int:
        return len(self._rules)


__all__ = [
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "RegexRules",
    "check_pattern",
    "checked",
]
