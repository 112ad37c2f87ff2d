"""How a resync writes: a user's balance and live tasks in one script call, a read model that was
empty skips the full sweep but not the stale sweep, and held-back tasks stay bounded."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from projector import resync as resync_module
from projector.projection import TASKS as TASK_KIND

from .capture_helpers import (
    DB,
    ECONOMY,
    TASKS,
    actual_state,
    economy_doc,
    expected_state,
    settle,
    snapshot,
    task_doc,
    without_empty,
)

pytestmark = pytest.mark.both_backends

DAY_S = 24 * 3600


def test_a_users_balance_and_live_tasks_are_written_in_one_script_call(standin, make_worker, real_redis, layout):
    for uid in ("u1", "u2"):
        standin.insert(DB, TASKS, task_doc(f"{uid}-g1", uid))
        standin.insert(DB, TASKS, task_doc(f"{uid}-g2", uid))
        standin.insert(DB, ECONOMY, economy_doc(f"e-{uid}", uid))
    standin.insert(DB, TASKS, task_doc("lone", "u3"))  # no balance: written after the balances
    settle(make_worker())
    for uid in ("u1", "u2"):
        shown = snapshot(real_redis, layout, uid)
        assert shown["version"] == 1  # one change of state: tasks and balance together
        assert len(shown["liveTasks"]) == 2 and shown["balance"]["usdCredit"] == "1.5"
    assert [t["generationId"] for t in snapshot(real_redis, layout, "u3")["liveTasks"]] == ["lone"]


def test_a_resync_of_an_empty_read_model_still_removes_tasks_stale_by_its_end(standin, real_redis, layout, make_worker):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    standin.insert(DB, ECONOMY, economy_doc("e1", "u1"))
    offset = [0.0]
    worker = make_worker(clock=lambda: resync_module.time.time() + offset[0])
    scan = worker.resyncer._scan

    def scan_then_a_day_passes(*args):
        scanned = scan(*args)
        offset[0] = DAY_S + 3600  # the task was live when scanned, stale when the scan ends
        return scanned

    worker.resyncer._scan = scan_then_a_day_passes
    worker.step()
    shown = snapshot(real_redis, layout, "u1")
    assert shown["liveTasks"] == [] and shown["balance"]["usdCredit"] == "1.5"


def test_held_back_tasks_go_out_in_batches_and_all_at_the_cap(standin, make_worker, real_redis, layout, monkeypatch):
    monkeypatch.setattr(resync_module, "HELD_CAP", 3)
    for n in range(12):
        standin.insert(DB, TASKS, task_doc(f"big-g{n}", "big"))  # more than a batch for one user
    for uid in ("a", "b", "c", "d"):
        standin.insert(DB, TASKS, task_doc(f"{uid}-g", uid))
        standin.insert(DB, ECONOMY, economy_doc(f"e-{uid}", uid))
    standin.insert(DB, ECONOMY, economy_doc("e-big", "big"))
    settle(make_worker(batch_size=5))
    assert actual_state(real_redis, layout) == without_empty(expected_state(standin))
    assert len(snapshot(real_redis, layout, "big")["liveTasks"]) == 12


def test_the_interpreter_is_tuned_during_the_scan_and_set_back_after(standin, make_worker):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    before = (sys.getswitchinterval(), gc.get_threshold())
    worker = make_worker()
    scan, during = worker.resyncer._scan, []

    def scan_and_look(*args):
        during.append((sys.getswitchinterval(), gc.get_threshold()))
        return scan(*args)

    worker.resyncer._scan = scan_and_look
    worker.step()
    assert during == [(resync_module.SWITCH_INTERVAL_S, resync_module.GC_THRESHOLDS)]
    assert (sys.getswitchinterval(), gc.get_threshold()) == before


def test_the_lease_is_renewed_between_the_chunks_of_a_full_models_sweep(standin, make_worker, monkeypatch):
    for uid in ("u1", "u2", "u3"):
        standin.insert(DB, ECONOMY, economy_doc(f"e-{uid}", uid))
    worker = make_worker()
    settle(worker)  # the model now holds three users: the next resync sweeps them all
    monkeypatch.setattr(resync_module, "SWEEP_CHUNK", 1)
    calls = []
    keep, sweep = worker.resyncer.keep_going, worker.resyncer.model.sweep
    monkeypatch.setattr(worker.resyncer, "keep_going", lambda: (calls.append("keep"), keep())[1])
    monkeypatch.setattr(worker.resyncer.model, "sweep", lambda *a, **k: (calls.append("sweep"), sweep(*a, **k))[1])
    worker.resync("requested by a test")
    swept = [i for i, call in enumerate(calls) if call == "sweep"]
    assert len(swept) == 3 and all(calls[i - 1] == "keep" for i in swept)


@pytest.mark.parametrize("met_cap", [resync_module.MET_CAP, 0], ids=["remembered", "beyond-the-cap"])
@pytest.mark.parametrize("between", [0, 2], ids=["next-batch", "depth-batches-later"])
def test_a_document_met_twice_is_planned_only_after_its_first_write(standin, make_worker, real_redis, layout,
                                                                     monkeypatch, between, met_cap):
    """The worker plans a batch while the writer writes the ones before; a plan reads its documents'
    owner entries. The scan meets g1 twice (it moved from u1 to u2 between the two reads), the
    second time in the next batch or as late as the writer's queue reaches (its depth, 2, batches in
    between): that batch must be planned after the first is written, and must read g1's entry
    although the read model was empty when the resync began, or u1 keeps showing g1. The first
    write is held until the worker either waits for it or has planned g1's second batch. Beyond
    the cap of entries a fresh scan remembers, it reads every entry."""
    monkeypatch.setattr(resync_module, "MET_CAP", met_cap)
    worker = make_worker(batch_size=1)  # every scanned task goes out in a batch of its own
    writes, writer = worker.resyncer.writes, worker.resyncer.writer
    assert between <= writes.depth
    others = [[task_doc(f"other{n}", "u3")] for n in range(between)]
    reads = iter([[task_doc("g1", "u1")], *others, [task_doc("g1", "u2")]])
    monkeypatch.setattr(worker.resyncer.source, "scan_ahead", lambda kind: reads if kind == TASK_KIND else iter([]))
    planned_or_waited = threading.Event()
    prepare, commit, flush, prepared = writer.prepare, writer.commit, writes.flush, []

    def flush_after_saying_so():
        if prepared:  # not the flushes before the scan
            planned_or_waited.set()
        flush()

    def prepare_and_count(batch, grant, *unread):
        out = prepare(batch, grant, *unread)
        prepared.append(out)
        if len(prepared) == between + 2:
            planned_or_waited.set()
        return out

    def commit_the_first_late(out, grant):
        if out is prepared[0]:
            assert planned_or_waited.wait(30)
        return commit(out, grant)

    monkeypatch.setattr(writes, "flush", flush_after_saying_so)
    monkeypatch.setattr(worker.resyncer, "chores", lambda: None)  # the worker's report flushes the writes too
    monkeypatch.setattr(writer, "prepare", prepare_and_count)
    monkeypatch.setattr(writer, "commit", commit_the_first_late)
    worker.step()
    assert len(prepared) == between + 2
    assert snapshot(real_redis, layout, "u1")["liveTasks"] == []
    assert [t["generationId"] for t in snapshot(real_redis, layout, "u2")["liveTasks"]] == ["g1"]


def test_a_resync_into_an_empty_model_reads_only_the_owner_entries_it_wrote(standin, make_worker, real_redis,
                                                                           layout, monkeypatch):
    """No user shows anything when a resync begins on an empty read model: a document met for the
    first time needs no look at its owner entry. One left from before (g0 left u9 at an earlier
    position) is overwritten; a resync over a model with users reads every entry again."""
    real_redis.set(layout.task_owner("g0"), "0000000001:00000001||u9")
    for uid in ("u1", "u2"):
        standin.insert(DB, TASKS, task_doc(f"{uid}-g1", uid))
        standin.insert(DB, ECONOMY, economy_doc(f"e-{uid}", uid))
    standin.insert(DB, TASKS, task_doc("g0", "u1"))
    worker = make_worker()
    name = "mget_nonatomic" if hasattr(real_redis, "mget_nonatomic") else "mget"  # a cluster client's MGET by slot
    mget, read = getattr(real_redis, name), []
    monkeypatch.setattr(real_redis, name, lambda keys, *args: (read.extend(keys), mget(keys, *args))[1])
    settle(worker)
    assert read == []
    assert actual_state(real_redis, layout) == without_empty(expected_state(standin))
    assert real_redis.get(layout.task_owner("g0")).decode().split("|")[1] == "u1"
    worker.resync("requested by a test")
    entries = {layout.task_owner(g) for g in ("u1-g1", "u2-g1", "g0")} | {layout.balance_owner(f"e-{u}") for u in ("u1", "u2")}
    assert set(read) == entries
    assert actual_state(real_redis, layout) == without_empty(expected_state(standin))
