"""Verify: what `projector verify` costs, for every user and for a sample of 100.

The stand-in (its own process) is filled like the resync benchmark's; the projector rebuilds the
read model from it (a resync: measured, the baseline), then the verifier compares everything and a
sample of 100 users while the projector goes on running on a thread of its own, as it would. CPU:
the resync's is this process's (its reader and writer threads; the stand-in and Redis run in their
own processes), the verifier's is its own thread's (everything a verify does runs on the thread
that calls it); the load of other processes distorts CPU time less than wall time.
"""

from __future__ import annotations

import threading
import time

from .common import REDIS_URL, Row, redis_client, scratch_prefix, skipped
from .events import DB
from .procs import StandInProcess
from .resync import Sizes, available, fill

BENCH = "verify"
FULL = Sizes(users=10_000, live_tasks=5_000)
QUICK = Sizes(users=1_000, live_tasks=500)
SAMPLE = 100


def _timed(call, cpu_clock=time.process_time):
    cpu, wall = cpu_clock(), time.perf_counter()
    result = call()
    return result, cpu_clock() - cpu, time.perf_counter() - wall


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = available()
    if reason:
        return [skipped(BENCH, "verify", reason)]

    from projector.settings import Settings
    from projector.source import connect
    from projector.verify import Verifier
    from projector.worker import Worker
    from readmodel.settings import StoreSettings

    sizes = sizes or (QUICK if quick else FULL)
    with redis_client() as redis, StandInProcess() as standin:
        setup = standin.client()
        fill(setup, sizes)
        setup.close()
        with scratch_prefix(redis, "vf") as prefix:
            settings = Settings(store=StoreSettings(REDIS_URL, prefix), mongo_url=standin.url, mongo_db=DB)
            mongo = connect(standin.url)
            worker = Worker(settings, redis, mongo, progress=False)
            running = threading.Thread(target=worker.run, daemon=True)  # run() closes the worker when stopped
            try:
                _state, resync_cpu, resync_wall = _timed(worker.step)  # no checkpoint: a resync
                running.start()
                verifier = Verifier(settings, redis, mongo, progress=True)
                full, full_cpu, full_wall = _timed(verifier.check, time.thread_time)
                sample, sample_cpu, sample_wall = _timed(lambda: verifier.check(verifier.sample(SAMPLE)),
                                                         time.thread_time)
            finally:
                worker.stop()
                if running.is_alive():
                    running.join(30)
                else:
                    worker.close()
            mongo.close()
    per_10k = 10_000 / max(1, full.users)
    note = (f"{full.users:,} users, {full.documents:,} documents; {len(full.drift)} differences (must be 0); "
            f"wall {full_wall:.1f} s (resync {resync_wall:.1f} s); shared 2-vCPU machine")
    return [
        Row(BENCH, f"full verify of {full.users:,} users, CPU per 10k users", full_cpu * per_10k, "s",
            baseline=resync_cpu * per_10k, baseline_name="resync of the same data, CPU s per 10k users",
            higher_is_better=False, note=note, extra={"users": full.users, "drift": len(full.drift)}),
        Row(BENCH, f"sampled verify of {SAMPLE} users (listing every user first)", sample_cpu, "s CPU",
            baseline=full_cpu, baseline_name="full verify, CPU s", higher_is_better=False,
            note=f"{sample.users} users, {sample.documents} documents, wall {sample_wall:.2f} s; "
                 f"{len(sample.drift)} differences (must be 0)", extra={"sample_users": sample.users}),
    ]
