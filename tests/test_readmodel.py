"""The Redis read model: atomic per-user apply, versions, announcements, removal, sweeps."""

import json

import pytest
from bson import Decimal128

from projector.normalize import Rules
from projector.projection import TASKS, balance_change, document_change
from readmodel import Layout, Partition, ReadModel, View, position, read_snapshot
from readmodel.records import epoch_ms

RULES = Rules(stale_after_ms=60_000)
NOW_ISO = "2026-11-25T09:00:00.000Z"
T0 = 1_795_000_000_000  # ms


def seq(n):
    return position(1_795_000_000 + n, 0)


def tdoc(gid, owner="u1", status="processing", **fields):
    doc = {"_id": gid, "masterAccountId": owner, "status": status, "toolId": "flux",
           "requestTimestamp": "2026-11-25T08:59:00Z"}
    doc.update(fields)
    return doc


def put(gid, n, owner="u1", **fields):
    return document_change(TASKS, tdoc(gid, owner, **fields), gid, seq(n), T0, RULES)


def gone(gid, n):
    return document_change(TASKS, None, gid, seq(n), T0, RULES)


def balance(doc_id, n, owner="u1", credit="1.5", exp=3):
    return balance_change({"_id": doc_id, "masterAccountId": owner, "usdCredit": Decimal128(credit), "exp": exp},
                          doc_id, seq(n), RULES)


@pytest.fixture
def model(any_redis, layout):
    return ReadModel(any_redis, layout)


def snap(model, uid="u1", now_ms=T0):
    return read_snapshot(model.redis, model.layout, uid, View(now_ms))


def test_unknown_user_has_an_empty_snapshot_at_version_zero(model):
    assert snap(model, "nobody") == {
        "masterAccountId": "nobody", "version": 0, "updatedAt": None,
        "balance": {"usdCredit": "0", "points": 0, "exp": 0}, "liveTasks": [], "liveTasksOmitted": 0,
        "recentlyFinished": [],
    }


def test_live_task_and_balance_appear_with_a_version_bump(model):
    versions = model.apply([put("g1", 1, progress=0.5), balance("e1", 2)], NOW_ISO)
    assert versions == {"u1": 1}
    snapshot = snap(model)
    assert snapshot["version"] == 1 and snapshot["updatedAt"] == NOW_ISO
    assert snapshot["balance"] == {"usdCredit": "1.5", "points": 4054, "exp": 3}
    [task] = snapshot["liveTasks"]
    assert task["generationId"] == "g1" and task["progressPercent"] == 50.0 and "staleAt" not in task


def test_same_change_twice_changes_nothing_the_second_time(model):
    model.apply([put("g1", 1)], NOW_ISO)
    assert model.apply([put("g1", 1)], NOW_ISO) == {}
    assert snap(model)["version"] == 1


def test_older_change_after_newer_is_ignored(model):
    model.apply([put("g1", 5, progress=0.9)], NOW_ISO)
    model.apply([put("g1", 3, progress=0.1)], NOW_ISO)
    assert snap(model)["liveTasks"][0]["progressPercent"] == 90.0


def test_terminal_task_leaves_the_snapshot(model):
    model.apply([put("g1", 1)], NOW_ISO)
    model.apply([put("g1", 2, status="completed")], NOW_ISO)
    assert snap(model)["liveTasks"] == [] and snap(model)["version"] == 2


def test_delete_without_owner_removes_the_task_through_the_owner_index(model):
    model.apply([put("g1", 1), put("g2", 1)], NOW_ISO)
    assert model.apply([gone("g1", 2)], NOW_ISO) == {"u1": 2}
    assert [t["generationId"] for t in snap(model)["liveTasks"]] == ["g2"]
    assert model.redis.get(model.layout.task_owner("g1")).decode() == f"{seq(2)}||u1"
    assert 0 < model.redis.ttl(model.layout.task_owner("g1")) <= 24 * 3600


def test_replayed_insert_after_delete_does_not_resurrect(model):
    model.apply([put("g1", 1)], NOW_ISO)
    model.apply([gone("g1", 2)], NOW_ISO)
    model.apply([put("g1", 1)], NOW_ISO)
    assert snap(model)["liveTasks"] == []


def test_an_older_removal_replayed_is_decided_on_the_owners_position_not_the_lagging_owner_entry(model):
    # The entry is not rewritten by g1's and e1's updates under the same owner (it stays at 1); a
    # removal at 2 replayed after the updates at 3 is obsolete on the owner's own position, and
    # must neither rewrite the entry as gone (its shorter TTL would forget u1) nor touch u1.
    model.apply([put("g1", 1), balance("e1", 1)], NOW_ISO)
    model.apply([put("g1", 3, progress=0.5), balance("e1", 3, credit="2")], NOW_ISO)
    versions = model.apply([gone("g1", 2), balance_change(None, "e1", seq(2), RULES)], NOW_ISO)
    assert versions == {}
    assert model.redis.get(model.layout.task_owner("g1")).decode() == f"{seq(1)}|u1|"
    assert model.redis.get(model.layout.balance_owner("e1")).decode() == f"{seq(1)}|u1|"
    assert snap(model)["balance"]["usdCredit"] == "2" and len(snap(model)["liveTasks"]) == 1


