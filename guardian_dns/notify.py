"""Telling systemd how the service is doing: the sd_notify protocol, with no library.

What it decides: nothing about DNS. It turns the server's life events (ready, reloading, ready
again, stopping, a status line) into the datagrams ``Type=notify`` units expect, so
``systemctl start`` returns only once the lists are in force and the sockets answer, and
``systemctl reload`` returns only once the new snapshot is swapped in (or the old one kept).
What it reads: ``$NOTIFY_SOCKET``, set by systemd for ``Type=notify`` services: a path, or an
abstract socket name written with a leading ``@``.
What it must never do: raise, block or slow the server down. Outside systemd (a terminal, the
tests, OpenWrt's procd) the variable is unset and every call is a no-op that returns False; a
socket that is gone or full loses the message, never the server.

The protocol (``sd_notify(3)``): one datagram of ``KEY=VALUE`` lines on an ``AF_UNIX``
``SOCK_DGRAM`` socket. ``READY=1`` ends start-up. ``RELOADING=1`` with ``MONOTONIC_USEC=`` (the
``CLOCK_MONOTONIC`` time of the reload request; systemd 253 and later need it for
``Type=notify-reload``, older ones ignore it) starts a reload, and ``READY=1`` ends it.
``STOPPING=1`` starts the shutdown. ``STATUS=`` is the one-line text ``systemctl status`` shows.
systemd checks that the sender is the main process (``NotifyAccess=main``), so the server calls
these itself, never from a child.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Final

ENV: Final = "NOTIFY_SOCKET"
_MAX_STATUS: Final = 400  # systemctl shows one line; keep the datagram far below any limit


def socket_address(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """Where to send, as ``socket.sendto`` takes it; None when not run by systemd.

    An abstract socket (``@name``) becomes ``b"\\0name"``. Anything that is neither an absolute
    path nor ``@...`` is ignored (systemd's own client does the same; ``vsock:`` addresses are
    for virtual machines and out of scope here).
    """
    value = (os.environ if environ is None else environ).get(ENV, "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"KEY=VALUE"`` each) as one datagram; True if it was sent.

    Never raises: a missing, vanished or full socket costs the message only.
    """
    address = socket_address(environ)
    if address is None or not fields:
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message, address)
    except OSError:
        return False
    return True


def _status(text: str) -> str:
    text = " ".join(text.split())
    return "STATUS=" + (text[: _MAX_STATUS - 3] + "..." if len(text) > _MAX_STATUS else text)


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def ready(status: str = "", environ: Mapping[str, str] | None = None) -> bool:
    """Start-up or a reload is complete: the service answers with what it was configured with."""
    fields = ["READY=1"]
    if status:
        fields.append(_status(status))
    return notify(*fields, environ=environ)


def reloading(status: str = "reloading", environ: Mapping[str, str] | None = None) -> bool:
    """A reload has begun (SIGHUP); ``ready`` must follow, whether the reload worked or not."""
    return notify(
        "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", _status(status), environ=environ
    )


def stopping(status: str = "stopping", environ: Mapping[str, str] | None = None) -> bool:
    """Shutdown has begun (SIGTERM): systemd shows the unit as deactivating."""
    return notify("STOPPING=1", _status(status), environ=environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """A new one-line status for ``systemctl status`` (a failed reload, a sync result)."""
    return notify(_status(text), environ=environ)


__all__ = [
    "ENV",
    "monotonic_usec",
    "notify",
    "ready",
    "reloading",
    "socket_address",
    "status",
    "stopping",
]
