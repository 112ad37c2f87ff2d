"""The real `projector run` process: signals, misconfiguration, two workers, kill -9 anywhere."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from devkit.ports import free_port
from devkit.waits import wait_for
from projector.checkpoint import CheckpointStore
from projector.lease import Lease
from readmodel import position
from standin import StandIn

from .capture_helpers import DB, ECONOMY, TASKS, actual_state, economy_doc, expected_state, snapshot, task_doc, without_empty

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def spawn(prefix, tmp_path, store_env):
    """Start `python -m projector run ...`; every process still alive at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, command: str = "run") -> subprocess.Popen:
        log = open(tmp_path / f"projector-{len(started)}.log", "w+")
        extra = ["--key-prefix", prefix] if "--key-prefix" not in args else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "projector", command, *extra, *args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **store_env),
        )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.log.close()


def output(proc) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def leader_pid(redis, layout) -> int | None:
    current = Lease.current(redis, layout)
    return int(current[0].split(":")[-2]) if current else None


def caught_up(redis, layout, standin) -> bool:
    checkpoint = CheckpointStore(redis, layout).load()
    latest = standin.cluster_time()
    return checkpoint is not None and checkpoint.position >= position(latest.time, latest.inc)


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


class Writer(threading.Thread):
    """Mixed writes at a steady pace: inserts, progress, completions, deletes, owner moves, balances."""

    USERS: ClassVar[list[str]] = [f"u{i}" for i in range(6)]

    def __init__(self, standin, seed: int) -> None:
        super().__init__(daemon=True)
        self.standin = standin
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.live: list[str] = []
        self.count = 0

    def seed(self) -> None:
        for i, uid in enumerate(self.USERS):
            self.standin.insert(DB, ECONOMY, economy_doc(f"e{i}", uid, credit="1.00", exp=0))
        for n in range(40):
            self.insert(f"s{n}")

    def insert(self, gid: str) -> None:
        status = self.random.choice(["pending", "processing", "running", "queued"])
        self.standin.insert(DB, TASKS, task_doc(gid, self.random.choice(self.USERS), status=status))
        self.live.append(gid)

    def one(self) -> None:
        r, n = self.random.random(), self.count
        if r < 0.25 or not self.live:
            self.insert(f"w{n}")
        elif r < 0.55:
            self.standin.update(DB, TASKS, self.random.choice(self.live), set={"progress": round(self.random.random(), 2)})
        elif r < 0.65:
            gid = self.live.pop(self.random.randrange(len(self.live)))
            self.standin.update(DB, TASKS, gid, set={"status": self.random.choice(["completed", "failed"])})
        elif r < 0.75:
            self.standin.delete(DB, TASKS, self.live.pop(self.random.randrange(len(self.live))))
        elif r < 0.82:
            gid = self.random.choice(self.live)
            self.standin.replace(DB, TASKS, gid, task_doc(gid, self.random.choice(self.USERS), progress=0.5))
        else:
            i = self.random.randrange(len(self.USERS))
            self.standin.update(DB, ECONOMY, f"e{i}", set={"usdCredit": f"{self.random.randint(0, 9999) / 100:.2f}",
                                                             "exp": self.random.randint(0, 500)})
        self.count += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()
            time.sleep(0.002)


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
