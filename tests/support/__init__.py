"""Shared test helpers: the loopback guard, free ports, and required external tools.

What it decides: whether a test may send a packet to an address (loopback and AF_UNIX only), and
whether a missing tool skips a test (developer machine) or fails it (``CI=true``).
What it reads: the environment (``CI``) and ``PATH``.
What it must never do: let a packet leave the machine. The guard checks the address *before* the
system call, so a refused ``sendto`` never reaches the kernel.

Import it as ``tests.support`` (``tests/conftest.py`` puts the repository root on ``sys.path``).
Submodules: ``authserver`` (the scriptable test upstream), ``wire`` (raw packets),
``daemon`` (the real server as a subprocess).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import pytest

__all__ = [
    "LoopbackGuard",
    "NonLoopbackError",
    "free_port",
    "guard",
    "is_loopback_target",
    "require_tool",
]

# Which apt package provides each tool we may shell out to, for the skip message.
TOOL_PACKAGES: Final[dict[str, str]] = {
    "dig": "dnsutils",
    "kdig": "knot-dnsutils",
    "unbound": "unbound",
    "dnsperf": "dnsperf",
    "faketime": "faketime",
    "ss": "iproute2",
    "openssl": "openssl",
}


class NonLoopbackError(AssertionError):
    """A test tried to send to an address outside 127.0.0.0/8, ::1 and AF_UNIX."""


def is_loopback_target(family: int, address: object) -> bool:
    """True when ``address`` (a socket-API address for ``family``) stays on this machine.

    Only literal loopback addresses pass for AF_INET/AF_INET6 (``localhost`` too): resolving any
    other host name could itself send a DNS query off the machine. Families other than AF_INET and
    AF_INET6 (AF_UNIX, AF_NETLINK, ...) are local by construction.
    """
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    host = host.split("%", 1)[0]  # IPv6 scope id
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class LoopbackGuard:
    """Wraps ``socket.socket.connect``/``connect_ex``/``sendto``/``sendmsg`` in this process.

    A refused call raises :class:`NonLoopbackError` before the system call and is also recorded in
    :attr:`violations`, so a violation inside a server thread that swallows exceptions still fails
    the test (the autouse fixture in conftest checks the list after every test). Subprocesses are
    unaffected: the patch lives only in the pytest process.
    """

    _METHODS: Final = ("connect", "connect_ex", "sendto", "sendmsg")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._originals: dict[str, Callable[..., Any]] = {}
        self.violations: list[str] = []

    @property
    def installed(self) -> bool:
        return bool(self._originals)

    def _refuse(self, sock: socket.socket, address: object) -> NoReturn:
        message = f"test tried to reach non-loopback address {address!r} (family {sock.family!r})"
        with self._lock:
            self.violations.append(message)
        raise NonLoopbackError(message)

    def _check(self, sock: socket.socket, address: object) -> None:
        if not is_loopback_target(sock.family, address):
            self._refuse(sock, address)

    def install(self) -> None:
        if self.installed:
            return
        cls = socket.socket
        originals = {name: getattr(cls, name) for name in self._METHODS}
        orig_connect = originals["connect"]
        orig_connect_ex = originals["connect_ex"]
        orig_sendto = originals["sendto"]
        orig_sendmsg = originals["sendmsg"]
        check = self._check

        def connect(sock: socket.socket, address: Any) -> None:
            check(sock, address)
            orig_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            check(sock, address)
            result: int = orig_connect_ex(sock, address)
            return result

        def sendto(sock: socket.socket, data: Any, *args: Any) -> int:
            # sendto(data, address) or sendto(data, flags, address): the address is always last.
            if args:
                check(sock, args[-1])
            result: int = orig_sendto(sock, data, *args)
            return result

        def sendmsg(sock: socket.socket, buffers: Any, *args: Any) -> int:
            # sendmsg(buffers[, ancdata[, flags[, address]]]): only the 4th argument is an address.
            if len(args) >= 3 and args[2] is not None:
                check(sock, args[2])
            result: int = orig_sendmsg(sock, buffers, *args)
            return result

        for name, func in (
            ("connect", connect),
            ("connect_ex", connect_ex),
            ("sendto", sendto),
            ("sendmsg", sendmsg),
        ):
            func.__name__ = name
            func.__qualname__ = f"socket.{name}"
            setattr(cls, name, func)
        self._originals = originals

    def uninstall(self) -> None:
        for name, func in self._originals.items():
            setattr(socket.socket, name, func)
        self._originals = {}

    def take_violations(self) -> list[str]:
        """Return and clear the recorded violations."""
        with self._lock:
            found, self.violations = self.violations, []
        return found

    @contextmanager
    def expecting_violation(self) -> Iterator[list[str]]:
        """For tests of the guard itself: violations raised inside are consumed, not failures."""
        seen: list[str] = []
        try:
            yield seen
        finally:
            seen.extend(self.take_violations())


guard: Final = LoopbackGuard()


def free_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port that is currently free for both UDP and TCP on ``host``.

    Both sockets are released before returning, so another process may take the port in between;
    callers that bind it themselves should retry on EADDRINUSE.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        continue
                    raise
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


def require_tool(name: str, package: str | None = None) -> str:
    """Return the path of executable ``name``; skip the test if missing, fail under CI=true."""
    path = shutil.which(name)
    if path is not None:
        return path
    package = package or TOOL_PACKAGES.get(name, name)
    message = f"{name} not installed (apt-get install {package})"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message}; tests must not skip in CI", pytrace=False)
    pytest.skip(message)
