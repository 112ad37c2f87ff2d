"""The fan-out: latest-only mailboxes, one read per version, catch-up after a pub/sub reconnect,
and stream openings' first reads batched like every other read."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis
import redis.asyncio

from api.errors import ServerBusy
from api.fanout import Fanout, Mailbox, SharedSnapshot
from api.metrics import Metrics
from api.reads import FIRST_READ_TRIES
from api.snapshots import SnapshotReader
from readmodel import Layout
from tests.conftest import REDIS_URL


def snap(version: int) -> SharedSnapshot:
    return SharedSnapshot({"version": version})


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_a_mailbox_keeps_only_the_newest_unsent_snapshot_and_reports_the_replaced_to_its_hook():
    drops = []
    mailbox = Mailbox("u", on_drop=lambda: drops.append(1))
    for version in (1, 2, 3):
        mailbox.offer(snap(version))
    mailbox.offer(snap(2))  # older than what is pending: ignored, not a drop
    assert mailbox.dropped == 2 and len(drops) == 2
    assert asyncio.run(mailbox.next()).version == 3


def test_a_mailbox_ignores_versions_its_client_already_has():
    mailbox = Mailbox("u", sent_version=5)
    mailbox.offer(snap(5))
    mailbox.offer(snap(4))
    assert not mailbox.pending and mailbox.dropped == 0
    mailbox.offer(snap(7))
    mailbox.mark_sent(7)  # sent another way (a stream's opening): no longer pending
    assert not mailbox.pending and mailbox.sent_version == 7


async def test_a_closed_mailbox_wakes_its_stream_with_none():
    mailbox = Mailbox("u")
    waiting = asyncio.create_task(mailbox.next())
    await asyncio.sleep(0)
    mailbox.close()
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

    class CountingReader(SnapshotReader):
        async def read_many(self, uids: list[str]) -> list[dict]:
            reads.extend(uids)
            return await super().read_many(uids)

    fanout = Fanout(client, layout, CountingReader(client, layout, clock=lambda: 0), Metrics(), poll_s=0.05)
    await fanout.start()
    yield fanout, client, layout, reads
    await fanout.close()
    await client.aclose()


async def test_one_notification_makes_one_read_for_all_mailboxes_of_a_user(fake_fanout):
    fanout, client, layout, reads = fake_fanout
    mailboxes = [fanout.listen("u1") for _ in range(10)]
    await _until(lambda: "u1" in fanout.subscribed_users and len(reads) == 1)  # the confirmation's catch-up read
    assert [(await one.next()).version for one in mailboxes] == [0] * 10
    await client.hset(layout.user("u1"), mapping={"version": 1})
    await client.spublish(layout.channel("u1"), 1)
    results = await asyncio.wait_for(asyncio.gather(*(one.next() for one in mailboxes)), 5)
    assert {s.version for s in results} == {1}
    assert len(reads) == 2


async def test_the_last_mailbox_leaving_unsubscribes_the_user(fake_fanout):
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
    fanout = Fanout(client, layout, SnapshotReader(client, layout), metrics, poll_s=0.05)
    await fanout.start()
    try:
        mailbox = fanout.listen("u1")
        assert (await asyncio.wait_for(mailbox.next(), 5)).version == 0  # the subscription's catch-up read
        # The change happens with no publish reaching us: written without SPUBLISH, then the
        # pub/sub connection (found by its own name) is killed.
        real_redis.hset(layout.user("u1"), mapping={"version": 7, "usdCredit": "9"})
        (conn,) = [c for c in real_redis.client_list() if c["name"] == name and "subscribe" in c["cmd"]]
        real_redis.client_kill_filter(_id=conn["id"])
        got = await asyncio.wait_for(mailbox.next(), 10)
        assert got.version == 7 and got.data["balance"]["usdCredit"] == "9"
        assert (sample(metrics, "livestatus_api_pubsub_resubscribes_total")
                + sample(metrics, "livestatus_api_pubsub_reconnects_total")) >= 1
    finally:
        await fanout.close()
        await client.aclose()


async def test_a_mailbox_waits_at_most_its_timeout_and_wakes_at_once_on_an_offer():
    """The stream's heartbeat is the wait's timeout; an offer ends the wait early."""
    mailbox = Mailbox("u")
    assert await mailbox.wait(0.01) is False
    waiting = asyncio.create_task(mailbox.wait(30))
    await asyncio.sleep(0)
    mailbox.offer(snap(1))
    assert await asyncio.wait_for(waiting, 1) is True
    assert mailbox.take().version == 1 and mailbox.take() is None


async def test_ending_the_streams_closes_every_mailbox_and_every_later_one(fake_fanout):
    """Server shutdown: one call ends every stream, and a stream opened during shutdown ends at once."""
    fanout, *_ = fake_fanout
    mailboxes = [fanout.listen(f"u{i % 3}") for i in range(6)]
    fanout.end_streams()
    assert all(mailbox.closed for mailbox in mailboxes)
    assert fanout.listen("u9").closed
    assert fanout.listener_count() == 0


@pytest.fixture
async def batched_fanout():
    """A fan-out reading through ``SnapshotReader.read_many``; each batch waits 50 ms first (a
    slow round trip), so notifications arriving meanwhile queue up for the next batch."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    layout, metrics = Layout("b"), Metrics()
    batches: list[list[str]] = []

    class SlowReader(SnapshotReader):
        async def read(self, uid: str) -> dict:
            raise AssertionError("the batched fan-out reads through read_many")

        async def read_many(self, uids: list[str]) -> list[dict]:
            batches.append(list(uids))
            await asyncio.sleep(0.05)
            return await super().read_many(uids)

    fanout = Fanout(client, layout, SlowReader(client, layout, 95.0), metrics, poll_s=0.05, batch_size=50)
    await fanout.start()
    yield fanout, client, layout, metrics, batches
    await fanout.close()
    await client.aclose()