def test_delete_of_a_task_never_seen_is_a_no_op(model):
    assert model.apply([gone("never", 1)], NOW_ISO) == {}


def test_task_moving_to_another_user_leaves_the_first(model):
    model.apply([put("g1", 1, owner="u1")], NOW_ISO)
    model.apply([put("g1", 2, owner="u2")], NOW_ISO)
    assert snap(model, "u1")["liveTasks"] == []
    assert [t["generationId"] for t in snap(model, "u2")["liveTasks"]] == ["g1"]


def test_users_are_isolated(model):
    model.apply([put("g1", 1, owner="u1"), put("g2", 1, owner="u2"), balance("e2", 1, owner="u2", credit="9")],
                NOW_ISO)
    assert [t["generationId"] for t in snap(model, "u1")["liveTasks"]] == ["g1"]
    assert snap(model, "u1")["balance"]["usdCredit"] == "0"
    assert snap(model, "u2")["balance"]["usdCredit"] == "9"


def test_change_is_announced_with_the_new_version(model):
    pubsub = model.redis.pubsub()
    pubsub.ssubscribe(model.layout.channel("u1"))
    assert pubsub.get_message(timeout=1)["type"] == "ssubscribe"
    model.apply([put("g1", 1)], NOW_ISO)
    message = pubsub.get_message(timeout=2)
    assert message["channel"].decode() == model.layout.channel("u1") and int(message["data"]) == 1
    pubsub.close()


def test_keys_of_one_user_share_a_cluster_hash_tag(layout):
    tags = {key[key.index("{"): key.index("}") + 1] for key in layout.user_keys("x402:0xabc")}
    assert tags == {"{x402:0xabc}"}
    assert layout.channel("x402:0xabc").count("{x402:0xabc}") == 1


def test_stale_task_is_hidden_on_read_and_swept_with_a_version_bump(model):
    model.apply([put("g1", 1, updatedAt="2026-11-25T09:00:00Z")], NOW_ISO)
    stale_at = json.loads(model.redis.hget(model.layout.tasks("u1"), "g1"))["staleAt"]
    assert len(snap(model, now_ms=stale_at - 1)["liveTasks"]) == 1
    assert snap(model, now_ms=stale_at)["liveTasks"] == []
    assert model.sweep(stale_at - 1, NOW_ISO) == {}
    assert model.sweep(stale_at, NOW_ISO) == {"u1": 2}
    assert model.redis.hlen(model.layout.tasks("u1")) == 0
    assert model.redis.zcard(model.layout.deadlines) == 0


def test_a_task_whose_stale_time_moves_earlier_is_swept_at_the_earlier_time(model):
    # A document can lose updatedAt or have it written back in time: its staleAt moves earlier
    # and the user's deadline must follow, or the sweep comes late (reads hide the task anyway).
    model.apply([put("g1", 1, updatedAt="2026-11-25T09:00:00Z")], NOW_ISO)
    later = json.loads(model.redis.hget(model.layout.tasks("u1"), "g1"))["staleAt"]
    model.apply([put("g1", 2, updatedAt="2026-11-25T08:00:00Z", progress=0.5)], NOW_ISO)
    earlier = json.loads(model.redis.hget(model.layout.tasks("u1"), "g1"))["staleAt"]
    assert earlier < later
    assert model.redis.zscore(model.layout.deadlines, "u1") == earlier
    assert model.sweep(earlier, NOW_ISO) == {"u1": 3}


def test_resync_sweep_removes_what_the_scan_did_not_see(model):
    model.apply([put("g1", 1), put("g2", 1), balance("e1", 1)], NOW_ISO)
    assert model.apply([put("g2", 5)], NOW_ISO) == {}  # seen again by the scan: nothing visible changes
    assert model.sweep(0, NOW_ISO, users=["u1"], min_seq=seq(5)) == {"u1": 2}
    snapshot = snap(model)
    assert [t["generationId"] for t in snapshot["liveTasks"]] == ["g2"]
    assert snapshot["balance"]["usdCredit"] == "0"


