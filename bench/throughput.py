"""Projector throughput: change events/s through the real apply path into the local Redis.

The real path is ``projector.projection.event_change`` -> ``ReadModel.apply`` in batches of 1000,
fed with decoded change events. Baselines, measured in the same run on the same Redis:

* ceiling: redis-py pipelined HSET of one field per event (batches of 1000), the fastest way to
  put that many fields into Redis from one Python process;
* naive: a projector doing read-modify-write per event (GET the user's JSON, change it, SET it,
  PUBLISH), one round trip each, after the same normalization.

Decoding the BSON the cursor receives is measured on its own, and with the whole path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import bson

from projector.normalize import Rules
from projector.projection import event_change
from readmodel import LIVE, BalanceChange, Layout, ReadModel, TaskChange

from .common import Row, Stopwatch, local_cluster, now_iso, progress, redis_client, redis_cpu_seconds, scratch_prefix
from .events import KINDS, Stream

BENCH = "throughput"
BATCH = 1000


@dataclass(frozen=True)
class Sizes:
    events: int
    users: int
    in_flight: int
    naive_events: int


FULL = Sizes(events=200_000, users=20_000, in_flight=20_000, naive_events=20_000)
QUICK = Sizes(events=10_000, users=1_000, in_flight=1_000, naive_events=2_000)
TINY = Sizes(events=600, users=50, in_flight=50, naive_events=200)


def batches(raw: list[bytes]) -> list[list[bytes]]:
    return [raw[i : i + BATCH] for i in range(0, len(raw), BATCH)]


def measure_decode(raw: list[bytes]) -> float:
    watch = Stopwatch()
    for chunk in progress_iter(batches(raw), "decode", len(raw)):
        with watch:
            [bson.decode(r) for r in chunk]
    return len(raw) / watch.elapsed


def measure_normalize(raw: list[bytes], rules: Rules) -> float:
    watch = Stopwatch()
    for chunk in progress_iter(batches(raw), "event_change", len(raw)):
        events = [bson.decode(r) for r in chunk]
        with watch:
            [event_change(e, KINDS, rules) for e in events]
    return len(raw) / watch.elapsed


def measure_apply(raw: list[bytes], rules: Rules, *, with_decode: bool, precomputed: bool = False,
                  desc: str = "apply", store_env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """events/s through event_change + ReadModel.apply (optionally timing the decode too), on the
    benchmark's Redis or the cluster ``store_env`` names."""
    client = redis_client(store_env)
    with scratch_prefix(client, "tp") as prefix:
        model = ReadModel(client, Layout(prefix))
        watch = Stopwatch()
        versions = 0
        cpu_before = redis_cpu_seconds(client)
        for chunk in progress_iter(batches(raw), desc, len(raw)):
            if with_decode:
                with watch:
                    events = [bson.decode(r) for r in chunk]
                    changes = [event_change(e, KINDS, rules) for e in events]
                    versions += len(model.apply([c for c in changes if c is not None], now_iso()))
                continue
            events = [bson.decode(r) for r in chunk]
            if precomputed:
                changes = [c for c in (event_change(e, KINDS, rules) for e in events) if c is not None]
                with watch:
                    versions += len(model.apply(changes, now_iso()))
            else:
                with watch:
                    changes = [event_change(e, KINDS, rules) for e in events]
                    versions += len(model.apply([c for c in changes if c is not None], now_iso()))
        redis_cpu = redis_cpu_seconds(client) - cpu_before
        keys = client.dbsize()
    client.close()
    extra = {
        "seconds": round(watch.elapsed, 3),
        "user_versions_published": versions,
        "redis_cpu_s_per_1k_events": round(1000 * redis_cpu / len(raw), 4),
        "redis_cpu_share": round(redis_cpu / watch.elapsed, 3) if watch.elapsed else None,
        "dbsize_during": keys,
    }
    return len(raw) / watch.elapsed, extra


