"""Group policies (policy.py) and the ``policy`` config section: the combination table.

Each test builds a real snapshot (lists on disk, the bundled service files, the domain table
built in-process) from YAML, then asks ``policy.decide`` with explicit Unix times: the same
function the server and ``explain`` call. Times are Europe/London wall-clock moments.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from guardian_dns.config import load_config_text
from guardian_dns.errors import ConfigError
from guardian_dns.filter import BLOCK, LOCAL_NXDOMAIN, PASS
from guardian_dns.policy import (
    RULE_GROUP_ALLOW,
    RULE_GROUP_BLOCK,
    RULE_PAUSED,
    RULE_TEMP_ALLOW,
    RULE_UNFILTERED,
    RULE_WINDOW_BLOCK,
    RULE_WINDOW_EXCEPT,
    GroupPolicy,
    State,
    Verdict,
    decide,
    services_used,
)
from guardian_dns.snapshot import Snapshot, build_snapshot

LONDON = ZoneInfo("Europe/London")

CONFIG = """
blocking:
  lists:
    - {file: adult.txt, category: adult}
    - {file: games.txt, category: games}
policy:
  timezone: Europe/London
  schedules:
    bedtime: mon-fri 21:00-07:00
    homework: mon-thu 16:00-18:00
    weekend: sat,sun 10:00-18:00
  devices:
    emma-tablet: [aa:bb:cc:dd:ee:01]
  groups:
    kids:
      clients: [emma-tablet, 192.168.1.64/28]
      block_categories: [adult, games]
      block_services: [tiktok]
      allow: [friendly.games.test]
      block: [annoying.test]
      schedules:
        - during: bedtime
          block: "*"
        - during: homework
          block: "*"
          except: [khanacademy.org, wikipedia.org]
        - during: weekend
          allow: [games]
    teens:
      clients: [192.168.1.80/28]
      block_categories: [adult]
      budgets:
        service:roblox: 60
    parents:
      clients: [192.168.1.10]
      filtering: false
"""


def at(text: str) -> float:
    """Unix time of a London wall-clock moment such as "2026-11-23 21:30" (a Monday)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=LONDON).timestamp()


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\nfriendly.games.test\n")
    cfg = load_config_text(CONFIG, str(tmp_path / "family.yaml"), str(tmp_path))
    return build_snapshot(cfg, 1)


def ask(
    snap: Snapshot,
    group: str,
    name: str,
    when: str,
    *,
    spent: bool = False,
    paused: bool = False,
    temp_allow: tuple[str, ...] = (),
) -> Verdict:
    policy = snap.policies.group(group)
    state = policy.state(at(when), paused=paused, temp_allow=temp_allow)
    return decide(policy, state, name, snap.filter.decide, lambda _key: spent)


def test_the_default_group_blocks_list_categories_but_never_services(snap: Snapshot) -> None:
    """Services are compiled into the table only for the groups that name them."""
    assert services_used(snap.config) == ("roblox", "tiktok")
    assert ask(snap, "default", "adult.test", "2026-11-23 12:00").verdict == BLOCK
    assert ask(snap, "default", "www.tiktok.com", "2026-11-23 12:00").verdict == PASS
    assert ask(snap, "kids", "www.tiktok.com", "2026-11-23 12:00").verdict == BLOCK
    assert ask(snap, "teens", "www.tiktok.com", "2026-11-23 12:00").verdict == PASS


@pytest.mark.parametrize(
    ("group", "name", "when", "verdict", "rule"),
    [
        # kids on a Monday: categories, services, own lists, bedtime and homework windows
        ("kids", "games.test", "2026-11-23 12:00", BLOCK, None),
        ("kids", "friendly.games.test", "2026-11-23 12:00", PASS, RULE_GROUP_ALLOW),
        ("kids", "www.annoying.test", "2026-11-23 12:00", BLOCK, RULE_GROUP_BLOCK),
        ("kids", "example.org", "2026-11-23 12:00", PASS, -1),
        ("kids", "example.org", "2026-11-23 21:30", BLOCK, RULE_WINDOW_BLOCK),
        ("kids", "example.org", "2026-11-24 06:59", BLOCK, RULE_WINDOW_BLOCK),
        ("kids", "example.org", "2026-11-24 07:00", PASS, -1),
        ("kids", "example.org", "2026-11-23 16:30", BLOCK, RULE_WINDOW_BLOCK),
        ("kids", "en.wikipedia.org", "2026-11-23 16:30", PASS, RULE_WINDOW_EXCEPT),
        ("kids", "khanacademy.org", "2026-11-23 16:30", PASS, RULE_WINDOW_EXCEPT),
        # the group's own allow still wins inside a block-everything window
        ("kids", "friendly.games.test", "2026-11-23 21:30", PASS, RULE_GROUP_ALLOW),
        # Friday night's bedtime crosses into Saturday, and Friday homework does not exist
        ("kids", "example.org", "2026-11-28 06:30", BLOCK, RULE_WINDOW_BLOCK),
        ("kids", "example.org", "2026-11-27 16:30", PASS, -1),
        # weekend window allows games; outside it they are blocked again
        ("kids", "games.test", "2026-11-28 11:00", PASS, -1),
        ("kids", "games.test", "2026-11-28 19:00", BLOCK, None),
        ("kids", "adult.test", "2026-11-28 11:00", BLOCK, None),
        # parents: nothing is filtered
        ("parents", "adult.test", "2026-11-23 21:30", PASS, RULE_UNFILTERED),
        # built-in local answers still apply inside a block-everything window
        ("kids", "use-application-dns.net", "2026-11-23 21:30", LOCAL_NXDOMAIN, None),
    ],
)
def test_combination_table(
    snap: Snapshot, group: str, name: str, when: str, verdict: int, rule: int | None
) -> None:
    got = ask(snap, group, name, when)
    assert got.verdict == verdict, got
    if rule is not None:
        assert got.rule == rule, got


