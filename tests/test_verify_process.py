"""`projector verify` as operators run it: under a running `projector run`, with the API serving
SSE clients; and the worker's scheduled verify with its Prometheus counters."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devkit.ports import free_port
from devkit.waits import wait_for
from projector.checkpoint import CheckpointStore
from projector.verify_schedule import request_key

from .apiserver import SSE, Server, auth
from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, task_doc
from .test_verify import applied_through, standin  # noqa: F401  (the quick-clock stand-in)

ROOT = Path(__file__).resolve().parents[1]
USERS = [f"u{n}" for n in range(6)]


@pytest.fixture
def world(standin, real_redis, prefix, layout, store_env, tmp_path):
    """Six users in the stand-in; `start(**env)` runs `projector run` on them until it applied them."""
    for n, uid in enumerate(USERS):
        standin.insert(DB, TASKS, task_doc(f"g{n}", uid, progress=0.25))
        standin.insert(DB, TASKS, task_doc(f"h{n}", uid, status="queued"))
        standin.insert(DB, ECONOMY, economy_doc(f"e{n}", uid, credit=f"{n}.5"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", **store_env, KEY_PREFIX=prefix, MONGO_URL=standin.url)
    procs: list[subprocess.Popen] = []

    def applied() -> None:
        applied_through(real_redis, layout, standin, 20)

    def start(*args: str, **extra: str) -> subprocess.Popen:
        with open(tmp_path / "projector.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "projector", "run", "--no-progress", *args], cwd=ROOT,
                                    env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_for(lambda: proc.poll() is not None or CheckpointStore(real_redis, layout).load() is not None, 20,
                 "the projector starting")
        if proc.poll() is not None:
            raise OSError((tmp_path / "projector.log").read_text())
        applied()
        return proc

    def start_with_metrics(**extra: str) -> int:
        """`start` serving /metrics; another port when the one picked was taken meanwhile (tests of
        other sessions open thousands of connections on this machine)."""
        for _attempt in range(5):
            port = free_port()
            try:
                start("--metrics-port", str(port), **extra)
                return port
            except OSError as exc:
                if "Address already in use" not in str(exc):
                    raise
                procs.pop()
        raise AssertionError("no free port for /metrics in 5 attempts")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "projector", "verify", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    start.with_metrics = start_with_metrics
    yield start, cli, applied
    for proc in procs:
        proc.terminate()
        assert proc.wait(10) == 0, (tmp_path / "projector.log").read_text()


def rest(server: Server, uid: str) -> dict:
    response = httpx.get(f"{server.url}/users/{uid}/status", headers=auth(), timeout=5)
    assert response.status_code == 200
    return response.json()


def content(snap: dict) -> dict:
    """What the documents decide: not the version, when it changed, or how fresh the read was."""
    return {k: v for k, v in snap.items() if k not in ("version", "updatedAt", "source")}


def test_verify_names_six_kinds_of_damage_and_repair_brings_sse_clients_to_the_documents_state(
        world, standin, real_redis, layout, prefix, store_env):
    start, cli, applied = world
    start(VERIFY_EVERY_S="0")
    old_dump = {key: real_redis.dump(key) for key in layout.user_keys("u5") if real_redis.exists(key)}
    standin.update(DB, TASKS, "g5", set={"progress": 0.75})
    standin.update(DB, ECONOMY, "e5", set={"usdCredit": "9.75"})
    applied()
    server = Server(prefix, env=dict(store_env)).start()
    try:
        with contextlib.ExitStack() as stack:
            streams = {}
            for uid in USERS:
                response = stack.enter_context(httpx.stream("GET", f"{server.url}/users/{uid}/status/stream",
                                                            headers=auth(), timeout=5))
                streams[uid] = SSE(response)
                streams[uid].snapshot()
            before = {uid: rest(server, uid) for uid in USERS}

            real_redis.delete(layout.user("u0"))  # 1. a user's key deleted
            real_redis.hdel(layout.tasks("u1"), "g1")  # 2. one task deleted
            real_redis.zrem(layout.deadlines, "u1")  # 3. its stale deadline too
            real_redis.hset(layout.user("u2"), "usdCredit", "999")  # 4. a balance altered
            record = json.loads(real_redis.hget(layout.tasks("u3"), "g3"))
            real_redis.hset(layout.tasks("u3"), "x3", json.dumps({**record, "generationId": "x3"}))  # 5. an extra task
            real_redis.set(layout.task_owner("h4"), "0000000001.0000000000|intruder|")  # 6. an owner entry
            for key, value in old_dump.items():  # 7. an old dump of a user's keys restored
                real_redis.restore(key, 0, value, replace=True)
            real_redis.hset(layout.seqs("u2"), "h2", "9999999999.0000000000")  # 8. a position from the future

            found = cli("--json")
            assert found.returncode == 1, found.stderr
            drift = {(d["kind"], d["user"], d["doc"]) for d in json.loads(found.stdout)["drift"]}
            assert drift == {
                ("balance-missing", "u0", "e0"), ("version-missing", "u0", ""),
                ("task-missing", "u1", "g1"), ("deadline-missing", "u1", ""),
                ("balance-different", "u2", "e2"), ("position-ahead", "u2", "h2"),
                ("task-extra", "u3", "x3"), ("owner-wrong", "u4", "h4"),
                ("task-different", "u5", "g5"), ("balance-different", "u5", "e5"),
            }
            human = cli()
            assert human.returncode == 1 and len(human.stdout.splitlines()) == len(drift)
            assert "task-extra             user u3 task x3: in the read model (processing), not in MongoDB" in human.stdout
            assert "10 differences in 6 users" in human.stderr

            repaired = cli("--repair", "--json")
            assert repaired.returncode == 0, repaired.stderr + repaired.stdout
            outcome = json.loads(repaired.stdout)
            assert outcome["by"] == "the running projector" and outcome["remaining"] == []

            after = {uid: rest(server, uid) for uid in USERS}
            for uid in USERS:
                assert content(after[uid]) == content(before[uid]), uid
                seen = streams[uid].snapshot(timeout_s=10).json()  # announced: every client gets it
                while seen["version"] < after[uid]["version"]:  # a repair step in between may show first
                    seen = streams[uid].snapshot(timeout_s=10).json()
                assert content(seen) == content(after[uid]) and seen["version"] == after[uid]["version"]
                assert seen["version"] > before[uid]["version"]
    finally:
        server.stop()
    clean = cli()
    assert clean.returncode == 0 and "0 differences" in clean.stdout


def test_the_scheduled_verify_repairs_and_counts_what_it_found(world, real_redis, layout):
    start, _cli, _applied = world
    port = start.with_metrics(VERIFY_EVERY_S="0.2", VERIFY_SAMPLE="1000")
    real_redis.lpush(request_key(layout), "not a request", json.dumps({"id": "../x", "users": ["u1"]}))
    real_redis.hdel(layout.tasks("u1"), "g1")
    real_redis.hset(layout.user("u2"), "usdCredit", "999")

    def metrics() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    wait_for(lambda: 'livestatus_projector_verify_repaired_total{kind="balance-different"} 1.0' in metrics()
             and 'livestatus_projector_verify_repaired_total{kind="task-missing"} 1.0' in metrics(), 30,
             "the scheduled verify repairing both")
    text = metrics()
    if shutil.which("promtool"):  # CI has it (scripts/ensure-promtool); the conventions ops checks
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert (check.returncode, check.stdout + check.stderr) == (0, "")
    assert 'livestatus_projector_verify_drift_total{kind="task-missing"} 1.0' in text
    assert 'livestatus_projector_verify_drift_total{kind="task-extra"} 0.0' in text
    assert "livestatus_projector_verify_last_run_timestamp_seconds" in text
    assert real_redis.hexists(layout.tasks("u1"), "g1")
    assert real_redis.hget(layout.user("u2"), "usdCredit") == b"2.5"
    wait_for(lambda: real_redis.llen(request_key(layout)) == 0, 10, "malformed requests dropped (the worker goes on)")


def test_usage_and_a_projector_that_does_not_apply_exit_2_with_one_sentence(world, standin, store_env, prefix):
    _start, cli, _applied = world
    bad = cli("--sample", "1.5")
    assert bad.returncode == 2 and "a sample is a whole number of users or a fraction" in bad.stderr
    bad_user = cli("--user", "a b")
    assert bad_user.returncode == 2 and "a user id is 1-128 letters" in bad_user.stderr
    env = dict(os.environ, **store_env, KEY_PREFIX=prefix, MONGO_URL=standin.url, VERIFY_SAMPLE="lots")
    run = subprocess.run([sys.executable, "-m", "projector", "run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("projector: VERIFY_EVERY_S / VERIFY_SAMPLE: ")
    nothing = cli("--wait-s", "0.5")  # no projector ever ran: no checkpoint
    assert nothing.returncode == 2
    assert nothing.stderr.strip().splitlines()[-1].startswith("projector: verify could not compare: the projector "
                                                             "has not applied past")
