"""Safe search: which query names a group answers with a vendor's enforcement name.

What it decides: for one lower-case query name, the engines a group enforces safe search on and
the group's YouTube mode, the CNAME target the answer should carry (``forcesafesearch.google.com``
for ``www.google.de``), or None; and which names to block because their engine offers no DNS
mechanism at all.
What it reads: one table file (``blocklists/safesearch.yaml``; the format is described at its top
and in ``blocklists/README.md``), once per load.
What it must never do: touch the network, rewrite a name the table does not list exactly (the
vendors document exact hosts; rewriting ``mail.google.com`` would break mail), or accept a doubtful
table: unknown and duplicate keys are errors, and every problem is reported at once as
``file:line: field: message``, like the configuration.

Not wired into the server yet. This is the data, and its lookup, for the per-group policy work:
a snapshot will hold one ``rewrites()`` dict per group, so the query path pays one dict lookup.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from guardian_dns.errors import ConfigError, Problem
from guardian_dns.lists import normalise_domain

# The two levels of an engine with two targets (YouTube's Restricted Mode). Every other engine has
# one target, used whatever the mode.
YOUTUBE_MODES: Final[tuple[str, ...]] = ("moderate", "strict")
FORMAT_VERSION: Final = 1
BUNDLED_TABLE: Final[Path] = Path(__file__).resolve().parent.parent / "blocklists/safesearch.yaml"

_TOP_KEYS: Final = ("version", "engines")
_ENGINE_KEYS: Final = ("source", "target", "targets", "note", "names")
# Engine ids end up in group policies and the admin UI, like categories: short and predictable.
_ENGINE_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_STR: Final = "tag:yaml.org,2002:str"
_NULL: Final = "tag:yaml.org,2002:null"
_INT: Final = "tag:yaml.org,2002:int"


@dataclass(frozen=True)
class Engine:
    """One engine's row of the table.

    ``moderate`` and ``strict`` are equal for an engine with a single target, and both None for an
    engine without a DNS mechanism, whose ``names`` a policy blocks instead (``note`` says why).
    ``line`` is where the engine is written, so "why was this rewritten" can point at it.
    """

    name: str
    source: str
    names: tuple[str, ...]
    moderate: str | None
    strict: str | None
    note: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        if (self.moderate is None) != (self.strict is None):
            raise ValueError(f"engine {self.name!r}: either both targets or neither")
        if not self.names:
            raise ValueError(f"engine {self.name!r} lists no names")

    @property
    def enforceable(self) -> bool:
        """False when the vendor offers no DNS mechanism, so safe search means blocking it."""
        return self.strict is not None


@dataclass(frozen=True)
class SafeSearchTable:
    """Every engine, and the per-name indexes built once from them.

    The indexes are plain dicts for lookup speed; they are private and never changed after
    construction, so the table is immutable in practice and can sit in a snapshot.
    """

    engines: tuple[Engine, ...]
    source: str = "<table>"
    # name -> (engine, moderate target, strict target), for engines with a mechanism
    _targets: dict[str, tuple[str, str, str]] = field(init=False, repr=False, compare=False)
    # name -> engine, for engines without one
    _unenforceable: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        targets: dict[str, tuple[str, str, str]] = {}
        unenforceable: dict[str, str] = {}
        owner: dict[str, str] = {}
        for engine in self.engines:
            for name in engine.names:
                if name in owner:
                    raise ValueError(
                        f"{name!r} is listed by both {owner[name]!r} and {engine.name!r}"
                    )
                owner[name] = engine.name
                if engine.moderate is not None and engine.strict is not None:
                    targets[name] = (engine.name, engine.moderate, engine.strict)
                else:
                    unenforceable[name] = engine.name
        object.__setattr__(self, "_targets", targets)
        object.__setattr__(self, "_unenforceable", unenforceable)

    def engine(self, name: str) -> Engine:
        """The engine called ``name``; KeyError names the known ones, for config validation."""
        for engine in self.engines:
            if engine.name == name:
                return engine
        known = ", ".join(e.name for e in self.engines)
        raise KeyError(f"unknown safe-search engine {name!r} (known: {known})")

    def target(self, name: str, engines: frozenset[str], youtube_mode: str) -> str | None:
        """The CNAME target for a lower-case ``name`` (no trailing dot), or None to leave it be.

        ``engines`` are the engines the asking group enforces; ``youtube_mode`` picks between the
        two targets of an engine that has two. One dict lookup, then a set test: cheap enough per
        query, though a snapshot should prefer ``rewrites()``.
        """
        hit = self._targets.get(name)
        if hit is None or hit[0] not in engines:
            return None
        if youtube_mode == "moderate":
            return hit[1]
        if youtube_mode == "strict":
            return hit[2]
        raise ValueError(
            f"unknown YouTube mode {youtube_mode!r} (known: {', '.join(YOUTUBE_MODES)})"
        )

    def rewrites(self, engines: Iterable[str], youtube_mode: str) -> dict[str, str]:
        """Every rewrite of one group, name -> target, so a query costs exactly one dict lookup."""
        if youtube_mode not in YOUTUBE_MODES:
            raise ValueError(
                f"unknown YouTube mode {youtube_mode!r} (known: {', '.join(YOUTUBE_MODES)})"
            )
        wanted = frozenset(engines)
        strict = youtube_mode == "strict"
        return {
            name: (hit[2] if strict else hit[1])
            for name, hit in self._targets.items()
            if hit[0] in wanted
        }

    def unenforceable(self, engines: Iterable[str]) -> frozenset[str]:
        """Names a group must block to get safe search on ``engines`` that have no DNS mechanism."""
        wanted = frozenset(engines)
        return frozenset(name for name, owner in self._unenforceable.items() if owner in wanted)


# --- the strict loader -----------------------------------------------------------------------


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _describe(node: Node) -> str:
    """How a wrong value is shown back: as the YAML author would recognise it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing (null)"
    return repr(node.value)