def measure_ceiling(raw: list[bytes], rules: Rules) -> tuple[float, dict[str, Any]]:
    """Pipelined HSET of one field per event (the task's JSON record), batches of 1000."""
    client = redis_client()
    with scratch_prefix(client, "hs") as prefix:
        layout = Layout(prefix)
        watch = Stopwatch()
        fields = 0
        for chunk in progress_iter(batches(raw), "ceiling HSET", len(raw)):
            writes = [_field_of(event_change(bson.decode(r), KINDS, rules)) for r in chunk]
            with watch:
                pipe = client.pipeline(transaction=False)
                for uid, field, value in writes:
                    pipe.hset(layout.tasks(uid), field, value)
                pipe.execute()
            fields += len(writes)
    client.close()
    return fields / watch.elapsed, {"seconds": round(watch.elapsed, 3), "fields": fields}


def _field_of(change: Any) -> tuple[str, str, str]:
    if isinstance(change, TaskChange):
        return change.owner or "gone", change.generation_id, change.record
    assert isinstance(change, BalanceChange)
    return change.owner or "gone", "balance", change.record


def measure_naive(raw: list[bytes], rules: Rules) -> tuple[float, dict[str, Any]]:
    """Read-modify-write per event: GET the user's JSON, change it, SET it, PUBLISH; same normalization."""
    client = redis_client()
    with scratch_prefix(client, "nv") as prefix:
        layout = Layout(prefix)
        owners: dict[str, str] = {}  # kept in memory: generous to the baseline (no owner round trip)
        watch = Stopwatch()
        for chunk in progress_iter(batches(raw), "naive RMW", len(raw)):
            events = [bson.decode(r) for r in chunk]
            with watch:
                for event in events:
                    change = event_change(event, KINDS, rules)
                    if change is None:
                        continue
                    doc_key = change.generation_id if isinstance(change, TaskChange) else change.doc_id
                    uid = change.owner or owners.get(doc_key)
                    if uid is None:
                        continue
                    owners[doc_key] = uid
                    key = layout.user(uid)  # the naive projector keeps the whole snapshot as JSON there
                    current = client.get(key)
                    snapshot = json.loads(current) if current else {"version": 0, "tasks": {}, "balance": None}
                    if isinstance(change, TaskChange):
                        if change.state == LIVE:
                            snapshot["tasks"][doc_key] = json.loads(change.record)
                        else:
                            snapshot["tasks"].pop(doc_key, None)
                    else:
                        snapshot["balance"] = change.record.split() if change.record else None
                    snapshot["version"] += 1
                    client.set(key, json.dumps(snapshot, separators=(",", ":")))
                    client.publish(layout.channel(uid), snapshot["version"])
    client.close()
    return len(raw) / watch.elapsed, {"seconds": round(watch.elapsed, 3)}


def progress_iter(chunks: list[list[bytes]], desc: str, total: int):
    bar = progress(total=total, desc=desc, unit="ev")
    for chunk in chunks:
        yield chunk
        bar.update(len(chunk))
    bar.close()


class _ReplayedChangeStream:
    """Stands in for pymongo's ChangeStream: hands out pre-recorded raw events, decoding each
    as the driver does, and the resume token of the last one."""

    def __init__(self, raw: list[bytes], bar: Any) -> None:
        self._raw = raw
        self._next = 0
        self._bar = bar
        self.resume_token: dict[str, Any] | None = None

    def try_next(self) -> dict[str, Any] | None:
        if self._next >= len(self._raw):
            return None
        event = bson.decode(self._raw[self._next])
        self._next += 1
        self._bar.update()
        self.resume_token = event["_id"]
        return event

    @property
    def alive(self) -> bool:
        return True  # a replay never closes itself; it answers None once every event was handed out

    def close(self) -> None:
        pass

    def end_session(self) -> None:
        pass


