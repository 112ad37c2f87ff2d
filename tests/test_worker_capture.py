"""The capture worker in-process, through real pymongo and the wire-level MongoDB stand-in."""

from __future__ import annotations

import math
import threading
import time

import pytest
from pymongo import MongoClient
from redis import exceptions as redis_errors

from projector import batching as batching_module
from projector.applying import Grant
from projector.batching import Batch
from projector.checkpoint import CheckpointStore
from projector.deadletters import DeadLetters
from projector.normalize import Rules
from projector.projection import event_projection
from projector.worker import LeaseLost
from readmodel import Partition
from readmodel.health import read as read_health

from .capture_helpers import (
    DB,
    ECONOMY,
    TASKS,
    actual_state,
    drive,
    economy_doc,
    expected_state,
    iso_ago,
    settle,
    snapshot,
    task_doc,
    without_empty,
)

pytestmark = pytest.mark.both_backends  # Every real-Redis test here runs on a single Redis and on a Redis Cluster.


def seed(standin, tasks=3, users=("u1", "u2")):
    for i, uid in enumerate(users):
        standin.insert(DB, ECONOMY, economy_doc(f"e{i}", uid, credit=f"{i + 1}.25", exp=i))
        for n in range(tasks):
            standin.insert(DB, TASKS, task_doc(f"{uid}-g{n}", uid, progress=0.1 * n))


def converged(standin, real_redis, layout):
    return actual_state(real_redis, layout) == without_empty(expected_state(standin))


def test_initial_sync_builds_the_read_model_then_tailing_applies_new_writes(standin, make_worker, real_redis, layout):
    seed(standin)
    standin.insert(DB, TASKS, task_doc("done", "u1", status="completed"))
    worker = make_worker()
    settle(worker)
    assert worker.stats.resyncs == 1
    assert converged(standin, real_redis, layout)
    assert len(snapshot(real_redis, layout, "u1")["liveTasks"]) == 3

    standin.insert(DB, TASKS, task_doc("new", "u2", status="queued"))
    standin.update(DB, TASKS, "u1-g0", set={"status": "completed"})
    standin.update(DB, ECONOMY, "e0", set={"usdCredit": "9.5"})
    settle(worker)
    assert converged(standin, real_redis, layout)
    assert snapshot(real_redis, layout, "u1")["balance"]["usdCredit"] == "9.5"
    assert worker.stats.resyncs == 1


def test_writes_during_the_scan_are_not_lost(standin, make_worker, real_redis, layout):
    seed(standin, tasks=5)
    worker = make_worker(batch_size=2)
    scan = worker.source.scan_ahead

    def scan_with_writes(kind):
        for i, docs in enumerate(scan(kind)):
            yield docs
            if kind == "tasks" and i == 0:  # the first batch of two is projected
                standin.insert(DB, TASKS, task_doc("born-during-scan", "u1"))
                standin.update(DB, TASKS, "u2-g4", set={"progress": 0.99})  # not scanned yet
                standin.delete(DB, TASKS, "u2-g3")  # not scanned yet: never seen by the scan
                standin.update(DB, TASKS, "u1-g0", set={"status": "failed"})  # already scanned
                standin.update(DB, ECONOMY, "e1", set={"exp": 77})

    worker.source.scan_ahead = scan_with_writes
    settle(worker)
    assert converged(standin, real_redis, layout)
    tasks = {t["generationId"]: t for t in snapshot(real_redis, layout, "u2")["liveTasks"]}
    assert tasks["u2-g4"]["progressPercent"] == 99.0 and "u2-g3" not in tasks
    assert "born-during-scan" in {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]}