def test_a_version_jump_passes_every_version_counted_before_however_old_a_restored_dump_is(model):
    """Versions count one visible change at a time, so they stay below the clock in ms; a jump
    (failover, verify repair) goes at least there. A dump 4,000 versions old, restored, jumps past
    the 5,000 a client saw (a plain +1000 would hand out 2,000 again)."""
    model.apply([put("g1", 1)], NOW_ISO)
    model.redis.hset(model.layout.user("u1"), "version", 5_000)  # what clients saw
    model.redis.hset(model.layout.user("u1"), "version", 1_000)  # a dump taken 4,000 versions earlier
    versions = model.sweep(T0, NOW_ISO, users=["u1"], version_jump=1000)
    assert versions["u1"] == T0 > 5_000 and snap(model)["version"] == T0
    assert model.apply([put("g1", 2, progress=0.5)], NOW_ISO) == {"u1": T0 + 1}  # then one at a time again
    assert model.sweep(T0 - 10, NOW_ISO, users=["u1"], version_jump=1000)["u1"] == T0 + 1001  # +jump at least


@pytest.mark.parametrize("index", [0, 1])
def test_a_partitions_resync_sweep_removes_only_the_documents_it_owns(any_redis, prefix, index):
    """Two projector processes split the documents; one's resync must not sweep the other's.
    The script and Python compute the same id hash, or this fails."""
    part = Partition(index, 2)
    model = ReadModel(any_redis, Layout(prefix, part))
    ids = [f"g{n}" for n in range(36)] + ["6756f1a2c3d4e5f6a7b8c9d0", "gé-✓", "ObjectId-ish:😀", "x" * 64]
    model.apply([put(gid, 1) for gid in ids] + [balance("e7", 1)], NOW_ISO)
    model.sweep(0, NOW_ISO, users=["u1"], min_seq=seq(5))  # nothing was seen again after seq 5
    snapshot = snap(model)
    kept = {t["generationId"] for t in snapshot["liveTasks"]}
    assert kept == {gid for gid in ids if not part.owns(gid)}
    assert 5 < len(kept) < 35  # both partitions really own some of them
    assert (snapshot["balance"]["usdCredit"] == "0") == part.owns("e7")


def test_a_partition_is_written_k_of_n_and_its_projector_keys_are_its_own():
    assert Partition.parse(" 1 / 3 ") == Partition(1, 3) and str(Partition(1, 3)) == "1/3"
    for bad in ("3/3", "1", "-1/2", "0/0", "a/b", "0/257"):
        with pytest.raises(ValueError, match="K/N"):
            Partition.parse(bad)
    whole, half = Layout("p"), Layout("p", Partition(1, 2))
    assert (whole.checkpoint, half.checkpoint) == ("p:{projector}:checkpoint", "p:{projector:1of2}:checkpoint")
    assert {whole.leader, whole.fence, whole.health} & {half.leader, half.fence, half.health} == set()
    assert (whole.deadletters, whole.durations, whole.user("u")) == (half.deadletters, half.durations, half.user("u"))
    assert all(Partition().owns(f"g{n}") for n in range(50))
    assert Partition(0, 2).owns(None) and not Partition(1, 2).owns(None)  # no usable id: partition 0's, as in sweep.lua


def test_tombstones_are_capped_per_user(any_redis, layout):
    model = ReadModel(any_redis, layout, tombstone_cap=10)
    for n in range(30):
        model.apply([put(f"g{n}", 2 * n), gone(f"g{n}", 2 * n + 1)], NOW_ISO)
    assert any_redis.hlen(layout.seqs("u1")) <= 10


def test_estimate_is_marked_when_nothing_is_reported(model):
    change = document_change(TASKS, tdoc("g1"), "g1", seq(1), T0, RULES, durations=lambda tool: 30_000)
    model.apply([change], NOW_ISO)
    started_ms = epoch_ms(tdoc("g1")["requestTimestamp"])
    [task] = snap(model, now_ms=started_ms + 15_000)["liveTasks"]
    assert (task["progressSource"], task["expectedDurationMs"], task["progressPercent"]) == ("estimate", 30_000, 50.0)
    [task] = snap(model, now_ms=started_ms + 45_000)["liveTasks"]
    assert task["progressPercent"] == 95.0  # capped below done


def test_batch_keeps_only_the_latest_change_per_document(model):
    changes = [put("g1", n, progress=n / 10) for n in range(1, 6)]
    assert model.apply(changes, NOW_ISO) == {"u1": 1}
    assert snap(model)["liveTasks"][0]["progressPercent"] == 50.0


def finished(model, uid="u1", now_ms=T0):
    return [(t["generationId"], t["status"]) for t in snap(model, uid, now_ms)["recentlyFinished"]]


