"""Reading users' snapshots for the API, at the current moment (see :mod:`readmodel.records`).

:class:`SnapshotReader` is bound once, in the app's lifespan, to the Redis client, the key
layout and the settings that shape what is served; routes and the fan-out only name users.
:class:`SharedSnapshot` is one read snapshot, shared by every stream of its user. Nothing here holds
mutable state but the snapshot's own JSON cache, filled by whichever task first asks for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from readmodel import Layout, View, aread_snapshots
from readmodel.records import ESTIMATE_CAP_PERCENT, LIVE_TASKS_SHOWN

from .stalled import DEFAULT_STALL, StallRule, flag_stalled


def now_ms() -> int:
    return int(time.time() * 1000)


class SnapshotReader:
    """Reads snapshots as served now: one user, or several in one round trip."""

    def __init__(self, redis: Any, layout: Layout, estimate_cap: float = ESTIMATE_CAP_PERCENT,
                 live_tasks_shown: int = LIVE_TASKS_SHOWN, clock: Callable[[], int] = now_ms,
                 source: Callable[[], dict[str, Any]] | None = None, stall: StallRule = DEFAULT_STALL) -> None:
        """``source`` (:meth:`api.freshness.Positions.source`) says what the read model reflects
        the MongoDB source through; taken *before* each read, it is served with the snapshots.
        ``stall`` flags live tasks that stopped moving (:mod:`api.stalled`)."""
        self.redis, self.layout = redis, layout
        self.estimate_cap, self.live_tasks_shown, self.clock = estimate_cap, live_tasks_shown, clock
        self.source, self.stall = source, stall

    async def read(self, uid: str) -> dict[str, Any]:
        """The snapshot served for ``uid`` now (version 0 and empty when nothing is known)."""
        return (await self.read_many([uid]))[0]

    async def read_many(self, uids: list[str]) -> list[dict[str, Any]]:
        """The snapshots of ``uids`` (in that order) in one round trip, each one whole."""
        view = View(now_ms=self.clock(), estimate_cap=self.estimate_cap, live_tasks_shown=self.live_tasks_shown)
        source = self.source() if self.source is not None else None
        snaps = await aread_snapshots(self.redis, self.layout, uids, view)
        for snap in snaps:
            flag_stalled(snap, self.stall, view.now_ms)
            if source is not None:
                snap["source"] = source
        return snaps


class SharedSnapshot:
    """A snapshot read once and shared by every stream of its user; its JSON is encoded once.

    ``frame`` is a cache slot for the stream's encoding of it (:func:`api.stream.frame`): the
    fan-out never looks at it.
    """

    __slots__ = ("_json", "data", "frame", "version")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.version = int(data["version"])
        self._json: str | None = None
        self.frame: bytes | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"))
        return self._json