def test_restart_resumes_from_the_checkpoint_without_rescanning(standin, make_worker, real_redis, layout):
    seed(standin)
    first = make_worker()
    settle(first)
    standin.insert(DB, TASKS, task_doc("before-restart", "u1"))
    settle(first)
    first.close()
    saved = CheckpointStore(real_redis, layout).load()
    standin.insert(DB, TASKS, task_doc("while-down", "u1"))
    finds = standin.command_count("find")

    second = make_worker()
    settle(second)
    assert second.stats.resyncs == 0
    assert standin.command_count("find") == finds  # no scan
    assert standin.change_stream_opens[-1].resume_after == saved.token
    assert second.stats.events_total == 1  # only what happened while it was down
    assert converged(standin, real_redis, layout)


def test_quiet_period_still_advances_the_checkpoint(standin, make_worker, real_redis, layout):
    """With no event for us, the checkpoint still follows the oplog: a write to an unrelated
    collection moves the post-batch token past it (jstests/change_streams/
    report_post_batch_resume_token.js, "postBatchResumeToken advances with writes to an unrelated
    collection"; on an idle server the periodic no-op write does the same)."""
    seed(standin, tasks=1)
    worker = make_worker()
    settle(worker)
    first = CheckpointStore(real_redis, layout).load()
    standin.insert(DB, "someOtherCollection", {"_id": "not-ours"})
    drive(worker, lambda: CheckpointStore(real_redis, layout).load().position > first.position, timeout=5,
          what="the checkpoint advancing with no events")
    assert worker.stats.events_total == 0


def test_lost_history_resyncs_automatically_and_readers_never_see_an_empty_snapshot(
    standin, make_worker, real_redis, layout
):
    seed(standin, tasks=300, users=("u1", "u2", "u3"))
    worker = make_worker(batch_size=50)
    settle(worker)
    standin.update(DB, TASKS, "u1-g1", set={"status": "completed"})
    standin.delete(DB, TASKS, "u1-g2")
    standin.insert(DB, TASKS, task_doc("after-loss", "u1"))
    standin.truncate_history()  # the events above are no longer in the oplog

    seen_empty, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            if not snapshot(real_redis, layout, "u1")["liveTasks"]:
                seen_empty.append(time.monotonic())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        drive(worker, lambda: worker.stats.resyncs == 2 and worker.caught_up, what="a resync after lost history")
    finally:
        stop.set()
        thread.join()
    assert seen_empty == []
    assert converged(standin, real_redis, layout)
    live = {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]}
    assert "after-loss" in live and "u1-g1" not in live and "u1-g2" not in live
    worker.step()
    worker.report()
    assert getattr(read_health(real_redis, layout), "resyncs", None) == 2


def test_resume_from_a_checkpoint_whose_history_is_gone_resyncs(standin, make_worker, real_redis, layout):
    seed(standin)
    first = make_worker()
    settle(first)
    first.close()
    standin.delete(DB, TASKS, "u1-g0")
    standin.truncate_history()
    second = make_worker()
    settle(second)
    assert second.stats.resyncs == 1
    assert converged(standin, real_redis, layout)


def test_invalid_resume_token_resyncs(standin, make_worker, real_redis, layout):
    seed(standin)
    first = make_worker()
    settle(first)
    first.close()
    real_redis.hset(layout.checkpoint, "token", '{"_data": "not-a-token"}')
    second = make_worker()
    settle(second)
    assert second.stats.resyncs == 1
    assert converged(standin, real_redis, layout)


def _resumes_from_a_token(command) -> bool:
    stages = command.get("pipeline") or [{}]
    return "resumeAfter" in (stages[0].get("$changeStream") or {})


@pytest.mark.parametrize("code", [9, 40649, 50796, 260, 280, 286, 987654])
def test_a_checkpoint_the_server_refuses_to_resume_from_is_rebuilt_once(
    code, standin, make_worker, real_redis, layout, caplog
):
    """Any non-transient refusal to open from the stored token leads to one resync that logs the
    server's message: FailedToParse (9) and ResumeToken assertions (src/mongo/db/pipeline/
    resume_token.cpp), "not found" 280 (document_source_change_stream_ensure_resume_token_present.cpp),
    history lost 286, and codes nobody knows today."""
    seed(standin)
    first = make_worker()
    settle(first)
    first.close()
    standin.delete(DB, TASKS, "u1-g0")
    standin.fail_next("aggregate", code, message=f"the server says no ({code})", when=_resumes_from_a_token)
    second = make_worker()
    with caplog.at_level("WARNING", logger="projector"):
        settle(second)
    assert standin.pending_faults() == 0
    assert second.stats.resyncs == 1
    assert [r.getMessage() for r in caplog.records if f"the server says no ({code})" in r.getMessage()] != []
    assert converged(standin, real_redis, layout)


