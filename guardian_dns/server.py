"""The running server: binds the listeners, owns the pipeline, handles signals and reloads.

What it decides: start-up order (lists in force before the first socket answers), and whether a
reload may replace what is serving (only a fully built snapshot does; otherwise the old one stays
and the reason is logged).
What it reads: the config file (again, on SIGHUP) through the config loader.
What it must never do: serve without the lists it was configured with, or lose the serving
snapshot because a new config or list is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from guardian_dns import __version__, notify
from guardian_dns import compile as compile_mod
from guardian_dns.adminlists import fingerprint
from guardian_dns.clients import NeighbourWatcher
from guardian_dns.config import Config, parse_listen
from guardian_dns.control import ControlServer, socket_path
from guardian_dns.errors import GuardianError
from guardian_dns.history import (
    READ_INTERVAL,
    HistoryError,
    HistoryWriter,
    history_dir,
    rule_category,
)
from guardian_dns.listener import (
    Gate,
    ListenerStats,
    TcpConnection,
    TcpServerState,
    UdpListener,
    bind_socket,
)
from guardian_dns.metrics import MetricsServer, make_registry
from guardian_dns.overrides import file_mark, read_overrides
from guardian_dns.pipeline import Pipeline
from guardian_dns.policy import service_lists
from guardian_dns.querylog import QueryLog
from guardian_dns.snapshot import Snapshot, admin_dir, build_snapshot
from guardian_dns.sources import resolve
from guardian_dns.sync import PID_FILE
from guardian_dns.upstream import UpstreamPool
from guardian_dns.usage import Budgets, Overrides, UsageState

FAKE_TIME_ENV = "GUARDIAN_DNS_FAKE_TIME"  # tests: the wall clock starts at this instant
_USAGE_SAVE_INTERVAL = 60.0  # seconds between budget saves (SD cards wear; a crash loses this)
_FIRST_SYNC_DELAY = 5.0  # after start-up, when nothing was ever fetched
_SYNC_TIMEOUT = 900.0  # a sync child running longer than this is killed (and counted)

log = logging.getLogger(__name__)


def _pool(snap: Snapshot) -> UpstreamPool:
    uc = snap.config.upstream
    return UpstreamPool(
        snap.upstreams,
        timeout=uc.timeout,
        attempt_timeout=uc.attempt_timeout,
        down_backoff=uc.down_backoff,
        ca_file=uc.tls_ca_file,
    )


class GuardianServer:
    """One Guardian DNS process."""

    def __init__(self, config: Config, reload_config: Callable[[], Config]) -> None:
        self.config = config
        self.reload_config = reload_config  # re-reads the file and re-applies the CLI flags
        self.reloads: dict[str, int] = {}
        self.listener_stats = ListenerStats()
        self.udp: list[UdpListener] = []
        self.tcp: list[asyncio.AbstractServer] = []
        self.metrics: MetricsServer | None = None
        self._stop = asyncio.Event()
        self._reloading = False
        self.ready_ports: list[tuple[str, int]] = []
        self.clock = wall_clock()
        self.state_dir = compile_mod.state_dir(config.server.state_dir, config.base_dir)
        self.neighbours: NeighbourWatcher | None = None
        self.history: HistoryWriter | None = None
        self._overrides_mark: tuple[int, int, int] | None = None
        self._due: asyncio.TimerHandle | None = None
        self.syncs: dict[str, int] = {}  # sync runs by result ("ok" or an error code)
        self.started = time.time()
        self.last_reload_error: str | None = None
        self.control: ControlServer | None = None
        self._sync_task: asyncio.Task[None] | None = None

    def _bind(self, snap: Snapshot) -> tuple[list[socket.socket], list[socket.socket]]:
        udp_socks: list[socket.socket] = []
        tcp_socks: list[socket.socket] = []
        try:
            for addr in snap.config.server.listen:
                host, port = parse_listen(addr)
                u = bind_socket(host, port, socket.SOCK_DGRAM)
                udp_socks.append(u)
                # Port 0 (tests): TCP takes the port the kernel gave UDP.
                t = bind_socket(host, port or u.getsockname()[1], socket.SOCK_STREAM)
                tcp_socks.append(t)
                self.ready_ports.append((host, u.getsockname()[1]))
        except OSError as exc:
            for s in udp_socks + tcp_socks:
                s.close()
            hint = ""
            if exc.errno == 98:
                hint = " (another DNS server, e.g. systemd-resolved or dnsmasq, holds the port)"
            elif exc.errno == 13:
                hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            raise GuardianError(f"cannot listen on {addr}: {exc.strerror}{hint}") from exc
        return udp_socks, tcp_socks

    async def run(self, ready: Callable[[GuardianServer], None] | None = None) -> int:
        _raise_fd_limit()
        loop = asyncio.get_running_loop()
        table = await self._table(self.config)
        self.lists = table
        snap = build_snapshot(self.config, 1, table)
        upstream = _pool(snap)
        now = self.clock()
        # Budgets are the server's own state file; overrides are the CLI's (overrides.py).
        budgets = Budgets(snap.policies.tz, {})
        self.usage = UsageState.in_directory(self.state_dir, budgets, Overrides())
        self.usage.load(now)
        overrides = self._read_overrides(now) or Overrides()
        self.pipeline = Pipeline(
            snap,
            upstream,
            QueryLog(self.config.query_log.size),
            overrides=overrides,
            budgets=budgets,
            clock=self.clock,
        )
        self.gate = Gate(self.pipeline, self.listener_stats)
        self._watch_neighbours(snap)
        self._rate_window()
        self._policy_tick()
        loop.call_later(_USAGE_SAVE_INTERVAL, self._save_usage_timer)
        udp_socks, tcp_socks = self._bind(snap)
        # Only a server that holds its ports claims the pid file and the control socket: a
        # second instance started by mistake must not take them from the one serving.
        self._write_pid()
        self._sync_task = loop.create_task(self._sync_loop())
        self._start_history(snap)
        self.control = ControlServer(
            self, socket_path(self.config), self.config.server.control_group
        )
        try:
            await self.control.start()
        except (GuardianError, OSError) as exc:
            # The DNS service matters more than the CLI's channel: say so, keep serving.
            log.error("control socket: %s; the CLI's server verbs will not work", exc)
            self.control = None
        for s in udp_socks:
            self.udp.append(UdpListener(s, self.pipeline, self.gate))
        self.tcp_state = TcpServerState(self.pipeline, self.gate)
        for s in tcp_socks:
            server = await loop.create_server(
                lambda: TcpConnection(self.tcp_state), sock=s, backlog=256
            )
            self.tcp.append(server)
        mc = self.config.metrics
        if mc.enabled:
            host, port = parse_listen(mc.listen)
            try:
                self.metrics = MetricsServer(
                    host, port, make_registry(lambda: self), mc.username, mc.password
                )
            except OSError as exc:
                raise GuardianError(f"cannot listen for metrics on {mc.listen}: {exc}") from exc
            self.metrics.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._schedule_reload)
        log.info(
            "guardian-dns %s serving on %s (udp+tcp); %d domains from %d lists in force "
            "(%.2f s); upstreams: %s; metrics: %s",
            __version__,
            ", ".join(f"{h}:{p}" for h, p in self.ready_ports),
            snap.domains,
            len(snap.lists),
            snap.build_seconds,
            ", ".join(snap.upstreams) or "NONE (every forwarded query will SERVFAIL)",
            f"{mc.listen}" if mc.enabled else "off",
        )
        if not snap.upstreams:
            log.warning("no upstream servers: set upstream.servers or fix /etc/resolv.conf")
        if self.config.policy.groups:
            log.info(
                "policy: %d groups (%s), time zone %s, unknown clients get %r",
                len(snap.policies.groups),
                ", ".join(g.name for g in snap.policies.groups),
                snap.policies.tz.key,
                snap.policies.default.name,
            )
        if ready is not None:
            ready(self)
        notify.ready(f"serving {snap.domains} domains, generation {snap.gen}")
        _tune_gc()
        await self._stop.wait()
        log.info("stopping")
        notify.stopping()
        await self._shutdown()
        return 0

    async def _table(self, config: Config) -> compile_mod.Result:
        """The domain table for ``config``: the saved one, or one built in a child process.

        Built from files only: the configured lists, the feed's last good set and the
        subscriptions' last good copies. Never waits for the network (sources.py).
        """
        directory = compile_mod.state_dir(config.server.state_dir, config.base_dir)
        lists, notes = resolve(config, directory)
        for note in notes:
            log.warning("lists: %s", note)
        result = await compile_mod.table_in_child(
            compile_mod.specs_of(lists + service_lists(config)), directory
        )
        how = "built" if result.built else "loaded from the state directory"
        log.info(
            "domain table %s: %d names, %.2f s%s",
            how,
            len(result.table),
            result.seconds,
            f", builder peak RSS {result.peak_rss_kib // 1024} MiB" if result.built else "",
        )
        return result

    # -- policy state: clock, overrides, neighbours, budgets -------------------------------------
    def _read_overrides(self, now: float) -> Overrides | None:
        """The CLI's overrides file, or None (logged) when it cannot be used: keep the last."""
        self._overrides_mark = file_mark(self.state_dir)
        overrides, error = read_overrides(self.state_dir, now)
        if error is not None:
            log.warning("overrides: %s; keeping the ones in force", error)
            return None
        return overrides

    def _policy_tick(self) -> None:
        """Once a second: the CLI's overrides file, and states due (windows, expiries, days)."""
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, self._policy_tick)
        pipeline = self.pipeline
        if (
            not self._reloading
            and fingerprint(admin_dir(self.config)) != pipeline.snap.admin.fingerprint
        ):
            task = loop.create_task(self.reload(admin_only=True))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        if file_mark(self.state_dir) != self._overrides_mark:
            overrides = self._read_overrides(self.clock())
            if overrides is not None:
                pipeline.set_overrides(overrides)
                log.info("overrides: %d in force", len(overrides))
        self._policy_due()

    def _policy_due(self) -> None:
        self._due = None
        pipeline = self.pipeline
        pipeline.tick()
        # Between ticks, wake exactly when the next state is due, so a window that closes at
        # 07:00:00 does not stay in force for up to a second more.
        delay = pipeline.contexts.next_change - pipeline.wall()
        if delay < 1.0:
            self._due = asyncio.get_running_loop().call_later(max(delay, 0.0), self._policy_due)

    def _watch_neighbours(self, snap: Snapshot) -> None:
        """Read the neighbour table now (MAC members) and every few seconds, off the loop."""
        if not snap.clients.uses_macs:
            self.neighbours = None
            return
        pc = snap.config.policy
        source = pc.neighbour_table
        if source != "ip":  # a file: relative to the config file, like every other path
            source = os.path.join(snap.config.base_dir, source)
        watcher = NeighbourWatcher(source, pc.neighbour_refresh)
        old = self.neighbours
        if old is None or (old.source, old.interval) != (watcher.source, watcher.interval):
            self.neighbours = watcher
            self.neighbours.refresh()
            log.info(
                "neighbour table %s: %d addresses",
                self.neighbours.source,
                len(self.neighbours.mapping),
            )
            self.pipeline.set_neighbours(self.neighbours.mapping)
            asyncio.get_running_loop().call_later(watcher.interval, self._neighbour_timer)

    def _neighbour_timer(self) -> None:
        watcher = self.neighbours
        if watcher is None:
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, watcher.refresh)

        def done(f: asyncio.Future[bool]) -> None:
            if watcher is not self.neighbours:
                return  # replaced by a reload, which starts its own timer
            if not f.cancelled() and f.exception() is None and f.result():
                self.pipeline.set_neighbours(watcher.mapping)
            loop.call_later(watcher.interval, self._neighbour_timer)

        future.add_done_callback(done)

    def _start_history(self, snap: Snapshot) -> None:
        """The query history for 'guardian-dns report': read from the ring buffer on a timer."""
        qc = self.config.query_log
        if not qc.history:
            return
        pipeline = self.pipeline
        try:
            self.history = HistoryWriter(
                pipeline.qlog,
                history_dir(self.state_dir),
                # Looked up when a batch is made, once per client and per rule: the current
                # snapshot's groups and lists, as the pipeline sees them.
                group_of=lambda ip: pipeline.contexts.for_client(ip).policy.name,
                category_of=lambda rule: rule_category(pipeline.snap, rule),
                retention_days=qc.retention_days,
                anonymise=qc.anonymise,
                flush_interval=qc.flush_interval,
                tz=snap.policies.tz,
                clock=self.clock,
                monotonic=asyncio.get_running_loop().time,  # the clock of the records' times
            )
        except (HistoryError, OSError) as exc:
            log.error("query history off: %s", exc)
            return
        asyncio.get_running_loop().call_later(READ_INTERVAL, self._history_timer)

    def _history_timer(self) -> None:
        """Read the ring buffer on the loop (O(new records)); every flush_interval, append and
        fsync the counts in a thread."""
        history = self.history
        if history is None:
            return
        loop = asyncio.get_running_loop()
        batch = history.tick()
        if batch is None:
            loop.call_later(READ_INTERVAL, self._history_timer)
            return
        future = loop.run_in_executor(None, batch.write)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("query history not written: %s", f.exception())
            loop.call_later(READ_INTERVAL, self._history_timer)

        future.add_done_callback(done)

    def _save_usage_timer(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self.usage.prepare(self.clock()) if self._usage_to_keep() else None
        if pending is None:
            loop.call_later(_USAGE_SAVE_INTERVAL, self._save_usage_timer)
            return
        future = loop.run_in_executor(None, pending.write)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("usage state %s not saved: %s", self.usage.path, f.exception())
            loop.call_later(_USAGE_SAVE_INTERVAL, self._save_usage_timer)

        future.add_done_callback(done)

    # -- feed and subscriptions -------------------------------------------------------------------
    def _write_pid(self) -> None:
        """``guardian-dns sync`` run by an administrator finds us here to ask for a rebuild."""
        path = os.path.join(self.state_dir, PID_FILE)
        with contextlib.suppress(OSError):
            os.makedirs(self.state_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, path)

    def _remove_pid(self) -> None:
        path = os.path.join(self.state_dir, PID_FILE)
        with contextlib.suppress(OSError, ValueError), open(path) as f:
            if int(f.read().strip()) == os.getpid():
                os.unlink(path)

    def _sync_wanted(self) -> bool:
        cfg = self.config
        return cfg.feed.url is not None or any(lc.url for lc in cfg.blocking.lists)

    async def _sync_loop(self) -> None:
        """Sync on a jittered interval, in a child process, and rebuild after a change."""
        rng = random.Random()
        first = True
        while True:
            if not self._sync_wanted() or not os.path.isfile(self.config.source):
                await asyncio.sleep(60.0)  # a reload may add a feed
                continue
            interval = self.config.feed.interval
            delay = interval * (1.0 + self.config.feed.jitter * (2.0 * rng.random() - 1.0))
            if first:
                # resolve's notes name exactly what was never fetched: sync that soon.
                if resolve(self.config, self.state_dir)[1]:
                    delay = _FIRST_SYNC_DELAY
                first = False
            await asyncio.sleep(delay)
            await self.sync_now()

    async def sync_now(self) -> bool:
        """One ``guardian-dns sync`` child; True if it changed what is on disk (then reloaded)."""
        argv = [
            sys.executable,
            *("-m", "guardian_dns", "sync", "--config", self.config.source),
            *("--json", "--no-signal"),
        ]
        env = dict(os.environ, STATE_DIRECTORY=self.state_dir)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), _SYNC_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self._count_sync("timeout")
            log.error("sync: still running after %.0f s, killed", _SYNC_TIMEOUT)
            return False
        except OSError as exc:
            self._count_sync("internal")
            log.error("sync: cannot start the sync process: %s", exc)
            return False
        try:
            report = json.loads(out)
        except ValueError:
            self._count_sync("internal")
            log.error(
                "sync: exit %s, no report: %s", proc.returncode, err.decode(errors="replace")[-500:]
            )
            return False
        feed_report = report.get("feed")
        if feed_report is not None:
            result = "ok" if feed_report.get("ok") else str(feed_report.get("error"))
            self._count_sync(result)
            if result != "ok":
                log.error(
                    "sync: feed %s failed (%s%s): %s; the last good lists keep serving",
                    feed_report.get("url"),
                    result,
                    f", list {feed_report['list_name']}" if feed_report.get("list_name") else "",
                    feed_report.get("message"),
                )
        for sub in report.get("subscriptions", []):
            error = sub.get("error")
            self._count_sync("ok" if error is None else str(error.get("code")))
            if error is not None:
                log.error(
                    "sync: list %s failed: %s; its last good copy keeps serving",
                    sub.get("url"),
                    error.get("message"),
                )
        if report.get("changed"):
            log.info("sync: new lists on disk, rebuilding the table")
            await self.reload()
            return True
        return False

    def _count_sync(self, result: str) -> None:
        self.syncs[result] = self.syncs.get(result, 0) + 1

    def _usage_to_keep(self) -> bool:
        """Whether there is budget state to write: no file appears where no budget is used."""
        return len(self.usage.budgets) > 0 or os.path.exists(self.usage.path)

    def _rate_window(self) -> None:
        """Start a new one-second rate-limit window (a timer, not a clock read per packet)."""
        self.gate.new_window()  # each read loop picks up the new dict at its next wake-up
        asyncio.get_running_loop().call_later(1.0, self._rate_window)

    def _schedule_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def reload(self, *, admin_only: bool = False) -> bool:
        """Verify-then-swap, with systemd told (notify.py): RELOADING=1, then READY=1 either way."""
        if self._reloading:
            log.warning("reload: already in progress, request ignored")
            self.last_reload_error = "a reload is already in progress"
            return False
        notify.reloading()
        ok = False
        try:
            ok = await self._reload(admin_only=admin_only)
        finally:
            snap = self.pipeline.snap
            notify.ready(
                f"serving {snap.domains} domains, generation {snap.gen}"
                + ("" if ok else "; the last reload failed (see the log)")
            )
        return ok

    async def _reload(self, *, admin_only: bool) -> bool:
        """Build the new snapshot aside; keep the old one on any error."""
        self._reloading = True
        loop = asyncio.get_running_loop()
        old = self.pipeline.snap
        try:
            if admin_only:
                # The administrator's names changed (guardian-dns block/allow): same config,
                # same table; only the policies are compiled again, in milliseconds.
                config, table = self.config, self.lists
            else:
                config = await loop.run_in_executor(None, self.reload_config)
                table = await self._table(config)
            snap = build_snapshot(config, old.gen + 1, table)
            self.lists = table
        except GuardianError as exc:
            self.reloads["failed"] = self.reloads.get("failed", 0) + 1
            self.last_reload_error = str(exc)
            log.error("reload failed, still serving generation %d: %s", old.gen, exc)
            return False
        except Exception as exc:
            self.reloads["failed"] = self.reloads.get("failed", 0) + 1
            self.last_reload_error = f"internal error: {exc}"
            log.exception("reload failed, still serving generation %d", old.gen)
            return False
        finally:
            self._reloading = False
        if config.server.listen != old.config.server.listen:
            log.warning("reload: server.listen changed; restart to apply it")
        if config.query_log != old.config.query_log:
            log.warning("reload: query_log settings changed; restart to apply them")
        if self.history is not None:
            self.history.tz = snap.policies.tz
        if config.metrics != old.config.metrics:
            log.warning("reload: metrics settings changed; restart to apply them")
        upstream = self.pipeline.upstream
        if snap.upstreams != old.upstreams or config.upstream != old.config.upstream:
            new_pool = _pool(snap)
            await upstream.close()  # its in-flight queries fail over into SERVFAIL; rare
            upstream = new_pool
        self.pipeline.swap(snap, upstream)
        self._watch_neighbours(snap)
        self.config = config
        self.reloads["ok"] = self.reloads.get("ok", 0) + 1
        self.last_reload_error = None
        log.info(
            "reload complete: generation %d, %d domains from %d lists (%.2f s)",
            snap.gen,
            snap.domains,
            len(snap.lists),
            snap.build_seconds,
        )
        return True

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        self._remove_pid()
        if self.control is not None:
            await self.control.close()
        if self._sync_task is not None:
            self._sync_task.cancel()
        for u in self.udp:
            u.close()
        for t in self.tcp:
            t.close()
        for conn in list(self.tcp_state.conns):
            if conn.transport is not None:
                conn.transport.abort()
        for t in self.tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t.wait_closed(), 2.0)
        if self.metrics is not None:
            self.metrics.stop()
        await self.pipeline.upstream.close()
        for task in list(self.pipeline.tasks):
            task.cancel()
        if self.history is not None:
            try:
                self.history.flush()  # the last interval, now that nothing answers any more
            except OSError as exc:
                log.warning("query history not written: %s", exc)
        try:
            if self._usage_to_keep():
                self.usage.save(self.clock())
        except OSError as exc:
            log.warning("usage state %s not saved: %s", self.usage.path, exc.strerror)


