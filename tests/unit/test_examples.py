"""The shipped example configs: each loads, builds, passes check-config, and means what it says.

Every ``config/examples/*.yaml`` and ``config/guardian.yaml`` is found by glob, so a new example is
checked without editing this file: loaded with the real loader, and built into a snapshot so its
lists, services, schedules and group members are checked too (the loader alone does not read the
lists). Then the facts the comments of ``family.yaml`` and ``school.yaml`` promise a parent or an
IT desk are asked of the compiled policy, at fixed instants in the examples' own time zone.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from guardian_dns.config import REPO_ROOT, Config, load_config
from guardian_dns.filter import BLOCK, PASS
from guardian_dns.policy import (
    RULE_GROUP_BLOCK,
    RULE_UNFILTERED,
    RULE_WINDOW_BLOCK,
    RULE_WINDOW_EXCEPT,
    Verdict,
    decide,
)
from guardian_dns.schedule import DAY_MINUTES, parse_spec
from guardian_dns.snapshot import Snapshot, build_snapshot
from tests.support.timezones import local, zone

EXAMPLES = sorted((REPO_ROOT / "config" / "examples").glob("*.yaml"))
SHIPPED = [REPO_ROOT / "config" / "guardian.yaml", *EXAMPLES]
IDS = [p.relative_to(REPO_ROOT).as_posix() for p in SHIPPED]
FAMILY = REPO_ROOT / "config" / "examples" / "family.yaml"
SCHOOL = REPO_ROOT / "config" / "examples" / "school.yaml"
BUNDLED = (REPO_ROOT / "blocklists").resolve()

# Documentation MACs (RFC 7042) the family example gives its devices, and a LAN address each.
YOUNG_TABLET = ("192.168.1.50", "00:00:5e:00:53:11")
TEEN_LAPTOP_DOCK = ("192.168.1.61", "00:00:5e:00:53:23")  # its second MAC
DAD_PHONE = ("192.168.1.70", "00:00:5e:00:53:32")
VISITOR = ("192.168.1.99", "00:00:5e:00:53:99")

# A Monday in November (Europe/London is on GMT), and the days after it.
MONDAY = "2026-11-23"
TUESDAY = "2026-11-24"
SATURDAY = "2026-11-28"


@cache
def loaded(path: Path) -> tuple[Config, Snapshot]:
    """The config and its snapshot, built once per file for the whole module."""
    cfg = load_config(path)
    return cfg, build_snapshot(cfg, 0)


def ask(snap: Snapshot, group: str, name: str, when: str, *, spent: bool = False) -> Verdict:
    """The verdict for ``name`` asked by ``group`` at local time ``when`` in the config's zone."""
    policy = snap.policies.group(group)
    state = policy.state(local(snap.policies.tz, when))
    return decide(policy, state, name, snap.filter.decide, lambda _key: spent)


# --- every shipped file -----------------------------------------------------------------------