def test_a_step_down_while_opening_from_the_checkpoint_is_retried_not_rebuilt(standin, make_worker, real_redis, layout):
    seed(standin)
    first = make_worker()
    settle(first)
    first.close()
    standin.update(DB, TASKS, "u1-g0", set={"progress": 0.9})
    # NotWritablePrimary twice: pymongo retries a read once by itself, the second reaches the worker.
    standin.fail_next("aggregate", 10107, message="not writable primary", times=2, when=_resumes_from_a_token)
    second = make_worker()
    settle(second, timeout=30)
    assert standin.pending_faults() == 0
    assert second.stats.resyncs == 0 and second.stats.errors >= 1
    assert converged(standin, real_redis, layout)


def test_a_rename_into_a_watched_collection_resyncs(standin, make_worker, real_redis, layout):
    """A rename with dropTarget INTO a watched collection is one event whose ``ns`` is the source
    and ``to`` the watched collection, with no drop of the target
    (jstests/change_streams/whole_db_metadata_notifications.js): the stream's $match must see ``to``."""
    seed(standin)
    worker = make_worker()
    settle(worker)
    client = MongoClient(standin.url, serverSelectionTimeoutMS=3000)
    try:
        client[DB]["incoming"].insert_one(task_doc("renamed-in", "u2"))
        settle(worker)
        assert worker.stats.resyncs == 1  # a collection nobody watches: no event reaches the worker
        client.admin.command("renameCollection", f"{DB}.incoming", to=f"{DB}.{TASKS}", dropTarget=True)
    finally:
        client.close()
    drive(worker, lambda: worker.stats.resyncs == 2 and worker.caught_up, what="a resync after a rename in")
    assert converged(standin, real_redis, layout)
    assert {t["generationId"] for t in snapshot(real_redis, layout, "u2")["liveTasks"]} == {"renamed-in"}


def test_invalidate_event_triggers_a_resync(standin, make_worker, real_redis, layout):
    seed(standin)
    worker = make_worker()
    settle(worker)
    standin.insert(DB, TASKS, task_doc("before-invalidate", "u2"))
    standin.invalidate(DB)
    drive(worker, lambda: worker.stats.resyncs == 2 and worker.caught_up, what="a resync after invalidate")
    standin.insert(DB, TASKS, task_doc("after-invalidate", "u2"))
    settle(worker)
    assert converged(standin, real_redis, layout)


def test_dropped_connections_and_resumable_errors_lose_nothing(standin, make_worker, real_redis, layout):
    seed(standin)
    worker = make_worker(batch_size=3)
    settle(worker)
    for round_ in range(4):
        for n in range(5):
            standin.update(DB, TASKS, f"u1-g{n % 3}", set={"progress": round(0.1 + 0.2 * round_ + 0.01 * n, 2)})
            standin.insert(DB, TASKS, task_doc(f"r{round_}-{n}", "u2"))
        if round_ == 0:
            standin.hangup_next("getMore")
        elif round_ == 1:
            standin.fail_next("getMore", 91)  # ShutdownInProgress: resumable
        elif round_ == 2:
            standin.fail_next("getMore", 43)  # CursorNotFound
        else:
            standin.hangup_next("getMore", times=3)  # more than pymongo's one automatic resume
        settle(worker)
    assert standin.pending_faults() == 0
    assert worker.stats.resyncs == 1
    assert converged(standin, real_redis, layout)


