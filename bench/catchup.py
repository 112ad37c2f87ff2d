"""Catch-up: drain a backlog of changes written while the projector was stopped.

The stand-in runs as its own process and every consumer reads it through real pymongo, from the
same resume token (the checkpoint the projector left when it stopped):

1. this projector: the real ``projector run`` process, timed from "tailing from position" in its
   log (the stream is open) to its checkpoint covering the last change;
2. a naive per-event projector (``bench.drain naive``): same normalization, one Redis command at
   a time and a checkpoint per event;
3. a bare pymongo reader (``bench.drain bare``): the source's ceiling.

Beside each projector run it records the CPU the projector, the stand-in and Redis used per event
while it drained. ``BENCH_BEFORE_ROOT`` (another checkout) adds the same run of that checkout's
projector, ``BENCH_ROUNDS`` repeats the runs in alternating order; the rows give medians.

Two backlogs, each in a stand-in of its own: one mixes inserts, progress updates, completions,
deletes and balance ``$inc`` over many users with a few tasks each and a few users with many tasks
each; the other is inserts only. Each gives events/s and the CPU per change of every process
(the projector's, the naive one's and the bare reader's own; the stand-in's and Redis's while the
projector drains). The goal for the projector: at most 25 µs of CPU per change on the mixed
backlog and at most a third of the naive projector's.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from bson import Decimal128, Int64, json_util

from projector.checkpoint import CheckpointStore
from readmodel import Layout, Partition, applied, position

from .common import REDIS_URL, Row, cpu_seconds, progress, redis_client, redis_cpu_seconds, scratch_prefix, skipped
from .events import DB, ECONOMY, TASKS
from .procs import LOGS, StandInProcess, stop_process

BENCH = "catchup"
ROOT = Path(__file__).resolve().parent.parent
FULL, QUICK = 30_000, 2_000
# Another checkout (e.g. `git worktree add /tmp/base <commit>`) drains the same backlog too, for a
# before/after in one run; BENCH_ROUNDS repeats each projector, alternating the order.
BEFORE_ROOT = os.environ.get("BENCH_BEFORE_ROOT")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "0"))  # the backlog's size instead of FULL (QUICK with --quick)
MANY_USERS, HEAVY_USERS = 500, 5


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_backlog(mongo: Any, count: int, seed: int = 11, inserts_only: bool = False) -> int:
    """``count`` writes (one change event each), in ordered bulk writes; returns how many.
    ``inserts_only``: new tasks alone (after the balances every backlog starts with)."""
    from pymongo import DeleteOne, InsertOne, UpdateOne

    rng = random.Random(seed)
    users = [f"u{i}" for i in range(MANY_USERS)] + [f"heavy{i}" for i in range(HEAVY_USERS)]
    db = mongo[DB]
    db[ECONOMY].insert_many([{"_id": f"e-{uid}", "masterAccountId": uid, "usdCredit": Decimal128("10.000000"),
                              "exp": Int64(0)} for uid in users])
    live: list[str] = []
    ops: dict[str, list[Any]] = {TASKS: [], ECONOMY: []}
    written = len(users)
    bar = progress(total=count, desc="write the backlog", unit="write")
    bar.update(written)
    now = datetime.now(UTC)
    n = 0
    while written < count:
        roll = rng.random()
        if inserts_only or roll < 0.30 or len(live) < 50:
            gid = f"g{n}"
            n += 1
            owner = rng.choice(users[MANY_USERS:]) if rng.random() < 0.3 else rng.choice(users[:MANY_USERS])
            ops[TASKS].append(InsertOne({"_id": gid, "masterAccountId": owner, "status": "pending", "toolId": "flux-dev",
                                         "toolDisplayName": "Flux Dev", "notificationPlatform": "telegram",
                                         "requestTimestamp": _iso(now), "costUsd": Decimal128("0.012469")}))
            live.append(gid)
        elif roll < 0.65:
            gid = rng.choice(live)
            ops[TASKS].append(UpdateOne({"_id": gid}, {"$set": {"status": "processing", "progress": rng.random(),
                                                               "updatedAt": _iso(now + timedelta(seconds=n))}}))
        elif roll < 0.80:
            gid = live.pop(rng.randrange(len(live)))
            ops[TASKS].append(UpdateOne({"_id": gid}, {"$set": {"status": rng.choice(["completed", "failed"]),
                                                               "responseTimestamp": _iso(now + timedelta(seconds=30))}}))
        elif roll < 0.85:
            ops[TASKS].append(DeleteOne({"_id": live.pop(rng.randrange(len(live)))}))
        else:
            ops[ECONOMY].append(UpdateOne({"_id": f"e-{rng.choice(users)}"},
                                          {"$inc": {"usdCredit": Decimal128("-0.012469"), "exp": Int64(1)}}))
        written += 1
        if written % 500 == 0 or written == count:
            for name in (TASKS, ECONOMY):
                if ops[name]:
                    db[name].bulk_write(ops[name], ordered=True)
                    bar.update(len(ops[name]))
                    ops[name] = []
    bar.close()
    return written


def _position(redis: Any, layout: Layout) -> str:
    """The checkpoint's position alone (polled every 2 ms beside the measured process: one HGET)."""
    return applied.read_position(redis, layout)