async def test_many_users_notified_at_once_are_read_in_a_few_round_trips(batched_fanout):
    fanout, client, layout, metrics, batches = batched_fanout
    users = [f"u{i}" for i in range(120)]
    mailboxes = {uid: [fanout.listen(uid), fanout.listen(uid)] for uid in users}
    await _until(lambda: sample(metrics, "livestatus_api_fanout_reads_total") == 120)  # the subscriptions' catch-up reads
    for group in mailboxes.values():
        assert [(await one.next()).version for one in group] == [0, 0]
    trips_before = sample(metrics, "livestatus_api_fanout_read_batches_total")
    async with client.pipeline(transaction=False) as pipe:
        for uid in users:
            pipe.hset(layout.user(uid), mapping={"version": 3, "usdCredit": uid})
            pipe.spublish(layout.channel(uid), 3)
        await pipe.execute()
    got = await asyncio.wait_for(asyncio.gather(*(one.next() for g in mailboxes.values() for one in g)), 5)
    assert {s.version for s in got} == {3}
    assert {s.data["balance"]["usdCredit"] for s in got} == set(users)
    # One read per user and version, shared by both streams; 120 users in at most 1 + 3 batches of 50.
    assert sample(metrics, "livestatus_api_fanout_reads_total") == 240
    assert sample(metrics, "livestatus_api_fanout_read_batches_total") - trips_before <= 4
    assert max(len(b) for b in batches) <= 50
    assert got[0].data == await SnapshotReader(client, layout, 95.0).read(got[0].data["masterAccountId"])


async def test_a_user_notified_while_its_read_is_in_flight_is_read_again(batched_fanout):
    fanout, client, layout, _metrics, batches = batched_fanout
    mailbox = fanout.listen("u1")
    assert (await asyncio.wait_for(mailbox.next(), 5)).version == 0
    await client.hset(layout.user("u1"), mapping={"version": 1})
    await client.spublish(layout.channel("u1"), 1)
    await _until(lambda: len(batches) == 2)  # the read of version 1 is in flight (waiting 50 ms)
    await client.hset(layout.user("u1"), mapping={"version": 2})
    await client.spublish(layout.channel("u1"), 2)
    seen = []
    while not seen or seen[-1] < 2:
        seen.append((await asyncio.wait_for(mailbox.next(), 5)).version)
    assert seen[-1] == 2 and seen == sorted(seen)


