"""The fencing token checked where the data lives: a leader's writes are refused on every slot once
a newer leader took over, even when the lease key itself was lost (docs/two-writers.md)."""

import json
import time

import pytest
from redis.crc import key_slot

from projector.lease import Lease
from readmodel import Layout, Partition, ReadModel, sweeping
from readmodel.fences import SLOTS, Fenced, Fences, search_tags, slot_tags
from readmodel.text import text

from .test_readmodel import NOW_ISO, put, seq, snap

pytestmark = pytest.mark.both_backends  # the real-Redis tests run on a single Redis and on a Redis Cluster

USERS = [f"u{n}" for n in range(12)]  # spread over the cluster's three masters


def test_every_slot_tag_hashes_to_its_slot_and_the_file_is_the_search_result():
    tags = slot_tags()
    assert len(tags) == SLOTS
    assert all(key_slot(tag.encode()) == slot for slot, tag in enumerate(tags))
    assert list(tags) == search_tags()


def test_a_copy_is_in_the_slot_of_the_key_it_guards(real_redis, layout):
    fences = Fences(real_redis, layout, audit=True)
    copy, audit = fences.keys(layout.user("u7"))
    if fences.cluster:
        assert key_slot(copy.encode()) == key_slot(audit.encode()) == key_slot(layout.user("u7").encode())
    else:
        assert fences.keys(layout.user("u7")) == fences.keys(layout.user("u8"))


def test_an_old_leaders_batch_is_refused_on_every_user_once_a_new_leader_took_over(real_redis, layout):
    """The new leader has written nothing yet: its acquisition alone fences the old one off."""
    model = ReadModel(real_redis, layout)
    old = Lease(real_redis, layout, holder="old")
    assert old.acquire()
    model.apply([put("g0", 1, owner="u0")], NOW_ISO, old.token)
    real_redis.delete(layout.leader)  # the lease key lost (a failover): the standby takes over
    new = Lease(real_redis, layout, holder="new")
    assert new.acquire() and new.token > old.token
    for uid in USERS:
        with pytest.raises(Fenced) as refused:
            model.apply([put(f"g-{uid}", 2, owner=uid)], NOW_ISO, old.token)
        assert refused.value.newer == new.token
        assert snap(model, uid)["liveTasks"] == ([] if uid != "u0" else snap(model, uid)["liveTasks"])
    assert [t["generationId"] for t in snap(model, "u0")["liveTasks"]] == ["g0"]
    model.apply([put("g1", 3, owner="u1")], NOW_ISO, new.token)
    assert [t["generationId"] for t in snap(model, "u1")["liveTasks"]] == ["g1"]


def test_an_unfenced_write_is_not_checked(real_redis, layout):
    model = ReadModel(real_redis, layout)
    assert Lease(real_redis, layout, holder="a").acquire()
    assert model.apply([put("g1", 1)], NOW_ISO) == {"u1": 1}


def test_a_fence_that_went_back_in_a_failover_is_not_handed_out_again(real_redis, layout):
    """The fence counter's last increment lost (the master died before replicating it): the copies
    on the other slots still hold the token, so the next acquisition takes a newer one."""
    first = Lease(real_redis, layout, holder="first")
    assert first.acquire()
    real_redis.delete(layout.leader)
    real_redis.decr(layout.fence)  # what a promoted replica that missed the INCR would hold
    second = Lease(real_redis, layout, holder="second")
    assert second.acquire()
    assert second.token > first.token
    with pytest.raises(Fenced):
        ReadModel(real_redis, layout).apply([put("g1", 1)], NOW_ISO, first.token)


def test_taking_the_lease_again_takes_a_newer_token(any_redis, layout):
    a = Lease(any_redis, layout, holder="a")
    assert a.acquire()
    token = a.token
    assert a.acquire() and a.token == token + 1


def test_no_replica_acknowledging_means_not_leading(real_redis, layout):
    a = Lease(real_redis, layout, holder="a", replicas=2, ttl_ms=300)  # more replicas than any master has
    assert a.acquire() is False
    assert a.token is None
    assert Lease.current(real_redis, layout) is None  # given up at once, not held until it expires


def test_accepted_fenced_writes_are_audited_with_their_token(real_redis, layout):
    model = ReadModel(real_redis, layout, audit=True)
    old = Lease(real_redis, layout, holder="old")
    assert old.acquire()
    model.apply([put("g1", 1, owner="u1")], NOW_ISO, old.token)
    real_redis.delete(layout.leader)
    assert Lease(real_redis, layout, holder="new").acquire()
    with pytest.raises(Fenced):
        model.apply([put("g2", 2, owner="u1")], NOW_ISO, old.token)
    lists = {model.fences.keys(layout.user("u1"))[1], model.fences.keys(layout.task_owner("g1"))[1]}
    entries = [text(e).split() for key in lists for e in real_redis.lrange(key, 0, -1)]
    assert sorted((int(token), kind) for token, kind, _at in entries) == [(old.token, "apply"), (old.token, "own")]


