"""The projector's Prometheus metrics, served on a port of their own (``--metrics-port``).

Counts are counters (``_total``, since this process started), moments are Unix timestamps in
seconds (absent until they happened, never a -1), and there are no precomputed rates: Prometheus's
``rate()`` does that. The process, platform and GC collectors add ``process_*`` (open fds, RSS,
CPU) and ``python_*``.

Ownership: the worker thread builds a new immutable :class:`Reading` in :meth:`Metrics.update` and
swaps the reference; the HTTP server's thread only reads the reference it finds at scrape time.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .health import LEADING, State, Stats

PREFIX = "livestatus_projector_"

COUNTERS = {  # Stats attribute -> (metric name without _total, help)
    "events_total": ("events", "change events applied"),
    "batches_total": ("batches", "batches applied"),
    "resyncs": ("resyncs", "resyncs (initial syncs and rebuilds after lost history, invalidation or a request)"),
    "dead_letters": ("dead_letters", "documents that could not be projected and went to the dead letters"),
    "errors": ("errors", "MongoDB or Redis errors survived (each followed by a retry)"),
}


def package_version() -> str:
    try:
        return version("livestatus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@dataclass(frozen=True)
class Reading:
    """The worker's figures at one moment (times in ms; 0 means "not yet")."""

    counts: dict[str, int]
    state: State
    lag_ms: int
    last_event_ms: int
    checkpoint_ms: int
    reported_ms: int

    @classmethod
    def of(cls, stats: Stats, now_ms: int) -> Reading:
        return cls({name: int(getattr(stats, name)) for name in COUNTERS}, State(stats.state), stats.lag_ms,
                   stats.last_event_ms, stats.checkpoint_ms, now_ms)


class WorkerCollector:
    """Turns the latest :class:`Reading` into metric families at scrape time."""

    def __init__(self, partition: str) -> None:
        self.partition = partition  # "K/N": which documents this process projects
        self.build = [package_version(), platform.python_version()]
        self.reading: Reading | None = None  # replaced (never mutated) by the worker thread

    def collect(self) -> Iterator[Metric]:
        reading = self.reading
        build = GaugeMetricFamily(PREFIX + "build_info", "always 1; the labels say which build runs",
                                  labels=["version", "python"])
        build.add_metric(self.build, 1)
        yield build
        if reading is None:  # before the worker's first report
            return
        for attribute, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=reading.counts[attribute])
        leader = GaugeMetricFamily(PREFIX + "leader", "1 while this process holds its partition's lease and applies",
                                   labels=["partition"])
        leader.add_metric([self.partition], 1 if reading.state in LEADING else 0)
        yield leader
        state = GaugeMetricFamily(PREFIX + "state", "1 for the state this process is in, 0 for the others",
                                  labels=["state"])
        for each in State:
            state.add_metric([each.value], 1 if each == reading.state else 0)
        yield state
        yield GaugeMetricFamily(PREFIX + "lag_seconds",
                                "at the last batch: its time minus the cluster time of its newest event (0 when caught up)",
                                value=reading.lag_ms / 1000)
        yield GaugeMetricFamily(PREFIX + "report_timestamp_seconds",
                                "when the worker last refreshed these figures (about every second while it runs)",
                                value=reading.reported_ms / 1000)
        if reading.last_event_ms:
            yield GaugeMetricFamily(PREFIX + "last_event_timestamp_seconds",
                                    "cluster time of the newest change event applied (absent until one is)",
                                    value=reading.last_event_ms / 1000)
        if reading.checkpoint_ms:
            yield GaugeMetricFamily(PREFIX + "checkpoint_timestamp_seconds",
                                    "when this process last wrote the checkpoint (absent until it has)",
                                    value=reading.checkpoint_ms / 1000)


class Metrics:
    """Prometheus text on a port of its own (only when a metrics port is configured)."""

    def __init__(self, port: int, stats: Stats, partition: str = "0/1") -> None:
        self.stats = stats
        self.registry = CollectorRegistry()
        self.collector = WorkerCollector(partition)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.server, self.thread = start_http_server(port, registry=self.registry)
        self.port = self.server.server_port

    def update(self, now_ms: int) -> None:
        self.collector.reading = Reading.of(self.stats, now_ms)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