async def test_versions_already_read_are_not_read_again(batched_fanout):
    """A notification for a version a read already saw costs no read."""
    fanout, client, layout, metrics, _batches = batched_fanout
    mailbox = fanout.listen("u1")
    await client.hset(layout.user("u1"), mapping={"version": 5})
    assert (await asyncio.wait_for(mailbox.next(), 5)).version == 5
    reads = sample(metrics, "livestatus_api_fanout_reads_total")
    for version in (4, 5):
        await client.spublish(layout.channel("u1"), version)
    await asyncio.sleep(0.2)
    assert sample(metrics, "livestatus_api_fanout_reads_total") == reads


async def test_a_burst_of_stream_openings_reads_the_first_snapshots_in_shared_round_trips(batched_fanout):
    """A storm of openings (what a deploy causes) waits for batches, not for a pool connection each."""
    fanout, client, layout, _metrics, batches = batched_fanout
    users = [f"s{i}" for i in range(500)]
    async with client.pipeline(transaction=False) as pipe:
        for uid in users:
            pipe.hset(layout.user(uid), mapping={"version": 2, "usdCredit": uid})
        await pipe.execute()
    mailboxes = [fanout.listen(uid) for uid in users]
    firsts = await asyncio.wait_for(asyncio.gather(*(fanout.first_snapshot(uid) for uid in users)), 10)
    assert [s.data["balance"]["usdCredit"] for s in firsts] == users and {s.version for s in firsts} == {2}
    # First reads go before the subscriptions' catch-up reads: 500 users in 10 batches of 50,
    # plus at most one catch-up batch that was already in flight.
    assert len(batches) <= 11 and max(len(b) for b in batches) <= 50
    for mailbox, first in zip(mailboxes, firsts):
        mailbox.mark_sent(first.version)
        assert not mailbox.pending  # the first snapshot is not sent twice


async def test_a_first_read_is_tried_again_after_a_redis_error_and_fails_its_stream_only_if_redis_stays_down():
    """One timed-out connect (an event loop starved by a storm of openings) costs a retry, not a
    503; Redis staying down fails the stream's request after FIRST_READ_TRIES tries."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    layout, failures = Layout("e"), {"left": 1}

    class FlakyReader(SnapshotReader):
        async def read_many(self, uids: list[str]) -> list[dict]:
            if failures["left"]:
                failures["left"] -= 1
                raise redis.ConnectionError("Redis is down")
            return await super().read_many(uids)

    fanout = Fanout(client, layout, FlakyReader(client, layout), Metrics(), poll_s=0.05)
    await fanout.start()
    try:
        fanout.listen("u1")
        assert (await asyncio.wait_for(fanout.first_snapshot("u1"), 5)).version == 0
        failures["left"] = 10**6
        with pytest.raises(redis.ConnectionError):
            await asyncio.wait_for(fanout.first_snapshot("u1"), 5)
        assert failures["left"] <= 10**6 - FIRST_READ_TRIES
        failures["left"] = 0
        assert (await asyncio.wait_for(fanout.first_snapshot("u1"), 5)).version == 0
    finally:
        await fanout.close()
        await client.aclose()
    with pytest.raises(ServerBusy):  # shut down: 503, never a hang
        await fanout.first_snapshot("u1")


async def test_a_first_read_in_flight_at_shutdown_gets_503_instead_of_hanging():
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    layout, reading = Layout("h"), asyncio.Event()

    class StuckReader(SnapshotReader):
        async def read_many(self, uids: list[str]) -> list[dict]:
            reading.set()
            await asyncio.Event().wait()  # Redis never answers
            raise AssertionError("unreachable")

    fanout = Fanout(client, layout, StuckReader(client, layout), Metrics(), poll_s=0.05)
    await fanout.start()
    fanout.listen("u1")
    first = asyncio.create_task(fanout.first_snapshot("u1"))
    await asyncio.wait_for(reading.wait(), 5)
    await fanout.close()
    with pytest.raises(ServerBusy):
        await asyncio.wait_for(first, 5)
    await client.aclose()
