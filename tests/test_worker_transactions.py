"""Multi-document transactions reach the read model whole, through the worker and the stand-in.

Every event of a transaction carries the same clusterTime and a distinct, increasing ``_id``
(jstests/change_streams/apply_ops.js); a batch may end inside a transaction, its post-batch token
being the last event's ``_id`` (jstests/change_streams/report_post_batch_resume_token.js, "the PBRT
of the first transaction batch is equal to the last document's resumeToken"), and a stream
resumed from that token goes on with the next event of the transaction. A checkpoint never
announces a transaction's time before all its events are applied: the API answers a read after
a caller's ``operationTime`` once the announced position is at or past it (api/freshness.py).
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from redis import exceptions as redis_errors

from projector.checkpoint import CheckpointStore
from readmodel import position
from readmodel.reader import read_snapshot
from readmodel.records import View

from .capture_helpers import DB, ECONOMY, TASKS, drive, settle, snapshot, task_doc
from .test_worker_capture import converged, seed


@pytest.fixture
def client(standin):
    mongo = MongoClient(standin.url, serverSelectionTimeoutMS=3000)
    yield mongo
    mongo.close()


def transactions(client) -> None:
    """Insert and update one task; two $inc of one balance; one spanning both collections."""
    db = client[DB]
    with client.start_session() as session:
        with session.start_transaction():
            db[TASKS].insert_one(task_doc("txn-task", "u1", progress=0.1), session=session)
            db[TASKS].update_one({"_id": "txn-task"}, {"$set": {"progress": 0.6}}, session=session)
        with session.start_transaction():
            db[ECONOMY].update_one({"_id": "e0"}, {"$inc": {"exp": 5}}, session=session)
            db[ECONOMY].update_one({"_id": "e0"}, {"$inc": {"exp": 7}}, session=session)
        with session.start_transaction():
            db[TASKS].update_one({"_id": "u2-g0"}, {"$set": {"status": "completed"}}, session=session)
            db[ECONOMY].update_one({"_id": "e1"}, {"$set": {"usdCredit": "42.5"}}, session=session)


def expect_transactions_applied(real_redis, layout) -> None:
    u1, u2 = snapshot(real_redis, layout, "u1"), snapshot(real_redis, layout, "u2")
    assert {t["generationId"]: t["progressPercent"] for t in u1["liveTasks"]}["txn-task"] == 60.0
    assert u1["balance"]["exp"] == 0 + 5 + 7
    assert "u2-g0" not in {t["generationId"] for t in u2["liveTasks"]}
    assert u2["balance"]["usdCredit"] == "42.5"


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_transactions_converge_whatever_batch_boundary_falls_inside_them(
    batch_size, standin, client, make_worker, real_redis, layout
):
    seed(standin, tasks=2)
    worker = make_worker(batch_size=batch_size)
    settle(worker)
    transactions(client)
    settle(worker)
    assert converged(standin, real_redis, layout)
    expect_transactions_applied(real_redis, layout)
    assert worker.stats.resyncs == 1


def test_a_worker_that_dies_inside_a_transactions_events_is_resumed_from_between_them(
    standin, client, make_worker, real_redis, layout
):
    """One event per batch, and the writes stop for good after the first event of the second
    transaction (a process killed there): the stored checkpoint lies between two events of one
    transaction, and the next worker resumes from it, without a resync, to the same end."""
    seed(standin, tasks=2)
    first = make_worker(batch_size=1)
    settle(first)
    apply, calls = first.model.apply, {"n": 0}

    def dies_after_three(changes, now_iso, fence=None):
        calls["n"] += 1
        if calls["n"] > 3:  # the 1st transaction's 2 events, then the 1st of the 2nd (e0's first $inc)
            raise redis_errors.ConnectionError("injected: the process is gone")
        return apply(changes, now_iso, fence)

    first.model.apply = dies_after_three
    transactions(client)
    drive(first, lambda: first.stats.errors >= 1, what="the writes failing")
    checkpoint = CheckpointStore(real_redis, layout).load()
    first.close()

    with client[DB].watch(resume_after=checkpoint.token, max_await_time_ms=100) as stream:
        after = next(change for change in iter(stream.try_next, "never") if change is not None)
    # The checkpoint is inside the 2nd transaction: the next event is its 2nd, same clusterTime;
    # the position it announces stays just below that time (only part of the transaction is applied).
    assert after["operationType"] == "update" and after["documentKey"] == {"_id": "e0"}
    time = after["clusterTime"]
    assert checkpoint.position == position(time.time, time.inc - 1) if time.inc else position(time.time - 1, 2**32 - 1)

    second = make_worker(batch_size=1)
    settle(second)
    assert second.stats.resyncs == 0  # resumed from the checkpoint between the events
    assert converged(standin, real_redis, layout)
    expect_transactions_applied(real_redis, layout)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_checkpoint_announces_a_transactions_time_only_once_all_its_events_are_applied(
    batch_size, standin, client, make_worker, real_redis, layout
):
    """A transaction of three events for one user, taken one or two events at a time: every
    checkpoint stored at or past the transaction's operationTime finds all three in the snapshot
    (the state is read when the checkpoint is saved, after the writes it covers), and one is."""
    seed(standin, tasks=2)
    worker = make_worker(batch_size=batch_size)
    settle(worker)
    saves, save = [], worker.writer.checkpoints.save

    def seen_then_saved(token, at, *args, **kwargs):
        snap = read_snapshot(real_redis, layout, "u1", View(0))
        saves.append((at, {t["generationId"]: t["progressPercent"] for t in snap["liveTasks"]}, snap["balance"]["exp"]))
        return save(token, at, *args, **kwargs)

    worker.writer.checkpoints.save = seen_then_saved
    db = client[DB]
    with client.start_session() as session:
        with session.start_transaction():
            db[TASKS].update_one({"_id": "u1-g0"}, {"$set": {"progress": 0.7}}, session=session)
            db[ECONOMY].update_one({"_id": "e0"}, {"$inc": {"exp": 5}}, session=session)
            db[TASKS].update_one({"_id": "u1-g1"}, {"$set": {"progress": 0.8}}, session=session)
        committed = position(session.operation_time.time, session.operation_time.inc)
    drive(worker, lambda: any(at >= committed for at, _tasks, _exp in saves), what="a checkpoint past the transaction")
    whole = ({"u1-g0": 70.0, "u1-g1": 80.0}, 5)
    assert [(tasks, exp) for at, tasks, exp in saves if at >= committed] != []
    assert all((tasks, exp) == whole for at, tasks, exp in saves if at >= committed), saves
    assert any((tasks, exp) != whole for at, tasks, exp in saves if at < committed)  # a batch did end inside
