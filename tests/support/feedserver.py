"""A real HTTP(S) feed server on loopback, with knobs to misbehave, and a builder of test feeds.

What it decides: the response to each GET of a file under its root directory -- normally the file
with ``Content-Length``, an ``ETag`` and ``Last-Modified`` (and 304 to a matching conditional
GET) -- or, for a path given a ``Misbehave`` rule, a flipped byte, a body cut after N bytes, a
wrong ``Content-Length``, another file's bytes, a status (500, 304, 404...), a stall.
What it reads: HTTP requests on one port of 127.0.0.1; the files under ``root``.
What it must never do: bind anything but 127.0.0.1, serve a path outside ``root``, or keep a
stalled handler alive after ``stop``.

Usage::

    with FeedServer(feed_dir) as server:
        server.misbehave("/lists/adult.txt", flip=10)
        sync(FeedConfig(url=server.url, keys=(pub,)), state_dir)
        assert server.count("/manifest.json") == 1

``FeedServer(root, tls=TlsFiles)`` serves HTTPS with a certificate made by ``make_tls`` (a test
CA and a leaf for 127.0.0.1): point the client's ``ca_file`` at ``TlsFiles.ca``.

``write_feed`` writes a signed feed directory (manifest, signature, list files) from list texts
with ``guardian_dns.feedsign``, with hooks to write what a broken or hostile publisher would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import json
import os
import posixpath
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from guardian_dns import feedsign, lists

__all__ = [
    "FeedServer",
    "Misbehave",
    "RequestRecord",
    "TestList",
    "TlsFiles",
    "make_tls",
    "rfc3339",
    "write_feed",
]

HOST: Final = "127.0.0.1"
_CHUNK: Final = 64 * 1024


@dataclass
class Misbehave:
    """What to do instead of serving a path normally. Every field set applies at once.

    ``times`` limits the rule to the next N requests of the path (None: until cleared).
    """

    status: int | None = None  # answer with this status and an empty body
    flip: int | None = None  # XOR 0xFF the byte at this offset (Content-Length stays right)
    cut_after: int | None = None  # send the true Content-Length, then only N bytes, then close
    content_length: int | None = None  # send this Content-Length (the body is unchanged)
    no_length: bool = False  # no Content-Length: the body ends when the connection closes
    serve: str | None = None  # serve the bytes of this other path under root
    body: bytes | None = None  # serve these bytes
    stall: float | None = None  # wait this long after the headers before the body
    drip: float | None = None  # send the body one byte at a time, this many seconds apart
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    times: int | None = None


@dataclass
class RequestRecord:
    """One request as the server saw it, and what it sent back."""

    path: str
    headers: dict[str, str]
    status: int = 0
    bytes_sent: int = 0
    done: bool = False


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: str
    cert: str
    key: str


def make_tls(directory: str | Path) -> TlsFiles:
    """Generate a CA and a leaf certificate for 127.0.0.1/localhost under ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardian-dns test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
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
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca=str(directory / "ca.pem"),
        cert=str(directory / "cert.pem"),
        key=str(directory / "key.pem"),
    )
    Path(files.ca).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(files.cert).write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    Path(files.key).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: a cut body is a closed socket

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # here, in the handler's thread, not in accept()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the record says it all
        pass

    def do_GET(self) -> None:
        self.server.owner._serve(self)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: FeedServer
    tls_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a cap reached, a rejected certificate) is not a test failure.
        pass


