"""The blocked-services files in blocklists/services/: the loader reads every header, every file is
a clean domains list, and no service takes away what a family's ordinary browsing (or another
service) needs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from guardian_dns.errors import ConfigError
from guardian_dns.lists import ListSummary, parse_stream
from guardian_dns.services import SERVICES_DIR, Service, load_services, service_category

# The services issue 5 asks for, by id. A new service is added here and in the README's table.
EXPECTED_IDS = {
    "tiktok",
    "youtube",
    "instagram",
    "snapchat",
    "discord",
    "roblox",
    "fortnite",
    "minecraft",
    "steam",
    "twitch",
    "whatsapp",
    "telegram",
    "reddit",
    "x",
    "facebook",
    "gambling",
}

# The names a parent would check first: without them the file does not block the service.
MAIN_DOMAINS = {
    "tiktok": {"tiktok.com", "tiktokv.com", "tiktokcdn.com"},
    "youtube": {"youtube.com", "youtu.be", "ytimg.com", "googlevideo.com"},
    "instagram": {"instagram.com", "cdninstagram.com"},
    "snapchat": {"snapchat.com", "sc-cdn.net"},
    "discord": {"discord.com", "discord.gg", "discordapp.com"},
    "roblox": {"roblox.com", "rbxcdn.com"},
    "fortnite": {"fortnite.com", "epicgames.com"},
    "minecraft": {"minecraft.net", "mojang.com", "minecraftservices.com"},
    "steam": {"steampowered.com", "steamcommunity.com"},
    "twitch": {"twitch.tv", "ttvnw.net"},
    "whatsapp": {"whatsapp.com", "whatsapp.net", "wa.me"},
    "telegram": {"telegram.org", "t.me"},
    "reddit": {"reddit.com", "redd.it"},
    "x": {"x.com", "twitter.com", "t.co", "twimg.com"},
    "facebook": {"facebook.com", "fb.com", "messenger.com"},
    "gambling": {"bet365.com", "pokerstars.com", "stake.com", "draftkings.com", "fanduel.com"},
}

# Names a family's ordinary browsing, school work, mail or phone needs. A service that lists one
# (or a domain above it, which blocks it too) breaks far more than the service.
NEVER_BLOCK = (
    "google.com",
    "www.google.com",
    "accounts.google.com",
    "mail.google.com",
    "googleapis.com",
    "www.googleapis.com",
    "storage.googleapis.com",
    "gstatic.com",
    "www.gstatic.com",
    "googleusercontent.com",
    "lh3.googleusercontent.com",
    "ggpht.com",
    "gmail.com",
    "microsoft.com",
    "www.microsoft.com",
    "login.microsoftonline.com",
    "live.com",
    "login.live.com",
    "office.com",
    "outlook.com",
    "apple.com",
    "www.apple.com",
    "icloud.com",
    "amazon.com",
    "amazonaws.com",
    "s3.amazonaws.com",
    "cloudfront.net",
    "akamaihd.net",
    "akamaized.net",
    "akamai.net",
    "edgekey.net",
    "edgesuite.net",
    "fastly.net",
    "fastly-edge.com",
    "azureedge.net",
    "windows.net",
    "appspot.com",
    "cloudflare.com",
    "app.link",
    "zendesk.com",
    "wikipedia.org",
    "en.wikipedia.org",
    "bbc.co.uk",
    "github.com",
    "githubusercontent.com",
    "qq.com",
)

# Names apps and games outside the service depend on: listing one would block them too, and
# charge their use to the service's time budget.
SHARED_PLATFORMS = (
    "fbcdn.net",  # Meta's media network: Facebook, Instagram and WhatsApp all load from it
    "xboxlive.com",  # every Xbox and Windows game's sign-in, not only Minecraft's
    "xbox.com",
    "playfabapi.com",  # Microsoft's game back-end for hundreds of games
    "msgamestudios.com",
    "epicgames.dev",  # Epic Online Services: other companies' games sign in and match through it
    "easyanticheat.net",  # anti-cheat for many games besides Fortnite
    "eac-cdn.com",
    "unrealengine.com",  # Unreal Engine's documentation, read in game-design classes
    "live-video.net",  # Amazon's live-video network, used by more sites than Twitch
    "blox.com",  # only ro.blox.com is Roblox's
    "meta.com",
    "bytedance.com",
)

_FILES = sorted(SERVICES_DIR.glob("*.txt"))


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@functools.cache
def _parsed(path: Path) -> tuple[ListSummary, tuple[str, ...]]:
    """The file as the filter would read it: parse_stream's summary and every name, in order."""
    names: list[str] = []

    def sink(block: list[str], _bl: list[int], allow: list[str], _al: list[int]) -> None:
        assert allow == [], f"{path.name}: a service file only blocks"
        names.extend(block)

    return parse_stream(path, "auto", sink), tuple(names)