def test_a_fenced_off_batch_makes_the_writer_give_up_the_lead(real_redis, layout):
    import time

    from projector.applying import BatchWriter, Grant
    from projector.batching import Batch
    from projector.lease import LeaseLost

    writer = BatchWriter(real_redis, layout, {"tasks": "generationOutputs"}, 10)
    old = Lease(real_redis, layout, holder="old")
    assert old.acquire()
    real_redis.delete(layout.leader)
    assert Lease(real_redis, layout, holder="new").acquire()
    with pytest.raises(LeaseLost, match="fenced off"):
        writer.apply(Batch(changes=[put("g1", 1)], events=1), Grant(old.token, time.monotonic() + 60, ""))


def test_an_old_leaders_sweep_is_refused_and_removes_nothing(real_redis, layout):
    model = ReadModel(real_redis, layout)
    old = Lease(real_redis, layout, holder="old")
    assert old.acquire()
    model.apply([put(f"g-{uid}", 1, owner=uid) for uid in USERS], NOW_ISO, old.token)
    real_redis.delete(layout.leader)
    new = Lease(real_redis, layout, holder="new")
    assert new.acquire()
    with pytest.raises(Fenced):  # a resync's end: everything below the min seq would go
        model.sweep(0, NOW_ISO, users=USERS, min_seq="9999999999.0000000000", fence=old.token)
    assert all(len(snap(model, uid)["liveTasks"]) == 1 for uid in USERS)
    model.sweep(0, NOW_ISO, users=USERS, min_seq="9999999999.0000000000", fence=new.token)
    assert all(snap(model, uid)["liveTasks"] == [] for uid in USERS)


def _stale_at(model, uid, gid):
    return json.loads(model.redis.hget(model.layout.tasks(uid), gid))["staleAt"]


def _two_partitions(real_redis, prefix):
    """Models of partitions 0 and 1 of two, each leading under a lease of its own, and their
    fencing tokens."""
    models, tokens = [], []
    for index in (0, 1):
        layout = Layout(prefix, Partition(index, 2))
        lease = Lease(real_redis, layout, holder=f"p{index}")
        assert lease.acquire()
        models.append(ReadModel(real_redis, layout))
        tokens.append(lease.token)
    return models, tokens


def _two_leaders(real_redis, layout, *users):
    """A model and an old leader that has applied one task to each of ``users`` (g1 to u1, g3 to
    u3, ...), all stale at the same time; the lease key then lost."""
    model = ReadModel(real_redis, layout)
    old = Lease(real_redis, layout, holder="old")
    assert old.acquire()
    model.apply([put(f"g{uid[1:]}", 1, owner=uid, updatedAt="2026-11-25T09:00:00Z") for uid in users], NOW_ISO,
                old.token)
    real_redis.delete(layout.leader)
    return model, old


def test_an_old_leader_paused_after_its_sweep_does_not_drop_the_deadline_of_a_task_a_new_leader_added(
        real_redis, layout):
    """docs/two-writers.md: the old leader's sweep removed u1's only task; before its second round
    (the deadline's removal) a new leader takes over and adds g2 to u1. The second round is refused:
    u1 keeps a deadline, and g2 is swept once stale (with the old leader's plain ZREM it never was)."""
    model, old = _two_leaders(real_redis, layout, "u1")
    swept_at = _stale_at(model, "u1", "g1")
    swept = sweeping.remove(model, swept_at, NOW_ISO, fence=old.token)
    assert swept.next_deadlines == {"u1": -1} and swept.gone == [("u1", "g1")]

    new = Lease(real_redis, layout, holder="new")
    assert new.acquire()
    model.apply([put("g2", 2, owner="u1", updatedAt="2026-11-25T09:30:00Z")], NOW_ISO, new.token)
    with pytest.raises(Fenced):
        sweeping.settle(model, swept)

    assert real_redis.zscore(layout.deadlines, "u1") is not None
    g2_stale_at = _stale_at(model, "u1", "g2")
    model.sweep(g2_stale_at - 1, NOW_ISO, fence=new.token)  # u1 was due: its deadline moves to g2's
    assert real_redis.zscore(layout.deadlines, "u1") == g2_stale_at
    model.sweep(g2_stale_at, NOW_ISO, fence=new.token)
    assert real_redis.hlen(layout.tasks("u1")) == 0