def test_writes_behind_the_reader_never_let_a_checkpoint_pass_a_write_that_failed(
    standin, make_worker, real_redis, layout
):
    """run() reads batch N+1 while batch N is written; a checkpoint is stored only after the
    writes it covers, and a write that fails is never skipped over by a later checkpoint."""
    seed(standin)
    worker = make_worker(batch_size=2)
    settle(worker)
    apply, save = worker.model.apply, worker.checkpoints.save
    applied: set[str] = set()
    failed: set[str] = set()
    calls = {"apply": 0, "in_flight": 0, "polls_during_a_write": 0}

    def slow_apply(changes, now_iso, fence=None):
        calls["apply"] += 1
        calls["in_flight"] += 1
        try:
            time.sleep(0.02)  # a slow Redis, so that reading runs ahead of writing
            if calls["apply"] == 3:
                failed.update(c.seq for c in changes)
                raise redis_errors.ConnectionError("injected: Redis went away mid-batch")
            apply(changes, now_iso, fence)
            applied.update(c.seq for c in changes)
        finally:
            calls["in_flight"] -= 1

    def checked_save(token, position, *args):
        skipped = {seq for seq in failed - applied if seq <= position}
        assert not skipped, f"checkpoint {position} would skip the failed writes {sorted(skipped)}"
        return save(token, position, *args)

    worker.model.apply = slow_apply
    worker.checkpoints.save = checked_save
    for n in range(30):
        standin.insert(DB, TASKS, task_doc(f"burst-{n}", f"u{n % 3 + 1}"))
        standin.update(DB, TASKS, f"u{n % 2 + 1}-g{n % 3}", set={"progress": round(0.3 + n / 100, 2)})
    expected = worker.stats.events_total + 60
    deadline = time.monotonic() + 30
    while not (worker.stats.events_total >= expected and worker.caught_up and not worker.writes.busy):
        assert time.monotonic() < deadline, "did not catch up with writes behind within 30 s"
        if worker.stream is not None and calls["in_flight"]:
            calls["polls_during_a_write"] += 1
        worker.step(wait=False)
    assert calls["apply"] > 3 and failed and failed <= applied  # the failed batch was replayed
    assert calls["polls_during_a_write"] > 0  # reading really overlapped writing
    assert worker.stats.errors >= 1
    assert converged(standin, real_redis, layout)


def test_two_partitions_split_the_documents_and_one_resyncing_leaves_the_others_alone(
    standin, make_worker, real_redis, layout
):
    seed(standin, tasks=12, users=("u1", "u2", "u3"))
    first, second = make_worker(partition=Partition(0, 2)), make_worker(partition=Partition(1, 2))
    applied: dict[int, set[str]] = {0: set(), 1: set()}
    for index, worker in enumerate((first, second)):  # every batch, tailed or scanned, is planned
        def spy(changes, now_iso, fence=None, unread=(), plan=worker.model.plan, index=index):
            applied[index].update(c.generation_id for c in changes if hasattr(c, "generation_id"))
            return plan(changes, now_iso, fence, unread)
        worker.model.plan = spy
    settle(first)
    settle(second)
    assert converged(standin, real_redis, layout)
    for n in range(12):
        standin.update(DB, TASKS, f"u{n % 3 + 1}-g{n}", set={"progress": 0.5})
    standin.delete(DB, TASKS, "u1-g3")
    standin.insert(DB, TASKS, task_doc("late", "u2"))
    settle(first)
    settle(second)
    assert converged(standin, real_redis, layout)
    # Each process applied only its own documents' changes, and between them all of them.
    assert applied[0] and applied[1] and applied[0].isdisjoint(applied[1])
    assert all(Partition(0, 2).owns(gid) for gid in applied[0])
    assert applied[0] | applied[1] >= {d["_id"] for d in standin.documents(DB, TASKS)}
    assert first.stats.resyncs == second.stats.resyncs == 1

    # Partition 0 rebuilds (an operator asked it to) while partition 1 is down and misses changes:
    # partition 0's sweep must not remove partition 1's documents, and partition 1 catches up after.
    second.close()
    for n in range(12):
        standin.update(DB, TASKS, f"u{n % 3 + 1}-g{n}", set={"progress": 0.75})
    real_redis.set(first.layout.resync_request, "1")
    drive(first, lambda: first.stats.resyncs == 2 and first.caught_up, what="partition 0 resyncing")
    owned_by_second = [gid for gid in (f"u{n % 3 + 1}-g{n}" for n in range(12)) if not Partition(0, 2).owns(gid)]
    assert owned_by_second and all(
        gid in {t["generationId"] for t in snapshot(real_redis, layout, gid.split("-")[0])["liveTasks"]}
        for gid in owned_by_second if gid != "u1-g3")
    third = make_worker(partition=Partition(1, 2))
    settle(third)
    assert third.stats.resyncs == 0  # resumed from partition 1's own checkpoint
    assert converged(standin, real_redis, layout)


