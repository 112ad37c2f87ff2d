"""Reading snapshots, with a sync or an asyncio redis-py client (single Redis or cluster).

A user's snapshot is read by one script call (``scripts/read.lua``), so a reader never sees half
of a change. Several users are read in one pipeline: a cluster client sends each master its
users' calls, in one round trip per master, and every call still reads one user whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import scripts
from .keys import Layout
from .records import View, decode_snapshot


def _queue_reads(layout: Layout, uids: list[str]) -> Callable[[Any], None]:
    def build(pipe: Any) -> None:
        for uid in uids:
            scripts.READ.queue(pipe, layout.user_keys(uid), [])
    return build


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2]))


def _decode_many(uids: list[str], replies: list[Any], view: View) -> list[dict[str, Any]]:
    return [decode_snapshot(uid, _pairs(user), _pairs(tasks), finished, view)
            for uid, (user, tasks, finished) in zip(uids, replies)]


def read_snapshot(redis: Any, layout: Layout, uid: str, view: View) -> dict[str, Any]:
    """One user's snapshot (sync client)."""
    return read_snapshots(redis, layout, [uid], view)[0]


def read_snapshots(redis: Any, layout: Layout, uids: list[str], view: View) -> list[dict[str, Any]]:
    """The snapshots of ``uids``, in that order, each one whole (sync client)."""
    return _decode_many(uids, scripts.run(redis, _queue_reads(layout, uids)), view)


async def aread_snapshot(redis: Any, layout: Layout, uid: str, view: View) -> dict[str, Any]:
    """One user's snapshot (``redis.asyncio`` client)."""
    return (await aread_snapshots(redis, layout, [uid], view))[0]


async def aread_snapshots(redis: Any, layout: Layout, uids: list[str], view: View) -> list[dict[str, Any]]:
    """The snapshots of ``uids``, in that order, each one whole (``redis.asyncio`` client)."""
    return _decode_many(uids, await scripts.arun(redis, _queue_reads(layout, uids)), view)
