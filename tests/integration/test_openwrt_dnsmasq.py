"""OpenWrt mode: dnsmasq in front of Guardian DNS, naming each device, and per-device rules apply.

dnsmasq (Debian's dnsmasq-base) runs with exactly the directives the OpenWrt init script writes
(``deploy/openwrt/dnsmasq.conf``: ``server=`` to Guardian DNS, ``no-resolv``, ``add-mac``,
``add-subnet=32,128``, ``strip-mac``, ``strip-subnet``) and forwards to Guardian DNS on 127.0.0.1,
whose ``server.trusted_forwarders`` names it. dnsmasq only adds a MAC it finds in the kernel's
neighbour table, and loopback has none, so the scenario runs in a private network namespace
(``unshare --net``: nothing can leave it) where loopback takes the "tablet's" MAC and ``::1`` a
permanent neighbour entry with it. Then, through dnsmasq:

- a query from ``::1`` carries that MAC and gets the tablet's group's rule (blocked);
- a query from ``127.0.0.2`` carries its whole address (ECS /32) and gets the lab group's rule;
- a query from ``127.0.0.3``, a device nobody listed, is answered normally;
- a device that writes the tablet's MAC or the lab's address into its own query gains nothing:
  dnsmasq strips it, and Guardian DNS ignores such options from anyone but the forwarder.

The scenario is this file run as a script inside the namespace (``--in-netns``); the test reads
its JSON report. Where namespaces cannot be made (not root) it skips; under ``CI=true`` it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import pytest

REPO: Final = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script inside the namespace
    sys.path.insert(0, str(REPO))

from guardian_dns.config import ServerConfig  # noqa: E402

pytestmark = pytest.mark.integration

TEMPLATE: Final = REPO / "deploy" / "openwrt" / "dnsmasq.conf"
TABLET_MAC: Final = "02:00:5e:10:00:01"
LAB_ADDRESS: Final = "127.0.0.2"
STRANGER: Final = "127.0.0.3"
GAMES: Final = "games.wild.example.test"  # the tablet's group blocks it; *.wild resolves
LAB: Final = "lab.wild.example.test"  # the lab group blocks it
HOOK: Final = "trusted_forwarders" in {f.name for f in dataclasses.fields(ServerConfig)}

CONFIG: Final = """
server:
  trusted_forwarders: ["127.0.0.1"]
upstream:
  servers: ["{upstream}"]
metrics:
  enabled: false
blocking:
  lists: []
policy:
  # No MACs from the kernel here: the forwarder names them.
  neighbour_table: ./neighbours.txt
  groups:
    tablet:
      clients: ["{mac}"]
      block: ["{games}"]
    lab:
      clients: ["{lab_address}"]
      block: ["{lab}"]
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason}; tests must not skip in CI", pytrace=False)
    pytest.skip(reason)


