"""`projector verify`: every kind of damage named, repaired through the write path, and a write
racing the verify never reported as drift (in-process verifier against the stand-in and Redis).

Server behaviour relied on: a local read's ``operationTime`` is the last applied oplog entry
(mongodb/mongo jstests/replsets/command_response_operation_time.js), and a change stream returns
events in cluster-time order with a post-batch resume token at or past the newest event it
returned, so a checkpoint at position P covers every change up to P
(jstests/change_streams/report_post_batch_resume_token.js)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from devkit.waits import wait_for
from projector import verify_compare
from projector.checkpoint import CheckpointStore
from projector.normalize import Rules
from projector.settings import Settings
from projector.source import connect
from projector.verify import Verifier, VerifyError
from projector.verify_compare import Actual, Documents, compare
from projector.verify_repair import plan as plan_repair
from projector.worker import Worker
from readmodel import Layout, Partition, position
from standin import StandIn

from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, snapshot, task_doc


@pytest.fixture
def standin():
    """A stand-in whose idle clock moves every half second (MongoDB's periodicNoopIntervalSecs, a
    startup parameter, 10 s by default): a verify waits for the clock to move past its read."""
    with StandIn(noop_interval=0.5) as server:
        yield server


class Running:
    """A worker running on a thread of its own, as `projector run` does."""

    def __init__(self, worker: Worker, standin) -> None:
        self.worker, self.standin = worker, standin
        self.thread = threading.Thread(target=worker.run, daemon=True)
        self.thread.start()

    def applied(self) -> None:
        """Until the worker has applied everything written to the stand-in so far."""
        applied_through(self.worker.redis, self.worker.layout, self.standin)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


def applied_through(redis, layout, standin, timeout_s: float = 15) -> None:
    """Until the checkpoint is past the stand-in's latest write (a checkpoint at its time may be a
    high-water mark that covers only what came before it)."""
    latest = standin.cluster_time()
    target = position(latest.time, latest.inc)
    wait_for(lambda: getattr(CheckpointStore(redis, layout).load(), "position", "") > target, timeout_s,
             f"the projector applying past {target}")


@pytest.fixture
def setup(standin, real_redis, prefix, store_env):
    """A stand-in with three users, a running worker that applied them, and a verifier."""
    for n in range(3):
        standin.insert(DB, TASKS, task_doc(f"g{n}", f"u{n}", progress=0.25))
        standin.insert(DB, TASKS, task_doc(f"h{n}", f"u{n}", status="queued"))
        standin.insert(DB, ECONOMY, economy_doc(f"e{n}", f"u{n}", credit=f"{n}.5"))
    settings = Settings.from_env({**store_env, "MONGO_URL": standin.url, "KEY_PREFIX": prefix})
    mongo = connect(standin.url)
    running = Running(Worker(settings, real_redis, mongo, progress=False), standin)
    running.applied()
    yield running, Verifier(settings, real_redis, mongo, wait_s=10)
    running.stop()
    mongo.close()


def kinds(report) -> set[tuple[str, str, str]]:
    return {(d.kind, d.user, d.doc) for d in report.drift}


def test_a_read_model_the_projector_wrote_is_clean(setup):
    _worker, verifier = setup
    report = verifier.check()
    assert report.drift == [] and report.unsettled == []
    assert report.users == 3 and report.documents == 9


def test_each_damage_is_named_and_the_repair_restores_every_snapshot(setup, real_redis, layout):
    worker, verifier = setup
    before = {u: snapshot(real_redis, layout, u) for u in ("u0", "u1", "u2")}
    real_redis.delete(layout.user("u0"))  # the user hash: balance and version gone
    real_redis.hdel(layout.tasks("u1"), "g1")  # one task
    real_redis.hset(layout.user("u2"), "usdCredit", "999")  # a balance
    record = json.loads(real_redis.hget(layout.tasks("u2"), "g2"))
    real_redis.hset(layout.tasks("u2"), "zz", json.dumps({**record, "generationId": "zz"}))  # an extra task
    real_redis.set(layout.task_owner("h1"), "0000000001.0000000000|intruder|")  # an owner entry
    real_redis.hset(layout.seqs("u2"), "h2", "9999999999.0000000000")  # a position from the future
    real_redis.zrem(layout.deadlines, "u1")  # the stale deadline
    report = verifier.check()
    assert kinds(report) == {
        ("balance-missing", "u0", "e0"), ("version-missing", "u0", ""),
        ("task-missing", "u1", "g1"), ("owner-wrong", "u1", "h1"), ("deadline-missing", "u1", ""),
        ("balance-different", "u2", "e2"), ("task-extra", "u2", "zz"), ("position-ahead", "u2", "h2"),
    }
    assert report.rounds == 2  # drift is confirmed by a second read
    versions = plan_repair(verifier, report.drift, report.raw_ids).apply(real_redis, lambda: None, time.time)
    assert set(versions) == {"u0", "u1", "u2"}
    after = {u: snapshot(real_redis, layout, u) for u in ("u0", "u1", "u2")}
    for uid in before:
        assert {**after[uid], "version": 0, "updatedAt": 0} == {**before[uid], "version": 0, "updatedAt": 0}
        # a deleted or restored hash took the version back: the jump goes past what clients saw
        assert after[uid]["version"] > max(1000, before[uid]["version"])
    assert verifier.check().drift == []
    worker.applied()  # the projector goes on over the repaired model
    assert verifier.check().drift == []


def test_a_different_task_and_a_restored_old_dump_are_named(setup, standin, real_redis, layout):
    worker, verifier = setup
    dump = {key: real_redis.dump(key) for key in layout.user_keys("u0") if real_redis.exists(key)}
    standin.update(DB, TASKS, "g0", set={"progress": 0.75})
    standin.update(DB, ECONOMY, "e0", set={"usdCredit": "7.25"})
    worker.applied()
    for key, value in dump.items():
        real_redis.restore(key, 0, value, replace=True)
    record = json.loads(real_redis.hget(layout.tasks("u1"), "g1"))
    real_redis.hset(layout.tasks("u1"), "g1", json.dumps({**record, "status": "failed"}))
    report = verifier.check()
    assert kinds(report) == {("task-different", "u0", "g0"), ("balance-different", "u0", "e0"),
                             ("task-different", "u1", "g1")}
    assert "progressPercent 25.0!=75.0" in next(d.detail for d in report.drift if d.doc == "g0")
    assert 'status "failed"!="processing"' in next(d.detail for d in report.drift if d.doc == "g1")


def test_a_write_racing_the_verify_is_not_drift(setup, standin, monkeypatch):
    """Documents change after MongoDB was read and the projector applies them before Redis is
    read, twice in a row: the read model is newer than what was read, which is not drift."""
    worker, verifier = setup
    wait = verifier._wait_applied
    races = []

    def write_then_wait(target: str) -> None:
        if len(races) < 2:
            races.append(target)
            standin.update(DB, TASKS, "g0", set={"progress": 0.9 + len(races) / 100})
            standin.update(DB, ECONOMY, "e1", set={"usdCredit": f"4{len(races)}"})
            standin.delete(DB, TASKS, f"h{len(races)}")
            worker.applied()
        wait(target)

    monkeypatch.setattr(verifier, "_wait_applied", write_then_wait)
    report = verifier.check()
    assert len(races) == 2 and report.drift == [] and report.unsettled == []
    assert report.rounds == 3  # the raced users were read again until they held still


def test_the_verify_waits_for_the_projector_and_says_so_when_it_does_not_apply(setup, standin):
    worker, verifier = setup
    worker.stop()
    standin.update(DB, TASKS, "g0", set={"progress": 0.9})  # no projector applies it
    verifier.wait_s = 0.3
    with pytest.raises(VerifyError, match="has not applied past"):
        verifier.check()


def test_a_sample_checks_that_many_users_and_finds_a_user_missing_from_redis(setup, real_redis, layout):
    _worker, verifier = setup
    for key in layout.user_keys("u1"):
        real_redis.delete(key)
    assert verifier.all_users() == ["u0", "u1", "u2"]  # u1 is known from MongoDB only now
    listed = verifier.all_users
    verifier.all_users = lambda: pytest.fail("a server with $sample: no listing of every user")
    assert verifier.sample(100) == ["u0", "u1", "u2"]  # $sample of 100 documents: all of them, u1 found
    assert len(verifier.sample(2)) == 2 and 1 <= len(verifier.sample(0.5)) <= 2  # half of the 2 or 3 found
    verifier.all_users = listed
    report = verifier.check(["u1"])
    assert {d.kind for d in report.drift} == {"task-missing", "balance-missing"}


def test_a_server_that_refuses_sample_gets_every_user_listed_instead(setup, standin, real_redis, layout):
    _worker, verifier = setup
    for key in layout.user_keys("u1"):
        real_redis.delete(key)
    listed, calls = verifier.all_users, []
    verifier.all_users = lambda: calls.append(1) or listed()
    standin.fail_next("aggregate", code=40324, when=lambda command: "$sample" in command.get("pipeline", [{}])[0])
    assert len(verifier.sample(0.5)) == 2 and calls == [1]  # the three users listed, half of them (rounded)


def test_an_estimate_from_a_learned_duration_a_progress_moved_time_and_a_stale_task_are_not_drift():
    rules = Rules()
    now_ms = int(time.time() * 1000)
    docs = Documents(rules, now_ms)
    docs.add(verify_compare.TASKS, task_doc("g1", "u1"), "g1")
    docs.add(verify_compare.TASKS, task_doc("old", "u1", requestTimestamp="2020-01-01T00:00:00Z"), "old")
    task = docs.expected("u1").tasks["g1"]
    # progressMovedAt is history the apply script keeps (no document says when progress last moved)
    stored = {**task.visible, "progressSource": "estimate", "expectedDurationMs": 5000,
              "staleAt": docs.stale_at(task), "progressMovedAt": "2020-01-01T00:00:00.000Z"}
    have = Actual({"version": "3"}, {"g1": stored, "old": {**stored, "generationId": "old", "staleAt": 1}},
                  {"g1": "0000000002.0000000000"}, [], float(now_ms))
    have.owners = {(verify_compare.TASKS, "g1"): "0000000001.0000000000|u1|"}
    assert compare("u1", docs.expected("u1"), have, docs, "0000000003.0000000000") == []
    stored["progressSource"] = "reported"
    assert [d.kind for d in compare("u1", docs.expected("u1"), have, docs, "0000000003.0000000000")] == ["task-different"]


def test_each_partition_verifies_and_repairs_the_documents_it_owns(standin, real_redis, prefix, store_env):
    for n in range(6):
        standin.insert(DB, TASKS, task_doc(f"g{n}", f"u{n}", progress=0.25))
    parts = [Partition(0, 2), Partition(1, 2)]
    mongo = connect(standin.url)
    runs, verifiers = [], []
    for part in parts:
        settings = Settings.from_env({**store_env, "MONGO_URL": standin.url, "KEY_PREFIX": prefix,
                                      "PARTITION": str(part)})
        runs.append(Running(Worker(settings, real_redis, mongo, progress=False), standin))
        verifiers.append(Verifier(settings, real_redis, mongo, wait_s=10))
    try:
        for run in runs:
            run.applied()
        owned = [[f"g{n}" for n in range(6) if part.owns(f"g{n}")] for part in parts]
        assert owned[0] and owned[1]
        layout = Layout(prefix)
        for gids in owned:
            real_redis.hdel(layout.tasks(f"u{gids[0][1:]}"), gids[0])
        for verifier, gids in zip(verifiers, owned):
            report = verifier.check()
            assert kinds(report) == {("task-missing", f"u{gids[0][1:]}", gids[0])}
            plan_repair(verifier, report.drift, report.raw_ids).apply(real_redis, lambda: None, time.time)
        assert all(verifier.check().drift == [] for verifier in verifiers)
    finally:
        for run in runs:
            run.stop()
        mongo.close()


def test_missing_entries_a_stale_balance_and_a_wrong_finished_entry_are_named_and_repaired(setup, standin, real_redis, layout):
    worker, verifier = setup
    standin.delete(DB, ECONOMY, "e2")
    standin.update(DB, TASKS, "h0", set={"status": "completed"})
    worker.applied()
    [finished] = real_redis.lrange(layout.finished("u0"), 0, -1)
    real_redis.lset(layout.finished("u0"), 0, json.dumps({**json.loads(finished), "status": "failed"}))
    real_redis.delete(layout.task_owner("g0"))
    real_redis.hdel(layout.seqs("u1"), "g1")
    real_redis.hset(layout.user("u2"), mapping={"usdCredit": "2.5", "points": "6756", "exp": "3"})  # an old copy
    report = verifier.check()
    assert kinds(report) == {("owner-missing", "u0", "g0"), ("finished-different", "u0", "h0"),
                             ("task-position-missing", "u1", "g1"), ("balance-extra", "u2", "e2")}
    assert 'status "failed"!="completed"' in next(d.detail for d in report.drift if d.doc == "h0")
    plan_repair(verifier, report.drift, report.raw_ids).apply(real_redis, lambda: None, time.time)
    # The wrong recently finished entry is rewritten in place with the document's outcome.
    assert kinds(verifier.check()) == set()
    [finished] = real_redis.lrange(layout.finished("u0"), 0, -1)
    assert json.loads(finished)["status"] == "completed"
