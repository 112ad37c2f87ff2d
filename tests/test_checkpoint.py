"""The checkpoint: a resume token round-trips exactly; only the current fence may write it."""

from bson import Timestamp

from projector.checkpoint import Checkpoint, CheckpointStore
from projector.lease import Lease
from readmodel import applied

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


def test_saved_checkpoint_records_its_lag_and_announces_position_and_lag(any_redis, layout):
    lease = Lease(any_redis, layout, holder="a")
    lease.acquire()
    pubsub = any_redis.pubsub()
    pubsub.ssubscribe(layout.applied)
    assert pubsub.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    store = CheckpointStore(any_redis, layout)
    assert store.save(TOKEN, "1795597328.0000000001", lease.token, 1_795_597_328_750, lag_ms=42)
    message = pubsub.get_sharded_message(timeout=2)
    assert message["type"] == "smessage"
    assert message["data"] in ("1795597328.0000000001 42 1795597328750", b"1795597328.0000000001 42 1795597328750")
    assert any_redis.hget(layout.checkpoint, "lagMs") in ("42", b"42")
    # The API's reading of both (readmodel.applied) gives the same applied position.
    through = applied.AppliedPosition("1795597328.0000000001", 42, 1_795_597_328_750)
    assert applied.announced(message["data"]) == through
    assert applied.parse(*any_redis.hmget(layout.checkpoint, list(applied.FIELDS))) == through
    assert applied.read_position(any_redis, layout) == through.position
    # Without a lag of its own (a resync), it is the time since the position (whole seconds).
    assert store.save(TOKEN, "1795597328.0000000002", lease.token, 1_795_597_329_500)
    assert any_redis.hget(layout.checkpoint, "lagMs") in ("1500", b"1500")
    pubsub.close()


def test_a_fenced_off_checkpoint_announces_nothing(any_redis, layout):
    old = Lease(any_redis, layout, holder="old")
    old.acquire()
    stale = old.token
    any_redis.delete(layout.leader)
    Lease(any_redis, layout, holder="new").acquire()
    pubsub = any_redis.pubsub()
    pubsub.ssubscribe(layout.applied)
    assert pubsub.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    assert CheckpointStore(any_redis, layout).save(TOKEN, "0000000001.0000000000", stale, 3) is False
    assert pubsub.get_sharded_message(timeout=0.2) is None
    pubsub.close()


def test_an_announcement_or_hash_that_is_not_a_position_is_ignored():
    assert applied.announced(b"1795597328.0000000001 42") is None
    assert applied.announced(b"1795597328.0000000001 forty-two 1") is None
    assert applied.parse(None, b"1", b"2") is None
    assert applied.parse(b"0000000005.0000000006", None, None) == applied.AppliedPosition("0000000005.0000000006", 0, 0)
