"""Never two writers: a leader and a standby projector on a Redis Cluster; the master holding the
lease and the fence is killed at random moments of a burst, every other time with the leader
paused across the failover (SIGSTOP until the standby leads, then SIGCONT), which is what a long
GC pause or a frozen VM does. So that it is paused with writes in flight (the window its own lease
checks cannot close), every master holds its clients for a moment first (CLIENT PAUSE): the
leader's next batch is then sent and waiting when it stops, and goes on under its old token when
it wakes up. Every accepted
fenced write and checkpoint is recorded with its token (FENCE_AUDIT=1, :mod:`readmodel.fences`):
in the time order of the nodes (one machine, one clock) no write of a token is accepted after a
write of a newer one, and the read model ends equal to the documents (docs/two-writers.md)."""

from __future__ import annotations

import os
import random
import signal

import pytest
import redis
from redis.exceptions import RedisClusterException, RedisError

from devkit.rediscluster import LocalCluster
from devkit.waits import wait_for
from projector.checkpoint import CheckpointStore
from projector.lease import Lease
from readmodel import scripts
from readmodel.fences import Fences
from readmodel.text import text
from tests.procs import caught_up, leader_pid, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare

RUN = ("--batch-size", "50", "--lease-ttl-ms", "2000", "--no-progress")
HOLD_MS = 1000  # CLIENT PAUSE: below the cluster's node timeout (no failover from it)


@pytest.fixture
def cluster():
    """A cluster of this test's own: it loses masters."""
    with LocalCluster() as local:
        yield local


@pytest.fixture
def store_env(cluster) -> dict[str, str]:
    return cluster.env


def quietly(read):
    """``read()``, or None while the cluster cannot answer (in the middle of a failover)."""
    try:
        return read()
    except (RedisError, RedisClusterException):
        return None


def audit(redis, layout) -> list[tuple[int, int, str]]:
    """(node time in microseconds, token, kind) of every audited write still in Redis, in time order.
    A failover may have lost the last entries of the master it replaced: a lost entry can hide
    nothing (it cannot make two tokens interleave), it only makes the record shorter."""
    fences = Fences(redis, layout, audit=True)
    entries = []
    for key in redis.scan_iter(match=fences.audit_pattern(), count=1000):
        for raw in redis.lrange(key, 0, -1):
            token, kind, at = text(raw).split()
            entries.append((int(at), int(token), kind))
    return sorted(entries)


def interleaved(entries: list[tuple[int, int, str]]) -> list[tuple[int, int, str, int]]:
    """The writes accepted under a token older than one accepted before them (with that token)."""
    bad, newest = [], 0
    for at, token, kind in entries:
        if token < newest:
            bad.append((at, token, kind, newest))
        newest = max(newest, token)
    return bad


def test_killing_the_lease_master_never_lets_two_projectors_write_in_the_same_period(
    standin, spawn, real_redis, layout, cluster: LocalCluster, monkeypatch
):
    rounds = size(6, 16)
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    print(f"KILL_SEED={seed} rounds={rounds}")
    chaos = random.Random(seed)
    writer = MixedWriter(standin, seed, limit=10**7, pause_s=0.003)
    writer.seed()
    monkeypatch.setenv("FENCE_AUDIT", "1")
    procs = [spawn("--mongo-url", standin.url, *RUN) for _ in range(2)]
    by_pid = {proc.pid: proc for proc in procs}
    paused = None
    takeovers = 0
    try:
        wait_for(lambda: quietly(lambda: caught_up(real_redis, layout, standin)), 60, "the initial sync")
        writer.start()
        for turn in range(rounds):
            at = writer.count + chaos.randrange(50, 400)  # a random moment of the burst
            wait_for(lambda: writer.count >= at, 60, f"the writer reaching {at}")
            wait_for(lambda: quietly(lambda: Lease.current(real_redis, layout)), 30, "a leader")
            old = Lease.current(real_redis, layout)
            scripts.refresh_slot_map(real_redis)
            victim = real_redis.get_node_from_key(layout.leader).port
            pause = turn % 2 == 0
            if pause:
                paused = by_pid[leader_pid(real_redis, layout)]
                for port in cluster.master_ports():
                    with redis.Redis(port=port) as node:
                        node.execute_command("CLIENT", "PAUSE", HOLD_MS, "ALL")
                moved = writer.count + 60  # the leader has read these meanwhile: its next batch is in flight
                wait_for(lambda: writer.count >= moved, 30, "writes while the masters hold their clients")
                paused.send_signal(signal.SIGSTOP)
            cluster.kill9(victim)
            wait_for(lambda: victim not in cluster.master_ports() and len(cluster.master_ports()) == 3, 30,
                     "a replica taking over")
            cluster.wait_ok(30)
            cluster.restart(victim)  # it rejoins as a replica: the next acquisition can WAIT for it
            cluster.wait_replicas_synced(30)

            def led_by_another() -> bool:
                now = quietly(lambda: Lease.current(real_redis, layout))
                return now is not None and now[0] != old[0]

            def led() -> bool:
                return quietly(lambda: Lease.current(real_redis, layout)) is not None

            if pause:
                wait_for(led_by_another, 30, "the standby taking over from the paused leader")
                new = Lease.current(real_redis, layout)
                def checkpointed_by_new() -> bool:
                    saved = quietly(lambda: CheckpointStore(real_redis, layout).load())
                    return saved is not None and saved.fence == new[1]

                wait_for(checkpointed_by_new, 30, "the new leader's first checkpoint")
                paused.send_signal(signal.SIGCONT)
                paused = None
            else:
                wait_for(led, 30, "a leader after the failover")
            takeovers += led_by_another()
        writer.stop.set()
        writer.join()
        wait_for(lambda: quietly(lambda: caught_up(real_redis, layout, standin)), 120, "the projectors catching up")
        diff = compare(standin, real_redis, layout)
        assert diff.clean, str(diff)
    finally:
        if paused is not None:
            paused.send_signal(signal.SIGCONT)
        writer.stop.set()
        writer.join()
        for proc in procs:  # shown when the test fails
            print(f"--- projector {proc.pid}:\n" + "\n".join(output(proc).splitlines()[-25:]))
    entries = audit(real_redis, layout)
    logs = [output(proc) for proc in procs]
    tokens = sorted({token for _at, token, _kind in entries})
    refused = sum(log.count("a batch was fenced off") for log in logs)
    print(f"{len(entries)} audited writes under tokens {tokens}; {takeovers} takeovers; "
          f"{refused} batches refused by the fence copies")
    assert interleaved(entries) == [], interleaved(entries)[:20]
    assert len(tokens) >= 1 + rounds // 2  # every paused leader was replaced
    assert {kind for _at, _token, kind in entries} >= {"apply", "own", "checkpoint"}
    for log in logs:
        assert "Traceback" not in log, log[-3000:]
