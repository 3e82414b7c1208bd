"""Deployment on a Raspberry Pi: the scripts, the units, and install.sh run for real.

``install.sh`` runs as root inside a Debian Bookworm root made by ``debootstrap`` (Raspberry Pi
OS Bookworm is Debian Bookworm with Python 3.11), in a private network namespace: it sees a LAN
interface (``lan0``, 192.168.77.2/24, the default route) and loopback, and nothing it starts can
reach or be reached from outside. Then the installed ``guardian-dns check-config`` passes, and the
installed server, started as the unit starts it (user guardian-dns, only CAP_NET_BIND_SERVICE,
state in /var/lib/guardian-dns), answers ``dig`` on 127.0.0.1:53 inside that namespace.

The root is built once and cached as a tarball under ``~/.cache/guardian-deploy`` (about a
minute to build, seconds to unpack); its name carries a hash of the package list, so a change
builds a new one. It holds the runtime packages beforehand, so install.sh needs no network
here and its apt-get step is exercised as "all present". Where debootstrap, chroot or namespaces
cannot run (not root, a restricted container) the tests skip and say why; under ``CI=true`` they
fail instead.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

import guardian_dns.config
import guardian_dns.server
from tests.support import require_tool
from tests.support.authserver import AuthServer
from tests.support.daemon import GuardianProcess, write_config

pytestmark = pytest.mark.integration

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
SUITE: Final = "bookworm"
CACHE: Final = Path(
    os.environ.get("GUARDIAN_DEPLOY_CACHE", "~/.cache/guardian-deploy")
).expanduser()
# What install.sh would install, present beforehand (so it runs offline), and what a Raspberry
# Pi OS image has that matters here: systemd (systemctl enable), nftables (--bypass) and
# Bookworm's uvloop 0.17, which lacks uvloop.run (install.sh must work around it).
# python3-cffi-backend: debootstrap does not resolve cryptography's virtual dependency on it.
ROOT_PACKAGES: Final = (
    "python3",
    "python3-venv",
    "python3-dnslib",
    "python3-yaml",
    "python3-requests",
    "python3-cffi-backend",
    "python3-cryptography",
    "python3-prometheus-client",
    "python3-uvloop",
    "tzdata",
    "iproute2",
    "ca-certificates",
    "systemd",
    "nftables",
)
SOURCE_ITEMS: Final = (
    "guardian_dns",
    "blocklists",
    "config",
    "deploy",
    "docs",
    "README.md",
    "setup.cfg",
    "pyproject.toml",
)
LAN_IP: Final = "192.168.77.2"
# Every command runs in fresh network and mount namespaces: loopback up, a LAN bridge with no
# ports (an address and a default route for install.sh to find, no traffic anywhere), and the
# root's /proc mounted for ss and ps. The mounts vanish with the namespace.
PREAMBLE: Final = f"""
set -euo pipefail
ip link set lo up
ip link add lan0 type bridge
ip addr add {LAN_IP}/24 dev lan0
ip link set lan0 up
ip route add default via 192.168.77.1 dev lan0 onlink
mount -t proc proc "$R/proc"
"""
SCRIPTS: Final = (
    DEPLOY / "raspberrypi" / "install.sh",
    DEPLOY / "raspberrypi" / "uninstall.sh",
    DEPLOY / "openwrt" / "guardian-dns.init",
    DEPLOY / "openwrt" / "install.sh",
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where everything needed is installed."""
    if _in_ci():
        pytest.fail(f"{reason}; tests must not skip in CI", pytrace=False)
    pytest.skip(reason)


