"""kill -9 of the real `projector run` at random moments of a mixed write stream loses nothing."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from devkit.waits import wait_for
from tests.procs import caught_up, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare

pytestmark = pytest.mark.both_backends  # Every real-Redis test here runs on a single Redis and on a Redis Cluster.


RUN = ("--batch-size", "50", "--lease-ttl-ms", "1500", "--no-progress")


def test_random_kill_9_during_mixed_writes_ends_with_no_lost_and_no_phantom_tasks(standin, spawn, real_redis, layout):
    kills, events = size(4, 20), size(3_000, 50_000)
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    print(f"KILL_SEED={seed} kills={kills} events={events}")
    chaos = random.Random(seed)
    writer = MixedWriter(standin, seed, limit=events, pause_s=0.002)
    writer.seed()
    kill_points = sorted(chaos.randrange(events // 20, events * 19 // 20) for _ in range(kills))
    procs = [spawn("--mongo-url", standin.url, *RUN)]
    writer.start()
    started = time.monotonic()
    try:
        for point in kill_points:
            wait_for(lambda: writer.count >= point or writer.stop.is_set(), 600, f"the writer reaching {point}")
            # Kill a worker at work: leader, then anywhere in its resync or tailing.
            wait_for(lambda: "leader now" in output(procs[-1]), 20, "the new process taking the lease")
            time.sleep(chaos.uniform(0, 0.6))
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait()
            time.sleep(chaos.uniform(0, 1.6))  # sometimes before the dead leader's lease lapses
            procs.append(spawn("--mongo-url", standin.url, *RUN))
        writer.join(timeout=900)
    finally:
        writer.stop.set()
        writer.join()
    wrote_s = time.monotonic() - started
    took = wait_for(lambda: caught_up(real_redis, layout, standin), 120, "the last worker catching up")
    assert writer.count == events
    diff = compare(standin, real_redis, layout)
    print(f"{events} events in {wrote_s:.1f} s, {kills} kills, caught up {took:.1f} s after the last write; {diff}")
    assert len(diff.lost) == 0, str(diff)
    assert len(diff.phantom) == 0, str(diff)
    assert diff.clean, str(diff)
    assert all("Traceback" not in output(p) for p in procs), output(procs[-1])
    wait_for(lambda: "leader now" in output(procs[-1]), 20, "the last process taking the lease")
    procs[-1].send_signal(signal.SIGTERM)
    assert procs[-1].wait(15) == 0