def _names(path: Path) -> set[str]:
    return set(_parsed(path)[1])


def _self_and_parents(name: str) -> set[str]:
    labels = name.split(".")
    return {".".join(labels[i:]) for i in range(len(labels) - 1)}


@functools.cache
def _services() -> dict[str, Service]:
    return load_services()


# ------------------------------------------------------------------------------ the loader


def test_every_bundled_service_loads_with_the_expected_ids() -> None:
    services = _services()
    assert set(services) == EXPECTED_IDS
    assert {p.stem for p in _FILES} == EXPECTED_IDS, "a .txt in blocklists/services is no service"
    for service_id, service in services.items():
        assert service.id == service_id == service.file.stem
        assert service.file.parent == SERVICES_DIR
        assert service.name and service.description
        assert not service.description.startswith(("id:", "Guardian DNS service:"))


def test_the_services_directory_sits_beside_the_package() -> None:
    """The bundled directory is found from the package, not from the working directory."""
    assert SERVICES_DIR.is_dir()
    assert (SERVICES_DIR.parent / "safesearch.yaml").is_file()


def test_display_names_are_what_a_parent_knows() -> None:
    names = {s.id: s.name for s in _services().values()}
    assert names["tiktok"] == "TikTok"
    assert names["youtube"] == "YouTube"
    assert names["whatsapp"] == "WhatsApp"
    assert "Twitter" in names["x"]


@pytest.mark.parametrize(
    ("service_id", "category"),
    [("tiktok", "service:tiktok"), ("x", "service:x"), ("gambling", "service:gambling")],
    ids=["tiktok", "x", "gambling"],
)
def test_a_service_is_held_under_its_own_category(service_id: str, category: str) -> None:
    assert service_category(service_id) == category


@pytest.mark.parametrize("bad", ["", "TikTok", "tik tok", "-x", "a" * 33, "x:y"])
def test_a_malformed_service_id_has_no_category(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid service id"):
        service_category(bad)


GOOD_HEADER = "# Guardian DNS service: Example\n# id: example\n# An example service for tests.\n"


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("example.com\n", 1, "name"),
        ("# Guardian DNS service:\n# id: example\n# Something.\n", 1, "name"),
        ("# Guardian DNS service: Example\n# An example.\n# id: example\n", 2, "id"),
        ("# Guardian DNS service: Example\n# id: other\n# Something.\n", 2, "id"),
        ("# Guardian DNS service: Example\n# id: Example\n# Something.\n", 2, "id"),
        ("# Guardian DNS service: Example\n# id: example\nexample.com\n", 3, "description"),
        ("# Guardian DNS service: Example\n# id: example\n#\n", 3, "description"),
        ("# Guardian DNS service: Example\n# id: example\n", 3, "description"),
        ("", 1, "name"),
        ("# Guardian DNS service: " + "x" * 500 + "\n", 1, "header"),
    ],
    ids=[
        "no-header",
        "empty-name",
        "id-line-missing",
        "id-not-the-file-name",
        "id-upper-case",
        "description-missing",
        "description-empty",
        "file-ends-early",
        "empty-file",
        "line-too-long",
    ],
)
def test_a_malformed_header_names_the_file_and_line(
    tmp_path: Path, text: str, line: int, field: str
) -> None:
    path = tmp_path / "example.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_services(tmp_path)
    located = [(p.file, p.line, p.field) for p in caught.value.problems]
    assert (str(path), line, field) in located
    assert f"{path}:{line}: {field}: " in str(caught.value)


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(GOOD_HEADER.replace("example", "good"), encoding="utf-8")
    (tmp_path / "one.txt").write_text("one.example\n", encoding="utf-8")
    (tmp_path / "two.txt").write_text(GOOD_HEADER, encoding="utf-8")  # id: example, not two
    with pytest.raises(ConfigError) as caught:
        load_services(tmp_path)
    assert [(Path(p.file).name, p.line) for p in caught.value.problems] == [
        ("one.txt", 1),
        ("one.txt", 2),
        ("one.txt", 3),
        ("two.txt", 2),
    ]