def test_when_the_fence_cannot_tell_a_late_second_round_keeps_what_was_written_after_the_sweep(real_redis, layout):
    """The same pause, but the fence copies went back to the old token (a master and its replica
    both lost: item 1 of docs/two-writers.md). Meanwhile the new leader swept u1 itself and added g2
    to it, moved g1 to u2, and added to u3 a task g4 already stale (its deadline moves earlier).
    The old leader's second round is accepted and undoes none of that: both deadlines changed since
    its sweep read them, and g1's owner entry names u2."""
    model, old = _two_leaders(real_redis, layout, "u1", "u3")
    swept_at = _stale_at(model, "u1", "g1")
    swept = sweeping.remove(model, swept_at, NOW_ISO, fence=old.token)
    assert swept.next_deadlines == {"u1": -1, "u3": -1}

    new = Lease(real_redis, layout, holder="new")
    assert new.acquire()
    model.sweep(swept_at + 1, NOW_ISO, users=["u1"], fence=new.token)  # no live task left: its deadline goes
    assert real_redis.zscore(layout.deadlines, "u1") is None
    model.apply([put("g2", 2, owner="u1", updatedAt="2026-11-25T09:30:00Z"),
                 put("g1", 3, owner="u2", updatedAt="2026-11-25T09:30:00Z"),
                 put("g4", 4, owner="u3", updatedAt="2026-11-25T08:00:00Z")], NOW_ISO, new.token)
    g2_stale_at, g4_stale_at = _stale_at(model, "u1", "g2"), _stale_at(model, "u3", "g4")
    assert g4_stale_at < swept_at < g2_stale_at
    for key in (layout.deadlines, layout.task_owner("g1"), layout.task_owner("g3")):
        real_redis.set(model.fences.keys(key)[0], old.token)  # the copies lost with their master

    sweeping.settle(model, swept)  # accepted: the fence cannot tell
    assert real_redis.zscore(layout.deadlines, "u1") == g2_stale_at
    assert real_redis.zscore(layout.deadlines, "u3") == g4_stale_at
    entry = real_redis.get(layout.task_owner("g1"))
    assert entry is not None and text(entry).split("|")[1] == "u2"
    assert real_redis.get(layout.task_owner("g3")) is None  # the entry of a task the sweep removed goes


def test_a_sweep_moves_a_deadline_later_only_while_it_is_due_and_removes_an_owner_entry_of_its_user(
        real_redis, layout):
    """The second round alone (one writer): a due deadline moves to the next live task's stale time
    and a removed task's owner entry goes."""
    model = ReadModel(real_redis, layout)
    model.apply([put("g1", 1, owner="u1", updatedAt="2026-11-25T09:00:00Z"),
                 put("g2", 2, owner="u1", updatedAt="2026-11-25T09:30:00Z")], NOW_ISO)
    first, second = _stale_at(model, "u1", "g1"), _stale_at(model, "u1", "g2")
    assert model.sweep(first, NOW_ISO) == {"u1": 2}
    assert real_redis.zscore(layout.deadlines, "u1") == second
    assert real_redis.get(layout.task_owner("g1")) is None
    assert real_redis.get(layout.task_owner("g2")) is not None


BOGUS = "9999999999.0000000000"  # a position past the source's clock: verify --repair clears it


def _repair_clearing(layout, value=BOGUS):
    from projector.verify_repair import Plan

    return Plan(layout, clear=[(layout.seqs("u1"), "g1", value), (layout.task_owner("g1"), "", f"{value}|u1|")])


def test_an_old_leaders_repair_clears_nothing_once_a_new_leader_took_over(real_redis, layout):
    """A repair planned by the old leader (a position from the future to clear) is written after
    a new leader took over: refused, the position left to the new leader's own verify."""
    _model, old = _two_leaders(real_redis, layout, "u1")
    real_redis.hset(layout.seqs("u1"), "g1", BOGUS)
    real_redis.set(layout.task_owner("g1"), f"{BOGUS}|u1|")
    assert Lease(real_redis, layout, holder="new").acquire()
    with pytest.raises(Fenced):
        _repair_clearing(layout).apply(real_redis, lambda: None, time.time, fence=old.token)
    assert text(real_redis.hget(layout.seqs("u1"), "g1")) == BOGUS
    assert real_redis.get(layout.task_owner("g1")) is not None


