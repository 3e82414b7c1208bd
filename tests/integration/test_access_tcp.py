"""Who may ask, what the metrics page shows, and how the TCP listener treats good and bad clients.

RELIABILITY.md R33 (ACL), R35 (metrics exposure and cardinality) and R36-R39 (TCP pipelining,
idle and slowloris deadlines, per-client caps, framing errors without leaks), plus a 64 KB
pipelined burst and a client that half-closes after sending. Every case runs against the real
server as a subprocess on loopback, in front of the scriptable test upstream. 127.0.0.x source
addresses stand in for LAN hosts; each TCP test uses its own source address so connections left
over from another test never count against its per-client cap.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import random
import re
import select
import socket
import string
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require_tool, wire
from tests.support.authserver import AuthServer
from tests.support.daemon import REPO_ROOT, GuardianProcess, GuardianStartError, write_config

pytestmark = pytest.mark.integration

IDLE_TIMEOUT = 2.0  # server.tcp_idle_timeout in the module's main config, to keep waits short
PER_CLIENT = 4  # server.tcp_max_connections_per_client in the module's main config
WWW = "www.example.test"
WWW_ADDRESS = "192.0.2.10"
BLOCKED = "blocked.example.test"
EDE_BLOCKED = 15
# R02: a response (QR=1) for www.example.test.
RESPONSE_AS_QUERY = wire.unhex(
    "42428100000100000000000003777777076578616d706c6504746573740000010001"
)


# ---------------------------------------------------------------------------- helpers


class TcpClient:
    """One raw TCP connection to the server: write bytes, read framed replies, see it close."""

    def __init__(self, port: int, source: str, timeout: float = 2.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = bytearray()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def query(self, message: bytes) -> None:
        self.send(wire.frame(message))

    def _recv(self, timeout: float) -> bool:
        """Read once; False on timeout. Sets ``closed`` on EOF or RST."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.closed = True
            return True
        if not chunk:
            self.closed = True
        self.buffer += chunk
        return True

    def replies(self, count: int, timeout: float = 2.0) -> list[bytes]:
        """Up to ``count`` framed replies, waiting at most ``timeout`` in all."""
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buffer) >= 2 and len(found) < count:
                (length,) = struct.unpack_from("!H", self.buffer)
                if len(self.buffer) < 2 + length:
                    break
                found.append(bytes(self.buffer[2 : 2 + length]))
                del self.buffer[: 2 + length]
            remaining = deadline - time.monotonic()
            if len(found) >= count or self.closed or remaining <= 0:
                return found
            self._recv(remaining)

    def reply(self, timeout: float = 2.0) -> bytes | None:
        """The next framed reply, or None if none came within ``timeout``."""
        found = self.replies(1, timeout)
        return found[0] if found else None

    def wait_closed(self, timeout: float) -> float | None:
        """Seconds until the server closed the connection, or None if it stayed open."""
        start = time.monotonic()
        deadline = start + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._recv(remaining)
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()


def reply_ids(replies: list[bytes]) -> list[int]:
    return sorted(struct.unpack_from("!H", r)[0] for r in replies)


def resolves_www(reply: bytes | None, ident: int) -> bool:
    if reply is None:
        return False
    parsed = wire.parse_reply(reply)
    return parsed.id == ident and parsed.rcode == 0 and WWW_ADDRESS in parsed.addresses()


def random_label(rng: random.Random, length: int = 12) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def http_get(
    port: int, path: str = "/metrics", auth: tuple[str, str] | None = None
) -> tuple[int, str]:
    """GET over a direct connection (http.client: no proxy from the environment is used)."""
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def series(body: str) -> set[str]:
    """Metric series: every sample line, without its value (name plus labels)."""
    return {
        line.rsplit(" ", 1)[0] for line in body.splitlines() if line and not line.startswith("#")
    }


