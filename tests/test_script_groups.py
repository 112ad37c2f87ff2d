"""Many users (or owner entries) per script run: each user changes as alone, on a single Redis and
on a Redis Cluster, where one run only takes keys of one slot."""

import pytest
from redis.crc import key_slot

from readmodel import Layout, ReadModel, View, read_snapshot, scripts
from readmodel.fences import Fenced, Fences
from readmodel.writer import GROUP

from .test_readmodel import NOW_ISO, T0, balance, put, seq

pytestmark = pytest.mark.both_backends

USERS = [f"u{n}" for n in range(2 * GROUP + 50)]  # more users than one run takes


def test_groups_keep_one_slot_per_run_on_a_cluster_and_are_capped_in_size(real_redis, backend, layout):
    keys = [layout.user(uid) for uid in USERS] + [layout.user("u0")]  # a key twice: its slot once
    groups = scripts.slot_groups(real_redis, keys, 7)
    assert sorted(i for group in groups for i in group) == list(range(len(keys)))
    assert all(1 <= len(group) <= 7 for group in groups)
    if backend == "cluster":
        assert all(len({key_slot(keys[i].encode()) for i in group}) == 1 for group in groups)
    else:
        assert len(groups) == -(-len(keys) // 7)  # any keys go together


def test_a_batch_of_many_users_and_the_resync_sweep_of_them_version_each_user_once(real_redis, layout):
    model = ReadModel(real_redis, layout)
    batch = [put(f"g{uid}", 1, owner=uid) for uid in USERS] + [balance(f"e{uid}", 1, owner=uid) for uid in USERS]
    assert model.apply(batch, NOW_ISO) == dict.fromkeys(USERS, 1)
    assert all(real_redis.get(layout.task_owner(f"g{uid}")).startswith(seq(1).encode()) for uid in USERS)
    assert real_redis.zcard(layout.deadlines) == len(USERS)

    # The resync saw every other user's task again: the sweep removes the rest, and their balances.
    seen = USERS[::2]
    assert model.apply([put(f"g{uid}", 5, owner=uid) for uid in seen], NOW_ISO) == {}  # nothing visible changed
    assert model.sweep(0, NOW_ISO, users=USERS, min_seq=seq(5)) == dict.fromkeys(USERS, 2)
    for uid in USERS:
        snapshot = read_snapshot(real_redis, layout, uid, View(T0))
        assert [t["generationId"] for t in snapshot["liveTasks"]] == ([f"g{uid}"] if uid in seen else [])
        assert snapshot["balance"]["usdCredit"] == "0"  # no balance was seen again
        assert snapshot["version"] == 2
    assert {m.decode() for m in real_redis.zrange(layout.deadlines, 0, -1)} == set(seen)
    assert not any(real_redis.exists(layout.task_owner(f"g{uid}")) for uid in USERS if uid not in seen)


def test_one_run_of_many_calls_replies_per_call_in_order(real_redis, backend):
    if backend == "cluster":
        pytest.skip("keys of one slot only: the slot grouping is tested above")
    layout = Layout("tgroups")
    keys = [layout.task_owner(f"g{n}") for n in range(3)]
    fence = Fences(real_redis, layout).keys(keys[0])
    try:
        replies = scripts.run(real_redis, lambda pipe: scripts.OWN.queue(pipe, [keys[0], keys[1], keys[0], *fence], [
            "", seq(2), "u1", "", 60,
            seq(2), "u2", "u0", 60,
            seq(1), "u9", "", 60,  # older than what the first entry wrote: refused
        ]))
        assert replies == [[1, 1, 0]]
        assert real_redis.get(keys[0]).decode() == f"{seq(2)}|u1|"
        assert real_redis.get(keys[1]).decode() == f"{seq(2)}|u2|u0"
    finally:
        real_redis.delete(*keys)


def test_a_run_of_many_users_under_an_older_fence_writes_none_of_them(real_redis, layout):
    model = ReadModel(real_redis, layout)
    assert model.fences.raise_all(5, replicas=0, timeout_ms=1000) == 0
    with pytest.raises(Fenced):
        model.apply([put(f"g{uid}", 1, owner=uid) for uid in USERS], NOW_ISO, fence=4)
    assert not any(real_redis.exists(layout.user(uid), layout.tasks(uid)) for uid in USERS)
    assert model.apply([put(f"g{uid}", 1, owner=uid) for uid in USERS], NOW_ISO, fence=5) == dict.fromkeys(USERS, 1)


def test_a_script_missing_from_the_cache_is_loaded_and_the_scripts_that_ran_keep_their_replies(
    real_redis, layout, monkeypatch
):
    # New code meets a Redis that cached the old scripts: own.lua's SHA is new, apply's is known.
    # The pipeline runs again after loading; the user scripts that ran the first time must not
    # report "nothing changed" from their second run.
    fresh_own = scripts.Lua(scripts.OWN.body + f"\n-- {layout.prefix}\n", scripts.OWN.prelude)
    monkeypatch.setattr(scripts, "OWN", fresh_own)
    monkeypatch.setattr(scripts, "ALL", (*scripts.ALL, fresh_own))
    for node_redis in _masters(real_redis):
        node_redis.script_load(scripts.APPLY_MANY.source)
        assert node_redis.script_exists(fresh_own.sha) == [False]
    model = ReadModel(real_redis, layout)
    batch = [put(f"g{uid}", 1, owner=uid) for uid in USERS]
    assert model.apply(batch, NOW_ISO) == dict.fromkeys(USERS, 1)
    assert all(real_redis.get(layout.task_owner(f"g{uid}")).startswith(seq(1).encode()) for uid in USERS)


def _masters(redis):
    nodes = getattr(redis, "get_primaries", None)
    if nodes is None:
        return [redis]
    return [redis.get_redis_connection(node) for node in nodes()]
