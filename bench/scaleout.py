"""Scale-out: what one more projector process buys on this machine.

The same N changes are drained three ways, each timed from the first process tailing to the
last one's checkpoint covering the last change:

1. one ``projector run`` process (the baseline);
2. two processes, ``--partition 0/2`` and ``--partition 1/2``, reading the same stream from one
   stand-in: each reads every event and applies the documents it owns (docs/scale-out.md);
3. the ideal split: two processes, each reading only its half from a stand-in of its own, as if
   MongoDB filtered the stream by partition on the server. The stand-ins' CPU adds up to what one
   stand-in serving everything uses.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from readmodel import Layout, Partition, position

from .catchup import EVENTS, FULL, QUICK, ROOT, _first_sync, _position, _spawn_projector, _wait, write_backlog
from .common import Row, cpu_seconds, progress, redis_client, redis_cpu_seconds, scratch_prefix, skipped
from .procs import LOGS, StandInProcess, stop_process

BENCH = "scaleout"


def _source(redis: Any, count: int, seed: int, prefix: str, partitions: list[Partition],
            scratch: ExitStack) -> dict[str, Any]:
    """A stand-in process with ``count`` changes written after every partition's first sync."""
    from pymongo import MongoClient

    standin = StandInProcess()
    scratch.callback(standin.stop)
    mongo = scratch.enter_context(MongoClient(standin.url, serverSelectionTimeoutMS=30_000))
    mongo.admin.command("ping")
    for partition in partitions:
        _first_sync(standin.url, redis, prefix, ROOT, partition)
    events = write_backlog(mongo, count, seed=seed)
    last = mongo.admin.command("ping")["operationTime"]
    return {"standin": standin, "events": events, "final": position(last.time, last.inc)}


def _drain(redis: Any, consumers: list[tuple[dict[str, Any], str, Partition]], scratch: ExitStack) -> dict[str, Any]:
    """Start every (source, prefix, partition) projector at once; wait until each covers its source."""
    procs = []
    for source, prefix, partition in consumers:
        proc, log = _spawn_projector(source["standin"].url, prefix,
                                     LOGS / f"scaleout-{prefix}-{partition.index}.log", ROOT, partition)
        scratch.callback(log.close)
        scratch.callback(stop_process, proc)
        procs.append((proc, log))
    pids = [proc.pid for proc, _ in procs] + list({id(s): s["standin"].proc.pid for s, _, _ in consumers}.values())
    first = _wait(lambda: all("tailing from position" in Path(log.name).read_text() for _, log in procs), 900,
                  "the projectors opening their streams")
    cpu_before = sum(cpu_seconds(pid) for pid in pids) + redis_cpu_seconds(redis)
    last = _wait(lambda: all(_position(redis, Layout(prefix, partition)) >= source["final"]
                             for source, prefix, partition in consumers), 900, "draining the backlog")
    seconds = last - first
    busy = (sum(cpu_seconds(pid) for pid in pids) + redis_cpu_seconds(redis) - cpu_before) / seconds
    events = sum({id(s): s["events"] for s, _, _ in consumers}.values())
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": events / seconds,
            "cpu_cores_busy": round(busy, 2)}


def run(quick: bool = False) -> list[Row]:
    try:
        import pymongo  # noqa: F401
    except ImportError as exc:
        return [skipped(BENCH, "scale-out", f"pymongo is not importable ({exc})")]
    count = QUICK if quick else EVENTS or FULL
    LOGS.mkdir(parents=True, exist_ok=True)
    redis = redis_client()
    halves = [Partition(0, 2), Partition(1, 2)]
    results: dict[str, dict[str, Any]] = {}
    try:
        with progress(total=3, desc="scale-out runs", unit="run") as bar:
            with ExitStack() as scratch:
                prefix = scratch.enter_context(scratch_prefix(redis, "so1"))
                source = _source(redis, count, 11, prefix, [Partition()], scratch)
                results["one"] = _drain(redis, [(source, prefix, Partition())], scratch)
            bar.update(1)
            with ExitStack() as scratch:
                prefix = scratch.enter_context(scratch_prefix(redis, "so2"))
                source = _source(redis, count, 11, prefix, halves, scratch)
                results["partitions"] = _drain(redis, [(source, prefix, part) for part in halves], scratch)
            bar.update(1)
            with ExitStack() as scratch:
                prefixes = [scratch.enter_context(scratch_prefix(redis, f"so3{i}")) for i in range(2)]
                sources = [_source(redis, count // 2, 11 + i, prefixes[i], [Partition()], scratch) for i in range(2)]
                results["ideal"] = _drain(redis, [(sources[i], prefixes[i], Partition()) for i in range(2)], scratch)
            bar.update(1)
    finally:
        redis.close()
    one = results["one"]

    def busy(name: str) -> str:
        return (f"CPU cores busy (projectors + stand-ins + Redis): {results[name]['cpu_cores_busy']} "
                f"(one process: {one['cpu_cores_busy']})")

    return [
        Row(BENCH, f"2 processes (--partition 0/2, 1/2), {results['partitions']['events']:,} changes",
            results["partitions"]["events_per_s"], "ev/s", one["events_per_s"], "one process",
            note=busy("partitions"), extra=results),
        Row(BENCH, "2 processes, ideal split (each reads only its half)", results["ideal"]["events_per_s"], "ev/s",
            one["events_per_s"], "one process", note=busy("ideal")),
    ]