def test_a_checkpoint_written_behind_uses_the_lease_its_batch_was_read_under(standin, make_worker, real_redis, layout):
    seed(standin, tasks=1, users=("u1",))
    worker = make_worker()
    settle(worker)
    saved = CheckpointStore(real_redis, layout).load()
    read_under = worker.lease.token
    worker.lease.forget()  # the main thread gave the lease up while the write was queued
    with pytest.raises(LeaseLost, match="no lease"):
        worker.writer.checkpoint(saved.token, saved.position, Grant(None, math.inf, saved.masters))
    with pytest.raises(LeaseLost, match="fenced off"):  # an older lease's batch
        worker.writer.checkpoint(saved.token, saved.position, Grant(read_under - 1, math.inf, saved.masters))
    with pytest.raises(LeaseLost, match="lapsed"):  # queued under a lease that lapsed before it ran
        worker.writer.apply(Batch(learned={"flux": 1}), Grant(read_under, 0.0, saved.masters))
    applied = worker.writer.checkpoint(saved.token, saved.position, Grant(read_under, math.inf, saved.masters))
    assert applied.checkpoint is not None and applied.checkpoint.fence == read_under
    assert CheckpointStore(real_redis, layout).load().at_ms == applied.checkpoint.at_ms >= saved.at_ms


def test_a_burst_on_one_document_is_normalized_once_per_batch(standin, make_worker, real_redis, layout, monkeypatch):
    seed(standin, tasks=2, users=("u1",))
    worker = make_worker()
    settle(worker)
    for n in range(20):
        standin.update(DB, TASKS, "u1-g0", set={"progress": round(0.05 * (n + 1), 2)})
        standin.update(DB, ECONOMY, "e0", set={"exp": 100 + n})
    standin.update(DB, TASKS, "u1-g1", set={"status": "completed"})
    normalized = []
    monkeypatch.setattr(batching_module, "event_projection",
                        lambda event, *args: normalized.append(event["documentKey"]["_id"]) or event_projection(event, *args))
    events_before, batches_before = worker.stats.events_total, worker.stats.batches_total
    settle(worker)
    batches = worker.stats.batches_total - batches_before
    assert worker.stats.events_total - events_before == 41  # every event was read and counted
    assert set(normalized) == {"e0", "u1-g0", "u1-g1"}
    assert len(normalized) <= 3 * batches < 41  # once per document per batch (the burst is one batch, or very few)
    assert converged(standin, real_redis, layout)
    [task] = snapshot(real_redis, layout, "u1")["liveTasks"]
    assert task["progressPercent"] == 100.0 and snapshot(real_redis, layout, "u1")["balance"]["exp"] == 119


