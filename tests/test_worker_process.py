"""The real `projector run` process: signals, misconfiguration, two workers, kill -9 anywhere."""

from __future__ import annotations

import os
import random
import signal
import time

from devkit.ports import free_port
from devkit.waits import wait_for
from projector.checkpoint import CheckpointStore
from projector.lease import Lease
from standin import StandIn

from .capture_helpers import DB, TASKS, actual_state, expected_state, snapshot, task_doc, without_empty
from .procs import caught_up, leader_pid, output
from .writers import Writer


def test_sigterm_finishes_checkpoints_and_exits_zero_with_a_counters_line(standin, spawn, real_redis, layout):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    proc = spawn("--mongo-url", standin.url)
    wait_for(lambda: caught_up(real_redis, layout, standin), 15, "the initial sync")
    standin.update(DB, TASKS, "g1", set={"progress": 0.4})
    wait_for(lambda: caught_up(real_redis, layout, standin), 10, "applying the update")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    text = output(proc)
    assert "projector stopped: events=1 " in text and "resyncs=1" in text
    assert "Traceback" not in text
    assert Lease.current(real_redis, layout) is None  # released for a standby at once


def test_unreachable_mongodb_exits_nonzero_with_one_sentence(spawn):
    port = free_port()
    proc = spawn("--mongo-url", f"mongodb://127.0.0.1:{port}/?directConnection=true")
    assert proc.wait(20) != 0
    assert output(proc).strip().splitlines() == [
        f"projector: cannot reach MongoDB at 127.0.0.1:{port} (gave up after a few seconds)."
    ]


def test_standalone_mongodb_exits_nonzero_saying_it_is_not_a_replica_set(spawn):
    with StandIn(replica_set="") as standalone:
        proc = spawn("--mongo-url", standalone.url)
        assert proc.wait(20) != 0
    [line] = output(proc).strip().splitlines()
    assert line.startswith("projector: MongoDB at") and "is not a replica set" in line


def test_bad_credentials_exit_nonzero_with_one_sentence(standin, spawn):
    url = standin.url.replace("mongodb://", "mongodb://someone:wrong@")
    proc = spawn("--mongo-url", url)
    assert proc.wait(20) != 0
    [line] = output(proc).strip().splitlines()
    assert line == f"projector: MongoDB at 127.0.0.1:{standin.port} rejected the credentials in MONGO_URL."
    assert "wrong" not in line


def test_unreachable_redis_exits_nonzero_with_one_sentence(standin, spawn):
    proc = spawn("--mongo-url", standin.url, "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert proc.wait(20) != 0
    [line] = output(proc).strip().splitlines()
    assert line.startswith("projector: cannot reach Redis at 127.0.0.1:")


def test_two_processes_one_leader_and_the_standby_takes_over_after_kill_9(standin, spawn, real_redis, layout):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    first = spawn("--mongo-url", standin.url)
    wait_for(lambda: caught_up(real_redis, layout, standin), 15, "the first worker's initial sync")
    second = spawn("--mongo-url", standin.url)
    time.sleep(2.5)  # the second one is up and standing by
    assert leader_pid(real_redis, layout) == first.pid
    assert "leader now" not in output(second)

    first.send_signal(signal.SIGKILL)
    first.wait()
    standin.update(DB, TASKS, "g1", set={"progress": 0.7})
    took = wait_for(lambda: snapshot(real_redis, layout, "u1")["liveTasks"][0]["progressPercent"] == 70.0,
                    10, "the standby taking over")
    assert took < 8
    assert leader_pid(real_redis, layout) == second.pid
    assert "resync" not in output(second)  # it resumed from the dead leader's checkpoint


def test_paused_old_leader_cannot_overwrite_newer_data_or_the_checkpoint(standin, spawn, real_redis, layout):
    standin.insert(DB, TASKS, task_doc("g1", "u1", progress=0.1))
    old = spawn("--mongo-url", standin.url, "--lease-ttl-ms", "2000")
    wait_for(lambda: caught_up(real_redis, layout, standin), 15, "the initial sync")
    new = spawn("--mongo-url", standin.url, "--lease-ttl-ms", "2000")
    time.sleep(1.5)
    old.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: leader_pid(real_redis, layout) == new.pid, 10, "the takeover")
        standin.update(DB, TASKS, "g1", set={"progress": 0.9})
        wait_for(lambda: caught_up(real_redis, layout, standin), 10, "the new leader applying")
        new_fence = CheckpointStore(real_redis, layout).load().fence
    finally:
        old.send_signal(signal.SIGCONT)
    wait_for(lambda: "standing by" in output(old), 10, "the old leader noticing")
    standin.update(DB, TASKS, "g1", set={"progress": 0.95})
    wait_for(lambda: caught_up(real_redis, layout, standin), 10, "the new leader applying again")
    time.sleep(1)
    assert CheckpointStore(real_redis, layout).load().fence == new_fence
    assert leader_pid(real_redis, layout) == new.pid
    assert snapshot(real_redis, layout, "u1")["liveTasks"][0]["progressPercent"] == 95.0


def test_random_kill_9_points_then_restart_end_equal_to_the_documents(standin, spawn, real_redis, layout):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    print(f"KILL_SEED={seed}")
    chaos = random.Random(seed)
    writer = Writer(standin, seed)
    writer.seed()
    writer.start()
    try:
        proc = spawn("--mongo-url", standin.url, "--batch-size", "50", "--lease-ttl-ms", "1500")
        for _ in range(4):
            time.sleep(chaos.uniform(0.4, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(chaos.uniform(0, 1.6))  # the dead leader's lease may still be there
            proc = spawn("--mongo-url", standin.url, "--batch-size", "50", "--lease-ttl-ms", "1500")
        time.sleep(1.0)
    finally:
        writer.stop.set()
        writer.join()
    wait_for(lambda: caught_up(real_redis, layout, standin), 30, "the last worker catching up")
    assert writer.count > 500
    assert actual_state(real_redis, layout) == without_empty(expected_state(standin))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