def test_a_finished_task_leaves_the_live_list_with_its_final_status(model):
    model.apply([put("g1", 1)], NOW_ISO)
    assert model.apply([put("g1", 2, status="payment_failed", updatedAt="2026-11-25T09:00:05Z")], NOW_ISO) == {"u1": 2}
    [record] = snap(model, now_ms=T0)["recentlyFinished"]
    assert (record["generationId"], record["status"], record["finishedAt"]) == ("g1", "payment_failed",
                                                                                 "2026-11-25T09:00:05.000Z")
    assert snap(model)["liveTasks"] == []


def test_a_finished_task_is_remembered_once_whatever_is_replayed_or_updated_later(model):
    model.apply([put("g1", 1)], NOW_ISO)
    model.apply([put("g1", 2, status="completed")], NOW_ISO)
    model.apply([put("g1", 2, status="completed")], NOW_ISO)  # replay
    model.apply([put("g1", 3, status="completed", responseTimestamp="2026-11-25T09:00:09Z")], NOW_ISO)
    assert finished(model) == [("g1", "completed")]


def test_a_task_that_finished_before_it_was_ever_seen_live_is_remembered(model):
    model.apply([put("g1", 1), put("g1", 2, status="failed")], NOW_ISO)  # coalesced in one batch
    assert finished(model) == [("g1", "failed")]


def test_a_deleted_task_has_no_final_status_to_show(model):
    model.apply([put("g1", 1)], NOW_ISO)
    model.apply([gone("g1", 2)], NOW_ISO)
    assert finished(model) == []


def test_finished_tasks_are_capped_newest_first_and_age_out(model):
    for n in range(12):
        model.apply([put(f"g{n}", 2 * n + 1), put(f"g{n}", 2 * n + 2, status="completed",
                                                  updatedAt="2026-11-25T09:00:00Z")], NOW_ISO)
    shown = finished(model, now_ms=T0)
    assert [gid for gid, _ in shown] == [f"g{n}" for n in range(11, 1, -1)]
    finished_ms = 1_795_597_200_000  # 2026-11-25T09:00:00Z
    assert len(finished(model, now_ms=finished_ms + 10 * 60 * 1000)) == 10
    assert finished(model, now_ms=finished_ms + 10 * 60 * 1000 + 1) == []


def test_a_snapshot_lists_a_bounded_number_of_live_tasks_and_says_how_many_it_left_out(model):
    model.apply([put(f"g{n:03d}", n) for n in range(1, 31)], NOW_ISO)
    started_ms = epoch_ms(tdoc("g")["requestTimestamp"])
    view = View(started_ms, live_tasks_shown=12)
    snapshot = read_snapshot(model.redis, model.layout, "u1", view)
    assert [t["generationId"] for t in snapshot["liveTasks"]] == [f"g{n:03d}" for n in range(1, 13)]
    assert snapshot["liveTasksOmitted"] == 18
    assert read_snapshot(model.redis, model.layout, "u1", View(started_ms))["liveTasksOmitted"] == 0


def test_the_table_of_task_fields_is_what_the_producer_fills_the_record_stores_the_snapshot_and_the_api_serve(model):
    from api.models import READ_TIME_TASK_FIELDS, FinishedTask, LiveTask
    from projector.normalize import normalize_task
    from readmodel.records import FINISHED_TASK_FIELDS, LIVE_TASK_FIELDS, TASK_FIELDS

    # The producer fills every field of the table in its order (expectedDurationMs: the projector's learned duration).
    assert tuple(normalize_task(tdoc("g1")).visible) == TASK_FIELDS
    assert tuple(normalize_task(tdoc("g2", status="completed")).visible) == TASK_FIELDS
    live, done = put("g1", 1), put("g2", 2, status="completed")
    # The apply script relies on this order: status, progressPercent, progressSource adjacent, and
    # progressMovedAt last (it compares the text between the first and the third, swaps the last).
    assert list(json.loads(live.record)) == [*TASK_FIELDS, "expectedDurationMs", "staleAt", "progressMovedAt"]
    assert TASK_FIELDS[2:5] == ("status", "progressPercent", "progressSource")
    assert list(json.loads(done.record)) == [*FINISHED_TASK_FIELDS, "finishedAt", "finishedAtMs"]
    model.apply([live, done], NOW_ISO)
    snapshot = snap(model)
    assert list(snapshot["liveTasks"][0]) == list(LIVE_TASK_FIELDS)
    assert list(snapshot["recentlyFinished"][0]) == [*FINISHED_TASK_FIELDS, "finishedAt"]
    # The API documents every served field, then the ones it computes when it reads a task.
    assert list(LiveTask.model_json_schema()["properties"]) == [*LIVE_TASK_FIELDS, *READ_TIME_TASK_FIELDS]
    assert list(FinishedTask.model_json_schema()["properties"]) == [*FINISHED_TASK_FIELDS, "finishedAt"]
