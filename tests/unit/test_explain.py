"""``guardian-dns explain``: why a name gets its answer for a device at a given moment.

Each test builds a real snapshot from a family's config and small list files in ``tmp_path`` and
asks ``explain.explain`` with explicit instants (Europe/London wall-clock times; 2026-11-23 is a
Monday). The verdicts must be the server's own (``policy.decide`` over ``Filter.decide``); these
tests check that the explanation around them names the right group, window, override and list
line, and that the arguments a person types are read as they mean them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from guardian_dns import explain as ex
from guardian_dns.config import load_config_text
from guardian_dns.filter import BLOCK, PASS
from guardian_dns.policy import (
    RULE_GROUP_BLOCK,
    RULE_PAUSED,
    RULE_TEMP_ALLOW,
    RULE_WINDOW_BLOCK,
    RULE_WINDOW_EXCEPT,
    decide,
)
from guardian_dns.safesearch import load_table
from guardian_dns.snapshot import Snapshot, build_snapshot
from guardian_dns.usage import Overrides, day_bounds
from tests.support.timezones import local, zone

CONFIG = """\
blocking:
  lists:
    - {file: adult.txt, category: adult}
    - {file: games.txt, category: games}
    - {file: allow.txt, category: games, action: allow}
    - {file: mine.txt, category: "*", action: allow, admin: true}
policy:
  timezone: Europe/London
  schedules:
    bedtime: mon-fri 21:00-07:00
  devices:
    emma-tablet: [aa:bb:cc:dd:ee:01]
  groups:
    kids:
      clients: [emma-tablet, 192.168.1.64/28]
      block_categories: [adult]
      safe_search: strict
      allow: [friendly.test]
      block: [annoying.test]
      schedules:
        - during: bedtime
          block: "*"
          except: [khanacademy.org]
      budgets:
        games: 60
    parents:
      clients: [192.168.1.10]
      filtering: false
    teens:
      block_categories: [adult]
