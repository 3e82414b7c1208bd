"""Direct subscriptions against a real HTTP server on 127.0.0.1 (R40-R42 for plain-URL lists).

A tiny ``http.server`` in a thread serves one list with an ETag and Last-Modified, answers a
matching conditional GET with 304, and can be told to fail with 500, cut the body, announce a
wrong Content-Length, serve a huge body, or gzip its answer. The client is the real ``fetch``
with a real ``requests`` session (``trust_env`` off, so no proxy setting can send a test off the
machine). What must hold: a good list lands whole and is then kept current with 304s; every bad
answer is refused with its code and leaves the local copy byte-identical; SIGKILL at any moment
of a fetch leaves the old or the new complete copy, and the next fetch clears the temporaries.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import os
import random
import resource
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests

from guardian_dns.subscribe import Subscription, fetch, local_copy, status

ROOT = Path(__file__).resolve().parents[2]


def domains(n: int, prefix: str = "ads") -> bytes:
    return "".join(f"{prefix}{i}.example.com\n" for i in range(n)).encode()


@dataclass
class Knobs:
    """What the server does next; the test changes it between fetches."""

    bodies: list[bytes] = field(default_factory=lambda: [domains(200)])
    rotate: bool = False  # serve the next body of ``bodies`` on each request
    fail: int = 0  # answer this many requests with 500 (-1: all of them)
    cut: bool = False  # chunked, and the connection closes halfway without the last chunk
    wrong_length: int = 0  # add this to the announced Content-Length
    huge: int = 0  # stream this many bytes with no Content-Length
    announce: int = 0  # announce this Content-Length (and send nothing)
    gzip: bool = False  # Content-Encoding: gzip
    etag: bool = True
    last_modified: bool = True
    seen: list[dict[str, str]] = field(default_factory=list)
    served: int = 0  # 200 answers so far


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    knobs: Knobs

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        k = self.knobs
        k.seen.append(dict(self.headers.items()))
        if k.fail:
            k.fail -= k.fail > 0
            self._send(500, b"oops\n")
            return
        body = k.bodies[(len(k.seen) - 1) % len(k.bodies)] if k.rotate else k.bodies[-1]
        tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        modified = formatdate(1_700_000_000 + len(body), usegmt=True)
        if k.etag and self.headers.get("If-None-Match") == tag:
            self._send(304, b"", {"ETag": tag})
            return
        if not k.etag and k.last_modified and self.headers.get("If-Modified-Since") == modified:
            self._send(304, b"")
            return
        k.served += 1
        headers = {}
        if k.etag:
            headers["ETag"] = tag
        if k.last_modified:
            headers["Last-Modified"] = modified
        if self.path.endswith(".gz"):
            body = gzip.compress(body)
        if k.gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        try:
            if k.huge:
                self._stream_huge(k.huge)
            elif k.announce:
                self._send(200, b"", {**headers, "Content-Length": str(k.announce)}, head=True)
                self.close_connection = True
            elif k.cut:
                self._send_cut(body, headers)
            else:
                headers["Content-Length"] = str(len(body) + k.wrong_length)
                self._send(200, body, headers)
                if k.wrong_length:
                    self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up, as it should

    def _send(
        self, code: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        self.send_response(code)
        headers = dict(headers or {})
        if not head and code != 304:
            headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _send_cut(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
            self.send_header(key, value)
        self.end_headers()
        half = body[: len(body) // 2]
        self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
        self.wfile.flush()
        self.close_connection = True  # no terminating 0-length chunk: the body is cut

    def _stream_huge(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        line = b"x" * 63 + b"\n"
        block = line * 1024
        sent = 0
        while sent < size:
            self.wfile.write(block)
            sent += len(block)
        self.close_connection = True


class ListServer:
    """The list server on 127.0.0.1 and an ephemeral port, stopped on exit; HTTPS when given a
    certificate chain and key (PEM files)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.knobs = Knobs()
        handler = type("Handler", (_Handler,), {"knobs": self.knobs})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/hosts.txt") -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> ListServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[ListServer]:
    with ListServer() as s:
        yield s


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False  # never a proxy from the environment: loopback only
        yield s


def _sub(server: ListServer, path: str = "/hosts.txt", **kw: Any) -> Subscription:
    kw.setdefault("min_lines", 50)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("read_timeout", 10)
    return Subscription(server.url(path), "ads", **kw)


def _temporaries(state: Path) -> list[str]:
    return [n for n in os.listdir(state / "subscriptions") if n.endswith(".tmp")]