def test_update_whose_lookup_finds_nothing_removes_the_task(standin, make_worker, real_redis, layout):
    """The server looks an update's document up when the event is read, not when it was written: a
    document deleted in between gives ``fullDocument: null`` (jstests/change_streams/lookup_post_image.js,
    "looking up the post image of an update after deleting the document"). The update and the delete
    commit as one transaction, so that no read of the stream (the worker's reader runs ahead of
    ``step``) can fall between them and find the document still there."""
    seed(standin, tasks=2, users=("u1",))
    worker = make_worker(batch_size=1)
    settle(worker)
    with MongoClient(standin.url, serverSelectionTimeoutMS=3000) as client:
        tasks = client[DB][TASKS]
        with client.start_session() as session, session.start_transaction():
            tasks.update_one({"_id": "u1-g0"}, {"$set": {"progress": 0.5}}, session=session)
            tasks.delete_one({"_id": "u1-g0"}, session=session)
    worker.step()  # applies the update alone: its lookup finds the document gone
    assert worker.stats.events_total == 1
    assert "u1-g0" not in {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]}
    settle(worker)
    assert converged(standin, real_redis, layout)


def test_bad_documents_are_dead_lettered_and_the_worker_goes_on(standin, make_worker, real_redis, layout):
    seed(standin, tasks=1, users=("u1",))
    standin.insert(DB, TASKS, {"_id": "bad-at-scan", "status": "processing"})  # no owner
    worker = make_worker()
    settle(worker)
    standin.insert(DB, TASKS, task_doc("bad-live", "u1", status=42))
    standin.update(DB, ECONOMY, "e0", set={"usdCredit": "lots"})
    standin.insert(DB, TASKS, task_doc("good-after", "u1"))
    settle(worker)
    letters = DeadLetters(real_redis, layout).recent()
    assert {(e["collection"], e["id"]) for e in letters} == {
        (TASKS, "bad-at-scan"), (TASKS, "bad-live"), (ECONOMY, "e0")}
    assert worker.stats.dead_letters == 3
    assert any("lots" in e["document"] and "usdCredit" in e["reason"] for e in letters)
    assert "good-after" in {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]}


def test_the_stream_carries_only_what_normalization_reads_but_dead_letters_get_the_whole_document(
    standin, make_worker, real_redis, layout
):
    worker = make_worker()
    settle(worker)
    standin.insert(DB, TASKS, task_doc("bad-live", "u1", status=42, prompt="a lighthouse at dusk", outputs=["x.png"]))
    standin.insert(DB, TASKS, task_doc("good", "u1", prompt="p" * 10_000, metadata={"progress": 0.5, "seed": 7}))
    settle(worker)
    [letter] = [e for e in DeadLetters(real_redis, layout).recent() if e["id"] == "bad-live"]
    assert "a lighthouse at dusk" in letter["document"] and "x.png" in letter["document"]
    [task] = snapshot(real_redis, layout, "u1")["liveTasks"]
    assert task["progressPercent"] == 50.0  # metadata.progress crossed the wire; the prompt did not
    opened = standin.change_stream_opens[-1].pipeline
    assert any("$project" in stage and "fullDocument.metadata.progress" in stage["$project"] for stage in opened)
    assert not any("$project" in stage and "fullDocument.prompt" in stage["$project"] for stage in opened)


def test_stale_task_disappears_without_new_events_with_a_version_bump(standin, make_worker, real_redis, layout):
    # The worker's clock is moved past the deadline once the task is shown: a real wait of a
    # short deadline raced the first settle at high load (the task was swept before it was seen).
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    standin.insert(DB, TASKS, task_doc("stale-soon", "u1", requestTimestamp=now_iso))
    ahead = [0.0]
    worker = make_worker(rules=Rules(stale_after_ms=60_000), clock=lambda: time.time() + ahead[0])
    settle(worker)
    pubsub = real_redis.pubsub()
    pubsub.ssubscribe(worker.layout.channel("u1"))
    before = snapshot(real_redis, layout, "u1")["version"]
    assert real_redis.hlen(layout.tasks("u1")) == 1
    ahead[0] = 120.0
    drive(worker, lambda: real_redis.hlen(layout.tasks("u1")) == 0, timeout=30, what="the stale sweep")
    assert snapshot(real_redis, layout, "u1")["version"] == before + 1
    receive = getattr(pubsub, "get_sharded_message", pubsub.get_message)  # a cluster's is per shard
    messages = [m for m in iter(lambda: receive(timeout=0.5), None) if m["type"] == "smessage"]
    assert [int(m["data"]) for m in messages] == [before + 1]
    pubsub.close()