def test_when_the_fence_cannot_tell_a_late_repair_keeps_positions_written_after_its_plan(real_redis, layout):
    """The new leader cleared the position itself and applied a real change of g1 after it; the
    fence copies then went back to the old token. The old leader's repair, accepted, deletes only
    values it read: the real position and owner entry stay."""
    model, old = _two_leaders(real_redis, layout, "u1")
    real_redis.hset(layout.seqs("u1"), "g1", BOGUS)
    real_redis.set(layout.task_owner("g1"), f"{BOGUS}|u1|")
    new = Lease(real_redis, layout, holder="new")
    assert new.acquire()
    _repair_clearing(layout).apply(real_redis, lambda: None, time.time, fence=new.token)
    assert real_redis.hget(layout.seqs("u1"), "g1") is None
    model.apply([put("g1", 5, owner="u1", updatedAt="2026-11-25T09:00:00Z")], NOW_ISO, new.token)
    real = text(real_redis.hget(layout.seqs("u1"), "g1"))
    assert real == seq(5)
    for key in (layout.seqs("u1"), layout.task_owner("g1")):
        real_redis.set(model.fences.keys(key)[0], old.token)  # the copies lost with their master

    _repair_clearing(layout).apply(real_redis, lambda: None, time.time, fence=old.token)
    assert text(real_redis.hget(layout.seqs("u1"), "g1")) == real
    assert text(real_redis.get(layout.task_owner("g1"))).startswith(real)


def test_a_put_of_another_partition_between_a_sweeps_two_rounds_keeps_a_deadline(real_redis, prefix):
    """Two partitions write the one deadlines set, each under a fence of its own: partition 0's
    sweep removed u1's only task, partition 1 put g2 to u1 before partition 0's second round (its
    ZADD LT kept the older deadline), which removes the deadline, accepted. The look after it
    finds g2 and gives u1 a deadline back: g2 is swept once stale."""
    (first, second), tokens = _two_partitions(real_redis, prefix)
    first.apply([put("g1", 1, owner="u1", updatedAt="2026-11-25T09:00:00Z")], NOW_ISO, tokens[0])
    swept_at = _stale_at(first, "u1", "g1")
    swept = sweeping.remove(first, swept_at, NOW_ISO, fence=tokens[0])
    assert swept.next_deadlines == {"u1": -1}

    second.apply([put("g2", 2, owner="u1", updatedAt="2026-11-25T09:30:00Z")], NOW_ISO, tokens[1])
    assert real_redis.zscore(first.layout.deadlines, "u1") == swept_at  # the older deadline kept
    sweeping.settle(first, swept)

    assert real_redis.zscore(first.layout.deadlines, "u1") is not None
    g2_stale_at = _stale_at(second, "u1", "g2")
    second.sweep(g2_stale_at - 1, NOW_ISO, fence=tokens[1])
    assert real_redis.zscore(first.layout.deadlines, "u1") == g2_stale_at
    second.sweep(g2_stale_at, NOW_ISO, fence=tokens[1])
    assert real_redis.hlen(first.layout.tasks("u1")) == 0


@pytest.mark.parametrize("kept", [False, True], ids=["no-task-left", "a-later-task-left"])
def test_a_batch_of_another_partition_cut_anywhere_by_a_sweeps_second_round_keeps_a_deadline(
        real_redis, prefix, kept):
    """As above, with partition 1's batch cut at each of its writes by partition 0's whole second
    round (a pause of that writer longer than the sweep's round trips): u1 ends with a deadline no
    later than g2's stale time in every case. The sweep either removes u1's deadline (no task
    left) or moves it later, to g0's stale time, past g2's. A batch used to offer its deadlines
    before its scripts: cut between the two, the removal found the score it had read and the look
    no task, and g2 had no deadline; a deadline moved later was not looked at (g2 put before the
    second round: swept only at g0's time). docs/two-writers.md."""
    for cut in range(4):  # before the owner entry, the user's script, the deadline; after all three
        (first, second), tokens = _two_partitions(real_redis, f"{prefix}c{cut}")
        first.apply([put("g1", 1, owner="u1", updatedAt="2026-11-25T09:00:00Z")], NOW_ISO, tokens[0])
        if kept:
            first.apply([put("g0", 2, owner="u1", updatedAt="2026-11-25T10:00:00Z")], NOW_ISO, tokens[0])
        swept_at = _stale_at(first, "u1", "g1")
        swept = sweeping.remove(first, swept_at, NOW_ISO, fence=tokens[0])
        assert swept.next_deadlines == {"u1": _stale_at(first, "u1", "g0") if kept else -1}
        plan = second.plan([put("g2", 3, owner="u1", updatedAt="2026-11-25T09:30:00Z")], NOW_ISO, tokens[1])
        writes = [*plan.steps, *plan.after]
        assert len(writes) == 3
        second.run(writes[:cut])
        sweeping.settle(first, swept)
        second.run(writes[cut:])
        deadline = real_redis.zscore(first.layout.deadlines, "u1")
        assert deadline is not None and deadline <= _stale_at(second, "u1", "g2"), (cut, writes)