def _spawn_projector(url: str, prefix: str, log_path: Path, root: Path = ROOT,
                     partition: Partition = Partition()) -> tuple[subprocess.Popen, Any]:
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "projector", "run", "--mongo-url", url, "--redis-url", REDIS_URL, "--key-prefix", prefix,
         "--no-progress", *(("--partition", str(partition)) if partition.count > 1 else ())],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _first_sync(url: str, redis: Any, prefix: str, root: Path, partition: Partition = Partition()) -> Any:
    """The projector syncs the still empty database, checkpoints and stops: the backlog comes after.
    Returns the resume token it left."""
    layout = Layout(prefix, partition)
    proc, log = _spawn_projector(url, prefix, LOGS / f"catchup-first-{prefix}-{partition.index}.log", root, partition)
    try:
        _wait(lambda: _position(redis, layout) != "", 60, "the first checkpoint", 0.05)
    finally:
        stop_process(proc)
        log.close()
    return CheckpointStore(redis, layout).load().token


def _catch_up(standin: Any, redis: Any, prefix: str, root: Path, final: str, events: int) -> dict[str, Any]:
    """One projector drains the backlog; its rate and the CPU every party used meanwhile."""
    layout = Layout(prefix)
    proc, log = _spawn_projector(standin.url, prefix, LOGS / f"catchup-{prefix}.log", root)
    try:
        started = _wait(lambda: "tailing from position" in Path(log.name).read_text(), 60, "the stream opening")
        cpu = (cpu_seconds(proc.pid), cpu_seconds(standin.proc.pid), redis_cpu_seconds(redis))
        ended = _wait(lambda: _position(redis, layout) >= final, 900, "draining the backlog")
        used = [after - before for before, after in
                zip(cpu, (cpu_seconds(proc.pid), cpu_seconds(standin.proc.pid), redis_cpu_seconds(redis)))]
    finally:
        stop_process(proc)
        log.close()
    seconds = ended - started
    return {"events_per_s": events / seconds, "seconds": round(seconds, 3),
            "cpu_us_per_event": {name: round(value / events * 1e6, 1)
                                 for name, value in zip(("projector", "standin", "redis"), used)}}


def _wait(condition, timeout_s: float, what: str, poll_s: float = 0.002) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.perf_counter()
        time.sleep(poll_s)
    raise RuntimeError(f"{what} did not happen within {timeout_s:.0f} s")


def _drain(mode: str, url: str, token: Any, count: int, prefix: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "bench.drain", mode, "--mongo-url", url, "--token", json_util.dumps(token),
         "--count", str(count), "--redis-url", REDIS_URL, "--prefix", prefix],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"bench.drain {mode} failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


SCENARIOS = (("mixed", False), ("inserts only", True))