def test_pause_and_temporary_allow_come_first(snap: Snapshot) -> None:
    got = ask(snap, "kids", "adult.test", "2026-11-23 21:30", paused=True)
    assert (got.verdict, got.rule) == (PASS, RULE_PAUSED)
    got = ask(snap, "kids", "www.youtube.com", "2026-11-23 21:30", temp_allow=("youtube.com",))
    assert (got.verdict, got.rule, got.matched) == (PASS, RULE_TEMP_ALLOW, "youtube.com")
    got = ask(snap, "kids", "example.org", "2026-11-23 21:30", temp_allow=("youtube.com",))
    assert got.verdict == BLOCK


def test_a_budgeted_service_passes_until_the_budget_is_spent(snap: Snapshot) -> None:
    got = ask(snap, "teens", "www.roblox.com", "2026-11-23 12:00", spent=False)
    assert got.verdict == PASS and got.budget == ("service:roblox",), got
    got = ask(snap, "teens", "www.roblox.com", "2026-11-23 12:00", spent=True)
    assert got.verdict == BLOCK, got
    # A name blocked for another reason is blocked whatever the budget says.
    assert ask(snap, "teens", "adult.test", "2026-11-23 12:00").verdict == BLOCK


def test_state_until_is_the_next_window_change(snap: Snapshot) -> None:
    kids = snap.policies.group("kids")
    state = kids.state(at("2026-11-23 12:00"))
    assert state.until == at("2026-11-23 16:00") and state.windows == ()
    state = kids.state(at("2026-11-23 16:30"))
    assert state.until == at("2026-11-23 18:00") and state.windows == ("homework",)
    state = kids.state(at("2026-11-23 22:00"))
    assert state.until == at("2026-11-24 07:00") and state.block_all
    parents = snap.policies.group("parents")
    assert parents.state(at("2026-11-23 22:00")).until == math.inf


def test_an_unknown_client_falls_into_the_default_group(snap: Snapshot) -> None:
    assert snap.policies.default.name == "default"
    assert isinstance(snap.policies.default, GroupPolicy)
    state = snap.policies.default.state(at("2026-11-23 22:00"))
    assert isinstance(state, State) and not state.block_all


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("during: homework\n", "no schedule 'homwork'"),
        ("block_services: [tiktok]", "no service 'tiktokk'"),
        ("block_categories: [adult, games]", "no list has category 'gmaes'"),
        ("service:roblox: 60", "expected minutes per day (1..1440), got 0"),
        ("filtering: false", "expected true or false, got 'no'"),
        ("clients: [192.168.1.10]", "'my-laptop' is not an IP address, a CIDR"),
        ("timezone: Europe/London", "unknown time zone 'Europe/Lundon'"),
        ("bedtime: mon-fri 21:00-07:00", "unknown day 'fry'"),
    ],
)
def test_policy_mistakes_name_the_line_and_the_field(
    tmp_path: Path, edit: str, message: str
) -> None:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\n")
    broken = {
        "during: homework\n": "during: homwork\n",
        "block_services: [tiktok]": "block_services: [tiktokk]",
        "block_categories: [adult, games]": "block_categories: [adult, gmaes]",
        "service:roblox: 60": "service:roblox: 0",
        "filtering: false": "filtering: 'no'",
        "clients: [192.168.1.10]": "clients: [my-laptop]",
        "timezone: Europe/London": "timezone: Europe/Lundon",
        "bedtime: mon-fri 21:00-07:00": "bedtime: mon-fry 21:00-07:00",
    }[edit]
    text = CONFIG.replace(edit, broken, 1)
    assert text != CONFIG
    line = next(i for i, row in enumerate(text.splitlines(), 1) if broken.strip() in row)
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "family.yaml", str(tmp_path))
    shown = str(err.value)
    assert message in shown, shown
    assert f"family.yaml:{line}:" in shown, shown