class FeedServer:
    """A threaded HTTP(S) server on 127.0.0.1:0 serving ``root``, with per-path misbehaviour."""

    def __init__(self, root: str | Path, *, tls: TlsFiles | None = None) -> None:
        self.root = Path(root).resolve()
        self.tls = tls
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._rules: dict[str, Misbehave] = {}
        self._stop = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.records: list[RequestRecord] = []
        self.port = 0

    # -- lifecycle --

    def __enter__(self) -> FeedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        server = _HTTPServer((HOST, 0), _Handler)
        server.owner = self
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls.cert, self.tls.key)
            server.tls_context = ctx
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{HOST}:{self.port}/"

    # -- knobs --

    def misbehave(self, path: str, **rule: Any) -> None:
        """Apply a ``Misbehave`` rule to ``path`` (``/lists/x.txt``) from the next request on."""
        with self._lock:
            self._rules[path] = Misbehave(**rule)

    def behave(self, path: str | None = None) -> None:
        """Serve ``path`` (every path when None) normally again."""
        with self._lock:
            if path is None:
                self._rules.clear()
            else:
                self._rules.pop(path, None)

    # -- the record --

    def requests_for(self, path: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.records if r.path == path]

    def count(self, path: str) -> int:
        return len(self.requests_for(path))

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.records]

    def clear_records(self) -> None:
        with self._lock:
            self.records.clear()

    def wait_for_request(self, path: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``path`` has been requested ``count`` times (True), or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(r.path == path for r in self.records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_done(self, record: RequestRecord, timeout: float = 10.0) -> bool:
        """Block until the server has finished (or given up) answering ``record``."""
        with self._cond:
            return self._cond.wait_for(lambda: record.done, timeout)

    # -- serving --

    def _file(self, path: str) -> bytes | None:
        rel = posixpath.normpath(urllib.parse.unquote(path)).lstrip("/")
        if rel.startswith("..") or rel == ".":
            return None
        full = (self.root / rel).resolve()
        if not full.is_relative_to(self.root) or not full.is_file():
            return None
        return full.read_bytes()

    def _rule(self, path: str) -> Misbehave | None:
        with self._lock:
            rule = self._rules.get(path)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    del self._rules[path]
            return rule

    def _serve(self, h: _Handler) -> None:
        path = urllib.parse.urlsplit(h.path).path
        record = RequestRecord(path, {k: v for k, v in h.headers.items()})
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()
        try:
            self._respond(h, path, record)
        finally:
            with self._cond:
                record.done = True
                self._cond.notify_all()

    def _respond(self, h: _Handler, path: str, record: RequestRecord) -> None:
        rule = self._rule(path) or Misbehave()
        if rule.status is not None:
            record.status = rule.status
            h.send_response(rule.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if rule.body is not None:
            data: bytes | None = rule.body
        else:
            data = self._file(rule.serve or path)
        if data is None:
            record.status = 404
            h.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if rule.flip is not None and rule.flip < len(data):
            data = data[: rule.flip] + bytes([data[rule.flip] ^ 0xFF]) + data[rule.flip + 1 :]
        if h.headers.get("If-None-Match") == etag:
            record.status = 304
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()
            return
        record.status = 200
        h.send_response(200)
        if not rule.no_length:
            length = rule.content_length if rule.content_length is not None else len(data)
            h.send_header("Content-Length", str(length))
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("ETag", etag)
        h.send_header("Last-Modified", formatdate(time.time() - 60, usegmt=True))
        for k, v in rule.headers.items():
            h.send_header(k, v)
        h.end_headers()
        if rule.stall is not None and self._stop.wait(rule.stall):
            return
        body = data if rule.cut_after is None else data[: rule.cut_after]
        step = 1 if rule.drip is not None else _CHUNK
        try:
            for i in range(0, len(body), step):
                h.wfile.write(body[i : i + step])
                record.bytes_sent += len(body[i : i + step])
                if rule.drip is not None:
                    h.wfile.flush()
                    if self._stop.wait(rule.drip):
                        return
            h.wfile.flush()
        except OSError:  # the client hung up (a cap reached): exactly what some tests want
            return
        if rule.cut_after is not None:
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)


# --- test feeds --------------------------------------------------------------------------------


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TestList:
    """One list of a test feed: its text and how the manifest describes it."""

    __test__ = False  # not a pytest test class

    name: str
    text: str | bytes
    category: str = "adult"
    format: str = "domains"
    gzip: bool = False
    entry: Mapping[str, Any] = field(default_factory=dict)  # manifest fields to override
    # The file's bytes, if not ``text`` (gzipped when ``gzip``); the manifest's size and
    # sha256 describe them, its uncompressed_size and entries still describe ``text``.
    served: bytes | None = None


def _entries(text: bytes, fmt: str) -> int:
    summary = lists.parse_text_stream(text.decode("utf-8", "replace"), fmt=fmt)
    return summary.blocked + summary.allowed + len(summary.regexes)


def write_feed(
    root: str | Path,
    test_lists: Sequence[TestList],
    *,
    serial: int,
    key: feedsign.SecretKey,
    issued: float | None = None,
    expires: float | None = None,
    extra: Mapping[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Write a signed feed into ``root`` (replacing the manifest, adding list files); returns
    the manifest document. ``extra`` adds top-level keys; ``edit`` changes the document just
    before it is signed (what a hostile or broken publisher would sign)."""
    root = Path(root)
    (root / "lists").mkdir(parents=True, exist_ok=True)
    t = time.time()
    items = []
    for tl in test_lists:
        raw = tl.text.encode() if isinstance(tl.text, str) else tl.text
        served = gzip.compress(raw, mtime=0) if tl.gzip else raw
        if tl.served is not None:
            served = tl.served
        url = f"lists/{tl.name}-{hashlib.sha256(served).hexdigest()[:12]}.txt" + (
            ".gz" if tl.gzip else ""
        )
        item = {
            "name": tl.name,
            "category": tl.category,
            "format": tl.format,
            "url": url,
            "size": len(served),
            "sha256": hashlib.sha256(served).hexdigest(),
            "encoding": "gzip" if tl.gzip else "identity",
            "uncompressed_size": len(raw),
            "entries": _entries(raw, tl.format),
        }
        item.update(tl.entry)
        (root / url).write_bytes(served)
        items.append(item)
    doc: dict[str, Any] = {
        "format": "guardian-dns feed",
        "version": 1,
        "serial": serial,
        "issued": rfc3339(t - 60 if issued is None else issued),
        "expires": rfc3339(t + 7 * 86400 if expires is None else expires),
        "lists": items,
        **(extra or {}),
    }
    if edit is not None:
        edit(doc)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    sig = feedsign.sign(data, key, f"timestamp:{int(t)}\tfile:manifest.json\tserial:{serial}")
    for name, content in (("manifest.json.minisig", sig.encode()), ("manifest.json", data)):
        tmp = root / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, root / name)
    return doc
