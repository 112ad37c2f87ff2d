"""Never two writers: a leader and a standby projector on a Redis Cluster; the master holding the
lease and the fence is killed at random moments of a burst, every other time with the leader
paused across the failover (SIGSTOP until the standby leads, then SIGCONT), which is what a long
GC pause or a frozen VM does. So that it is paused with writes in flight (the window its own lease
checks cannot close), every master holds its clients for a moment first (CLIENT PAUSE): the
leader's next batch is then sent and waiting when it stops, and goes on under its old token when
it wakes up. Every accepted
fenced write and checkpoint, and every raise of a slot's copy by a new leader, is recorded with its
token (FENCE_AUDIT=1, :mod:`readmodel.fences`): in each slot, no write of a token is accepted after a
newer token was raised or written there; in the time order of all nodes (one machine, one clock),
no write of a token is accepted after a write of a newer one; and the read model ends equal to the
documents (docs/two-writers.md)."""

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
from tests.procs import caught_up, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare

RUN = ("--batch-size", "50", "--lease-ttl-ms", "2000", "--no-progress")
SHOWN = ("leader now", "lease", "fenced", "resync", "Traceback", "Error:")
HOLD_MS = 1000  # CLIENT PAUSE: below the cluster's node timeout (no failover from it)


@pytest.fixture
def store_env(cluster) -> dict[str, str]:
    return cluster.env


def quietly(read):
    """``read()``, or None while the cluster cannot answer (in the middle of a failover)."""
    try:
        return read()
    except (RedisError, RedisClusterException):
        return None


def audit(redis, layout) -> list[list[tuple[int, int, str]]]:
    """Every slot's audit list still in Redis: (node time in microseconds, token, kind) in the order
    the node ran them; kind ``raise`` is a new leader raising the slot's copy, the others accepted
    writes. A failover may have lost the last entries of the master it replaced: a lost entry can
    hide nothing (it cannot make two tokens interleave), it only makes the record shorter."""
    keys = list(redis.scan_iter(match=Fences(redis, layout, audit=True).audit_pattern(), count=1000))
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(key, 0, -1)
    lists = []
    for raw in pipe.execute():
        entries = [text(entry).split() for entry in raw]
        lists.append([(int(at), int(token), kind) for token, kind, at in entries])
    return lists


def overtaken(entries: list[tuple[int, int, str]]) -> list[tuple[int, int, str, int]]:
    """The writes accepted under a token older than one raised or accepted before them (with that
    token): in one slot's list (the node's own order), or in the time order of all writes."""
    bad, newest = [], 0
    for at, token, kind in entries:
        if token < newest and kind != "raise":
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
            leading: list = [None]

            def a_leader() -> bool:
                leading[0] = quietly(lambda: Lease.current(real_redis, layout))
                return leading[0] is not None

            wait_for(a_leader, 30, "a leader")
            old = leading[0]  # (holder, token); the lease may change hands from here on
            scripts.refresh_slot_map(real_redis)
            victim = real_redis.get_node_from_key(layout.leader).port
            pause = turn % 2 == 0
            if pause:
                paused = by_pid[int(old[0].split(":")[-2])]  # holder = host:pid:random
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

                def checkpointed_by_a_newer_leader() -> bool:
                    saved = quietly(lambda: CheckpointStore(real_redis, layout).load())
                    return saved is not None and saved.fence > old[1]

                wait_for(checkpointed_by_a_newer_leader, 30, "a newer leader's first checkpoint")
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
        for proc in procs:  # shown when the test fails: who led when, and what each was refused
            lines = [line for line in output(proc).splitlines() if any(word in line for word in SHOWN)]
            print(f"--- projector {proc.pid}:\n" + "\n".join(lines[-25:]))
    lists = audit(real_redis, layout)
    writes = sorted(entry for entries in lists for entry in entries if entry[2] != "raise")
    logs = [output(proc) for proc in procs]
    tokens = sorted({token for _at, token, _kind in writes})
    refused = sum(log.count("fenced off") for log in logs)
    print(f"{len(writes)} audited writes under tokens {tokens}; {takeovers} takeovers; "
          f"{refused} writes refused by a fence check")
    in_a_slot = [bad for entries in lists for bad in overtaken(entries)]
    assert in_a_slot == [], sorted(in_a_slot)[:20]  # after a newer leader's raise or write in the same slot
    assert overtaken(writes) == [], overtaken(writes)[:20]  # after a newer leader's write anywhere
    assert len(tokens) >= 1 + rounds // 2  # every paused leader was replaced
    assert {kind for _at, _token, kind in writes} >= {"apply", "own", "checkpoint"}
    for log in logs:
        assert "Traceback" not in log, log[-3000:]