def measure_worker(raw: list[bytes]) -> tuple[float | None, dict[str, Any]]:
    """events/s through ``projector.worker.Worker.step`` fed by a replayed change stream (no MongoDB):
    decode, event_change, apply, checkpoint, durations, lease and health chores included."""
    try:
        from projector.settings import Settings
        from projector.source import Stream as SourceStream
        from projector.worker import Worker
        from readmodel.settings import StoreSettings
    except ImportError as exc:
        return None, {"skipped": f"projector.worker not importable: {exc}"}
    client = redis_client()
    bar = progress(total=len(raw), desc="worker.step (replayed stream)", unit="ev")
    replay = _ReplayedChangeStream(raw, bar)
    with scratch_prefix(client, "wk") as prefix:
        worker = Worker(Settings(store=StoreSettings(key_prefix=prefix), batch_size=BATCH), client, {"app": None}, progress=False)
        worker.source.open = lambda checkpoint=None: SourceStream(replay, replay, "0000000000.0000000000")
        worker.source.scan_ahead = lambda kind: iter(())
        worker.source.estimated_total = lambda: 0
        steps = 0
        started = time.perf_counter()
        try:
            # The worker reads ahead on a thread of its own (projector/reading.py): the replay is
            # drained long before the events are applied, so the loop waits on what was applied.
            while worker.stats.events_total < len(raw) and steps < 10 * len(raw):
                worker.step()
                steps += 1
            elapsed = time.perf_counter() - started
            applied = worker.stats.events_total
        finally:
            worker.close()
            bar.close()
    client.close()
    if applied < len(raw):
        return None, {"skipped": f"the worker applied {applied} of {len(raw)} events"}
    return len(raw) / elapsed, {"seconds": round(elapsed, 3), "steps": steps}


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    rules = Rules()
    stream = Stream(users=sizes.users, in_flight=sizes.in_flight)
    bar = progress(total=sizes.events, desc="generate events", unit="ev")
    raw = []
    for event in stream.events(sizes.events):
        raw.append(bson.encode(event))
        bar.update()
    bar.close()
    size_note = f"{sizes.events} events, {sizes.users} users, ~{sizes.in_flight} tasks in flight, " \
                f"{sum(map(len, raw)) // len(raw)} B/event"

    decode = measure_decode(raw)
    normalize = measure_normalize(raw, rules)
    ceiling, ceiling_x = measure_ceiling(raw, rules)
    apply, apply_x = measure_apply(raw, rules, with_decode=False, desc="apply (changes+readmodel)")
    apply_only, apply_only_x = measure_apply(raw, rules, with_decode=False, precomputed=True, desc="apply only")
    whole, whole_x = measure_apply(raw, rules, with_decode=True, desc="decode+changes+apply")
    worker, worker_x = measure_worker(raw)
    with local_cluster() as cluster_env:
        on_cluster, on_cluster_x = measure_apply(raw, rules, with_decode=False, precomputed=True,
                                                 desc="apply only, cluster", store_env=cluster_env)
    naive_raw = raw[: sizes.naive_events]
    naive, naive_x = measure_naive(naive_raw, rules)

    real = "event_change -> ReadModel.apply, batches of 1000"
    return [
        Row(BENCH, f"{real} (vs ceiling)", apply, "ev/s", baseline=ceiling, baseline_name="pipelined HSET",
            target=50_000, ratio_target=0.35, note=size_note, extra=apply_x),
        Row(BENCH, f"{real} (vs naive)", apply, "ev/s", baseline=naive, baseline_name="naive RMW per event",
            ratio_target=10, note=f"naive over the first {len(naive_raw)} events", extra=naive_x),
        Row(BENCH, "ReadModel.apply alone (changes precomputed)", apply_only, "ev/s", baseline=ceiling,
            baseline_name="pipelined HSET", extra=apply_only_x),
        Row(BENCH, "ReadModel.apply alone on a 3-master Redis Cluster (loopback)", on_cluster, "ev/s",
            baseline=apply_only, baseline_name="the same on one Redis", extra=on_cluster_x,
            note="6 nodes (3 masters + 3 replicas) on this machine's 2 vCPUs: they compete with the projector"),
        Row(BENCH, "event_change alone (CPU, no Redis)", normalize, "ev/s"),
        Row(BENCH, "bson.decode of raw change events", decode, "ev/s"),
        Row(BENCH, "worker path: decode -> event_change -> apply", whole, "ev/s", baseline=ceiling,
            baseline_name="pipelined HSET", target=50_000, extra=whole_x),
        Row(BENCH, "projector.worker.Worker.step on a replayed stream (decode included)", worker, "ev/s",
            baseline=ceiling, baseline_name="pipelined HSET", target=50_000, extra=worker_x,
            note=worker_x.get("skipped", "")),
        Row(BENCH, "baseline: pipelined HSET, 1 field/event", ceiling, "fields/s", extra=ceiling_x),
        Row(BENCH, "baseline: naive read-modify-write", naive, "ev/s", extra=naive_x),
    ]