def test_the_examples_are_found() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"family.yaml", "school.yaml", "home-pi.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_loads_and_builds_a_snapshot(path: Path) -> None:
    cfg, snap = loaded(path)
    assert cfg.source == str(path)
    assert snap.domains > 0
    assert all(info.entries > 0 for info in snap.lists), [i.source for i in snap.lists]
    # Every group the policy names is compiled, and the default group is one of them.
    names = {g.name for g in snap.policies.groups}
    assert {g.name for g in cfg.policy.groups} <= names
    assert snap.policies.default.name == cfg.policy.default_group


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_uses_only_the_bundled_lists(path: Path) -> None:
    """Examples must work from a checkout, with no download: their lists are in blocklists/."""
    cfg, snap = loaded(path)
    for entry in cfg.blocking.lists:
        assert Path(entry.file).resolve().is_relative_to(BUNDLED), entry.file
    for info in snap.lists:  # service lists included
        assert Path(info.source).resolve().is_relative_to(BUNDLED), info.source


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_check_config_accepts_it(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "guardian_dns", "check-config", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: OK" in result.stdout


# --- family.yaml ------------------------------------------------------------------------------


@pytest.fixture
def family() -> Snapshot:
    zone("Europe/London")
    return loaded(FAMILY)[1]


def test_family_groups_and_devices(family: Snapshot) -> None:
    pol = family.config.policy
    assert pol.timezone == "Europe/London"
    assert pol.default_group == "guests"
    assert {g.name for g in pol.groups} == {"parents", "young", "teen", "guests"}
    assert family.policies.default.name == "guests"
    devices = {name for name, _members, _line in pol.devices}
    assert {"young-tablet", "teen-phone", "teen-laptop", "mum-phone", "dad-phone"} <= devices

    def group_of(ip: str, mac: str) -> str | None:
        return family.clients.group_of(ip, {ip: mac})

    assert group_of(*YOUNG_TABLET) == "young"
    assert group_of(*TEEN_LAPTOP_DOCK) == "teen"
    assert group_of(*DAD_PHONE) == "parents"
    assert group_of(*VISITOR) is None  # the default group: guests


def test_family_parents_are_not_filtered(family: Snapshot) -> None:
    parents = family.policies.group("parents")
    assert parents.filtering is False
    # Not even at the children's bedtime.
    verdict = ask(family, "parents", "dns.google", f"{MONDAY} 23:00")
    assert (verdict.verdict, verdict.rule) == (PASS, RULE_UNFILTERED)


def test_family_bedtimes_cross_midnight(family: Snapshot) -> None:
    specs = {name: specs for name, specs, _line in family.config.policy.schedules}
    for name in ("bedtime-young", "bedtime-teen"):
        intervals = [i for spec in specs[name] for i in parse_spec(spec)]
        assert any(start // DAY_MINUTES != (end - 1) // DAY_MINUTES for start, end in intervals)
    # The young one: from 20:00 on a school night until 07:00 the next morning.
    for when, verdict in [
        (f"{MONDAY} 19:59", PASS),
        (f"{MONDAY} 20:00", BLOCK),
        (f"{TUESDAY} 02:00", BLOCK),
        (f"{TUESDAY} 06:59", BLOCK),
        (f"{TUESDAY} 07:00", PASS),
    ]:
        assert ask(family, "young", "example.org", when).verdict == verdict, when
    assert ask(family, "young", "example.org", f"{MONDAY} 20:30").rule == RULE_WINDOW_BLOCK
    # The teen: 22:00 until 06:30.
    assert ask(family, "teen", "example.org", f"{MONDAY} 21:59").verdict == PASS
    assert ask(family, "teen", "example.org", f"{MONDAY} 23:00").verdict == BLOCK
    assert ask(family, "teen", "example.org", f"{TUESDAY} 06:29").verdict == BLOCK
    assert ask(family, "teen", "example.org", f"{TUESDAY} 06:30").verdict == PASS


def test_family_homework_allows_only_study_sites(family: Snapshot) -> None:
    at = f"{MONDAY} 17:00"
    for name in ("en.wikipedia.org", "www.khanacademy.org", "www.bbc.co.uk"):
        verdict = ask(family, "young", name, at)
        assert (verdict.verdict, verdict.rule) == (PASS, RULE_WINDOW_EXCEPT), name
    assert ask(family, "young", "example.org", at).verdict == BLOCK
    # The teen keeps the web during homework, without the social apps.
    assert ask(family, "teen", "example.org", at).verdict == PASS
    assert ask(family, "teen", "www.instagram.com", at).verdict == BLOCK
    assert ask(family, "teen", "www.instagram.com", f"{MONDAY} 19:00").verdict == PASS


def test_family_games_budget(family: Snapshot) -> None:
    young = family.policies.group("young")
    budgets = {key: minutes for key, _mask, minutes in young.budgets}
    assert budgets["service:roblox"] == 60
    assert budgets["service:minecraft"] == 60
    noon = f"{MONDAY} 12:00"
    left = ask(family, "young", "www.roblox.com", noon)
    assert left.verdict == PASS and left.budget == ("service:roblox",)
    assert ask(family, "young", "www.roblox.com", noon, spent=True).verdict == BLOCK
    assert {key for key, _m, _n in family.policies.group("teen").budgets} >= {"service:tiktok"}


def test_family_services_and_safe_search(family: Snapshot) -> None:
    noon = f"{MONDAY} 12:00"
    assert family.policies.group("young").safe_search == "strict"
    assert family.policies.group("teen").safe_search == "moderate"
    assert ask(family, "young", "www.tiktok.com", noon).verdict == BLOCK
    assert ask(family, "guests", "www.tiktok.com", noon).verdict == PASS
    # YouTube for the young one on weekend afternoons only.
    assert ask(family, "young", "www.youtube.com", noon).verdict == BLOCK
    assert ask(family, "young", "www.youtube.com", f"{SATURDAY} 14:00").verdict == PASS
    # The teen's own blocked names.
    assert ask(family, "teen", "chatroulette.com", noon).rule == RULE_GROUP_BLOCK


def test_family_bypass_is_blocked_for_the_children_only(family: Snapshot) -> None:
    noon = f"{MONDAY} 12:00"
    assert ask(family, "young", "dns.google", noon).verdict == BLOCK
    assert ask(family, "teen", "dns.google", noon).verdict == BLOCK
    assert ask(family, "guests", "dns.google", noon).verdict == PASS


# --- school.yaml ------------------------------------------------------------------------------


@pytest.fixture
def school() -> Snapshot:
    zone("Europe/London")
    return loaded(SCHOOL)[1]


@pytest.mark.parametrize(
    ("ip", "group"),
    [
        ("10.10.3.4", "students"),
        ("fd00:10:0:10::1234", "students"),
        ("10.30.5.20", "students"),  # library kiosks
        ("10.20.1.1", "staff"),
        ("fd00:10:0:20::7", "staff"),
        ("10.10.250.7", "staff"),  # a teacher's laptop in a classroom: the longer prefix wins
    ],
)
def test_school_subnets_map_to_groups(school: Snapshot, ip: str, group: str) -> None:
    assert school.clients.group_of(ip, {}) == group


def test_school_unknown_clients_get_the_students_rules(school: Snapshot) -> None:
    assert school.clients.group_of("127.0.0.1", {}) is None
    assert school.policies.default.name == "students"


def test_school_students_are_filtered_strictly(school: Snapshot) -> None:
    students = school.policies.group("students")
    staff = school.policies.group("staff")
    assert students.safe_search == "strict"
    assert staff.filtering is True
    # Staff are filtered less: a strict subset of what students have blocked.
    assert staff.base_mask & ~students.base_mask == 0
    assert staff.base_mask != students.base_mask
    lesson, after_school = f"{MONDAY} 10:00", f"{MONDAY} 16:00"
    # Encrypted DNS and VPNs: blocked for students, not for staff.
    assert ask(school, "students", "dns.google", after_school).verdict == BLOCK
    assert ask(school, "staff", "dns.google", lesson).verdict == PASS
    # Social media: off in lessons for students only.
    assert ask(school, "students", "www.tiktok.com", lesson).verdict == BLOCK
    assert ask(school, "students", "www.tiktok.com", f"{MONDAY} 12:30").verdict == PASS  # lunch
    assert ask(school, "students", "www.tiktok.com", after_school).verdict == PASS
    assert ask(school, "students", "www.tiktok.com", f"{SATURDAY} 10:00").verdict == PASS
    assert ask(school, "staff", "www.tiktok.com", lesson).verdict == PASS
    # Games, at any time.
    assert ask(school, "students", "www.roblox.com", after_school).verdict == BLOCK