def test_a_well_formed_directory_loads_header_only(tmp_path: Path) -> None:
    """A byte-order mark and CRLF line ends (a file saved on Windows) are fine; other files in
    the directory (a README) are not services."""
    path = tmp_path / "example.txt"
    path.write_bytes(
        b"\xef\xbb\xbf" + GOOD_HEADER.replace("\n", "\r\n").encode() + b"x.example\r\n"
    )
    (tmp_path / "README.md").write_text("# not a service\n", encoding="utf-8")
    assert load_services(tmp_path) == {
        "example": Service("example", "Example", "An example service for tests.", path)
    }


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        load_services(tmp_path / "missing")


def test_a_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "example.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_services(tmp_path)


# ------------------------------------------------------------------------------ the data


@pytest.mark.parametrize("path", _FILES, ids=_ids(_FILES))
def test_every_service_file_is_a_clean_domains_list(path: Path) -> None:
    summary, names = _parsed(path)
    assert summary.format == "domains"
    assert (summary.invalid, [str(w) for w in summary.warnings]) == (0, [])
    assert summary.ignored_modifiers == 0
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == [], f"{path.name} lists these twice"
    assert len(names) >= 3


@pytest.mark.parametrize("path", _FILES, ids=_ids(_FILES))
def test_no_entry_is_already_covered_by_another(path: Path) -> None:
    """A name blocks everything below it: listing www.x beside x is a sign of a careless edit."""
    listed = _names(path)
    covered = sorted(
        f"{name} (under {parent})"
        for name in listed
        for parent in _self_and_parents(name) - {name}
        if parent in listed
    )
    assert covered == []


@pytest.mark.parametrize("path", _FILES, ids=_ids(_FILES))
def test_each_service_lists_its_main_domains(path: Path) -> None:
    assert MAIN_DOMAINS[path.stem] <= _names(path)


@pytest.mark.parametrize("path", _FILES, ids=_ids(_FILES))
def test_no_service_blocks_what_ordinary_browsing_needs(path: Path) -> None:
    listed = _names(path)
    blocked = [
        f"{name} (by {entry})"
        for name in NEVER_BLOCK + SHARED_PLATFORMS
        for entry in sorted(_self_and_parents(name) & listed)
    ]
    assert blocked == []


def test_no_name_belongs_to_two_services() -> None:
    """A name in two services would be blocked by either and counted against both budgets."""
    owner: dict[str, str] = {}
    for path in _FILES:
        for name in _names(path):
            owner.setdefault(name, path.stem)
    overlaps = sorted(
        f"{name} ({path.stem}) under {parent} ({owner[parent]})"
        for path in _FILES
        for name in _names(path)
        for parent in _self_and_parents(name)
        if parent in owner and owner[parent] != path.stem
    )
    assert overlaps == []


def test_gambling_names_the_big_brands() -> None:
    """The brief for this list: the big international brands, 40 to 100 of them."""
    listed = _names(SERVICES_DIR / "gambling.txt")
    assert 40 <= len(listed) <= 100
    assert {"williamhill.com", "betfair.com", "888.com", "unibet.com", "bwin.com"} <= listed


def test_the_readme_describes_every_service() -> None:
    readme = (SERVICES_DIR / "README.md").read_text(encoding="utf-8")
    missing = sorted(i for i in EXPECTED_IDS if f"| `{i}` |" not in readme)
    assert missing == [], "add a row to the table in blocklists/services/README.md"
