"""The fan-out: latest-only mailboxes, one read per version, catch-up after a pub/sub reconnect."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis
import redis.asyncio

from api import snapshots
from api.fanout import Fanout, Listener, Snapshot
from api.metrics import Metrics
from readmodel import Layout, View, aread_snapshot
from tests.conftest import REDIS_URL


def snap(version: int) -> Snapshot:
    return Snapshot({"version": version})


def test_a_listener_keeps_only_the_newest_unsent_snapshot_and_counts_the_replaced():
    metrics = Metrics()
    listener = Listener("u", metrics)
    for version in (1, 2, 3):
        listener.offer(snap(version))
    listener.offer(snap(2))  # older than what is pending: ignored, not a drop
    assert listener.dropped == 2
    assert metrics.dropped_states._value.get() == 2
    assert asyncio.run(listener.next()).version == 3


def test_a_listener_ignores_versions_its_client_already_has():
    listener = Listener("u", Metrics(), sent_version=5)
    listener.offer(snap(5))
    listener.offer(snap(4))
    assert listener._pending is None and listener.dropped == 0


async def test_a_closed_listener_wakes_its_stream_with_none():
    listener = Listener("u", Metrics())
    waiting = asyncio.create_task(listener.next())
    await asyncio.sleep(0)
    listener.close()
    assert await asyncio.wait_for(waiting, 1) is None


async def _until(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def fake_fanout():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server)
    layout = Layout("f")
    reads: list[str] = []

    async def read(uid: str) -> dict:
        reads.append(uid)
        return await aread_snapshot(client, layout, uid, View(0))

    fanout = Fanout(client, layout, read, Metrics(), poll_s=0.05)
    await fanout.start()
    yield fanout, client, layout, reads
    await fanout.close()
    await client.aclose()


async def test_one_notification_makes_one_read_for_all_listeners_of_a_user(fake_fanout):
    fanout, client, layout, reads = fake_fanout
    listeners = [fanout.listen("u1") for _ in range(10)]
    await _until(lambda: "u1" in fanout.subscribed_users and len(reads) == 1)  # the confirmation's catch-up read
    assert [(await one.next()).version for one in listeners] == [0] * 10
    await client.hset(layout.user("u1"), mapping={"version": 1})
    await client.spublish(layout.channel("u1"), 1)
    results = await asyncio.wait_for(asyncio.gather(*(one.next() for one in listeners)), 5)
    assert {s.version for s in results} == {1}
    assert len(reads) == 2


async def test_the_last_listener_leaving_unsubscribes_the_user(fake_fanout):
    fanout, *_ = fake_fanout
    first, second = fanout.listen("u1"), fanout.listen("u1")
    await _until(lambda: "u1" in fanout.subscribed_users)
    first.close()
    await asyncio.sleep(0.1)
    assert "u1" in fanout.subscribed_users
    second.close()
    await _until(lambda: not fanout.subscribed_users)
    assert fanout.listener_count() == 0


async def test_after_a_pubsub_reconnect_subscribed_users_are_read_again(prefix, real_redis):
    """A publish lost while the connection was down is made up for by the re-read after reconnecting."""
    layout = Layout(prefix)
    name = f"fanout-test-{prefix}"
    client = redis.asyncio.Redis.from_url(REDIS_URL, client_name=name)
    metrics = Metrics()

    async def read(uid: str) -> dict:
        return await aread_snapshot(client, layout, uid, View(0))

    fanout = Fanout(client, layout, read, metrics, poll_s=0.05)
    await fanout.start()
    try:
        listener = fanout.listen("u1")
        assert (await asyncio.wait_for(listener.next(), 5)).version == 0  # the subscription's catch-up read
        # The change happens with no publish reaching us: written without SPUBLISH, then the
        # pub/sub connection (found by its own name) is killed.
        real_redis.hset(layout.user("u1"), mapping={"version": 7, "usdCredit": "9"})
        (conn,) = [c for c in real_redis.client_list() if c["name"] == name and "subscribe" in c["cmd"]]
        real_redis.client_kill_filter(_id=conn["id"])
        got = await asyncio.wait_for(listener.next(), 10)
        assert got.version == 7 and got.data["balance"]["usdCredit"] == "9"
        assert metrics.resubscribes._value.get() + metrics.pubsub_reconnects._value.get() >= 1
    finally:
        await fanout.close()
        await client.aclose()


async def test_a_listener_waits_at_most_its_timeout_and_wakes_at_once_on_an_offer():
    """The stream's heartbeat is the wait's timeout; an offer ends the wait early."""
    listener = Listener("u", Metrics())
    assert await listener.wait(0.01) is False
    waiting = asyncio.create_task(listener.wait(30))
    await asyncio.sleep(0)
    listener.offer(snap(1))
    assert await asyncio.wait_for(waiting, 1) is True
    assert listener.take().version == 1 and listener.take() is None


async def test_ending_the_streams_closes_every_listener_and_every_later_one(fake_fanout):
    """Server shutdown: one call ends every stream, and a stream opened during shutdown ends at once."""
    fanout, *_ = fake_fanout
    listeners = [fanout.listen(f"u{i % 3}") for i in range(6)]
    fanout.end_streams()
    assert all(listener.closed for listener in listeners)
    assert fanout.listen("u9").closed
    assert fanout.listener_count() == 0


@pytest.fixture
async def batched_fanout():
    """A fan-out reading through ``snapshots.read_many``; each batch waits 50 ms first (a slow
    round trip), so notifications arriving meanwhile queue up for the next batch."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    layout, metrics = Layout("b"), Metrics()
    batches: list[list[str]] = []
    gate = {"delay_s": 0.05}

    async def read(uid: str) -> dict:
        raise AssertionError("the batched fan-out reads through read_many")

    async def read_many(uids: list[str]) -> list[dict]:
        batches.append(list(uids))
        await asyncio.sleep(gate["delay_s"])
        return await snapshots.read_many(client, layout, uids, 95.0)

    fanout = Fanout(client, layout, read, metrics, poll_s=0.05, read_many=read_many, batch_size=50)
    await fanout.start()
    yield fanout, client, layout, metrics, batches
    await fanout.close()
    await client.aclose()