def _is_str(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _STR


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


class _Reader:
    """Walks the YAML node tree (which keeps every line) and collects every problem it finds."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.target_lines: list[tuple[str, int, str]] = []  # (target, line, path) for no_loops

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, line, path, message))

    def mapping(
        self, node: Node, path: str, known: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, tuple[Node, Node]] | None:
        """Key -> (key node, value node) of a mapping whose keys must come from ``known``.

        ``known`` empty means any key (engine ids); their spelling is checked by the caller.
        Duplicate keys are reported rather than silently resolved, as PyYAML would.
        """
        if not isinstance(node, MappingNode):
            self.problem(_line(node), path, f"expected a mapping, got {_describe(node)}")
            return None
        seen: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            where = f"{path}.{key_node.value}" if path else str(key_node.value)
            if not _is_str(key_node):
                self.problem(_line(key_node), path, f"{_describe(key_node)} cannot be a key")
                continue
            key = key_node.value
            if key in seen:
                first = _line(seen[key][0])
                self.problem(_line(key_node), where, f"duplicate key, first at line {first}")
                continue
            if known and key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.problem(
                    _line(key_node), where, f"unknown key ({hint}known: {', '.join(known)})"
                )
                continue
            seen[key] = (key_node, value_node)
        for key in required:
            if key not in seen:
                self.problem(_line(node), f"{path}.{key}" if path else key, "missing")
        return seen

    def string(self, node: Node, path: str) -> str | None:
        if not _is_str(node) or not node.value.strip():
            self.problem(_line(node), path, f"expected a non-empty string, got {_describe(node)}")
            return None
        return str(node.value).strip()

    def hostname(self, node: Node, path: str) -> str | None:
        """A name in the form lookups use; anything else is an error, never silently folded."""
        text = self.string(node, path)
        if text is None:
            return None
        name = normalise_domain(text)
        if name is None:
            self.problem(_line(node), path, f"{text!r} is not a domain name")
            return None
        if name != text:
            self.problem(
                _line(node), path, f"write {text!r} as {name!r} (lower case, no trailing dot)"
            )
            return None
        return name

    def table(self, root: Node) -> SafeSearchTable | None:
        top = self.mapping(root, "", _TOP_KEYS, required=_TOP_KEYS)
        if top is None:
            return None
        if "version" in top:
            node = top["version"][1]
            if not (isinstance(node, ScalarNode) and node.tag == _INT):
                self.problem(_line(node), "version", f"expected a number, got {_describe(node)}")
            elif node.value != str(FORMAT_VERSION):
                message = (
                    f"version {node.value} is not supported (this release reads {FORMAT_VERSION})"
                )
                self.problem(_line(node), "version", message)
        if "engines" not in top:
            return None
        engines_node = top["engines"][1]
        rows = self.mapping(engines_node, "engines", ())
        if rows is None:
            return None
        if not rows:
            self.problem(_line(engines_node), "engines", "no engines listed")
        engines: list[Engine] = []
        where: dict[str, tuple[str, int]] = {}  # name -> (engine, line), across all engines
        for key, (key_node, value_node) in rows.items():
            path = f"engines.{key}"
            if not _ENGINE_RE.match(key):
                self.problem(
                    _line(key_node), path, "an engine id is 1-32 of a-z 0-9 _ -, starting a-z 0-9"
                )
                continue
            engine = self.engine(key, _line(key_node), value_node, path, where)
            if engine is not None:
                engines.append(engine)
        self.no_loops(where)
        if self.problems:
            return None
        return SafeSearchTable(tuple(engines), self.source)

    def engine(
        self, key: str, line: int, node: Node, path: str, where: dict[str, tuple[str, int]]
    ) -> Engine | None:
        fields = self.mapping(node, path, _ENGINE_KEYS, required=("source", "names"))
        if fields is None:
            return None
        before = len(self.problems)
        source = (
            self.source_url(fields["source"][1], f"{path}.source") if "source" in fields else ""
        )
        note = self.string(fields["note"][1], f"{path}.note") if "note" in fields else ""
        moderate, strict = self.targets(fields, node, path, note)
        names = (
            self.names(fields["names"][1], f"{path}.names", key, where) if "names" in fields else ()
        )
        if len(self.problems) > before or not names:
            return None
        return Engine(key, source or "", names, moderate, strict, note or "", line)

    def source_url(self, node: Node, path: str) -> str | None:
        text = self.string(node, path)
        if text is not None and not text.startswith(("https://", "http://")):
            self.problem(_line(node), path, "expected the URL of the vendor's documentation")
            return None
        return text

    def targets(
        self, fields: dict[str, tuple[Node, Node]], node: Node, path: str, note: str | None
    ) -> tuple[str | None, str | None]:
        """(moderate, strict) from either ``target`` or ``targets``; exactly one must be given."""
        if "target" in fields and "targets" in fields:
            line = _line(fields["targets"][0])
            self.problem(line, f"{path}.targets", "give either 'target' or 'targets', not both")
            return None, None
        if "target" in fields:
            value = fields["target"][1]
            if _is_null(value):
                if not note:
                    message = (
                        "null (no DNS mechanism: block the engine instead) needs a 'note' "
                        "saying why"
                    )
                    self.problem(_line(value), f"{path}.target", message)
                return None, None
            name = self.hostname(value, f"{path}.target")
            if name is not None:
                self.target_lines.append((name, _line(value), f"{path}.target"))
            return name, name
        if "targets" in fields:
            modes = self.mapping(
                fields["targets"][1], f"{path}.targets", YOUTUBE_MODES, required=YOUTUBE_MODES
            )
            if modes is None:
                return None, None
            found: dict[str, str | None] = {}
            for mode, (_key, value) in modes.items():
                found[mode] = name = self.hostname(value, f"{path}.targets.{mode}")
                if name is not None:
                    self.target_lines.append((name, _line(value), f"{path}.targets.{mode}"))
            return found.get("moderate"), found.get("strict")
        message = "missing: 'target' (one name, or null) or 'targets' (moderate and strict)"
        self.problem(_line(node), f"{path}.target", message)
        return None, None

    def names(
        self, node: Node, path: str, engine: str, where: dict[str, tuple[str, int]]
    ) -> tuple[str, ...]:
        if not isinstance(node, SequenceNode):
            self.problem(_line(node), path, f"expected a list of names, got {_describe(node)}")
            return ()
        if not node.value:
            self.problem(_line(node), path, "no names listed")
            return ()
        names: list[str] = []
        for i, item in enumerate(node.value):
            name = self.hostname(item, f"{path}[{i}]")
            if name is None:
                continue
            if name in where:
                other, first = where[name]
                owner = "this engine" if other == engine else f"engine {other!r}"
                message = f"{name!r} is already listed at line {first} ({owner})"
                self.problem(_line(item), f"{path}[{i}]", message)
                continue
            where[name] = (engine, _line(item))
            names.append(name)
        return tuple(names)

    def no_loops(self, where: dict[str, tuple[str, int]]) -> None:
        """A target that is itself a listed name would be rewritten again, or point at itself."""
        for target, line, path in self.target_lines:
            if target in where:
                engine, listed = where[target]
                message = (
                    f"{target!r} is itself a name to rewrite (line {listed}, engine {engine!r}): "
                    "the rewrite would loop"
                )
                self.problem(line, path, message)


def load_table_text(text: str, source: str = "<string>") -> SafeSearchTable:
    """Parse and validate a table; raises ConfigError listing every problem, sorted by line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes keep lines; nothing is built
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError(
            [Problem(source, line, "", f"YAML error: {exc.problem or exc}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, 0, "", f"YAML error: {exc}")]) from None
    if root is None:
        raise ConfigError([Problem(source, 0, "", "the file is empty (expected version, engines)")])
    reader = _Reader(source)
    table = reader.table(root)
    if table is None or reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line))
    return table


def load_table(path: str | os.PathLike[str] = BUNDLED_TABLE) -> SafeSearchTable:
    """Load a table file; problems name the file, its line and the field."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([Problem(source, 0, "", "no such file")]) from None
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError([Problem(source, 0, "", message)]) from None
    except OSError as exc:
        raise ConfigError([Problem(source, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    return load_table_text(text, source)


__all__ = [
    "BUNDLED_TABLE",
    "YOUTUBE_MODES",
    "Engine",
    "SafeSearchTable",
    "load_table",
    "load_table_text",
]