def test_learned_duration_gives_live_tasks_an_estimate(standin, make_worker, real_redis, layout):
    worker = make_worker()
    settle(worker)
    standin.insert(DB, TASKS, task_doc("t1", "u1", status="completed", toolId="flux",
                                       requestTimestamp=iso_ago(60),
                                       responseTimestamp=iso_ago(20)))
    standin.insert(DB, TASKS, task_doc("t2", "u1", status="processing", toolId="flux"))
    standin.insert(DB, TASKS, task_doc("t3", "u1", status="processing", toolId="flux", progress=0.3))
    settle(worker)
    tasks = {t["generationId"]: t for t in snapshot(real_redis, layout, "u1")["liveTasks"]}
    assert tasks["t2"]["expectedDurationMs"] == 40_000 and tasks["t2"]["progressSource"] == "estimate"
    assert tasks["t3"]["progressSource"] == "reported" and tasks["t3"]["progressPercent"] == 30.0
    assert real_redis.hget(layout.durations, "flux") == b"40000"


def test_operator_resync_request_is_honoured_by_the_leader(standin, make_worker, real_redis, layout):
    seed(standin)
    worker = make_worker()
    settle(worker)
    real_redis.set(layout.resync_request, "1")
    drive(worker, lambda: worker.stats.resyncs == 2 and worker.caught_up, what="the requested resync")
    assert real_redis.exists(layout.resync_request) == 0
    assert converged(standin, real_redis, layout)


def test_only_the_lease_holder_applies_and_a_paused_leader_cannot_write_its_checkpoint(
    standin, make_worker, real_redis, layout
):
    seed(standin, tasks=1, users=("u1",))
    paused = {"s": 0.0}  # how long worker a's process was stopped (its clock jumps that far)
    a = make_worker(holder="a", monotonic=lambda: time.monotonic() + paused["s"])
    b = make_worker(holder="b")
    settle(a)
    assert b.step() == "standby"
    # a is paused past its lease; b takes over and moves on.
    paused["s"] = 60.0
    real_redis.delete(layout.leader)
    standin.update(DB, TASKS, "u1-g0", set={"progress": 0.9})
    settle(b)
    b_fence = CheckpointStore(real_redis, layout).load().fence
    assert b_fence == b.lease.token > 1
    # a wakes up: it must notice, not apply, and its checkpoint write is fenced off.
    assert a.checkpoints.save({"_data": "old"}, "0000000001.0000000000", 1, 0) is False
    assert a.step() == "standby"
    assert CheckpointStore(real_redis, layout).load().fence == b_fence
    assert snapshot(real_redis, layout, "u1")["liveTasks"][0]["progressPercent"] == 90.0


def test_a_checkpoint_written_to_other_redis_masters_is_not_trusted(standin, make_worker, real_redis, layout):
    """After a failover (or a restart) the writes a checkpoint covers may be lost: resync, and move
    every version far ahead so that no version a client saw is reused for another state."""
    seed(standin)
    first = make_worker()
    settle(first)
    first.close()
    version_before = snapshot(real_redis, layout, "u1")["version"]
    real_redis.hset(layout.checkpoint, "masters", "a-master-that-failed")
    again = make_worker()
    settle(again)
    assert again.stats.resyncs == 1
    assert snapshot(real_redis, layout, "u1")["version"] >= version_before + 1000
    assert CheckpointStore(real_redis, layout).load().masters not in ("", "a-master-that-failed")
    assert converged(standin, real_redis, layout)
