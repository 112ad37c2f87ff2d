"""Redis losing everything under a running projector (FLUSHDB, or a restart without persistence)
is detected, resynced and converges. Uses a private redis-server: never the shared one."""

from __future__ import annotations

import random
import signal
import time

import redis

from devkit.waits import wait_for
from readmodel import Layout
from tests.procs import caught_up, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare, resync_seconds

RUN = ("--batch-size", "100", "--lease-ttl-ms", "1500", "--no-progress")


def test_flushdb_and_a_redis_restart_mid_run_are_resynced_and_converge(standin, spawn, private_redis, prefix):
    losses, events = size(2, 12), size(3_000, 50_000)
    seed = random.randrange(1 << 30)
    print(f"SEED={seed} losses={losses} events={events}")
    chaos = random.Random(seed)
    layout = Layout(prefix)
    client = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    writer = MixedWriter(standin, seed, limit=events, pause_s=0.002)
    writer.seed()
    proc = spawn("--mongo-url", standin.url, "--redis-url", private_redis.url, *RUN)
    wait_for(lambda: caught_up(client, layout, standin), 20, "the initial sync")
    writer.start()
    detected: list[float] = []
    try:
        for n in range(losses):
            wait_for(lambda: writer.count >= (n + 1) * events // (losses + 1) or writer.stop.is_set(), 600, "writes")
            before = len(resync_seconds(output(proc)))
            lost_at = time.monotonic()
            if n % 2 == 0:
                client.flushdb()
            else:
                private_redis.kill()
                time.sleep(chaos.uniform(0.2, 1.0))
                private_redis.start()
                client.close()
                client = redis.Redis.from_url(private_redis.url, socket_timeout=5)
            wait_for(lambda: len(resync_seconds(output(proc))) > before, 60, f"the resync after loss {n}")
            detected.append(time.monotonic() - lost_at)
        writer.join(timeout=900)
    finally:
        writer.stop.set()
        writer.join()
    wait_for(lambda: caught_up(client, layout, standin), 60, "catching up after the last write")
    diff = compare(standin, client, layout)
    log = output(proc)
    print(f"loss -> resync done: {[round(s, 2) for s in detected]} s; resync durations {resync_seconds(log)}; {diff}")
    assert proc.poll() is None, log[-3000:]
    assert len(resync_seconds(log)) == losses + 1  # the initial one, then one per loss
    assert len(diff.lost) == 0 and len(diff.phantom) == 0, str(diff)
    assert diff.clean, str(diff)
    assert "Traceback" not in log, log[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    client.close()
