"""End-to-end latency: a change entering the projector -> its SSE event at a subscribed client.

This process plays the projector: every 5 ms it takes the events due at the target rate, stamps
the time (CLOCK_MONOTONIC, shared by all processes of the machine), runs them through
``event_change`` -> ``ReadModel.apply`` and remembers which (user, version) each batch produced.
The API runs in its own uvicorn process; a ``bench.loadgen`` process holds one SSE stream per
user and records when each ``id: version`` arrives. Latency = arrival - stamp, matched on
(user, version).

Baseline in the same run: the same client process also subscribes to the read model's Redis
channels directly (SSUBSCRIBE), so the Lua script's SPUBLISH -> a Python subscriber is the floor
under the API's fan-out. Both run on one Redis and then on a 3-master Redis Cluster on loopback.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

from projector.normalize import Rules
from projector.projection import event_change
from readmodel import Layout, ReadModel

from .common import REDIS_URL, Row, local_cluster, now_iso, percentile, progress, redis_client, scratch_prefix, skipped
from .events import KINDS, Stream
from .procs import HOST, SERVICE_KEY, Client, Server, api_available

BENCH = "latency"
TICK_S = 0.005


@dataclass(frozen=True)
class Sizes:
    subscribers: int
    rate: int
    duration_s: float


FULL = Sizes(subscribers=1000, rate=2000, duration_s=20)
QUICK = Sizes(subscribers=200, rate=2000, duration_s=3)


def drive(model: ReadModel, stream: Stream, sizes: Sizes) -> tuple[dict[tuple[str, int], int], dict]:
    """Apply events at ``rate`` for ``duration_s``; returns {(user, version): stamp ns} and pacing stats."""
    rules = Rules()
    total = int(sizes.rate * sizes.duration_s)
    events = list(stream.events(total))
    stamps: dict[tuple[str, int], int] = {}
    sent = 0
    behind_max = 0
    apply_ms: list[float] = []
    bar = progress(total=total, desc=f"drive {sizes.rate}/s", unit="ev")
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * sizes.rate) + 1)
        if due > sent:
            behind_max = max(behind_max, due - sent)
            batch = events[sent:due]
            stamp = time.monotonic_ns()
            changes = [c for c in (event_change(e, KINDS, rules) for e in batch) if c is not None]
            versions = model.apply(changes, now_iso())
            apply_ms.append((time.monotonic_ns() - stamp) / 1e6)
            for uid, version in versions.items():
                stamps[(uid, version)] = stamp
            bar.update(due - sent)
            sent = due
        next_tick = start + (sent / sizes.rate) + TICK_S
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    bar.close()
    apply_ms.sort()
    return stamps, {"achieved_rate": round(total / elapsed), "max_events_per_batch": behind_max,
                    "batches": len(apply_ms), "apply_p50_ms": round(percentile(apply_ms, 50), 3),
                    "apply_p99_ms": round(percentile(apply_ms, 99), 3)}


def match(stamps: dict[tuple[str, int], int], records: list) -> tuple[list[float], int]:
    """Latencies (ms) of the stamped versions that arrived, and how many stamped ones never did."""
    arrived: dict[tuple[str, int], int] = {}
    for uid, version, at, *_ in records:
        arrived.setdefault((uid, version), at)
    latencies = sorted((arrived[key] - stamp) / 1e6 for key, stamp in stamps.items() if key in arrived)
    return latencies, sum(1 for key in stamps if key not in arrived)


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "end-to-end latency", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    rows = _rows(sizes, *measure(sizes, {"REDIS_URL": REDIS_URL, "REDIS_CLUSTER": "0"}), where="")
    with local_cluster() as cluster_env:
        rows += _rows(sizes, *measure(sizes, cluster_env), where=", 3-master Redis Cluster")
    return rows


def measure(sizes: Sizes, store_env: dict[str, str]) -> tuple[list[float], list[float], int, int, dict, dict]:
    """SSE and pub/sub latencies (ms, sorted) on the Redis ``store_env`` names, what each missed,
    the pacing and the load generator's summary."""
    redis = redis_client(store_env)
    stream = Stream(users=sizes.subscribers, in_flight=sizes.subscribers)
    records_file = tempfile.NamedTemporaryFile(suffix=".json", prefix="sse-records-", delete=False).name
    pubsub_file = tempfile.NamedTemporaryFile(suffix=".json", prefix="pubsub-records-", delete=False).name
    try:
        with scratch_prefix(redis, "e2e") as prefix, Server("api", prefix, extra_env=store_env) as api:
            layout = Layout(prefix)
            client = Client({"mode": "sse", "host": HOST, "port": api.port, "path": "/users/{uid}/status/stream",
                             "key": SERVICE_KEY, "users": stream.user_ids, "records": records_file,
                             "pubsub": {"store_env": store_env, "prefix": prefix, "records": pubsub_file}})
            try:
                ready = client.wait_for("ready", timeout_s=120)
                if ready["ready"] != sizes.subscribers:
                    raise RuntimeError(f"only {ready['ready']} of {sizes.subscribers} streams opened: {ready['errors']}")
                time.sleep(1.0)  # let the fan-out's subscriptions settle
                stamps, pacing = drive(ReadModel(redis, layout), stream, sizes)
                time.sleep(1.0)  # the last events' deliveries
                done = client.finish()
            finally:
                client.close()
        with open(records_file) as f:
            lat, missing = match(stamps, json.load(f))
        with open(pubsub_file) as f:
            floor, floor_missing = match(stamps, json.load(f))
    finally:
        for path in (records_file, pubsub_file):
            if os.path.exists(path):
                os.unlink(path)
        redis.close()
    if not lat:
        raise RuntimeError(f"no SSE event matched a stamped version ({done})")
    pacing["versions"] = len(stamps)
    return lat, floor, missing, floor_missing, pacing, done


def _rows(sizes: Sizes, lat: list[float], floor: list[float], missing: int, floor_missing: int, pacing: dict,
          done: dict, where: str) -> list[Row]:
    note = (f"{sizes.subscribers} streams (1 per user), {pacing['achieved_rate']} events/s achieved for "
            f"{sizes.duration_s:g}s, {pacing['versions']} versions published; {missing} superseded before delivery "
            f"(a stream only gets the newest state), pub/sub missed {floor_missing}")
    extra = {"pacing": pacing, "sse_events": done.get("events"), "stream_failures": done.get("failed"),
             "sse_max_ms": round(lat[-1], 2), "pubsub_max_ms": round(floor[-1], 2) if floor else None}
    rows = []
    for p, target in ((50, 5.0), (95, None), (99, 50.0)):
        rows.append(Row(BENCH, f"change -> SSE client p{p}{where}", percentile(lat, p), "ms",
                        baseline=percentile(floor, p) if floor else None,
                        baseline_name="Redis SPUBLISH -> subscriber", target=target, higher_is_better=False,
                        note=note if p == 50 else "", extra=extra if p == 50 else {}))
    return rows
