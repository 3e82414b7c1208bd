"""The one exception root of Guardian DNS, and the problem record that names file, line and field.

Stages raise these; only the packet boundary (listener) and the CLI entry catch broadly. A problem
always says where it is, because the person who must fix it is an administrator with a text editor,
not a developer with a debugger.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where it is and what is wrong.

    ``line`` is 0 when the problem has no single line (a missing file, a missing key).
    """

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class GuardianError(Exception):
    """Root of every error Guardian DNS raises on purpose."""


class ConfigError(GuardianError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ListError(GuardianError):
    """A blocklist cannot be used at all (missing, unreadable). Bad lines are warnings, not this."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class UpstreamError(GuardianError):
    """No upstream produced a usable answer within the budget."""