def test_a_device_in_two_groups_is_reported_with_both_lines(tmp_path: Path) -> None:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\n")
    text = CONFIG.replace("clients: [192.168.1.10]", "clients: [192.168.1.10, AA-BB-CC-DD-EE-01]")
    lines = text.splitlines()
    kids = next(i for i, row in enumerate(lines, 1) if "emma-tablet, 192.168" in row)
    parents = next(i for i, row in enumerate(lines, 1) if "AA-BB-CC-DD-EE-01" in row)
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "family.yaml", str(tmp_path))
    shown = str(err.value)
    assert "aa:bb:cc:dd:ee:01 is in group 'kids'" in shown, shown
    assert f"family.yaml:{kids}" in shown and f"family.yaml:{parents}" in shown, shown


def test_except_needs_block_everything(tmp_path: Path) -> None:
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\n")
    text = CONFIG.replace('block: "*"\n          except:', "block: [games]\n          except:")
    with pytest.raises(ConfigError, match=r"only goes with block: \"\*\""):
        load_config_text(text, "family.yaml", str(tmp_path))


BUDGET_AND_BLOCK = """
blocking:
  lists:
    - {file: games.txt, category: games}
policy:
  timezone: Europe/London
  schedules:
    homework: mon-thu 16:00-18:00
  groups:
    teens:
      clients: [192.168.1.80/28]
      block_categories: []
      safe_search: moderate
      budgets:
        games: 60
        service:roblox: 30
      schedules:
        - during: homework
          block: [service:roblox]
"""


def test_a_block_beats_the_budget_of_the_same_key(tmp_path: Path) -> None:
    """Homework's "block roblox" holds even though Roblox has minutes left today."""
    (tmp_path / "games.txt").write_text("games.test\n")
    cfg = load_config_text(BUDGET_AND_BLOCK, str(tmp_path / "g.yaml"), str(tmp_path))
    snap = build_snapshot(cfg, 1)
    got = ask(snap, "teens", "www.roblox.com", "2026-11-23 12:00")
    assert got.verdict == PASS and got.budget == ("service:roblox",), got
    got = ask(snap, "teens", "www.roblox.com", "2026-11-23 16:30")
    assert got.verdict == BLOCK and got.budget == (), got
    got = ask(snap, "teens", "games.test", "2026-11-23 16:30")
    assert got.verdict == PASS and got.budget == ("games",), "games keep their own budget"


def test_safe_search_blocks_engines_it_cannot_enforce(tmp_path: Path) -> None:
    """An engine without a DNS mechanism is blocked for a group with safe search on (and only
    then); a pause still comes first."""
    from guardian_dns.policy import RULE_SAFE_SEARCH
    from guardian_dns.safesearch import load_table

    table = load_table()
    blocked = sorted(n for e in table.engines if not e.enforceable for n in e.names)
    assert blocked, "the bundled table lists engines without a mechanism"
    (tmp_path / "games.txt").write_text("games.test\n")
    cfg = load_config_text(BUDGET_AND_BLOCK, str(tmp_path / "g.yaml"), str(tmp_path))
    snap = build_snapshot(cfg, 1)
    got = ask(snap, "teens", blocked[0], "2026-11-23 12:00")
    assert (got.verdict, got.rule) == (BLOCK, RULE_SAFE_SEARCH), got
    assert ask(snap, "default", blocked[0], "2026-11-23 12:00").verdict == PASS
    got = ask(snap, "teens", blocked[0], "2026-11-23 12:00", paused=True)
    assert got.verdict == PASS


def test_block_categories_takes_everything_and_services(tmp_path: Path) -> None:
    """``block_categories: ["*", service:tiktok]``: every list category, and TikTok."""
    (tmp_path / "adult.txt").write_text("adult.test\n")
    (tmp_path / "games.txt").write_text("games.test\n")
    text = """
blocking:
  lists:
    - {file: adult.txt, category: adult}
    - {file: games.txt, category: games}
  block_categories: [adult]
policy:
  groups:
    kids:
      clients: [192.168.1.64/28]
      block_categories: ["*", service:tiktok]
"""
    snap = build_snapshot(load_config_text(text, str(tmp_path / "g.yaml"), str(tmp_path)), 1)
    for name in ("adult.test", "games.test", "www.tiktok.com"):
        assert ask(snap, "kids", name, "2026-11-23 12:00").verdict == BLOCK, name
    assert ask(snap, "default", "games.test", "2026-11-23 12:00").verdict == PASS
