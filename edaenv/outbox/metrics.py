"""Prometheus metrics of the relay and the sample consumer, and the tiny HTTP server for them.

The names are the ones the Grafana event-flow dashboard queries: change them together.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edaenv.outbox.stuck import REASONS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "edaenv_relay_published", "Outbox rows published and acked", registry=r
        )
        self.errors = Counter(
            "edaenv_relay_errors", "Failed relay batches (broker or database)", registry=r
        )
        self.backlog = Gauge("edaenv_outbox_backlog", "Unpublished outbox rows", registry=r)
        self.oldest_age = Gauge(
            "edaenv_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "edaenv_relay_batch_seconds",
            "Claim, publish and mark of one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stuck = Gauge(
            "edaenv_outbox_stuck_rows",
            "Unpublished outbox rows the relay cannot publish, by reason; each holds back the "
            "later rows of its aggregate",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:  # every series exists from the start, at 0
            self.stuck.labels(reason).set(0)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.processed = Counter(
            "edaenv_consumer_processed", "Events handled (side effect done)", registry=r
        )
        self.duplicates = Counter(
            "edaenv_consumer_duplicates",
            "Redeliveries skipped: the event id was already processed",
            registry=r,
        )
        self.retries = Counter(
            "edaenv_consumer_retries", "Failed attempts that were retried", registry=r
        )
        self.dead_lettered = Counter(
            "edaenv_consumer_dead_lettered", "Events sent to the dead-letter topic", registry=r
        )
        self.event_age = Histogram(
            "edaenv_consumer_event_age_seconds",
            "Event time to handled",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.lag = Gauge("edaenv_consumer_lag", "Messages fetched but not yet handled", registry=r)


def serve(
    port: int,
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    host: str | None = None,
) -> http.server.ThreadingHTTPServer:
    """/metrics for Prometheus and /healthz for the compose health check, on a daemon thread.
    Bound to `host`, else to EDAENV_METRICS_HOST, else to 127.0.0.1: the stack's containers set
    EDAENV_METRICS_HOST=0.0.0.0 so that Prometheus reaches them on the compose network (compose
    publishes the port on the host's 127.0.0.1 only)."""
    host = host or os.environ.get("EDAENV_METRICS_HOST") or "127.0.0.1"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = healthy()
                body, status, kind = (
                    (b"ok\n" if ok else b"unhealthy\n"),
                    (200 if ok else 503),
                    "text/plain",
                )
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
