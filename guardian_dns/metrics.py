"""Prometheus metrics: plain counters on the hot path, read by a Collector only at scrape time.

What it decides: what is exported and who may read it.
What it reads: the pipeline's, listener's and upstream's plain counters (ints read across threads
are safe in CPython; a scrape may see a counter one query behind, which Prometheus tolerates).
What it must never do: take a lock or call prometheus_client on the query path, label a series by
domain or client (cardinality, and children's browsing in an unauthenticated endpoint), or listen
beyond loopback without authentication (the config loader refuses that combination).
"""

from __future__ import annotations

import base64
import hmac
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from guardian_dns.upstream import LATENCY_BUCKETS

log = logging.getLogger(__name__)


class GuardianCollector:
    """Reads the live server's counters through ``source`` (the server object) at scrape time."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        srv = self.source()
        if srv is None:
            return
        from guardian_dns.pipeline import REASONS

        p = srv.pipeline
        snap = p.snap
        q = CounterMetricFamily(
            "guardian_dns_queries", "Queries answered, by reason.", labels=["reason"]
        )
        for i, name in enumerate(REASONS):
            q.add_metric([name], p.counts[i])
        yield q
        b = CounterMetricFamily(
            "guardian_dns_blocked", "Blocked answers, by category.", labels=["category"]
        )
        for i, cat in enumerate(snap.categories):
            b.add_metric([cat], p.blocked_by_category[i])
        yield b
        m = CounterMetricFamily(
            "guardian_dns_malformed", "Malformed queries, by reason.", labels=["reason"]
        )
        for reason, n in sorted(p.malformed.items()):
            m.add_metric([reason], n)
        yield m
        d = CounterMetricFamily(
            "guardian_dns_dropped", "Packets or connections dropped, by reason.", labels=["reason"]
        )
        for reason, n in sorted(srv.listener_stats.dropped.items()):
            d.add_metric([reason], n)
        yield d
        yield GaugeMetricFamily("guardian_dns_cache_entries", "Answers in the cache.", len(p.cache))
        yield CounterMetricFamily(
            "guardian_dns_cache_evictions", "Cache entries evicted (LRU).", p.cache.evictions
        )
        yield CounterMetricFamily(
            "guardian_dns_coalesced", "Queries that joined an identical one in flight.", p.coalesced
        )
        us = p.upstream.stats
        yield CounterMetricFamily(
            "guardian_dns_upstream_queries", "Attempts sent to upstream servers.", us.queries
        )
        ue = CounterMetricFamily(
            "guardian_dns_upstream_errors", "Failed upstream attempts, by kind.", labels=["kind"]
        )
        for kind, n in sorted(us.errors.items()):
            ue.add_metric([kind], n)
        yield ue
        yield CounterMetricFamily(
            "guardian_dns_upstream_tcp_retries",
            "Upstream answers truncated over UDP and asked again over TCP.",
            us.tc_retries,
        )
        yield CounterMetricFamily(
            "guardian_dns_upstream_mismatched",
            "Upstream replies dropped because they did not match the question.",
            us.mismatched,
        )
        buckets = []
        acc = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), us.latency_counts, strict=True):
            acc += n
            buckets.append((str(bound) if bound != float("inf") else "+Inf", acc))
        h = HistogramMetricFamily(
            "guardian_dns_upstream_latency_seconds", "Time to a usable upstream answer."
        )
        h.add_metric([], buckets, us.latency_sum)
        yield h
        lg = GaugeMetricFamily(
            "guardian_dns_list_domains",
            "Rules loaded per list (blocks; for an allowlist, allows).",
            labels=["list", "category", "action"],
        )
        li = GaugeMetricFamily(
            "guardian_dns_list_invalid_lines",
            "Lines of a list skipped as unusable (bad names, IPs, bare TLDs, unknown syntax).",
            labels=["list", "category", "action"],
        )
        for info in snap.lists:
            labels = [info.source.rsplit("/", 1)[-1], info.category, info.action]
            lg.add_metric(labels, info.entries)
            li.add_metric(labels, info.warnings)
        yield lg
        yield li
        yield GaugeMetricFamily("guardian_dns_domains", "Distinct domains in force.", snap.domains)
        yield GaugeMetricFamily(
            "guardian_dns_snapshot_generation", "Configuration generation in force.", snap.gen
        )
        r = CounterMetricFamily("guardian_dns_reloads", "Reloads, by result.", labels=["result"])
        for result, n in sorted(srv.reloads.items()):
            r.add_metric([result], n)
        yield r
        sy = CounterMetricFamily(
            "guardian_dns_sync",
            "Feed and subscription syncs, by result (ok or the error code).",
            labels=["result"],
        )
        for result, n in sorted(srv.syncs.items()):
            sy.add_metric([result], n)
        yield sy
        yield from _feed_metrics(srv)


def _feed_metrics(srv: Any) -> Iterator[Metric]:
    """Age of the feed's lists in force: a board that cannot reach its feed shows it here."""
    from guardian_dns import feed
    from guardian_dns.sources import feed_config

    cfg = feed_config(srv.config)
    if cfg is None:
        return
    try:
        st = feed.status(srv.state_dir, cfg, time.time())
    except Exception:  # a scrape must never fail on a damaged state file
        return
    age = GaugeMetricFamily(
        "guardian_dns_feed_list_age_seconds",
        "Seconds since each feed list in force was fetched.",
        labels=["list", "category"],
    )
    for item in st["lists"]:
        age.add_metric([item["name"], item["category"]], item["age_seconds"])
    yield age
    yield GaugeMetricFamily(
        "guardian_dns_feed_stale",
        "1 when the feed's lists are older than feed.max_age (or absent), else 0.",
        1 if st["stale"] else 0,
    )
    if st["serial"] is not None:
        yield GaugeMetricFamily("guardian_dns_feed_serial", "Feed serial in force.", st["serial"])


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """A small HTTP server for /metrics, with optional HTTP basic authentication."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        username: str | None,
        password: str | None,
    ) -> None:
        expected = None
        if username is not None and password is not None:
            expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if expected is not None:
                    got = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(got.encode(), expected.encode()):
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="guardian-dns"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # no log line per scrape

        bare = host.strip("[]")
        server_cls = _HTTPServer6 if ":" in bare else _HTTPServer
        self.httpd = server_cls((bare, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_registry(source: Callable[[], Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardianCollector(source))
    return registry
