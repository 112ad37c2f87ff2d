"""Reading a user's snapshot for the API: the read model's snapshot plus read-time estimates."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from projector.readmodel import Layout, aread_snapshot, decode_snapshot, queue_snapshot_read


def now_ms() -> int:
    return int(time.time() * 1000)


def _epoch_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def estimate_percent(started_at: str | None, expected_ms: int | None, at_ms: int, cap: float) -> float | None:
    """How far along a task probably is: elapsed / typical duration, capped below done."""
    started = _epoch_ms(started_at)
    if started is None or not expected_ms or expected_ms <= 0:
        return None
    fraction = max(0, at_ms - started) / expected_ms
    return round(min(cap, fraction * 100), 1)


def with_estimates(snapshot: dict[str, Any], at_ms: int, cap: float) -> dict[str, Any]:
    """Fill ``progressPercent`` of tasks whose source is "estimate" (in place; returns the snapshot)."""
    for task in snapshot["liveTasks"]:
        if task.get("progressSource") == "estimate":
            task["progressPercent"] = estimate_percent(task.get("startedAt"), task.get("expectedDurationMs"), at_ms, cap)
    return snapshot


async def read(redis: Any, layout: Layout, uid: str, estimate_cap: float) -> dict[str, Any]:
    """The snapshot served for ``uid`` now (version 0 and empty when nothing is known)."""
    at = now_ms()
    return with_estimates(await aread_snapshot(redis, uid, at, layout), at, estimate_cap)


async def read_many(redis: Any, layout: Layout, uids: list[str], estimate_cap: float) -> list[dict[str, Any]]:
    """The snapshots of ``uids`` (in that order) in one round trip.

    Every user's three reads are queued in one MULTI/EXEC, so each snapshot is whole, as with
    :func:`read`. (The keys of different users may live in different cluster slots: fine for the
    standalone client the API uses; a cluster client would need one transaction per slot.)
    """
    at = now_ms()
    async with redis.pipeline(transaction=True) as pipe:
        for uid in uids:
            queue_snapshot_read(pipe, layout, uid)
        replies = await pipe.execute()
    return [
        with_estimates(decode_snapshot(uid, replies[3 * i], replies[3 * i + 1], replies[3 * i + 2], at), at, estimate_cap)
        for i, uid in enumerate(uids)
    ]
