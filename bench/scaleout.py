"""Scale-out: what one more projector process buys on this machine.

The same N changes are drained once by one ``projector run`` process, and once split between K
processes draining at the same time. Each share comes from a stand-in process of its own, so
each projector reads only its part of the stream, as it would if the stream were split on the
server by a hash of the document id (``docs/scale-out.md``); the stand-ins' CPU adds up to the
same as one stand-in serving everything. The rate is the N changes over the time from the first
process tailing to the last one's checkpoint covering its last change.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from readmodel import Layout, position

from .catchup import QUICK, FULL, ROOT, _first_sync, _position, _spawn_projector, write_backlog
from .common import Row, cpu_seconds, progress, redis_client, redis_cpu_seconds, scratch_prefix, skipped
from .procs import LOGS, stop_process
from .resync import StandInProcess

BENCH = "scaleout"
PROCESSES = (1, 2)


def _drain_split(redis: Any, parts: int, count: int, scratch: ExitStack) -> dict[str, Any]:
    """``count`` changes split over ``parts`` stand-ins, drained by as many projectors at once."""
    from pymongo import MongoClient

    shares = []
    for part in range(parts):
        standin = StandInProcess()
        scratch.callback(standin.stop)
        mongo = scratch.enter_context(MongoClient(standin.url, serverSelectionTimeoutMS=30_000))
        mongo.admin.command("ping")
        prefix = scratch.enter_context(scratch_prefix(redis, f"so{parts}{part}"))
        _first_sync(standin.url, redis, prefix, ROOT)
        events = write_backlog(mongo, count // parts, seed=11 + part)
        last = mongo.admin.command("ping")["operationTime"]
        shares.append({"standin": standin, "prefix": prefix, "events": events,
                       "final": position(last.time, last.inc)})
    procs = []
    for share in shares:
        proc, log = _spawn_projector(share["standin"].url, share["prefix"], LOGS / f"scaleout-{share['prefix']}.log")
        scratch.callback(log.close)
        scratch.callback(stop_process, proc)
        procs.append((proc, log))
    started: list[float] = []
    ended: dict[int, float] = {}
    deadline = time.monotonic() + 900
    while len(started) < parts:
        started = [time.perf_counter() for _, log in procs if "tailing from position" in Path(log.name).read_text()]
        if time.monotonic() > deadline:
            raise RuntimeError("the projectors did not open their streams")
        time.sleep(0.002)
    first = time.perf_counter()
    cpu_before = sum(cpu_seconds(proc.pid) + cpu_seconds(s["standin"].proc.pid) for (proc, _), s in zip(procs, shares))
    redis_before = redis_cpu_seconds(redis)
    while len(ended) < parts:
        for i, share in enumerate(shares):
            if i not in ended and _position(redis, Layout(share["prefix"])) >= share["final"]:
                ended[i] = time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError("the projectors did not drain their shares")
        time.sleep(0.002)
    cpu_after = sum(cpu_seconds(proc.pid) + cpu_seconds(s["standin"].proc.pid) for (proc, _), s in zip(procs, shares))
    events = sum(share["events"] for share in shares)
    seconds = max(ended.values()) - first
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": events / seconds,
            "cpu_cores_busy": round((cpu_after - cpu_before + redis_cpu_seconds(redis) - redis_before) / seconds, 2)}


def run(quick: bool = False) -> list[Row]:
    try:
        import pymongo  # noqa: F401
    except ImportError as exc:
        return [skipped(BENCH, "scale-out", f"pymongo is not importable ({exc})")]
    count = QUICK if quick else FULL
    LOGS.mkdir(parents=True, exist_ok=True)
    redis = redis_client()
    results: dict[int, dict[str, Any]] = {}
    try:
        with progress(total=len(PROCESSES), desc="scale-out runs", unit="run") as bar:
            for parts in PROCESSES:
                with ExitStack() as scratch:
                    results[parts] = _drain_split(redis, parts, count, scratch)
                bar.update(1)
    finally:
        redis.close()
    one = results[1]
    return [
        Row(BENCH, f"{parts} projector processes draining {results[parts]['events']:,} changes",
            results[parts]["events_per_s"], "ev/s", one["events_per_s"], "one process",
            note=f"CPU cores busy (projectors + stand-ins + Redis): {results[parts]['cpu_cores_busy']} "
                 f"(one process: {one['cpu_cores_busy']})", extra=results[parts])
        for parts in PROCESSES[1:]
    ]