def listeners(pid: int, proto: str) -> list[str]:
    """Local addresses (``ADDR:PORT``) of ``pid``'s listening sockets, from ``ss -l``."""
    ss = require_tool("ss")
    flag = {"tcp": "-Hltnp", "udp": "-Hlunp"}[proto]
    out = subprocess.run([ss, flag], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," in line:
            found.append(line.split()[3])
    return found


def is_loopback_address(local: str) -> bool:
    host = local.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    return host.startswith("127.") or host == "::1"


class DefaultMetricsGuardian(GuardianProcess):
    """A server on the default metrics address; skips if another process holds it meanwhile."""

    def start(self) -> None:
        try:
            super().start()
        except GuardianStartError as exc:
            if "127.0.0.1:9153" in str(exc) and "in use" in str(exc):
                pytest.skip("another process took 127.0.0.1:9153 (the default metrics address)")
            raise


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def upstream() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


@pytest.fixture(scope="module")
def list_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "test.domains"
    path.write_text(f"{BLOCKED}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(
    upstream: AuthServer, list_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardianProcess]:
    """The TCP server under test: default ACL, idle timeout 2 s, 4 connections per client."""
    config = write_config(
        tmp_path_factory.mktemp("main"),
        upstream.port,
        lists={"test": list_file},
        extra_yaml=(
            "server:\n"
            f"  tcp_idle_timeout: {IDLE_TIMEOUT}\n"
            f"  tcp_max_connections_per_client: {PER_CLIENT}\n"
        ),
    ).read_text(encoding="utf-8")
    with GuardianProcess(config) as proc:
        # Warm the cache, so the timing cases below measure the server, not the upstream.
        assert resolves_www(wire.udp_exchange(wire.make_query(WWW), proc.port), 0x4242)
        yield proc


# ---------------------------------------------------------------------------- R33 ACL


@pytest.fixture(scope="module", params=["refuse", "drop"], ids=lambda a: f"acl_action={a}")
def acl_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GuardianProcess, AuthServer, str]]:
    action: str = request.param
    with AuthServer() as auth:
        config = write_config(
            tmp_path_factory.mktemp(f"acl-{action}"),
            auth.port,
            extra_yaml=(f'server:\n  allow_networks: ["127.0.0.2/32"]\n  acl_action: {action}\n'),
        ).read_text(encoding="utf-8")
        with GuardianProcess(config) as proc:
            yield proc, auth, action


def test_client_outside_allow_networks_gets_refused_or_silence_over_udp(
    acl_server: tuple[GuardianProcess, AuthServer, str],
) -> None:
    proc, auth, action = acl_server
    auth.clear_log()
    query = wire.make_query(WWW, id=0x3303)
    reply = wire.udp_exchange(query, proc.port, source="127.0.0.3", timeout=0.5)
    if action == "refuse":
        assert reply is not None, "acl_action refuse: a client outside the ACL got no answer"
        parsed = wire.parse_reply(reply)
        assert (parsed.id, parsed.rcode_text) == (0x3303, "REFUSED"), parsed.message
        assert parsed.answer == ()
    else:
        assert reply is None, f"acl_action drop: a client outside the ACL got {reply.hex()}"
    assert auth.queries == [], "a query from outside allow_networks reached the upstream"


def test_client_outside_allow_networks_gets_no_tcp_answer(
    acl_server: tuple[GuardianProcess, AuthServer, str],
) -> None:
    proc, auth, _ = acl_server
    auth.clear_log()
    replies, closed = wire.tcp_exchange(
        [wire.make_query(WWW)], proc.port, source="127.0.0.3", timeout=1.0
    )
    rcodes = [wire.parse_reply(r).rcode_text for r in replies]
    assert set(rcodes) <= {"REFUSED"}, f"TCP from outside the ACL was answered: {rcodes}"
    assert rcodes or closed, "TCP from outside the ACL got neither REFUSED nor a close"
    assert auth.queries == [], "a TCP query from outside allow_networks reached the upstream"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_client_inside_allow_networks_is_answered(
    acl_server: tuple[GuardianProcess, AuthServer, str], transport: str
) -> None:
    proc, auth, _ = acl_server
    auth.clear_log()
    name = f"acl-{transport}.wild.example.test"
    query = wire.make_query(name, id=0x3302)
    if transport == "udp":
        reply = wire.udp_exchange(query, proc.port, source="127.0.0.2")
    else:
        replies, _ = wire.tcp_exchange([query], proc.port, source="127.0.0.2")
        reply = replies[0] if replies else None
    assert reply is not None, f"127.0.0.2 is in allow_networks but got no {transport} answer"
    parsed = wire.parse_reply(reply)
    assert (parsed.id, parsed.rcode_text) == (0x3302, "NOERROR"), parsed.message
    assert auth.count(name) >= 1


