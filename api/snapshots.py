"""Reading users' snapshots for the API, at the current moment (see :mod:`readmodel.records`)."""

from __future__ import annotations

import time
from typing import Any

from readmodel import Layout, View, aread_snapshots
from readmodel.records import LIVE_TASKS_SHOWN


def now_ms() -> int:
    return int(time.time() * 1000)


async def read(redis: Any, layout: Layout, uid: str, estimate_cap: float,
               live_tasks_shown: int = LIVE_TASKS_SHOWN) -> dict[str, Any]:
    """The snapshot served for ``uid`` now (version 0 and empty when nothing is known)."""
    return (await read_many(redis, layout, [uid], estimate_cap, live_tasks_shown))[0]


async def read_many(redis: Any, layout: Layout, uids: list[str], estimate_cap: float,
                    live_tasks_shown: int = LIVE_TASKS_SHOWN) -> list[dict[str, Any]]:
    """The snapshots of ``uids`` (in that order) in one round trip, each one whole."""
    view = View(now_ms=now_ms(), estimate_cap=estimate_cap, live_tasks_shown=live_tasks_shown)
    return await aread_snapshots(redis, layout, uids, view)
