"""Resync: rebuild the read model of 100k users and 50k live tasks from the MongoDB stand-in.

The stand-in runs as its own process (``python -m standin``) and real pymongo talks to it. The
measurement is the projector's first ``Worker.step()`` on an empty read model: it finds no
checkpoint and resyncs (scan both collections, project, sweep, checkpoint). It runs in a child
process of its own (``python -c RESYNC`` in the checkout), which reports its wall and CPU time.
Baseline in the same run: pymongo reading the same two collections with nothing done to the
documents, i.e. what the stand-in and the driver alone cost. ``BENCH_BEFORE_ROOT`` (another
checkout, e.g. ``git archive main | tar -x -C /tmp/before``) resyncs the same stand-in too, into a
prefix of its own, right after this checkout: a before/after in one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Decimal128, Int64, ObjectId

from readmodel import Layout

from .common import REDIS_URL, Row, progress, redis_client, scratch_prefix, skipped
from .events import DB, ECONOMY, PLATFORMS, TASKS, TOOLS, Stream, _Task
from .procs import StandInProcess

BENCH = "resync"
ROOT = Path(__file__).resolve().parent.parent
BEFORE_ROOT = os.environ.get("BENCH_BEFORE_ROOT")
AGAIN = os.environ.get("BENCH_RESYNC_AGAIN") == "1"  # also time a resync over the model just built

# Run in the checkout under test (its projector and readmodel first on the path): one resync of
# an empty read model, then one line of JSON with its wall and CPU seconds and Redis's CPU.
RESYNC = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from projector.settings import Settings
from projector.source import connect
from projector.worker import Worker
from readmodel.connect import connect as connect_redis
mongo_url, db, redis_url, prefix = sys.argv[2:6]
settings = Settings.from_env({"MONGO_URL": mongo_url, "MONGO_DB": db, "REDIS_URL": redis_url, "KEY_PREFIX": prefix})
redis = connect_redis(settings.store)  # as `projector run` builds it (its command packer included)
def redis_cpu():
    info = redis.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]
mongo = connect(mongo_url)
worker = Worker(settings, redis, mongo, progress=False)
started, cpu, redis_started = time.perf_counter(), time.process_time(), redis_cpu()
state = worker.step()
result = {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu,
          "redis": redis_cpu() - redis_started, "state": str(state)}
if len(sys.argv) > 6:  # once more over the model just built (an operator's resync: the full sweep)
    started, cpu, redis_started = time.perf_counter(), time.process_time(), redis_cpu()
    worker.resync("bench: again over a full read model")
    result["again"] = {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                       "redis": redis_cpu() - redis_started}
print(json.dumps(result))
worker.close()
mongo.close()
"""


@dataclass(frozen=True)
class Sizes:
    users: int
    live_tasks: int


FULL = Sizes(users=100_000, live_tasks=50_000)
QUICK = Sizes(users=2_000, live_tasks=1_000)


def available() -> str | None:
    try:
        import standin  # noqa: F401
        from projector.worker import Worker  # noqa: F401
    except Exception as exc:
        return f"the stand-in or the worker is not importable yet ({exc.__class__.__name__}: {exc})"
    return None


def _insert_in_batches(collection, docs, bar, size: int = 1000) -> None:
    batch = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            collection.insert_many(batch, ordered=False)
            bar.update(len(batch))
            batch = []
    if batch:
        collection.insert_many(batch, ordered=False)
        bar.update(len(batch))


def fill(mongo, sizes: Sizes) -> None:
    """userEconomy for every user, and live (recently active) tasks spread over them."""
    stream = Stream(users=sizes.users, in_flight=1)
    db = mongo[DB]
    now = datetime.now(UTC)
    bar = progress(total=sizes.users + sizes.live_tasks, desc="fill the stand-in", unit="doc")
    balances = (
        {"_id": ObjectId(), "masterAccountId": uid, "usdCredit": Decimal128(f"{i % 97}.{i % 1000:06d}"),
         "exp": Int64(i % 5000), "createdAt": now.replace(tzinfo=None), "updatedAt": now.replace(tzinfo=None)}
        for i, uid in enumerate(stream.user_ids)
    )
    _insert_in_batches(db[ECONOMY], balances, bar)
    tasks = (
        stream.task_document(
            _Task(ObjectId(), stream.user_ids[(i * 7919) % sizes.users], TOOLS[i % len(TOOLS)],
                  PLATFORMS[i % len(PLATFORMS)], now - timedelta(seconds=30 + i % 600), steps=4, step=i % 4,
                  status="processing" if i % 3 else "pending"),
            now - timedelta(seconds=i % 30),
        )
        for i in range(sizes.live_tasks)
    )
    _insert_in_batches(db[TASKS], tasks, bar)
    bar.close()