def test_first_fetch_then_304_with_if_none_match(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    sub = _sub(server)
    first = fetch(sub, tmp_path, session=session)
    assert first.ok and first.outcome == "updated" and first.entries == 200
    assert any("no integrity" in w for w in first.warnings)  # http:// on loopback
    copy = local_copy(sub, tmp_path)
    assert copy is not None and copy.read_bytes() == server.knobs.bodies[-1]
    assert "If-None-Match" not in server.knobs.seen[0]

    second = fetch(sub, tmp_path, session=session)
    assert second.ok and second.outcome == "unchanged" and second.http_status == 304
    assert server.knobs.seen[1]["If-None-Match"].startswith('"')
    assert server.knobs.seen[1]["If-Modified-Since"].endswith("GMT")
    assert server.knobs.served == 1
    assert status(sub, tmp_path, 0)["etag"] is True


def test_last_modified_alone_gives_a_304(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    server.knobs.etag = False
    sub = _sub(server)
    assert fetch(sub, tmp_path, session=session).outcome == "updated"
    result = fetch(sub, tmp_path, session=session)
    assert result.outcome == "unchanged" and result.http_status == 304
    assert "If-None-Match" not in server.knobs.seen[1]


def test_a_changed_list_replaces_the_copy_and_keeps_prev(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    sub = _sub(server)
    old = server.knobs.bodies[-1]
    fetch(sub, tmp_path, session=session)
    new = domains(250, "tracker")
    server.knobs.bodies.append(new)
    result = fetch(sub, tmp_path, session=session)
    assert result.ok and result.outcome == "updated" and result.entries == 250
    copy = local_copy(sub, tmp_path)
    assert copy is not None and copy.read_bytes() == new
    assert copy.with_name(copy.name + ".prev").read_bytes() == old
    assert server.knobs.seen[1].get("If-None-Match")  # it asked conditionally, and got 200
    assert _temporaries(tmp_path) == []


def test_a_shrunk_list_is_refused_and_the_old_copy_stays_byte_identical(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    sub = _sub(server)
    fetch(sub, tmp_path, session=session)
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    before = copy.read_bytes()
    server.knobs.bodies.append(domains(60, "few"))
    result = fetch(sub, tmp_path, session=session)
    assert result.error is not None and result.error.code == "shrink"
    assert sub.url in result.error.message
    assert copy.read_bytes() == before
    assert status(sub, tmp_path, 0)["last_error"]["code"] == "shrink"
    forced = fetch(sub, tmp_path, session=session, force=True)
    assert forced.ok and forced.entries == 60


@pytest.mark.parametrize("how", ["cut", "wrong_length"])
def test_a_truncated_body_is_refused_and_retried(
    server: ListServer, session: requests.Session, tmp_path: Path, how: str
) -> None:
    sub = _sub(server, retries=2)
    fetch(sub, tmp_path, session=session)
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    before = copy.read_bytes()
    server.knobs.bodies.append(domains(400, "more"))
    if how == "cut":
        server.knobs.cut = True
    else:
        server.knobs.wrong_length = 1000
    result = fetch(sub, tmp_path, session=session)
    assert result.error is not None and result.error.code == "http"
    assert sub.url in result.error.message and result.attempts == 3
    assert copy.read_bytes() == before
    assert _temporaries(tmp_path) == []


def test_too_large_is_refused_whether_announced_or_streamed(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    sub = _sub(server, max_bytes=1 << 20)
    server.knobs.announce = 10 << 20
    result = fetch(sub, tmp_path, session=session)
    assert result.error is not None and result.error.code == "too_large"
    assert "announced" in result.error.message and result.attempts == 1

    server.knobs.announce = 0
    server.knobs.huge = 10 << 20  # ten times the cap, no Content-Length
    result = fetch(sub, tmp_path, session=session)
    assert result.error is not None and result.error.code == "too_large"
    assert local_copy(sub, tmp_path) is None and _temporaries(tmp_path) == []


def test_500_is_retried_then_reported(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    sub = _sub(server, retries=2)
    server.knobs.fail = 2  # two failures, then a good answer
    result = fetch(sub, tmp_path, session=session)
    assert result.ok and result.attempts == 3 and len(server.knobs.seen) == 3

    server.knobs.fail = -1
    server.knobs.bodies.append(domains(300, "new"))
    result = fetch(sub, tmp_path, session=session)
    assert result.error is not None and result.error.code == "http"
    assert "HTTP 500" in result.error.message and sub.url in result.error.message
    assert result.attempts == 3 and len(server.knobs.seen) == 6
    assert result.entries == 200  # the copy in force is still the first one


def test_gzip_content_encoding_and_a_gz_url(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    server.knobs.gzip = True
    sub = _sub(server)
    result = fetch(sub, tmp_path, session=session)
    assert result.ok and result.entries == 200
    assert server.knobs.seen[0]["Accept-Encoding"] == "gzip"
    copy = local_copy(sub, tmp_path)
    assert copy is not None and copy.read_bytes() == server.knobs.bodies[-1]

    server.knobs.gzip = False
    gz = _sub(server, "/hosts.txt.gz")
    result = fetch(gz, tmp_path, session=session)
    assert result.ok and result.entries == 200
    copy = local_copy(gz, tmp_path)
    assert copy is not None and copy.read_bytes() == server.knobs.bodies[-1]


def test_a_full_disk_is_reported_and_the_old_copy_kept(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    """RLIMIT_FSIZE in a child process stands in for a full disk: writes past it fail (EFBIG)."""
    sub = _sub(server)
    fetch(sub, tmp_path, session=session)
    copy = local_copy(sub, tmp_path)
    assert copy is not None
    before = copy.read_bytes()
    server.knobs.bodies.append(domains(20000, "big"))  # about 400 KB

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    code = (
        "import sys, requests\n"
        "from guardian_dns.subscribe import Subscription, fetch\n"
        "s = requests.Session(); s.trust_env = False\n"
        f"r = fetch(Subscription({sub.url!r}, 'ads', min_lines=50), {str(tmp_path)!r}, session=s)\n"
        "print(r.error.code if r.error else 'ok'); print(r.error.message if r.error else '')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert proc.returncode == 0, proc.stderr
    code_line, message = proc.stdout.splitlines()[:2]
    assert code_line == "disk" and sub.url in message
    assert copy.read_bytes() == before
    assert _temporaries(tmp_path) == []


def _make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a leaf for 127.0.0.1 signed by it: (ca, leaf chain, leaf key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("subscription test CA"))
        .issuer_name(name("subscription test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, chain, key_path = directory / "ca.pem", directory / "leaf.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    chain.write_bytes(leaf.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, chain, key_path


def test_https_with_a_ca_file_and_a_refused_unknown_certificate(
    session: requests.Session, tmp_path: Path
) -> None:
    ca, chain, key = _make_tls(tmp_path)
    with ListServer(tls=(chain, key)) as server:
        sub = _sub(server, ca_file=str(ca))
        result = fetch(sub, tmp_path / "state", session=session)
        assert result.ok and result.entries == 200 and result.warnings == ()
        assert fetch(sub, tmp_path / "state", session=session).http_status == 304

        untrusted = _sub(server, "/other.txt", retries=3)  # the system CAs do not know it
        result = fetch(untrusted, tmp_path / "state", session=session)
        assert result.error is not None and result.error.code == "http"
        assert "TLS" in result.error.message and result.attempts == 1  # never retried
        assert local_copy(untrusted, tmp_path / "state") is None


_LOOP = """
import sys, requests
from guardian_dns.subscribe import Subscription, fetch
s = requests.Session(); s.trust_env = False
sub = Subscription(sys.argv[1], "ads", min_lines=50, max_shrink=1.0, backoff=0.01)
while True:
    r = fetch(sub, sys.argv[2], session=s)
    print(r.outcome, r.error.code if r.error else "", flush=True)
"""


def test_sigkill_during_fetch_never_leaves_a_partial_copy(
    server: ListServer, session: requests.Session, tmp_path: Path
) -> None:
    """R42: a child fetches in a loop while the server alternates two lists; it is killed ten
    times at random moments. The copy is always one of the two lists, whole."""
    a, b = domains(60_000, "alpha"), domains(80_000, "beta")
    server.knobs.bodies = [a, b]
    server.knobs.rotate = True
    sub = _sub(server)
    copy = tmp_path / "subscriptions" / f"{sub.name}.list"
    prev = copy.with_name(copy.name + ".prev")
    rng = random.Random(6)
    seen_temporaries = 0
    stderr_path = tmp_path / "child-stderr.txt"  # the plain-http warning, every fetch
    for _ in range(10):
        stderr = stderr_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, sub.url, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for _ in range(rng.randint(1, 2)):  # readiness: a fetch finished (or failed)
                line = proc.stdout.readline()
                assert line, f"the fetch loop died: {stderr_path.read_text()[-2000:]}"
                assert line.split()[0] != "failed", line
            threading.Event().wait(rng.uniform(0, 0.25))  # somewhere inside the next fetch
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            stderr.close()
            if proc.stdout is not None:
                proc.stdout.close()
        assert copy.read_bytes() in (a, b)
        if prev.exists():
            assert prev.read_bytes() in (a, b)
        seen_temporaries += len(_temporaries(tmp_path))
    # The next fetch clears what the kills left, and finds a usable state.
    result = fetch(sub, tmp_path, session=session)
    assert result.ok, result.error
    assert _temporaries(tmp_path) == []
    assert copy.read_bytes() in (a, b)
    print(f"temporaries left by the kills along the way: {seen_temporaries}")