@pytest.mark.skipif(
    not HOOK,
    reason="needs the server hook: server.trusted_forwarders in config.py and the listener's "
    "use of edns_client.ForwardedClients (deploy/openwrt/README.md, 'Server side')",
)
def test_dnsmasq_in_front_names_each_device_and_per_device_rules_apply() -> None:
    for tool, package in (("dnsmasq", "dnsmasq-base"), ("dig", "dnsutils"), ("ip", "iproute2")):
        if shutil.which(tool) is None and shutil.which(f"/usr/sbin/{tool}") is None:
            unavailable(f"{tool} not installed (apt-get install {package})")
    if shutil.which("unshare") is None:
        unavailable("unshare not installed (util-linux)")
    probe = subprocess.run(
        [
            "unshare",
            "--net",
            "--fork",
            "ip",
            "-6",
            "neigh",
            "add",
            "::1",
            "lladdr",
            TABLET_MAC,
            "dev",
            "lo",
            "nud",
            "permanent",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        unavailable(f"cannot make a network namespace with a neighbour entry: {probe.stderr}")
    done = subprocess.run(
        ["unshare", "--net", "--fork", sys.executable, __file__, "--in-netns"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    answers = report["answers"]
    # What dnsmasq adds is what the tablet's group lists: its rule applies.
    assert answers["tablet via dnsmasq"] == "NXDOMAIN", report
    assert answers["tablet via dnsmasq, lab name"] == "NOERROR", report
    # The whole address (ECS /32) puts 127.0.0.2 in the lab group.
    assert answers["lab via dnsmasq"] == "NXDOMAIN", report
    assert answers["lab via dnsmasq, tablet name"] == "NOERROR", report
    # Nobody listed: the default group's rules (nothing blocked here).
    assert answers["stranger via dnsmasq"] == "NOERROR", report
    # Claiming someone else's identity gets nothing, through dnsmasq or around it.
    assert answers["stranger claims the tablet's MAC via dnsmasq"] == "NOERROR", report
    assert answers["stranger claims the lab's subnet via dnsmasq"] == "NOERROR", report
    assert answers["stranger claims the tablet's MAC directly"] == "NOERROR", report


# --- the scenario, inside the namespace ----------------------------------------------------------


def _status(dig_output: str) -> str:
    for line in dig_output.splitlines():
        if "status:" in line:
            return line.split("status:", 1)[1].split(",", 1)[0].strip()
    return "NO ANSWER: " + dig_output.strip()[-300:]


def _dig(port: int, server: str, name: str, source: str, *extra: str) -> str:
    done = subprocess.run(
        ["dig", f"@{server}", "-p", str(port), "-b", source, "+tries=1", "+time=5", *extra, name],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return _status(done.stdout + done.stderr)


def run_scenario() -> dict[str, Any]:
    from tests.support import free_port
    from tests.support.authserver import AuthServer
    from tests.support.daemon import GuardianProcess

    # The neighbour entry's MAC is loopback's own too: frames to another MAC would be dropped
    # as "for another host", and ::1 would stop answering at all.
    subprocess.run(["ip", "link", "set", "lo", "address", TABLET_MAC], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["ip", "-6", "neigh", "add", "::1", "lladdr", TABLET_MAC, "dev", "lo", "nud", "permanent"],
        check=True,
    )
    answers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="guardian-openwrt-") as tmp, AuthServer() as upstream:
        work = Path(tmp)
        (work / "neighbours.txt").write_text("")
        config = work / "guardian.yaml"
        config.write_text(
            CONFIG.format(
                upstream=upstream.url_udp,
                mac=TABLET_MAC,
                games=GAMES,
                lab_address=LAB_ADDRESS,
                lab=LAB,
            )
        )
        with GuardianProcess(config) as guardian:
            dns_port = free_port()
            conf = work / "dnsmasq.conf"
            conf.write_text(TEMPLATE.read_text().replace("@PORT@", str(guardian.port)))
            pid_file = work / "dnsmasq.pid"
            # dnsmasq binds its sockets before it goes to the background: ready on return.
            subprocess.run(
                [
                    shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
                    f"--conf-file={conf}",
                    f"--port={dns_port}",
                    "--listen-address=127.0.0.1,::1",
                    "--bind-interfaces",
                    "--no-hosts",
                    f"--pid-file={pid_file}",
                    "--user=root",
                    "--log-facility=-",
                ],
                check=True,
                timeout=30,
            )
            try:
                q = dns_port
                mac_hex = TABLET_MAC.replace(":", "")
                answers["tablet via dnsmasq"] = _dig(q, "::1", GAMES, "::1")
                answers["tablet via dnsmasq, lab name"] = _dig(q, "::1", LAB, "::1")
                answers["lab via dnsmasq"] = _dig(q, "127.0.0.1", LAB, LAB_ADDRESS)
                answers["lab via dnsmasq, tablet name"] = _dig(q, "127.0.0.1", GAMES, LAB_ADDRESS)
                answers["stranger via dnsmasq"] = _dig(q, "127.0.0.1", GAMES, STRANGER)
                answers["stranger claims the tablet's MAC via dnsmasq"] = _dig(
                    q, "127.0.0.1", GAMES, STRANGER, f"+ednsopt=65001:{mac_hex}"
                )
                answers["stranger claims the lab's subnet via dnsmasq"] = _dig(
                    q, "127.0.0.1", LAB, STRANGER, f"+subnet={LAB_ADDRESS}/32"
                )
                answers["stranger claims the tablet's MAC directly"] = _dig(
                    guardian.port, "127.0.0.1", GAMES, STRANGER, f"+ednsopt=65001:{mac_hex}"
                )
            finally:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), 15)
    return {"answers": answers}


if __name__ == "__main__" and "--in-netns" in sys.argv:
    print(json.dumps(run_scenario()))