def scan_only(mongo, total: int) -> tuple[float, float]:
    """Seconds (wall, this process's CPU) for pymongo to read both collections, documents
    decoded and dropped."""
    db = mongo[DB]
    bar = progress(total=total, desc="baseline: plain scan", unit="doc")
    started, cpu = time.perf_counter(), time.process_time()
    for name in (TASKS, ECONOMY):
        for _ in db[name].find({}, batch_size=1000):
            bar.update()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    bar.close()
    return elapsed, cpu


def resync_in(root: Path, mongo_url: str, prefix: str, again: bool = False) -> dict[str, Any]:
    """One resync by ``root``'s projector in a child process: wall, cpu and redis seconds (and,
    with ``again``, the same of a second resync over the model the first built, under "again")."""
    command = [sys.executable, "-c", RESYNC, str(root), mongo_url, DB, REDIS_URL, prefix] + (["again"] if again else [])
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the resync at {root} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = available()
    if reason:
        return [skipped(BENCH, "resync", reason)]

    sizes = sizes or (QUICK if quick else FULL)
    total = sizes.users + sizes.live_tasks
    redis = redis_client()
    standin = StandInProcess()
    rows: list[Row] = []
    try:
        setup = standin.client()
        fill(setup, sizes)
        baseline_s, baseline_cpu_s = scan_only(setup, total)
        setup.close()
        checkouts = [("this checkout", ROOT)] + ([("before", Path(BEFORE_ROOT))] if BEFORE_ROOT else [])
        for name, root in checkouts:
            with scratch_prefix(redis, "rs") as prefix:
                print(f"resync by {name} ({root}) ...", file=sys.stderr)
                # no checkpoint: its first step resyncs; AGAIN: once more over the model it built
                result = resync_in(root, standin.url, prefix, AGAIN)
                users, tasks = count_model(redis, prefix)
            rows += _rows(name, root, sizes, result, users, tasks, baseline_s, baseline_cpu_s)
            if "again" in result:
                rows += _again_rows(name, root, sizes, result["again"], baseline_s)
    finally:
        standin.stop()
        redis.close()
    return rows


def _rows(name: str, root: Path, sizes: Sizes, result: dict[str, float | str], users: int, tasks: int,
          baseline_s: float, baseline_cpu_s: float) -> list[Row]:
    elapsed, cpu_s, redis_s = float(result["wall"]), float(result["cpu"]), float(result["redis"])
    total = sizes.users + sizes.live_tasks
    label = "" if name == "this checkout" else f" ({name}: {root})"
    note = (f"{sizes.users} users' balances + {sizes.live_tasks} live tasks; state after: {result['state']}; "
            f"read model holds {users} users, {tasks} live tasks; load average {os.getloadavg()[0]:.1f}")
    if users != sizes.users or tasks != sizes.live_tasks:
        note += " (MISMATCH)"
    return [
        Row(BENCH, f"rebuild {sizes.users:,} users + {sizes.live_tasks:,} live tasks{label}", elapsed, "s",
            baseline=baseline_s, baseline_name="pymongo scan alone, s", higher_is_better=False, note=note,
            target=5.0, extra={"users": users, "tasks": tasks, "root": str(root)}),
        Row(BENCH, f"resync rate{label}", total / elapsed, "docs/s", baseline=total / baseline_s,
            baseline_name="pymongo scan alone"),
        Row(BENCH, f"resync CPU of the projector process{label}", cpu_s, "s", baseline=baseline_cpu_s,
            baseline_name="pymongo scan alone, CPU s", higher_is_better=False,
            note=f"Redis used {redis_s:.1f} CPU s meanwhile (all its clients': on a shared instance, other sessions' "
                 f"too; BENCH_REDIS_URL picks a private one); {cpu_s / total * 1e6:.0f} us per document"),
    ]


def _again_rows(name: str, root: Path, sizes: Sizes, again: dict[str, float], baseline_s: float) -> list[Row]:
    label = "" if name == "this checkout" else f" ({name}: {root})"
    total = sizes.users + sizes.live_tasks
    return [Row(BENCH, f"resync again over the full read model{label}", again["wall"], "s", baseline=baseline_s,
                baseline_name="pymongo scan alone, s", higher_is_better=False,
                note=f"projector CPU {again['cpu']:.2f} s ({again['cpu'] / total * 1e6:.0f} us per document), "
                     f"Redis CPU {again['redis']:.2f} s: an operator's resync, every user swept")]


def count_model(redis, prefix: str) -> tuple[int, int]:
    """(users with a snapshot, live tasks) in the rebuilt read model."""
    users = 0
    tasks = 0
    pipe = redis.pipeline(transaction=False)
    for key in redis.scan_iter(match=Layout(prefix).tasks_pattern(), count=5000):
        pipe.hlen(key)
        if len(pipe) >= 5000:
            tasks += sum(pipe.execute())
    tasks += sum(pipe.execute())
    for _ in redis.scan_iter(match=Layout(prefix).user_pattern(), count=5000):
        users += 1
    return users, tasks


