"""The query log: a fixed-size in-memory ring buffer of recent decisions.

What it decides: nothing; it remembers the last N answers so "what was blocked and why" can be
shown without a log line per query (one ``logging`` call per query costs ~70% of throughput).
What it reads: tuples appended by the pipeline.
What it must never do: allocate per query beyond the one tuple, or grow.
Records are raw (the query message as received, monotonic time); they are decoded only when
someone reads them, so the hot path does not even slice the question out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# Record layout appended by the pipeline: (monotonic time, client address, the query message,
# reason code, rule id). A tuple, because this happens once per query.
Record = tuple[float, str, bytes, int, int]


@dataclass(frozen=True)
class Decoded:
    """One query log record in a form people (and ``--json``) can read."""

    time: float  # Unix time
    client: str
    name: str
    qtype: int
    reason: str
    rule: int


class QueryLog:
    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.buf: list[Record | None] = [None] * self.size
        self.pos = 0
        self.total = 0
        # Monotonic -> wall clock, fixed at start: reading the wall clock per query is waste.
        self._wall_offset = time.time() - time.monotonic()

    def append(self, rec: Record) -> None:
        self.buf[self.pos] = rec
        self.pos += 1
        self.total += 1
        if self.pos == self.size:
            self.pos = 0

    def recent(self, reason_names: tuple[str, ...], limit: int = 100) -> list[Decoded]:
        """Newest first."""
        out: list[Decoded] = []
        pos = self.pos
        for _ in range(min(limit, self.size)):
            pos = (pos - 1) % self.size
            rec = self.buf[pos]
            if rec is None:
                break
            t, client, message, reason, rule = rec
            name, qtype = _decode_question(message)
            out.append(
                Decoded(t + self._wall_offset, client, name, qtype, reason_names[reason], rule)
            )
        return out


def _decode_question(message: bytes) -> tuple[str, int]:
    """The question name (as sent) and type of a query message the pipeline accepted."""
    labels = []
    pos = 12
    while pos < len(message) and message[pos]:
        ln = message[pos]
        labels.append(message[pos + 1 : pos + 1 + ln].decode("latin-1"))
        pos += ln + 1
    qtype = int.from_bytes(message[pos + 1 : pos + 3], "big") if pos + 3 <= len(message) else 0
    return ".".join(labels) + ".", qtype