# --- static checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = require_tool("shellcheck", "shellcheck")
    done = subprocess.run(
        [shellcheck, "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_scripts_are_executable() -> None:
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable (chmod +x, git add)"


# --- Type=notify: what the server tells systemd ------------------------------------------------


@pytest.mark.skipif(
    not hasattr(guardian_dns.server, "notify"),
    reason="needs the server hook: notify.ready/reloading/stopping calls in server.py "
    "(deploy/raspberrypi/README.md, 'Server side')",
)
def test_server_tells_systemd_when_ready_reloading_and_stopping(
    tmp_path: Path, auth_server: AuthServer
) -> None:
    """The datagrams a Type=notify unit waits for, on a socket of our own as $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(15.0)

    def message() -> list[str]:
        return sock.recv(4096).decode().split("\n")

    config = write_config(tmp_path, auth_server.port)
    with sock, GuardianProcess(config, env={"NOTIFY_SOCKET": str(path)}) as server:
        first = message()  # sent right after the ready line: the lists are in force
        assert first[0] == "READY=1" and first[1].startswith("STATUS=serving "), first
        server.reload()
        reloading = message()
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert message()[0] == "READY=1"
        server.stop()
        assert message()[0] == "STOPPING=1"


# --- the Debian root -------------------------------------------------------------------------


def _cache_file() -> Path:
    digest = hashlib.sha256(" ".join((SUITE, *ROOT_PACKAGES)).encode()).hexdigest()[:10]
    return CACHE / f"{SUITE}-{platform.machine()}-{digest}.tar"


def _build_cache(tarball: Path) -> None:
    """debootstrap a minimal root with ROOT_PACKAGES and keep it as a tarball."""
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None:
        unavailable("debootstrap not installed (apt-get install debootstrap)")
    assert debootstrap is not None
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=" + ",".join(ROOT_PACKAGES),
                SUITE,
                str(build),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=1200,
        )
        if done.returncode != 0:
            log = build / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            unavailable(
                f"debootstrap {SUITE} failed (no Debian mirror reachable?): "
                f"{done.stderr[-1500:]}{tail}"
            )
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."],
            check=True,
            timeout=600,
        )
        partial.rename(tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def run_in_root(
    root: Path, script: str, *, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run bash ``script`` (after PREAMBLE; ``$R`` is the root) in new net and mount namespaces."""
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--fork", "bash", "-c", PREAMBLE + script],
        env={**os.environ, "R": str(root), "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def chroot(args: str) -> str:
    """A shell command line that runs ``args`` inside the root."""
    return f'chroot "$R" {args}'


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Debian Bookworm root with this checkout in /root/guardian-src, not installed."""
    if os.geteuid() != 0:
        unavailable("install.sh runs as root in a chroot: run the tests as root")
    for tool in ("unshare", "chroot", "tar", "ip"):
        if shutil.which(tool) is None and shutil.which(f"/usr/sbin/{tool}") is None:
            unavailable(f"{tool} not found")
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "--fork", "ip", "link", "add", "x0", "type", "bridge"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        unavailable(f"cannot create network namespaces here: {probe.stderr.strip()}")
    tarball = _cache_file()
    if not tarball.exists():
        _build_cache(tarball)
    root = tmp_path_factory.mktemp("debian-root")
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)], check=True, timeout=600
    )
    src = root / "root" / "guardian-src"
    src.mkdir(parents=True)
    for item in SOURCE_ITEMS:
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / item)
    # No upstream but ourselves (skipped): nothing is ever forwarded off this machine.
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("nameserver 127.0.0.1\n")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


INSTALL: Final = chroot("/bin/bash /root/guardian-src/deploy/raspberrypi/install.sh")


@pytest.fixture(scope="module")
def installed(debian_root: Path) -> Path:
    """The root after one run of install.sh (the first test checks what it printed)."""
    done = run_in_root(debian_root, INSTALL)
    (debian_root / "install-output.txt").write_text(done.stdout + done.stderr)
    return debian_root


def _passwd(root: Path, name: str) -> list[str]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line.split(":")
    raise AssertionError(f"no user {name} in the root's /etc/passwd")


def _group_id(root: Path, name: str) -> int:
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no group {name} in the root's /etc/group")


def test_install_sh_sets_up_user_venv_config_and_unit(installed: Path) -> None:
    out = (installed / "install-output.txt").read_text()
    assert "Debian packages: all present" in out
    assert "uvloop: too old for the server" in out  # Bookworm's 0.17: asyncio's loop instead
    user = _passwd(installed, "guardian-dns")
    assert user[6] == "/usr/sbin/nologin"
    admin_gid = _group_id(installed, "guardian-admin")

    venv = installed / "opt" / "guardian-dns" / "venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert os.readlink(installed / "usr" / "local" / "bin" / "guardian-dns") == (
        "/opt/guardian-dns/venv/bin/guardian-dns"
    )
    assert (installed / "opt" / "guardian-dns" / "app" / "blocklists" / "adult.hosts").exists()
    completion = installed / "usr" / "share" / "bash-completion" / "completions" / "guardian-dns"
    assert completion.exists()

    config = installed / "etc" / "guardian-dns" / "guardian.yaml"
    text = config.read_text()
    assert f'"{LAN_IP}:53"' in text and '"127.0.0.1:53"' in text
    assert '"192.168.77.0/24"' in text
    assert "/opt/guardian-dns/app/blocklists/adult.hosts" in text
    st = config.stat()
    assert (st.st_gid, st.st_mode & 0o777) == (admin_gid, 0o664)

    state = installed / "var" / "lib" / "guardian-dns"
    st = state.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (int(user[2]), admin_gid, 0o2770)
    wants = installed / "etc" / "systemd" / "system" / "multi-user.target.wants"
    assert (wants / "guardian-dns.service").is_symlink()
    assert "systemd is not running here" in out


def test_installed_check_config_passes(installed: Path) -> None:
    done = run_in_root(
        installed,
        chroot("/usr/local/bin/guardian-dns check-config /etc/guardian-dns/guardian.yaml"),
    )
    assert "/etc/guardian-dns/guardian.yaml: OK" in done.stdout + done.stderr


def test_installed_server_answers_on_loopback_as_the_unit_runs_it(installed: Path) -> None:
    """User guardian-dns, CAP_NET_BIND_SERVICE only, state in /var/lib/guardian-dns; ready by
    the --ready-fd pipe (a FIFO here), then dig on 127.0.0.1:53, then SIGTERM."""
    dig = require_tool("dig")
    adult = installed / "opt" / "guardian-dns" / "app" / "blocklists" / "adult.hosts"
    blocked = next(
        line.split()[1]
        for line in adult.read_text().splitlines()
        if line.startswith("0.0.0.0 ") and len(line.split()) > 1
    )
    serve = chroot(
        "setpriv --reuid guardian-dns --regid guardian-admin --init-groups "
        "--inh-caps +net_bind_service --ambient-caps +net_bind_service "
        "env STATE_DIRECTORY=/var/lib/guardian-dns "
        "/opt/guardian-dns/venv/bin/guardian-dns serve "
        "--config /etc/guardian-dns/guardian.yaml --ready-fd 7"
    )
    status = chroot("/usr/local/bin/guardian-dns status --config /etc/guardian-dns/guardian.yaml")
    script = f"""
# What RuntimeDirectory=guardian-dns and RuntimeDirectoryMode=2770 make before the start.
install -d -m 2770 -o "$(chroot "$R" id -u guardian-dns)" -g "$(chroot "$R" getent group \
  guardian-admin | cut -d: -f3)" "$R/run/guardian-dns"
mkfifo /tmp/gd-ready-$$
{serve} 7>/tmp/gd-ready-$$ 2>/tmp/gd-err-$$ &
pid=$!
if ! read -r -t 120 line </tmp/gd-ready-$$; then
  cat /tmp/gd-err-$$ >&2; kill "$pid" || true; exit 3
fi
echo "READY $line"
{dig} @127.0.0.1 -p 53 +tries=1 +time=5 use-application-dns.net A | grep -E 'status:|EDE' || true
{dig} @127.0.0.1 -p 53 +tries=1 +time=5 {blocked} A | grep -E 'status:|EDE' || true
{dig} @127.0.0.1 -p 53 +tcp +tries=1 +time=5 {blocked} A | grep -E 'status:' || true
ls -ln "$R/var/lib/guardian-dns"
{status} && echo "STATUS OK"
kill -TERM "$pid"
wait "$pid"; echo "EXIT $?"
cat /tmp/gd-err-$$ >&2
"""
    done = run_in_root(installed, script, timeout=240)
    out = done.stdout
    assert f"READY ready {LAN_IP}:53 127.0.0.1:53" in out, out + done.stderr
    statuses = [line for line in out.splitlines() if "status:" in line]
    assert len(statuses) == 3 and all("NXDOMAIN" in s for s in statuses), out
    assert "EDE: 15 (Blocked)" in out
    user = _passwd(installed, "guardian-dns")
    assert any("domains" in line and line.split()[2] == user[2] for line in out.splitlines()), (
        f"no domain table saved by guardian-dns in the state directory:\n{out}"
    )
    assert "STATUS OK" in out, out + done.stderr  # the admin verb finds the service's socket
    assert "EXIT 0" in out, done.stderr


@pytest.mark.skipif(
    "trusted_forwarders" not in guardian_dns.config.ServerConfig.__dataclass_fields__,
    reason="needs the server hook: server.trusted_forwarders in config.py "
    "(deploy/openwrt/README.md, 'Server side')",
)
def test_the_openwrt_config_passes_check_config(installed: Path) -> None:
    """deploy/openwrt/guardian.yaml names /opt/guardian-dns/app's lists: checked where they are."""
    yaml = "/opt/guardian-dns/app/deploy/openwrt/guardian.yaml"
    check = f"/usr/local/bin/guardian-dns check-config {yaml}"
    done = run_in_root(installed, chroot(check))
    assert "guardian.yaml: OK" in done.stdout + done.stderr


def test_unit_passes_systemd_analyze_verify(installed: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    done = subprocess.run(
        [analyze, "verify", f"--root={installed}", "/etc/systemd/system/guardian-dns.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr


def test_reinstall_keeps_an_edited_config_and_puts_the_new_default_beside_it(
    installed: Path,
) -> None:
    config = installed / "etc" / "guardian-dns" / "guardian.yaml"
    edited = config.read_text() + "# the family's own change\n"
    config.write_text(edited)
    done = run_in_root(installed, INSTALL)
    assert config.read_text() == edited
    beside = config.with_name("guardian.yaml.dpkg-dist")
    assert beside.exists() and "the family's own change" not in beside.read_text()
    assert "venv: /opt/guardian-dns/venv kept" in done.stdout
    # Undo the edit: the next run finds nothing new and tidies the .dpkg-dist away.
    config.write_text(beside.read_text())
    run_in_root(installed, INSTALL)
    assert not beside.exists()


def test_bypass_rules_install_load_and_verify(installed: Path) -> None:
    done = run_in_root(
        installed,
        INSTALL
        + " --bypass lan0,wlan0\n"
        + chroot("nft -f /etc/guardian-dns/bypass.nft")
        + "\n"
        + chroot("nft list table inet guardian_dns_bypass"),
    )
    rules = done.stdout
    assert re.search(r'elements = \{ "lan0",\s+"wlan0" \}', rules), rules
    assert "redirect to :53" in rules and "tcp dport 853" in rules
    wants = installed / "etc" / "systemd" / "system" / "multi-user.target.wants"
    assert (wants / "guardian-dns-bypass.service").is_symlink()
    analyze = require_tool("systemd-analyze", "systemd")
    verify = subprocess.run(
        [
            analyze,
            "verify",
            f"--root={installed}",
            "/etc/systemd/system/guardian-dns-bypass.service",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stdout + verify.stderr


def test_openwrt_fw4_include_loads_inside_fw4s_table(debian_root: Path) -> None:
    """fw4 includes /etc/nftables.d/*.nft inside "table inet fw4": chains only, valid there."""
    include = "/root/guardian-src/deploy/openwrt/guardian-dns-bypass.nft"
    done = run_in_root(
        debian_root,
        f'printf \'table inet fw4 {{\\n  include "{include}"\\n}}\\n\' >"$R/tmp/fw4.nft"\n'
        + chroot("nft -f /tmp/fw4.nft")
        + "\n"
        + chroot("nft list table inet fw4"),
    )
    assert "guardian_dns_redirect" in done.stdout and "redirect to :53" in done.stdout
    assert "guardian_dns_encrypted" in done.stdout


def test_port_53_conflict_with_dnsmasq_is_explained(installed: Path) -> None:
    dnsmasq = require_tool("dnsmasq", "dnsmasq-base")
    done = run_in_root(
        installed,
        # dnsmasq binds its sockets before it goes to the background: once this returns, the
        # port is taken.
        f"{dnsmasq} --conf-file=/dev/null --port=53 --listen-address=127.0.0.1 "
        "--bind-interfaces --no-resolv --no-hosts --pid-file=/tmp/gd-dnsmasq-$$.pid "
        "--user=root\n" + INSTALL + "\nkill $(cat /tmp/gd-dnsmasq-$$.pid)\n",
    )
    assert "port 53 is taken" in done.stdout
    assert "dnsmasq on 127.0.0.1:53" in done.stdout and "port=0" in done.stdout


def test_uninstall_keeps_config_and_state_and_purge_removes_them(installed: Path) -> None:
    uninstall = chroot("/bin/bash /opt/guardian-dns/app/deploy/raspberrypi/uninstall.sh")
    done = run_in_root(installed, uninstall)
    assert "kept: /etc/guardian-dns" in done.stdout
    assert not (installed / "opt" / "guardian-dns").exists()
    assert not (installed / "etc" / "systemd" / "system" / "guardian-dns.service").exists()
    assert not (installed / "usr" / "local" / "bin" / "guardian-dns").is_symlink()
    assert (installed / "etc" / "guardian-dns" / "guardian.yaml").exists()
    assert (installed / "var" / "lib" / "guardian-dns").exists()
    # Installing again brings the service back on the kept config; then purge everything.
    run_in_root(installed, INSTALL)
    run_in_root(installed, uninstall + " --purge")
    assert not (installed / "etc" / "guardian-dns").exists()
    assert not (installed / "var" / "lib" / "guardian-dns").exists()
    assert "guardian-dns:" not in (installed / "etc" / "passwd").read_text()
    assert "guardian-admin:" not in (installed / "etc" / "group").read_text()