def wall_clock() -> Callable[[], float]:
    """Unix time, or (``GUARDIAN_DNS_FAKE_TIME``, for tests) a clock that starts at a given
    instant (ISO 8601 with offset, or Unix seconds) and runs at the real rate."""
    fake = os.environ.get(FAKE_TIME_ENV)
    if not fake:
        return time.time
    try:
        start = float(fake)
    except ValueError:
        try:
            start = datetime.fromisoformat(fake).timestamp()
        except ValueError as exc:
            raise GuardianError(f"{FAKE_TIME_ENV}={fake!r}: not a Unix time or ISO 8601") from exc
    base = time.monotonic()
    log.warning("%s set: the wall clock starts at %s (testing only)", FAKE_TIME_ENV, fake)

    def clock() -> float:
        return start + (time.monotonic() - base)

    return clock


def _raise_fd_limit() -> None:
    """Each upstream keeps a pool of UDP sockets and each TCP client one fd: lift the soft limit
    (often 1024) toward the hard one so a busy school network never runs out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def write_ready(fd: int) -> Callable[[GuardianServer], None]:
    """Readiness by event: tests and supervisors wait on this fd, never on a sleep."""

    def ready(server: GuardianServer) -> None:
        ports = " ".join(f"{h}:{p}" for h, p in server.ready_ports)
        with contextlib.suppress(OSError):
            os.write(fd, f"ready {ports}\n".encode())
            os.close(fd)

    return ready


def _tune_gc() -> None:
    """Keep the cycle collector off the query path's back.

    Everything alive at start-up (modules, the first snapshot) is moved out of the collector's
    sight: it would otherwise be traversed again by every full collection. The first threshold
    is raised because answers live in the caches for seconds: with the default of 700 new
    objects, the collector kept traversing cache entries that were about to be evicted anyway
    (forwarded queries: 12% more per second in a same-run A/B). Garbage cycles are rare here
    (the slow path's exceptions), so waiting for 50,000 new objects costs a few MB at most.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)


def run_server(
    config: Config,
    reload_config: Callable[[], Config],
    ready: Callable[[GuardianServer], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, on uvloop when it is installed.

    ``GUARDIAN_DNS_LOOP=asyncio`` forces the standard library's loop (to rule uvloop out when
    debugging; the test suite runs both).
    """
    runner: Any = asyncio.run
    if os.environ.get("GUARDIAN_DNS_LOOP", "") != "asyncio":
        try:
            import uvloop

            def runner(coro: Any) -> Any:
                run = getattr(uvloop, "run", None)
                if run is None:  # uvloop < 0.18 (Debian bookworm's 0.17) has no uvloop.run
                    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
                    return asyncio.run(coro)
                return run(coro)

            log.debug("using uvloop")
        except ImportError:
            pass
    server = GuardianServer(config, reload_config)
    result: int = runner(server.run(ready))
    return result
