"""Reading snapshots, with a sync or an asyncio redis-py client.

A snapshot is read in one MULTI/EXEC round trip (three reads per user), so a reader never sees
half of a change. Several users can be read in one round trip; their keys may live in different
cluster slots, so that is for a standalone Redis (a cluster client needs one transaction per slot).
"""

from __future__ import annotations

from typing import Any

from .keys import Layout
from .records import View, decode_snapshot, heartbeat_ms

READS_PER_USER = 3


def queue_snapshot_read(pipe: Any, layout: Layout, uid: str) -> None:
    """Queue the reads of one user's snapshot on a transactional pipeline."""
    pipe.hgetall(layout.user(uid))
    pipe.hgetall(layout.tasks(uid))
    pipe.lrange(layout.finished(uid), 0, -1)


def _decode_many(uids: list[str], replies: list[Any], view: View) -> list[dict[str, Any]]:
    n = READS_PER_USER
    return [decode_snapshot(uid, *replies[n * i : n * i + n], view) for i, uid in enumerate(uids)]


def read_snapshot(redis: Any, layout: Layout, uid: str, view: View) -> dict[str, Any]:
    """One user's snapshot (sync client)."""
    return read_snapshots(redis, layout, [uid], view)[0]


def read_snapshots(redis: Any, layout: Layout, uids: list[str], view: View) -> list[dict[str, Any]]:
    """The snapshots of ``uids``, in that order, in one round trip (sync client)."""
    pipe = redis.pipeline(transaction=True)
    for uid in uids:
        queue_snapshot_read(pipe, layout, uid)
    return _decode_many(uids, pipe.execute(), view)


async def aread_snapshot(redis: Any, layout: Layout, uid: str, view: View) -> dict[str, Any]:
    """One user's snapshot (``redis.asyncio`` client)."""
    return (await aread_snapshots(redis, layout, [uid], view))[0]


async def aread_snapshots(redis: Any, layout: Layout, uids: list[str], view: View) -> list[dict[str, Any]]:
    """The snapshots of ``uids``, in that order, in one round trip (``redis.asyncio`` client)."""
    async with redis.pipeline(transaction=True) as pipe:
        for uid in uids:
            queue_snapshot_read(pipe, layout, uid)
        replies = await pipe.execute()
    return _decode_many(uids, replies, view)


async def aread_heartbeat_ms(redis: Any, layout: Layout) -> int | None:
    """The projector's last heartbeat (epoch ms); None when absent."""
    return heartbeat_ms(await redis.hget(layout.health, "heartbeatMs"))
