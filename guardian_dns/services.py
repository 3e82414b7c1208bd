"""Blocked services: the named apps a parent blocks, schedules and budgets (TikTok, Roblox, ...).

What it decides: which services exist (one ``blocklists/services/<id>.txt`` each), what each is
called and how it is described to a parent, and the category name under which the filter holds a
service's domains (``service:<id>``), so a group names ``tiktok`` where it would name a category.
What it reads: the three header lines at the top of each ``*.txt`` in one directory, never the
domains below them; those are an ordinary ``domains`` list, parsed by ``guardian_dns.lists`` like
any other blocklist.
What it must never do: touch the network, guess an id (the id written in the file must equal the
file's name, so renaming a file cannot silently change what a group's policy blocks), or accept a
doubtful directory: every header problem of every file is reported at once, as
``file:line: field: message``, like the configuration.

The header (``blocklists/services/README.md`` has the whole convention)::

    # Guardian DNS service: TikTok
    # id: tiktok
    # Short videos and live streams: the TikTok app and tiktok.com, with its share links.

Not wired into the server yet. This is the data, and its names, for the per-group policy work: a
snapshot will load a service's file as a list of category ``service_category(id)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from guardian_dns.errors import ConfigError, Problem

SERVICES_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "blocklists/services"
SERVICE_CATEGORY_PREFIX: Final = "service:"

# Ids end up in group policies, metrics labels and the query log, like categories: short,
# lower case, predictable. No "_" (unlike categories) so an id reads the same in a URL.
_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
_NAME_PREFIX: Final = "# Guardian DNS service:"
_ID_PREFIX: Final = "# id:"
_HEADER_LINES: Final = 3
# A header line longer than this is not a header: the file is something else (or one long line),
# and reading on would hold an arbitrary amount of it.
_MAX_HEADER_LINE: Final = 400


@dataclass(frozen=True)
class Service:
    """One service file's header: the id a policy names, and what the admin UI shows a parent.

    ``file`` is the list itself; its domains are parsed where every list is, so a service file
    obeys the same formats, limits and ``file:line`` warnings as any blocklist.
    """

    id: str
    name: str
    description: str
    file: Path


def service_category(service_id: str) -> str:
    """The category under which the filter holds this service's domains: ``service:<id>``.

    The ``:`` is outside the alphabet of configured categories (``[a-z0-9_-]``), so no list an
    administrator adds can ever share a category with a service: "block gambling" (the category
    of thousands of sites) and "budget service gambling" (the short list of brands) stay apart.
    """
    if not _ID_RE.match(service_id):
        raise ValueError(f"invalid service id {service_id!r} (use up to 32 of a-z, 0-9 and '-')")
    return SERVICE_CATEGORY_PREFIX + service_id


def _read_header(path: Path) -> list[str]:
    """The first lines of a file, without reading the list below them.

    Raises OSError or UnicodeDecodeError for an unreadable file; the caller turns them into a
    problem for that file.
    """
    lines: list[str] = []
    with path.open(encoding="utf-8-sig") as f:
        for _ in range(_HEADER_LINES):
            line = f.readline(_MAX_HEADER_LINE + 1)
            if not line:
                break
            lines.append(line.rstrip("\r\n"))
    return lines


def _value(line: str, prefix: str) -> str | None:
    return line[len(prefix) :].strip() if line.startswith(prefix) else None


def _parse_header(path: Path, lines: list[str], problems: list[Problem]) -> Service | None:
    """One file's header, or None with its problems appended (all of them, not the first)."""
    source = os.fspath(path)
    count = len(problems)
    padded = [*lines, *([""] * (_HEADER_LINES - len(lines)))]
    for n, line in enumerate(lines, 1):
        if len(line) > _MAX_HEADER_LINE:
            message = f"not a service header: longer than {_MAX_HEADER_LINE} characters"
            problems.append(Problem(source, n, "header", message))
            return None

    name = _value(padded[0], _NAME_PREFIX)
    if not name:
        message = f"the first line must be '{_NAME_PREFIX} <name shown to parents>'"
        problems.append(Problem(source, 1, "name", message))

    service_id = _value(padded[1], _ID_PREFIX)
    if service_id is None:
        message = f"the second line must be '{_ID_PREFIX} {path.stem}' (the file's name)"
        problems.append(Problem(source, 2, "id", message))
    elif not _ID_RE.match(service_id):
        message = f"invalid id {service_id!r} (use up to 32 of a-z, 0-9 and '-')"
        problems.append(Problem(source, 2, "id", message))
    elif service_id != path.stem:
        message = f"id {service_id!r} does not match the file name {path.name!r}"
        problems.append(Problem(source, 2, "id", message))

    third = padded[2]
    description = third[1:].strip() if third.startswith("#") else ""
    if not description or third.startswith((_NAME_PREFIX, _ID_PREFIX)):
        # A name or id line here means the lines are out of order, not a description.
        message = "the third line must be '# <one-line description for parents>'"
        problems.append(Problem(source, 3, "description", message))

    if len(problems) > count or not name or service_id is None:
        return None
    return Service(id=service_id, name=name, description=description, file=path)


def load_services(directory: Path = SERVICES_DIR) -> dict[str, Service]:
    """Every ``*.txt`` service in ``directory``, by id, in file-name order.

    Raises ConfigError naming each file, line and field that is wrong, after looking at every
    file: an administrator fixing a directory should see the whole list of problems at once.
    """
    source = os.fspath(directory)
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".txt" and p.is_file())
    except FileNotFoundError:
        raise ConfigError([Problem(source, 0, "", "no such directory")]) from None
    except NotADirectoryError:
        raise ConfigError([Problem(source, 0, "", "not a directory")]) from None
    except OSError as exc:
        raise ConfigError([Problem(source, 0, "", f"cannot read: {exc.strerror or exc}")]) from None

    problems: list[Problem] = []
    services: dict[str, Service] = {}
    for path in paths:
        try:
            lines = _read_header(path)
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            problems.append(Problem(os.fspath(path), 0, "", message))
            continue
        except OSError as exc:
            message = f"cannot read: {exc.strerror or exc}"
            problems.append(Problem(os.fspath(path), 0, "", message))
            continue
        service = _parse_header(path, lines, problems)
        if service is not None:
            services[service.id] = service  # ids equal file stems, so they cannot collide
    if problems:
        raise ConfigError(problems)
    return services


__all__ = [
    "SERVICES_DIR",
    "SERVICE_CATEGORY_PREFIX",
    "Service",
    "load_services",
    "service_category",
]