def _scenario(label: str, inserts_only: bool, count: int, plan: list[tuple[str, Path]],
              redis: Any) -> dict[str, Any]:
    """One backlog in a fresh stand-in, drained by the bare reader, the naive projector and every
    projector of ``plan`` (in that order), each from the same resume token."""
    from pymongo import MongoClient

    standin = StandInProcess()
    mongo = None
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
    try:
        mongo = MongoClient(standin.url, serverSelectionTimeoutMS=30_000)
        mongo.admin.command("ping")
        with ExitStack() as scratch:
            naive_prefix = scratch.enter_context(scratch_prefix(redis, "cn"))
            prefixes = [scratch.enter_context(scratch_prefix(redis, f"cu{i}")) for i in range(len(plan))]
            tokens = [_first_sync(standin.url, redis, prefix, root) for prefix, (_, root) in zip(prefixes, plan)]
            events = write_backlog(mongo, count, inserts_only=inserts_only)
            last = mongo.admin.command("ping")["operationTime"]
            final = position(last.time, last.inc)

            bare = _drain("bare", standin.url, tokens[0], events, naive_prefix)
            naive = _drain("naive", standin.url, tokens[0], events, naive_prefix)
            with progress(total=len(plan), desc=f"projector runs ({label})", unit="run") as bar:
                for prefix, (name, root) in zip(prefixes, plan):
                    runs[name].append(_catch_up(standin, redis, prefix, root, final, events))
                    bar.update(1)
    finally:
        if mongo is not None:
            mongo.close()
        standin.stop()
    return {"events": events, "bare": bare, "naive": naive, "projector_runs": runs}


def _cpu(done: list[dict[str, Any]], party: str) -> float:
    return median(r["cpu_us_per_event"][party] for r in done)


def run(quick: bool = False) -> list[Row]:
    try:
        import pymongo  # noqa: F401
    except ImportError as exc:
        return [skipped(BENCH, "catch-up", f"pymongo is not importable ({exc})")]
    count = QUICK if quick else EVENTS or FULL
    projectors = [("this projector", ROOT)]
    if BEFORE_ROOT:
        projectors.append((f"projector at {Path(BEFORE_ROOT).name}", Path(BEFORE_ROOT)))
    # Rounds alternate the order, so neither projector always drains on a warmer machine.
    plan = [p for r in range(ROUNDS) for p in (projectors if r % 2 == 0 else projectors[::-1])]
    redis = redis_client()
    LOGS.mkdir(parents=True, exist_ok=True)
    try:
        # --quick keeps the smoke test short: the inserts-only backlog is half the size there.
        results = {label: _scenario(label, inserts_only, count // 2 if quick and inserts_only else count, plan, redis)
                   for label, inserts_only in SCENARIOS}
    finally:
        redis.close()
    rows: list[Row] = []
    for label, details in results.items():
        bare, naive, runs = details["bare"], details["naive"], details["projector_runs"]
        bare_rate, naive_rate = bare["events"] / bare["seconds"], naive["events"] / naive["seconds"]
        rate = {name: median(r["events_per_s"] for r in done) for name, done in runs.items()}
        ours, mine = rate["this projector"], runs["this projector"]
        tag = "" if label == "mixed" else f" ({label})"
        if label == "mixed":
            rows += [
                Row(BENCH, "projector run vs bare pymongo reader", ours, "ev/s", bare_rate, "bare reader",
                    ratio_target=0.7, extra=details),
                Row(BENCH, "projector run vs naive per-event projector", ours, "ev/s", naive_rate, "naive projector",
                    ratio_target=3.0),
            ]
        else:
            rows.append(Row(BENCH, f"projector run vs naive per-event projector{tag}", ours, "ev/s", naive_rate,
                            "naive projector", extra=details,
                            note=f"bare reader {bare_rate:,.0f} ev/s ({ours / bare_rate:.2f}×)"))
        # The goal: at most 25 µs of projector CPU per change and at most a third of the naive one's.
        cpu = _cpu(mine, "projector")
        rows.append(Row(BENCH, f"projector CPU per change{tag}", cpu, "µs", naive["cpu_us_per_event"],
                        "naive projector CPU", target=min(25.0, naive["cpu_us_per_event"] / 3),
                        higher_is_better=False,
                        note=(f"≤ 25 µs and ≤ ⅓ naive; stand-in {_cpu(mine, 'standin')} µs, "
                              f"Redis {_cpu(mine, 'redis')} µs, bare reader {bare['cpu_us_per_event']} µs "
                              "per change")))
        for name, _ in projectors[1:]:
            rows.append(Row(BENCH, f"projector run vs {name}{tag}", ours, "ev/s", rate[name], name,
                            note=f"median of {len(runs[name])} alternating rounds"))
            rows.append(Row(BENCH, f"projector CPU per change vs {name}{tag}", cpu, "µs", _cpu(runs[name], "projector"),
                            f"{name} CPU", higher_is_better=False,
                            note=(f"stand-in {_cpu(mine, 'standin')} vs {_cpu(runs[name], 'standin')} µs, "
                                  f"Redis {_cpu(mine, 'redis')} vs {_cpu(runs[name], 'redis')} µs per change")))
    return rows
