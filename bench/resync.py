"""Resync: rebuild the read model of 100k users and 50k live tasks from the MongoDB stand-in.

The stand-in runs as its own process (``python -m standin``) and real pymongo talks to it. The
measurement is the projector's first ``Worker.step()`` on an empty read model: it finds no
checkpoint and resyncs (scan both collections, project, sweep, checkpoint). Baseline in the same
run: pymongo reading the same two collections with nothing done to the documents, i.e. what
the stand-in and the driver alone cost.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bson import Decimal128, Int64, ObjectId

from readmodel import Layout

from .common import REDIS_URL, Row, progress, redis_client, redis_cpu_seconds, scratch_prefix, skipped
from .events import DB, ECONOMY, PLATFORMS, TASKS, TOOLS, Stream, _Task
from .procs import HOST, LOGS, free_port, stop_process

BENCH = "resync"


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


class StandInProcess:
    def __init__(self) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = open(LOGS / f"standin-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "standin", "--host", HOST, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
        self.url = f"mongodb://{HOST}:{self.port}/?directConnection=true"

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


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


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = available()
    if reason:
        return [skipped(BENCH, "resync", reason)]
    from pymongo import MongoClient

    from projector.settings import Settings
    from projector.source import connect
    from projector.worker import Worker

    sizes = sizes or (QUICK if quick else FULL)
    total = sizes.users + sizes.live_tasks
    redis = redis_client()
    standin = StandInProcess()
    try:
        setup = MongoClient(standin.url, serverSelectionTimeoutMS=30_000)
        setup.admin.command("ping")
        fill(setup, sizes)
        baseline_s, baseline_cpu_s = scan_only(setup, total)
        setup.close()
        with scratch_prefix(redis, "rs") as prefix:
            settings = Settings(mongo_url=standin.url, mongo_db=DB, redis_url=REDIS_URL, key_prefix=prefix)
            mongo = connect(standin.url)
            worker = Worker(settings, redis, mongo, progress=True)
            started, cpu = time.perf_counter(), (time.process_time(), redis_cpu_seconds(redis))
            try:
                state = worker.step()  # no checkpoint: this step is the resync
                elapsed = time.perf_counter() - started
                # This process's CPU (the worker's, reader's and writer's threads) and Redis's.
                cpu_s, redis_s = time.process_time() - cpu[0], redis_cpu_seconds(redis) - cpu[1]
            finally:
                worker.close()
                mongo.close()
            users, tasks = count_model(redis, prefix)
    finally:
        standin.stop()
        redis.close()
    note = (f"{sizes.users} users' balances + {sizes.live_tasks} live tasks; state after: {state}; "
            f"read model holds {users} users, {tasks} live tasks")
    if users != sizes.users or tasks != sizes.live_tasks:
        note += " (MISMATCH)"
    return [
        Row(BENCH, f"rebuild {sizes.users:,} users + {sizes.live_tasks:,} live tasks", elapsed, "s",
            baseline=baseline_s, baseline_name="pymongo scan alone, s", higher_is_better=False, note=note,
            extra={"users": users, "tasks": tasks}),
        Row(BENCH, "resync rate", total / elapsed, "docs/s", baseline=total / baseline_s,
            baseline_name="pymongo scan alone"),
        Row(BENCH, "resync CPU of the projector process", cpu_s, "s", baseline=baseline_cpu_s,
            baseline_name="pymongo scan alone, CPU s", higher_is_better=False,
            note=f"Redis used {redis_s:.1f} CPU s meanwhile; wall time on a shared machine varies far more"),
    ]


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