# ---------------------------------------------------------------------------- R34 rate limit

RATE_LIMIT = 200


def _flood(port: int, source: str, count: int, seconds: float) -> int:
    """Send ``count`` queries from ``source`` spread over ``seconds``; return the answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    answered = 0
    start = time.monotonic()
    try:
        for i in range(count):
            target = start + seconds * i / count
            while time.monotonic() < target:
                time.sleep(0.0005)
            sock.sendto(wire.make_query(WWW, id=i & 0xFFFF), ("127.0.0.1", port))
            with contextlib.suppress(BlockingIOError):
                while sock.recv(4096):
                    answered += 1
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while sock.recv(4096):
                        answered += 1
    finally:
        sock.close()
    return answered


def test_flooding_client_is_rate_limited_while_a_quiet_one_is_answered(
    upstream: AuthServer, tmp_path: Path
) -> None:
    """R34: A sends 2000 queries in a second, B 20: A limited, B all answered, drops counted."""
    config = write_config(
        tmp_path, upstream.port, extra_yaml=f"server:\n  rate_limit: {RATE_LIMIT}\n"
    ).read_text(encoding="utf-8")
    with GuardianProcess(config) as proc:
        result: dict[str, int] = {}
        flood = threading.Thread(
            target=lambda: result.__setitem__("a", _flood(proc.port, "127.0.0.2", 2000, 1.0))
        )
        flood.start()
        quiet = _flood(proc.port, "127.0.0.3", 20, 1.0)
        flood.join()
        # Two one-second windows may overlap the burst: at most twice the limit gets through.
        assert result["a"] <= 2 * RATE_LIMIT + 10, f"flooding client got {result['a']} answers"
        assert result["a"] >= RATE_LIMIT // 2, f"flooding client starved: {result['a']}"
        assert quiet == 20, f"quiet client got {quiet} of 20 answers"
        status, body = http_get(proc.metrics_port)
        assert status == 200
        drops = re.search(r'guardian_dns_dropped_total\{reason="ratelimit"\} (\d+)', body)
        assert drops and int(drops.group(1)) > 0, "no ratelimit drops counted"
        # Loopback's own address is exempt by default (a local dnsmasq forwards from there).
        assert _flood(proc.port, "127.0.0.1", 600, 0.5) == 600


# ---------------------------------------------------------------------------- R35 metrics


def test_every_listener_of_the_server_is_on_loopback(server: GuardianProcess) -> None:
    tcp = listeners(server.pid, "tcp")
    udp = listeners(server.pid, "udp")
    assert f"127.0.0.1:{server.port}" in tcp, f"ss did not show our DNS TCP socket: {tcp}"
    assert f"127.0.0.1:{server.metrics_port}" in tcp, f"ss did not show the metrics socket: {tcp}"
    exposed = [a for a in tcp + udp if not is_loopback_address(a)]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def test_metrics_default_listen_address_is_loopback(
    upstream: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No metrics section at all: the built-in default must be 127.0.0.1:9153."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        try:
            probe.bind(("127.0.0.1", 9153))
        except OSError:
            pytest.skip("127.0.0.1:9153 (the default metrics port) is in use on this machine")
    config = f"upstream:\n  servers: [udp://127.0.0.1:{upstream.port}]\n"
    with DefaultMetricsGuardian(config) as proc:
        tcp = listeners(proc.pid, "tcp")
        assert "127.0.0.1:9153" in tcp, f"default metrics listener not found: {tcp}"
        assert [a for a in tcp if not is_loopback_address(a)] == []
        status, body = http_get(9153)
        assert status == 200
        assert "guardian_dns_queries_total" in body


@pytest.mark.parametrize(
    "name",
    [
        "guardian_dns_queries_total",
        "guardian_dns_blocked_total",
        "guardian_dns_upstream_queries_total",
        "guardian_dns_upstream_latency_seconds_bucket",
        "guardian_dns_domains",
        "guardian_dns_snapshot_generation",
        "guardian_dns_cache_entries",
    ],
)
def test_metrics_page_shows_counters(server: GuardianProcess, name: str) -> None:
    status, body = http_get(server.metrics_port)
    assert status == 200
    assert re.search(rf"^{name}[{{ ]", body, re.M), f"{name} missing from /metrics:\n{body}"


@pytest.fixture(scope="module")
def auth_metrics_server(
    upstream: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardianProcess]:
    """A fresh server whose metrics need a user name and password."""
    config = (
        f"upstream:\n  servers: [udp://127.0.0.1:{upstream.port}]\n"
        "blocking:\n  lists: []\n"
        "metrics:\n  listen: 127.0.0.1:${METRICS_PORT}\n  username: u\n  password: p\n"
    )
    with GuardianProcess(config) as proc:
        yield proc


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (None, 401),
        (("u", "wrong"), 401),
        (("x", "p"), 401),
        (("u", "p"), 200),
    ],
    ids=["no-credentials", "wrong-password", "wrong-user", "right-credentials"],
)
def test_metrics_with_credentials_configured_need_them(
    auth_metrics_server: GuardianProcess, auth: tuple[str, str] | None, expected: int
) -> None:
    status, body = http_get(auth_metrics_server.metrics_port, auth=auth)
    assert status == expected
    if expected == 200:
        assert "guardian_dns_queries_total" in body
    else:
        assert "guardian_dns" not in body


@pytest.mark.parametrize("listen", ["0.0.0.0:9999", "[::]:9999", "192.168.1.2:9999"])
def test_check_config_refuses_metrics_open_to_the_lan_without_credentials(
    tmp_path: Path, listen: str
) -> None:
    config = tmp_path / "open-metrics.yaml"
    config.write_text(f'blocking:\n  lists: []\nmetrics:\n  listen: "{listen}"\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "guardian_dns", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert f"{config}:4: metrics.listen:" in result.stderr, result.stderr


def test_check_config_accepts_metrics_open_to_the_lan_with_credentials(tmp_path: Path) -> None:
    config = tmp_path / "open-metrics-auth.yaml"
    config.write_text(
        'blocking:\n  lists: []\nmetrics:\n  listen: "0.0.0.0:9999"\n'
        "  username: admin\n  password: s3cret\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "guardian_dns", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def query_many(port: int, names: list[str], window: int = 64, timeout: float = 2.0) -> int:
    """Send one A query per name over UDP, ``window`` in flight; return how many were answered."""
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        for start in range(0, len(names), window):
            batch = names[start : start + window]
            pending = set()
            for offset, name in enumerate(batch):
                ident = (start + offset) & 0xFFFF
                pending.add(ident)
                sock.sendto(wire.make_query(name, id=ident), ("127.0.0.1", port))
            deadline = time.monotonic() + timeout
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                readable, _, _ = select.select([sock], [], [], remaining)
                if not readable:
                    break
                while True:
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        break
                    ident = struct.unpack_from("!H", data)[0]
                    if ident in pending:
                        pending.discard(ident)
                        answered += 1
    return answered


def test_ten_thousand_random_names_add_no_metric_series(
    auth_metrics_server: GuardianProcess,
) -> None:
    rng = random.Random(35)
    port = auth_metrics_server.port
    creds = ("u", "p")
    # Warm up, so series that appear with the first forwarded query are in the baseline.
    warm = [f"{random_label(rng)}.wild.example.test" for _ in range(200)]
    assert query_many(port, warm) >= 190
    status, body = http_get(auth_metrics_server.metrics_port, auth=creds)
    assert status == 200
    before = series(body)
    names = [f"{random_label(rng)}.wild.example.test" for _ in range(10_000)]
    answered = query_many(port, names)
    assert answered >= 9_500, f"only {answered} of 10000 queries answered"
    status, body = http_get(auth_metrics_server.metrics_port, auth=creds)
    assert status == 200
    after = series(body)
    assert len(after) == len(before), (
        f"metric series went from {len(before)} to {len(after)}; new: {sorted(after - before)[:20]}"
    )
    leaked = [line for line in body.splitlines() if any(n in line for n in names[:500])]
    assert leaked == [], f"queried names appear in /metrics: {leaked[:5]}"


# ---------------------------------------------------------------------------- R36 pipelining


def test_three_queries_in_one_write_get_three_replies_on_one_connection(
    server: GuardianProcess,
) -> None:
    names = {1: WWW, 2: "chain.example.test", 3: BLOCKED}
    client = TcpClient(server.port, "127.0.0.36")
    try:
        client.send(b"".join(wire.frame(wire.make_query(n, id=i)) for i, n in names.items()))
        replies = client.replies(3)
        assert reply_ids(replies) == [1, 2, 3], f"replies: {[r.hex() for r in replies]}"
        for reply in replies:
            parsed = wire.parse_reply(reply)
            assert parsed.question[0].name == names[parsed.id] + ".", parsed.message
        assert not client.closed, "the server closed the connection after pipelined queries"
        # Kept open: a fourth query on the same connection is answered too.
        client.query(wire.make_query(WWW, id=4))
        assert resolves_www(client.reply(), 4), (
            "the connection did not answer after the pipelined three"
        )
    finally:
        client.close()


def test_pipelined_burst_of_64_kilobytes_is_answered_in_full(server: GuardianProcess) -> None:
    names = [WWW, BLOCKED, "chain.example.test"]
    queries = [wire.make_query(names[i % 3], id=i) for i in range(2000)]
    burst = b"".join(wire.frame(q) for q in queries)
    assert len(burst) >= 64 * 1024
    client = TcpClient(server.port, "127.0.0.37")
    try:
        # Read while writing: a client that never reads would rightly be cut off.
        writer = threading.Thread(target=client.send, args=(burst,))
        writer.start()
        replies = client.replies(len(queries), timeout=15)
        writer.join(timeout=15)
        assert reply_ids(replies) == list(range(2000)), (
            f"{len(replies)} of 2000 replies; closed={client.closed}"
        )
    finally:
        client.close()
    assert wire.is_alive(server.port, timeout=0.5)


def test_one_64_kilobyte_message_does_not_break_the_connection(server: GuardianProcess) -> None:
    big = wire.make_query(WWW, id=0x6464)
    big += b"\0" * (65535 - len(big))
    replies, closed = wire.tcp_exchange(
        [big, wire.make_query(WWW, id=0x4343)], server.port, source="127.0.0.38", timeout=3
    )
    assert not closed, "the server closed the connection after a 65535-byte message"
    assert 0x4343 in reply_ids(replies), "the query after a 65535-byte message got no reply"
    assert wire.is_alive(server.port, timeout=0.5)


def test_client_that_half_closes_still_gets_every_answer(
    server: GuardianProcess, upstream: AuthServer
) -> None:
    # A forwarded, slowed-down name is still in flight when the server sees our FIN.
    slow = "halfclose.wild.example.test"
    upstream.set_behaviour(slow, delay=0.3)
    client = TcpClient(server.port, "127.0.0.39")
    try:
        client.send(
            wire.frame(wire.make_query(WWW, id=1))
            + wire.frame(wire.make_query(slow, id=2))
            + wire.frame(wire.make_query(BLOCKED, id=3))
        )
        client.sock.shutdown(socket.SHUT_WR)
        replies = client.replies(3, timeout=3)
        assert reply_ids(replies) == [1, 2, 3], f"after half-close got {reply_ids(replies)}"
        assert client.wait_closed(3) is not None, "the server did not close after the answers"
    finally:
        client.close()
        upstream.clear_behaviour(slow)


# ---------------------------------------------------------------------------- R37 idle


def test_idle_and_slow_connections_are_closed_while_udp_stays_fast(
    server: GuardianProcess,
) -> None:
    idle = TcpClient(server.port, "127.0.0.40", timeout=10)
    slow = TcpClient(server.port, "127.0.0.41", timeout=10)
    slow_closed_after: list[float | None] = []
    message = wire.frame(wire.make_query(WWW))

    def trickle() -> None:
        """One byte per second of a valid query: never a complete message in time."""
        start = time.monotonic()
        for byte in message:
            try:
                slow.send(bytes([byte]))
            except OSError:
                break
            # Time must pass here: the point is a client slower than the deadline.
            readable, _, _ = select.select([slow.sock], [], [], 1.0)
            if readable:
                break
        slow.wait_closed(6)
        slow_closed_after.append(time.monotonic() - start if slow.closed else None)

    sender = threading.Thread(target=trickle)
    sender.start()
    latencies = []
    try:
        idle_start = time.monotonic()
        while time.monotonic() - idle_start < IDLE_TIMEOUT + 1.0:
            begin = time.monotonic()
            reply = wire.udp_exchange(wire.make_query(WWW, id=0x3737), server.port, timeout=1)
            latencies.append(time.monotonic() - begin if resolves_www(reply, 0x3737) else 1.0)
            select.select([], [], [], 0.1)  # pacing the probes, not waiting for readiness
        idle_closed = idle.wait_closed(IDLE_TIMEOUT + 3)
        idle_after = time.monotonic() - idle_start if idle_closed is not None else None
        sender.join(timeout=10)
    finally:
        idle.close()
        slow.close()
    assert idle_after is not None, "an idle TCP connection was never closed"
    assert IDLE_TIMEOUT - 0.5 <= idle_after <= IDLE_TIMEOUT + 2.0, (
        f"idle connection closed after {idle_after:.2f} s (tcp_idle_timeout {IDLE_TIMEOUT})"
    )
    assert slow_closed_after and slow_closed_after[0] is not None, (
        "a 1-byte-per-second sender was never closed"
    )
    assert slow_closed_after[0] <= IDLE_TIMEOUT + 2.0, (
        f"the 1-byte-per-second sender was closed only after {slow_closed_after[0]:.2f} s"
    )
    fast = sum(1 for t in latencies if t < 0.1)
    assert fast >= 0.8 * len(latencies), f"UDP latencies meanwhile (s): {latencies}"


def test_connection_is_closed_at_idle_timeout_after_its_last_answer(
    server: GuardianProcess,
) -> None:
    client = TcpClient(server.port, "127.0.0.42", timeout=10)
    try:
        client.query(wire.make_query(WWW, id=0x4242))
        assert resolves_www(client.reply(), 0x4242)
        closed_after = client.wait_closed(IDLE_TIMEOUT + 3)
    finally:
        client.close()
    assert closed_after is not None, "a TCP connection stayed open after its last answer"
    assert IDLE_TIMEOUT - 0.5 <= closed_after <= IDLE_TIMEOUT + 2.0, closed_after


# ---------------------------------------------------------------------------- R38 caps


def test_connection_over_the_per_client_cap_is_refused_until_one_closes(
    server: GuardianProcess,
) -> None:
    source = "127.0.0.43"
    clients = [TcpClient(server.port, source) for _ in range(PER_CLIENT)]
    extra: TcpClient | None = None
    try:
        for i, client in enumerate(clients):
            client.query(wire.make_query(WWW, id=i))
            assert resolves_www(client.reply(), i), f"connection {i} unanswered"

        extra = TcpClient(server.port, source)
        try:
            extra.query(wire.make_query(WWW, id=99))
        except OSError:
            extra.closed = True
        got = extra.replies(1, timeout=1.0)
        assert got == [] and extra.wait_closed(1.0) is not None, (
            f"connection {PER_CLIENT + 1} from one client was served (cap {PER_CLIENT})"
        )
        # Another address is not affected by this client's cap.
        replies, _ = wire.tcp_exchange([wire.make_query(WWW)], server.port, source="127.0.0.44")
        assert len(replies) == 1, "another client was refused because of this client's cap"

        clients.pop().close()
        # The server learns of the close asynchronously: retry briefly until the slot is free.
        deadline = time.monotonic() + 3
        answered = False
        while not answered and time.monotonic() < deadline:
            replies, _ = wire.tcp_exchange(
                [wire.make_query(WWW, id=7)], server.port, source=source, timeout=0.5
            )
            answered = bool(replies) and resolves_www(replies[0], 7)
        assert answered, "after closing one connection, a new one from the client was refused"
        # The connections that were accepted all along still work.
        for i, client in enumerate(clients):
            client.query(wire.make_query(WWW, id=100 + i))
            assert resolves_www(client.reply(), 100 + i)
    finally:
        for client in clients:
            client.close()
        if extra is not None:
            extra.close()


# ---------------------------------------------------------------------------- R39 framing


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x0b" + wire.unhex("4242010000010000000000"), id="length-11"),
        pytest.param(b"\x00\x00", id="length-0"),
        pytest.param(wire.frame(RESPONSE_AS_QUERY), id="response-as-query"),
    ],
)
def test_framing_error_closes_the_connection_at_once(
    server: GuardianProcess, payload: bytes
) -> None:
    client = TcpClient(server.port, "127.0.0.45")
    try:
        client.send(payload)
        closed_after = client.wait_closed(1.5)
        assert closed_after is not None, "a framing error left the connection open"
        assert closed_after < 0.5, f"closed only after {closed_after:.2f} s"
        assert client.replies(1, timeout=0) == [], "the server answered a framing error"
    finally:
        client.close()
    assert wire.is_alive(server.port, timeout=0.5)


def test_incomplete_65535_byte_message_is_closed_at_the_idle_deadline(
    server: GuardianProcess,
) -> None:
    client = TcpClient(server.port, "127.0.0.46", timeout=10)
    try:
        client.send(b"\xff\xff" + b"\x42" * 100)
        closed_after = client.wait_closed(IDLE_TIMEOUT + 3)
    finally:
        client.close()
    assert closed_after is not None, "a connection holding half a message was never closed"
    assert IDLE_TIMEOUT - 0.5 <= closed_after <= IDLE_TIMEOUT + 2.0, closed_after
    assert wire.is_alive(server.port, timeout=0.5)


def bad_prefix_connections(port: int, count: int) -> int:
    """Open ``count`` connections that each send length 11 + 11 bytes; return how many closed.

    Stops at the first connection left open, so a server that never closes fails in 1 s, not 1000.
    """
    closed = 0
    payload = b"\x00\x0b" + wire.unhex("4242010000010000000000")
    for attempt in range(count):
        if closed < attempt:
            break
        client = TcpClient(port, "127.0.0.47")
        try:
            client.send(payload)
            if client.wait_closed(1.0) is not None:
                closed += 1
        except OSError:
            closed += 1
        finally:
            client.close()
    return closed


def test_a_thousand_framing_errors_leak_no_fds_or_memory(server: GuardianProcess) -> None:
    pid = server.pid
    bad_prefix_connections(server.port, 100)  # warm-up: buffers and memos reach steady state
    fds_before, rss_before = open_fds(pid), rss_kib(pid)
    closed = bad_prefix_connections(server.port, 1000)
    fds_after, rss_after = open_fds(pid), rss_kib(pid)
    assert closed == 1000, f"only {closed} of 1000 bad-prefix connections were closed"
    assert fds_after <= fds_before + 4, f"open fds grew from {fds_before} to {fds_after}"
    assert rss_after <= rss_before + 4096, f"RSS grew from {rss_before} KiB to {rss_after} KiB"
    assert wire.is_alive(server.port, timeout=0.5)


def test_blocked_name_over_tcp_gets_the_block_answer(server: GuardianProcess) -> None:
    """The TCP path runs the same filter as UDP (sanity check for the fixtures above)."""
    replies, _ = wire.tcp_exchange([wire.make_query(BLOCKED, id=9, edns=1232)], server.port)
    assert replies, "no TCP answer for a blocked name"
    parsed = wire.parse_reply(replies[0])
    assert parsed.rcode_text == "NXDOMAIN"
    assert parsed.opt is not None and EDE_BLOCKED in parsed.opt.ede_codes