"""
# Line numbers of the config above, as explain must report them.
KIDS_LINE = 14
KIDS_CLIENTS_LINE = 15
BEDTIME_RULE_LINE = 21
EMMA_DEVICE_LINE = 12


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    d = tmp_path_factory.mktemp("family")
    (d / "adult.txt").write_text("# adult\nadult.test\n")
    (d / "games.txt").write_text("games.test\nroblox.test\n")
    (d / "allow.txt").write_text("good.games.test\n")
    (d / "mine.txt").write_text("ok.adult.test\n")
    cfg = load_config_text(CONFIG, str(d / "family.yaml"), str(d))
    return build_snapshot(cfg, 0)


def at(text: str) -> float:
    return local(zone("Europe/London"), text)


def why(snap: Snapshot, name: str, when: str, **kw: object) -> ex.Explanation:
    return ex.explain(snap, name, at(when), **kw)  # type: ignore[arg-type]


def list_file(snap: Snapshot, name: str) -> str:
    return str(Path(snap.config.base_dir) / name)


@pytest.mark.parametrize(
    ("group", "name", "when", "word", "rule"),
    [
        # a school day: the group's categories, its own names, lists and allowlists
        ("kids", "adult.test", "2026-11-23 12:00", "blocked", "list adult.txt:2 (category adult)"),
        ("kids", "www.adult.test", "2026-11-23 12:00", "blocked", "list adult.txt:2"),
        ("kids", "ok.adult.test", "2026-11-23 12:00", "allowed", "list mine.txt:1 (category *)"),
        ("kids", "www.annoying.test", "2026-11-23 12:00", "blocked", "group block"),
        ("kids", "friendly.test", "2026-11-23 12:00", "allowed", "group allow"),
        ("kids", "good.games.test", "2026-11-23 12:00", "allowed", "list allow.txt:1"),
        ("kids", "example.org", "2026-11-23 12:00", "allowed", "no rule"),
        ("kids", "use-application-dns.net", "2026-11-23 12:00", "answered locally", "built-in"),
        # bedtime: everything but the exception, the group's own allow still first
        ("kids", "example.org", "2026-11-23 21:30", "blocked", "schedule blocks everything"),
        ("kids", "www.khanacademy.org", "2026-11-23 21:30", "allowed", "schedule exception"),
        ("kids", "friendly.test", "2026-11-23 21:30", "allowed", "group allow"),
        ("kids", "example.org", "2026-11-24 06:59", "blocked", "schedule blocks everything"),
        ("kids", "example.org", "2026-11-24 07:00", "allowed", "no rule"),
        # no bedtime on Saturday night
        ("kids", "example.org", "2026-11-28 21:30", "allowed", "no rule"),
        # the default group blocks every list category; parents are not filtered
        ("default", "games.test", "2026-11-23 12:00", "blocked", "list games.txt:1"),
        ("parents", "adult.test", "2026-11-23 21:30", "allowed", "group has filtering: false"),
    ],
)
def test_the_verdict_and_the_deciding_rule(
    snap: Snapshot, group: str, name: str, when: str, word: str, rule: str
) -> None:
    e = why(snap, name, when, group=group)
    assert e.verdict_word == word
    assert rule in e.rule.replace(snap.config.base_dir + "/", "")


@pytest.mark.parametrize(
    "when",
    ["2026-11-23 12:00", "2026-11-23 21:30", "2026-11-24 06:59", "2026-11-28 21:30"],
)
@pytest.mark.parametrize(
    "name", ["adult.test", "games.test", "www.khanacademy.org", "friendly.test", "x.test"]
)
def test_explain_says_exactly_what_the_servers_decision_function_says(
    snap: Snapshot, name: str, when: str
) -> None:
    t = at(when)
    g = snap.policies.group("kids")
    state = g.state(t, day_end=day_bounds(snap.policies.tz, t)[1])
    assert why(snap, name, when, group="kids").verdict == decide(
        g, state, name, snap.filter.decide, None
    )


def test_a_name_blocked_only_by_a_budgeted_category_passes_while_the_budget_lasts(
    snap: Snapshot,
) -> None:
    e = why(snap, "www.games.test", "2026-11-23 12:00", group="kids")
    assert e.verdict.verdict == PASS
    assert e.budgets == (("games", 60),)
    assert e.rule == f"list {list_file(snap, 'games.txt')}:1 (category games)"
    assert "while the budget lasts" in ex.answer_text(e)
    assert any("does not know today's use" in note for note in e.notes)
    rule = next(r for r in e.list_rules if r.name == "games.test")
    assert (rule.blocks_now, rule.budgeted) == (True, True)
    # At bedtime the window blocks it outright, budget or not.
    assert why(snap, "www.games.test", "2026-11-23 21:30", group="kids").verdict.verdict == BLOCK


def test_every_list_rule_on_the_name_or_a_parent_is_shown_with_its_line(snap: Snapshot) -> None:
    e = why(snap, "ok.adult.test", "2026-11-23 12:00", group="kids")
    rules = [(r.name, r.kind, Path(r.list).name, r.line, r.categories) for r in e.list_rules]
    assert rules == [
        ("ok.adult.test", "admin allow", "mine.txt", 1, ("*",)),
        ("adult.test", "block", "adult.txt", 2, ("adult",)),
    ]
    assert e.list_rules[1].blocks_now is True
    assert e.list_rules[0].as_json()["admin"] is True
    assert why(snap, "example.org", "2026-11-23 12:00", group="kids").list_rules == ()


@pytest.mark.parametrize("group", ["teens", "parents"])
def test_a_block_that_does_not_apply_to_the_group_says_so(snap: Snapshot, group: str) -> None:
    e = why(snap, "roblox.test", "2026-11-23 12:00", group=group)
    assert [(r.name, r.blocks_now) for r in e.list_rules] == [("roblox.test", False)]
    assert e.verdict_word == "allowed"
    assert "not blocked now" in ex.render(e)


def test_the_group_names_that_matched_are_listed(snap: Snapshot) -> None:
    e = why(snap, "www.annoying.test", "2026-11-23 12:00", group="kids")
    assert e.group_rules == (("group block", "annoying.test"),)
    assert e.verdict.rule == RULE_GROUP_BLOCK and e.verdict.matched == "annoying.test"
    e = why(snap, "www.khanacademy.org", "2026-11-23 21:30", group="kids")
    assert e.group_rules == (("schedule except", "khanacademy.org"),)
    assert e.verdict.rule == RULE_WINDOW_EXCEPT


def test_a_client_is_matched_as_the_server_matches_it(snap: Snapshot) -> None:
    source = snap.config.source
    by_network = why(snap, "x.test", "2026-11-23 12:00", client="192.168.1.70")
    assert by_network.group == "kids" and by_network.group_how == "client"
    assert by_network.client_rule is not None
    assert by_network.client_rule.member.where == f"{source}:{KIDS_CLIENTS_LINE}"
    assert by_network.group_where == f"{source}:{KIDS_LINE}"

    neighbours = {"192.168.1.200": "aa:bb:cc:dd:ee:01"}
    by_mac = why(snap, "x.test", "2026-11-23 12:00", client="192.168.1.200", neighbours=neighbours)
    assert (by_mac.group, by_mac.mac) == ("kids", "aa:bb:cc:dd:ee:01")
    assert by_mac.client_rule is not None and by_mac.client_rule.device_entry is not None
    assert by_mac.client_rule.device_entry.where == f"{source}:{EMMA_DEVICE_LINE}"

    mac = why(snap, "x.test", "2026-11-23 12:00", client="AA-BB-CC-DD-EE-01")
    assert (mac.client, mac.client_kind, mac.group) == ("aa:bb:cc:dd:ee:01", "mac", "kids")

    stranger = why(snap, "x.test", "2026-11-23 12:00", client="192.168.1.5")
    assert (stranger.group, stranger.group_how, stranger.client_rule) == (
        "default",
        "default",
        None,
    )
    assert stranger.group_where is None


def test_group_wins_over_the_clients_own_group_and_says_so(snap: Snapshot) -> None:
    e = why(snap, "adult.test", "2026-11-23 12:00", client="192.168.1.10", group="kids")
    assert (e.group, e.group_how, e.verdict_word) == ("kids", "--group", "blocked")
    assert any("own group is 'parents'" in note for note in e.notes)


def test_an_unknown_group_is_refused_with_a_suggestion(snap: Snapshot) -> None:
    with pytest.raises(ValueError, match=r"no group 'kidz' \(did you mean 'kids'\?"):
        why(snap, "x.test", "2026-11-23 12:00", group="kidz")


def test_the_active_window_and_the_next_change_are_given(snap: Snapshot) -> None:
    e = why(snap, "x.test", "2026-11-23 21:30", group="kids")
    assert e.windows == (
        ("bedtime", f"{snap.config.source}:{BEDTIME_RULE_LINE}", at("2026-11-24 07:00")),
    )
    assert e.until == at("2026-11-24 00:00")  # the budget day ends before bedtime does
    noon = why(snap, "x.test", "2026-11-23 12:00", group="kids")
    assert (noon.windows, noon.until) == ((), at("2026-11-23 21:00"))
    parents = why(snap, "x.test", "2026-11-23 12:00", group="parents")
    assert parents.until is None


def overrides_with(*adds: tuple[str, str, str, str | None, str, float]) -> Overrides:
    ov = Overrides()
    for kind, target_kind, target, domain, start, minutes in adds:
        ov.add(kind, target_kind, target, domain, at(start), minutes)  # type: ignore[arg-type]
    return ov


def test_a_pause_of_the_group_lets_everything_through_until_it_ends(snap: Snapshot) -> None:
    ov = overrides_with(("pause", "group", "kids", None, "2026-11-23 21:20", 15))
    e = why(snap, "adult.test", "2026-11-23 21:30", group="kids", overrides=ov)
    assert (e.verdict.rule, e.verdict_word) == (RULE_PAUSED, "allowed")
    assert [o.kind for o in e.overrides] == ["pause"]
    assert e.until == at("2026-11-23 21:35")
    after = why(snap, "adult.test", "2026-11-23 21:35", group="kids", overrides=ov)
    assert (after.verdict.rule, after.overrides) == (RULE_WINDOW_BLOCK, ())
    before = why(snap, "adult.test", "2026-11-23 21:19", group="kids", overrides=ov)
    assert before.overrides == ()


def test_a_clients_temporary_allow_applies_by_address_or_by_mac(snap: Snapshot) -> None:
    ov = overrides_with(
        ("allow", "client", "aa:bb:cc:dd:ee:01", "adult.test", "2026-11-23 12:00", 45),
        ("allow", "client", "192.168.1.70", "roblox.test", "2026-11-23 12:00", 45),
    )
    neighbours = {"192.168.1.200": "aa:bb:cc:dd:ee:01"}
    e = why(
        snap,
        "www.adult.test",
        "2026-11-23 12:10",
        client="192.168.1.200",
        neighbours=neighbours,
        overrides=ov,
    )
    assert (e.verdict.rule, e.verdict.matched) == (RULE_TEMP_ALLOW, "adult.test")
    other = why(snap, "www.adult.test", "2026-11-23 12:10", client="192.168.1.70", overrides=ov)
    assert other.verdict_word == "blocked"
    assert [o.domain for o in other.overrides] == ["roblox.test"]


def test_safe_search_shows_the_groups_rewrite(snap: Snapshot) -> None:
    table = load_table()
    e = why(snap, "www.youtube.com", "2026-11-23 12:00", group="kids", safe_search=table)
    assert e.safe_search is not None
    assert e.safe_search["mode"] == "strict"
    assert e.safe_search["target"] == "restrict.youtube.com"
    assert e.safe_search["engine"] == "youtube" and e.safe_search["applies"] is True
    assert "rewritten to restrict.youtube.com" in ex.render(e)
    plain = why(snap, "www.youtube.com", "2026-11-23 12:00", group="default", safe_search=table)
    assert plain.safe_search is None


def test_the_text_and_the_json_say_the_same(snap: Snapshot) -> None:
    e = why(snap, "www.adult.test", "2026-11-23 21:30", client="192.168.1.70")
    text = ex.render(e)
    doc = e.as_json()
    assert "www.adult.test for client 192.168.1.70 at Mon 2026-11-23 21:30 GMT" in text
    assert "answer     BLOCKED: schedule blocks everything 'bedtime'" in text
    assert "bedtime is active until Tue 2026-11-24 07:00 GMT" in text
    assert doc["verdict"] == "blocked" and doc["rule_id"] == RULE_WINDOW_BLOCK
    assert doc["group"]["name"] == "kids" and doc["timezone"] == "Europe/London"
    assert doc["at_local"] == "2026-11-23T21:30:00+00:00"
    assert doc["client"]["where"] == f"{snap.config.source}:{KIDS_CLIENTS_LINE}"
    assert [r["name"] for r in doc["list_rules"]] == ["adult.test"]


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("www.Example.COM.", "www.example.com"),
        ("zip", "zip"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("_dmarc.example.com", "_dmarc.example.com"),
    ],
)
def test_a_name_is_read_as_the_listener_folds_it(text: str, name: str) -> None:
    assert ex.normalise_name(text) == name


@pytest.mark.parametrize("text", ["bad name", "a..b", "192.168.1.1", "", "x" * 64 + ".test"])
def test_a_bad_name_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match="is not a domain name: "):
        ex.normalise_name(text)


@pytest.mark.parametrize(
    ("text", "expected", "note"),
    [
        ("2026-11-24 21:30", "2026-11-24 21:30", None),
        ("2026-11-24T21:30:15", "2026-11-24 21:30:15", None),
        ("21:30", "2026-11-23 21:30", None),  # today, in the policy's zone
        ("2026-03-29 01:30", "2026-03-29 02:30", "does not exist"),  # clocks go forward
        ("2026-10-25 01:30", "2026-10-25 01:30", "happens twice"),  # the first, BST
    ],
)
def test_at_is_local_time_in_the_policys_zone(text: str, expected: str, note: str | None) -> None:
    london = zone("Europe/London")
    t, said = ex.parse_at(text, london, at("2026-11-23 12:00"))
    assert t == local(london, expected)
    assert (said is None) == (note is None)
    if note is not None:
        assert said is not None and note in said


def test_at_with_an_explicit_offset_is_that_instant() -> None:
    t, note = ex.parse_at("2026-11-24T21:30+01:00", zone("Europe/London"), 0.0)
    assert (t, note) == (local(zone("Europe/London"), "2026-11-24 20:30"), None)


@pytest.mark.parametrize("text", ["tonight", "25:00", "2026-13-01 10:00", "21.30"])
def test_a_bad_at_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--at"):
        ex.parse_at(text, zone("Europe/London"), 0.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 min"), (59, "1 min"), (60, "1 min"), (61, "2 min"), (5400, "1 h 30 min"),
     (7200, "2 h"), (86400 * 2 + 3600 * 3, "2 d 3 h")],
)  # fmt: skip
def test_durations_are_whole_minutes_rounded_up(seconds: float, text: str) -> None:
    assert ex.duration_text(seconds) == text


def test_a_neighbour_table_that_cannot_be_read_is_a_note_not_an_error(tmp_path: Path) -> None:
    mapping, note = ex.read_neighbours(str(tmp_path / "missing-arp"))
    assert mapping == {}
    assert note is not None and "cannot read" in note
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "192.168.1.200    0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0\n"
    )
    assert ex.read_neighbours(str(arp)) == ({"192.168.1.200": "aa:bb:cc:dd:ee:01"}, None)


def test_inf_is_never_shown_as_a_time(snap: Snapshot) -> None:
    e = why(snap, "x.test", "2026-11-23 12:00", group="parents")
    assert e.as_json()["next_change"] is None
    assert not any(isinstance(v, float) and math.isinf(v) for v in e.as_json().values())
