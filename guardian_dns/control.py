"""The control channel: a Unix socket between the CLI and the running server, JSON lines.

What it decides: who may talk to the server (file permissions: the socket is mode 0660, owned by
the configured admin group, in a directory only the service user and that group can enter), and
what each request returns.
What it reads: one JSON request line per connection: ``{"cmd": "status", "args": {...}}``; the
reply is one JSON line ``{"ok": true, ...}`` (``tail`` with ``follow`` streams one line per
record until the client hangs up).
What it must never do: listen on the network (children on the LAN must not reach it), block the
event loop (every command is cheap, or awaited), or let a bad request hurt the server: a request
is capped in size, a malformed one gets ``{"ok": false, "error": ...}``.

Where: ``server.control_socket`` if set, else ``$RUNTIME_DIRECTORY/control.sock`` (systemd's
``RuntimeDirectory=``), else ``<state_dir>/control.sock``. The CLI finds it the same way from
the same config (``socket_path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from guardian_dns import __version__
from guardian_dns.compile import state_dir as state_dir_of
from guardian_dns.config import Config
from guardian_dns.errors import GuardianError

if TYPE_CHECKING:
    from guardian_dns.server import GuardianServer

log = logging.getLogger(__name__)

SOCKET_NAME: Final = "control.sock"
MAX_REQUEST: Final = 64 * 1024
_TAIL_POLL: Final = 0.2  # seconds between looks at the ring buffer while following


class ControlUnavailable(GuardianError):
    """No server answers on the socket (not running, or another config's socket)."""


def socket_path(config: Config) -> str:
    """Where the control socket of the server running ``config`` is."""
    if config.server.control_socket:
        return os.path.join(config.base_dir, config.server.control_socket)
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return os.path.join(runtime.split(":")[0], SOCKET_NAME)
    return os.path.join(state_dir_of(config.server.state_dir, config.base_dir), SOCKET_NAME)


# --- the client side ---------------------------------------------------------------------------


def request(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """One request, one reply (a dict). ControlUnavailable when no server is listening."""
    for reply in _exchange(path, cmd, args or {}, timeout):
        return reply
    raise ControlUnavailable(f"{path}: the server closed the connection without a reply")


def stream(path: str, cmd: str, args: dict[str, Any], timeout: float = 30.0) -> Iterator[Any]:
    """Every reply line of a streaming request (``tail`` with ``follow``), as they come."""
    yield from _exchange(path, cmd, args, timeout, streaming=True)


def _exchange(
    path: str, cmd: str, args: dict[str, Any], timeout: float, streaming: bool = False
) -> Iterator[Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlUnavailable(
                f"{path}: no control socket (is the server running?)"
            ) from None
        except ConnectionRefusedError:
            raise ControlUnavailable(
                f"{path}: nobody listening (the server is not running)"
            ) from None
        except PermissionError:
            raise GuardianError(
                f"{path}: permission denied (run as the service user, root, or a member of "
                "the admin group: server.control_group)"
            ) from None
        sock.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        if streaming:
            sock.settimeout(None)
        with sock.makefile("rb") as f:
            for line in f:
                yield json.loads(line)
                if not streaming:
                    return
    finally:
        sock.close()


# --- the server side ---------------------------------------------------------------------------

Handler = Callable[["GuardianServer", dict[str, Any], asyncio.StreamWriter], Awaitable[Any]]


class ControlServer:
    """Listens on the control socket of one GuardianServer."""

    def __init__(self, server: GuardianServer, path: str, group: str | None) -> None:
        self.server = server
        self.path = path
        self.group = group
        self._unix: asyncio.AbstractServer | None = None
        self.started = time.time()

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise GuardianError(f"{self.path}: exists and is not a socket; not replacing it")
            if _answers(self.path):
                raise GuardianError(f"{self.path}: another server is running on this socket")
            os.unlink(self.path)  # left by a server that was killed
        old = os.umask(0o117)  # the socket is created 0660, never briefly world-writable
        try:
            self._unix = await asyncio.start_unix_server(
                self._client, path=self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
                os.chown(self.path, -1, gid)
            except (KeyError, PermissionError) as exc:
                log.warning(
                    "control socket %s: cannot give it to group %r (%s); only the service user "
                    "and root can use the CLI's server verbs",
                    self.path,
                    self.group,
                    "no such group" if isinstance(exc, KeyError) else exc.strerror,
                )
        os.chmod(self.path, 0o660)
        log.info("control socket %s (mode 0660, group %s)", self.path, self.group or "-")

    async def close(self) -> None:
        if self._unix is not None:
            self._unix.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._unix.wait_closed(), 1.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 10.0)
                req = json.loads(line)
                cmd = req["cmd"]
                args = req.get("args") or {}
                if not isinstance(cmd, str) or not isinstance(args, dict):
                    raise ValueError("cmd must be a string and args an object")
            except (ValueError, KeyError, TypeError, asyncio.LimitOverrunError) as exc:
                await _send(writer, {"ok": False, "error": f"bad request: {exc}"})
                return
            handler = COMMANDS.get(cmd)
            if handler is None:
                known = ", ".join(sorted(COMMANDS))
                await _send(writer, {"ok": False, "error": f"unknown command {cmd!r} ({known})"})
                return
            try:
                reply = await handler(self.server, args, writer)
            except GuardianError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("control command %s failed", cmd)
                reply = {"ok": False, "error": f"internal error: {exc}"}
            if reply is not None:
                await _send(writer, reply)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


async def _send(writer: asyncio.StreamWriter, doc: Any) -> None:
    writer.write(json.dumps(doc, default=str).encode() + b"\n")
    await writer.drain()


# --- commands ---------------------------------------------------------------------------------


async def _status(srv: GuardianServer, args: dict[str, Any], _w: asyncio.StreamWriter) -> Any:
    from guardian_dns.contexts import describe
    from guardian_dns.pipeline import REASONS

    p = srv.pipeline
    snap = p.snap
    wall = p.wall()
    contexts = []
    for ctx in p.contexts.all():
        state = ctx.state
        contexts.append(
            {
                "group": ctx.policy.name,
                "client": ctx.identity,
                "state": describe(state) if state is not None else "",
                "windows": list(state.windows) if state is not None else [],
                "until": None if ctx.until == float("inf") else ctx.until,
            }
        )
    return {
        "ok": True,
        "running": True,
        "version": __version__,
        "pid": os.getpid(),
        "uptime": time.time() - srv.started,
        "generation": snap.gen,
        "listen": [f"{h}:{port}" for h, port in srv.ready_ports],
        "domains": snap.domains,
        "lists": [
            {"source": i.source, "category": i.category, "entries": i.entries, "action": i.action}
            for i in snap.lists
        ],
        "upstreams": list(snap.upstreams),
        "queries": dict(zip(REASONS, p.counts, strict=True)),
        "cache_entries": len(p.cache),
        "reloads": dict(srv.reloads),
        "syncs": dict(srv.syncs),
        "policy": {
            "timezone": snap.policies.tz.key,
            "default_group": snap.policies.default.name,
            "contexts": contexts,
            "overrides": [o.as_json() for o in p.overrides.active(wall)],
        },
    }


async def _reload(srv: GuardianServer, args: dict[str, Any], _w: asyncio.StreamWriter) -> Any:
    ok = await srv.reload()
    snap = srv.pipeline.snap
    if not ok:
        return {
            "ok": False,
            "error": srv.last_reload_error or "reload failed (see the server log)",
            "generation": snap.gen,
        }
    return {"ok": True, "generation": snap.gen, "domains": snap.domains}


async def _sync(srv: GuardianServer, args: dict[str, Any], _w: asyncio.StreamWriter) -> Any:
    changed = await srv.sync_now()
    return {"ok": True, "changed": changed}


def _records(srv: GuardianServer, start_total: int) -> tuple[list[dict[str, Any]], int]:
    """Records appended since ``start_total`` (at most a ring's worth), oldest first."""
    from guardian_dns.pipeline import REASONS

    ql = srv.pipeline.qlog
    total = ql.total
    n = min(total - start_total, ql.size)
    out = []
    for rec in reversed(ql.recent(REASONS, n)):
        out.append(
            {
                "time": rec.time,
                "client": rec.client,
                "name": rec.name,
                "qtype": rec.qtype,
                "reason": rec.reason,
                "rule": rec.rule,
            }
        )
    return out, total


def _wanted(rec: dict[str, Any], args: dict[str, Any]) -> bool:
    client = args.get("client")
    if client and rec["client"] != client:
        return False
    return not (args.get("blocked") and rec["reason"] != "blocked")


async def _tail(srv: GuardianServer, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    lines = int(args.get("lines", 20))
    ql = srv.pipeline.qlog
    recent, total = _records(srv, max(0, ql.total - ql.size))
    chosen = [r for r in recent if _wanted(r, args)][-lines:] if lines > 0 else []
    for rec in chosen:
        await _send(writer, {"ok": True, "record": _explained(srv, rec)})
    if not args.get("follow"):
        await _send(writer, {"ok": True, "end": True})
        return None
    while not writer.is_closing():
        await asyncio.sleep(_TAIL_POLL)
        new, total = _records(srv, total)
        for rec in new:
            if _wanted(rec, args):
                await _send(writer, {"ok": True, "record": _explained(srv, rec)})
    return None


def _explained(srv: GuardianServer, rec: dict[str, Any]) -> dict[str, Any]:
    """The record with its rule as people read it: list file:line (category), or the policy."""
    from guardian_dns.policy import RULE_NAMES
    from guardian_dns.trie import rule_ref

    rule = rec["rule"]
    why = ""
    if rule in RULE_NAMES:
        why = RULE_NAMES[rule]
    elif rule >= 0:
        snap = srv.pipeline.snap
        ref = rule_ref(snap.rules, rule, snap.filter.table)
        if ref is not None:
            why = f"{ref.list_source}:{ref.line} ({ref.category})"
    return {**rec, "why": why}


async def _stats(srv: GuardianServer, args: dict[str, Any], _w: asyncio.StreamWriter) -> Any:
    from collections import Counter

    from guardian_dns.pipeline import REASONS

    p = srv.pipeline
    recent, _total = _records(srv, max(0, p.qlog.total - p.qlog.size))
    blocked = [r for r in recent if r["reason"] == "blocked"]
    top = int(args.get("top", 10))
    names = Counter(r["name"] for r in blocked).most_common(top)
    clients = Counter(r["client"] for r in blocked).most_common(top)
    categories = Counter(_explained(srv, r)["why"] for r in blocked).most_common(top)
    snap = p.snap
    by_category = {cat: p.blocked_by_category[i] for i, cat in enumerate(snap.categories) if i < 80}
    return {
        "ok": True,
        "since_start": {
            "queries": dict(zip(REASONS, p.counts, strict=True)),
            "blocked_by_category": by_category,
        },
        "recent": {
            "records": len(recent),
            "oldest": recent[0]["time"] if recent else None,
            "top_blocked_names": names,
            "top_blocked_clients": clients,
            "top_blocked_rules": categories,
        },
    }


async def _devices(srv: GuardianServer, args: dict[str, Any], _w: asyncio.StreamWriter) -> Any:
    p = srv.pipeline
    recent, _total = _records(srv, max(0, p.qlog.total - p.qlog.size))
    seen: dict[str, dict[str, Any]] = {}
    for rec in recent:
        d = seen.setdefault(rec["client"], {"queries": 0, "blocked": 0, "last_seen": 0.0})
        d["queries"] += 1
        d["blocked"] += rec["reason"] == "blocked"
        d["last_seen"] = max(d["last_seen"], rec["time"])
    # The names the config gives devices (policy.devices), by MAC or address as written.
    named: dict[str, str] = {}
    for name, members, _line in srv.config.policy.devices:
        for member in members:
            named[member.lower()] = name
    out = []
    for ip, d in sorted(seen.items(), key=lambda kv: -kv[1]["last_seen"]):
        ctx = p.contexts.for_client(ip)
        mac = p.contexts.identity(ip)
        out.append(
            {
                "client": ip,
                "name": named.get(mac.lower()) or named.get(ip),
                "mac": mac if mac != ip else None,
                "group": ctx.policy.name,
                "own_overrides": ctx.identity is not None,
                **d,
            }
        )
    return {"ok": True, "devices": out, "window_records": len(recent)}


COMMANDS: Final[dict[str, Handler]] = {
    "status": _status,
    "reload": _reload,
    "sync": _sync,
    "tail": _tail,
    "stats": _stats,
    "devices": _devices,
}

__all__ = [
    "COMMANDS",
    "ControlServer",
    "ControlUnavailable",
    "request",
    "socket_path",
    "stream",
]