async def test_many_users_notified_at_once_are_read_in_a_few_round_trips(batched_fanout):
    fanout, client, layout, metrics, batches = batched_fanout
    users = [f"u{i}" for i in range(120)]
    listeners = {uid: [fanout.listen(uid), fanout.listen(uid)] for uid in users}
    await _until(lambda: metrics.snapshot_reads._value.get() == 120)  # the subscriptions' catch-up reads
    for group in listeners.values():
        assert [(await one.next()).version for one in group] == [0, 0]
    trips_before = metrics.snapshot_read_batches._value.get()
    async with client.pipeline(transaction=False) as pipe:
        for uid in users:
            pipe.hset(layout.user(uid), mapping={"version": 3, "usdCredit": uid})
            pipe.spublish(layout.channel(uid), 3)
        await pipe.execute()
    got = await asyncio.wait_for(asyncio.gather(*(one.next() for g in listeners.values() for one in g)), 5)
    assert {s.version for s in got} == {3}
    assert {s.data["balance"]["usdCredit"] for s in got} == set(users)
    # One read per user and version, shared by both streams; 120 users in at most 1 + 3 batches of 50.
    assert metrics.snapshot_reads._value.get() == 240
    assert metrics.snapshot_read_batches._value.get() - trips_before <= 4
    assert max(len(b) for b in batches) <= 50
    assert got[0].data == await snapshots.read(client, layout, got[0].data["masterAccountId"], 95.0)


async def test_a_user_notified_while_its_read_is_in_flight_is_read_again(batched_fanout):
    fanout, client, layout, _metrics, batches = batched_fanout
    listener = fanout.listen("u1")
    assert (await asyncio.wait_for(listener.next(), 5)).version == 0
    await client.hset(layout.user("u1"), mapping={"version": 1})
    await client.spublish(layout.channel("u1"), 1)
    await _until(lambda: len(batches) == 2)  # the read of version 1 is in flight (waiting 50 ms)
    await client.hset(layout.user("u1"), mapping={"version": 2})
    await client.spublish(layout.channel("u1"), 2)
    seen = []
    while not seen or seen[-1] < 2:
        seen.append((await asyncio.wait_for(listener.next(), 5)).version)
    assert seen[-1] == 2 and seen == sorted(seen)


async def test_versions_already_read_are_not_read_again(batched_fanout):
    """A notification for a version a read already saw costs no read."""
    fanout, client, layout, metrics, _batches = batched_fanout
    listener = fanout.listen("u1")
    await client.hset(layout.user("u1"), mapping={"version": 5})
    assert (await asyncio.wait_for(listener.next(), 5)).version == 5
    reads = metrics.snapshot_reads._value.get()
    for version in (4, 5):
        await client.spublish(layout.channel("u1"), version)
    await asyncio.sleep(0.2)
    assert metrics.snapshot_reads._value.get() == reads
