"""The checkpoint: a resume token round-trips exactly; only the current fence may write it."""

from bson import Timestamp

from projector.checkpoint import Checkpoint, CheckpointStore
from projector.lease import Lease

TOKEN = {"_data": "826B06A41000000001000"}


def test_saved_checkpoint_loads_back_with_its_token_position_and_fence(any_redis, layout):
    lease = Lease(any_redis, layout, holder="a")
    lease.acquire()
    store = CheckpointStore(any_redis, layout)
    assert store.save(TOKEN, "1795597328.0000000001", lease.token, 1234)
    assert store.load() == Checkpoint(TOKEN, "1795597328.0000000001", 1234, lease.token)


def test_token_with_bson_types_survives_as_extended_json(any_redis, layout):
    lease = Lease(any_redis, layout, holder="a")
    lease.acquire()
    store = CheckpointStore(any_redis, layout)
    token = {"_data": "82", "ts": Timestamp(5, 6), "raw": b"\x00\x01"}
    store.save(token, "0000000005.0000000006", lease.token, 1)
    assert store.load().token == token


def test_checkpoint_write_with_an_old_fencing_token_is_refused(any_redis, layout):
    old = Lease(any_redis, layout, holder="old")
    old.acquire()
    stale_token = old.token
    any_redis.delete(layout.leader)
    new = Lease(any_redis, layout, holder="new")
    new.acquire()
    store = CheckpointStore(any_redis, layout)
    assert store.save(TOKEN, "0000000009.0000000000", new.token, 2)
    assert store.save({"_data": "old"}, "0000000001.0000000000", stale_token, 3) is False
    assert store.load().position == "0000000009.0000000000"


def test_no_checkpoint_loads_as_none(any_redis, layout):
    assert CheckpointStore(any_redis, layout).load() is None


def test_unreadable_checkpoint_loads_as_none_so_the_worker_resyncs(any_redis, layout):
    any_redis.hset(layout.checkpoint, mapping={"token": "{not json", "position": "x"})
    assert CheckpointStore(any_redis, layout).load() is None
