"""The fencing token checked where the data lives: a leader's writes are refused on every slot once
a newer leader took over, even when the lease key itself was lost (docs/two-writers.md)."""

import pytest
from redis.crc import key_slot

from projector.lease import Lease
from readmodel import ReadModel
from readmodel.fences import SLOTS, Fenced, Fences, search_tags, slot_tags
from readmodel.text import text

from .test_readmodel import NOW_ISO, put, snap

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
