"""Time-zone helpers for tests of schedules and budgets: explicit instants, never the wall clock.

What it decides: how a test names an instant (a local wall-clock time in a zone, or UTC).
What it reads: the IANA zone data (the system's, or the ``tzdata`` wheel).
What it must never do: let a missing zone pass silently: it skips with a reason on a developer's
machine and fails under ``CI=true``, like ``tests.support.require_tool``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest


def zone(name: str) -> ZoneInfo:
    """The zone, or a skip (a fail under CI) that says how to get it."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        message = f"time zone {name!r} is not installed (apt-get install tzdata; pip: tzdata)"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message}; tests must not skip in CI", pytrace=False)
    pytest.skip(message)


def local(tz: ZoneInfo, text: str, fold: int = 0) -> float:
    """Unix time of a local wall-clock time such as ``2025-03-28 21:00`` (seconds optional)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).timestamp()


def utc(text: str) -> float:
    """Unix time of a UTC wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
