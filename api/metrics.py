"""Prometheus metrics of one app instance (its own registry, so tests can build many apps).

Counts are counters, levels are gauges, no rate is precomputed; the process, platform and GC
collectors add ``process_*`` (open fds, RSS, CPU) and ``python_*``, and ``livestatus_api_build_info``
says which build runs. The prometheus_client objects lock themselves: any task may update them.
"""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The API's counters; names start with ``livestatus_api_``."""

    def __init__(self) -> None:
        # No `_created` gauge beside every counter and histogram (the text format exports them as
        # series of their own); process-wide, like the PROMETHEUS_DISABLE_CREATED_SERIES variable.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge("livestatus_api_build_info", "always 1; the labels say which build runs", ["version", "python"],
              registry=r).labels(package_version(), platform.python_version()).set(1)
        self.open_streams = Gauge("livestatus_api_open_streams", "SSE streams open now", registry=r)
        self.waiting_polls = Gauge(
            "livestatus_api_waiting_polls", "long-polls (newerThan) waiting now, each holding a stream slot", registry=r
        )
        self.subscribed_users = Gauge(
            "livestatus_api_subscribed_users", "users this process is subscribed to in Redis", registry=r
        )
        self.events_sent = Counter("livestatus_api_events_sent_total", "snapshot events sent on streams", registry=r)
        self.resumes = Counter(
            "livestatus_api_stream_resumes_total",
            "streams opened with a Last-Event-ID; outcome=behind when a newer snapshot had to be sent, "
            "current when the client already had the latest version",
            ["outcome"],
            registry=r,
        )
        self.dropped_states = Counter(
            "livestatus_api_dropped_states_total",
            "intermediate snapshots a slow client never saw because a newer one replaced them",
            registry=r,
        )
        self.snapshot_reads = Counter(
            "livestatus_api_fanout_reads_total", "snapshot reads made by the fan-out (one per user and version)", registry=r
        )
        self.snapshot_read_batches = Counter(
            "livestatus_api_fanout_read_batches_total",
            "round trips the fan-out's reads took (each reads up to Fanout.batch_size users)",
            registry=r,
        )
        self.pubsub_reconnects = Counter(
            "livestatus_api_pubsub_reconnects_total", "times the Redis pub/sub connection failed and was re-established",
            registry=r
        )
        self.resubscribes = Counter(
            "livestatus_api_pubsub_resubscribes_total",
            "channel subscriptions confirmed again after a reconnect (each triggers a re-read)",
            registry=r,
        )
        self.streams_refused = Counter(
            "livestatus_api_streams_refused_total",
            "streams refused at a limit (user, credential or process)",
            ["limit"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "livestatus_api_request_seconds",
            "time to the first response byte, by route",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )


def package_version() -> str:
    try:
        return version("livestatus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# Every label has a bounded set of values: a client may send any token as its method.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The request method, or ``other`` for a method outside the standard set."""
    return method if method in KNOWN_METHODS else "other"


class LatencyMiddleware:
    """Observe the time from request to response start (streams are measured to their first byte)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The scope is let go at the response start: a stream's send must not keep the request's
        # scope (and what the routing stack left in it) alive for hours.
        pending = [scope]

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and pending:
                request = pending.pop()
                self.metrics.request_seconds.labels(
                    method_label(request["method"]), getattr(request.get("route"), "path", "unmatched"), str(message["status"])
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
