"""How fresh the read model is: the source position each projector partition has applied through.

The projector saves its checkpoint after every write the checkpoint covers and, in the same
script, announces ``"position lagMs atMs"`` on its partition's ``applied`` channel
(read through :mod:`readmodel.applied`). This process keeps the newest announcement of each partition in
memory: a snapshot read *after* a position was seen reflects the source at least through it, so
:meth:`Positions.source` is captured before each read and served with the snapshot (REST and
SSE). A fresh-after-write read (``afterClusterTime``) waits in :meth:`Positions.wait_through`,
woken by the announcements (no polling loop per request).

Owner: the task ``freshness`` (:meth:`Positions._run`) alone changes ``_applied`` and notifies
``_moved``; it subscribes (``SSUBSCRIBE``) to every partition's channel and re-reads the
checkpoints every ``refresh_s`` as well (first value, reconnects, a missed announcement).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from readmodel import Layout, applied, position
from readmodel.applied import AppliedPosition
from readmodel.connect import arefresh
from readmodel.text import text

from .errors import InvalidRequest
from .stalled import iso_ms

log = logging.getLogger("api.freshness")
MAX_UINT32 = 2**32 - 1
CLOSE_TIMEOUT_S = 2.0


def parse_cluster_time(raw: str) -> str:
    """A cluster time as the read model's position: ``"%010d.%010d"`` (the position format) or
    ``"seconds.increment"`` (a MongoDB ``operationTime``'s two parts); InvalidRequest otherwise."""
    parts = raw.strip().split(".")
    if (len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts)
            or int(parts[0]) > MAX_UINT32 or int(parts[1]) > MAX_UINT32):
        raise InvalidRequest("afterClusterTime must be a cluster time: seconds.increment (e.g. 1795597328.3, "
                             "from the operationTime of your MongoDB session) or a position "
                             "(0000001795.0000000003), each part an integer below 2^32")
    return position(int(parts[0]), int(parts[1]))


class Positions:
    """The newest ``(position, lagMs)`` announced by each projector partition."""

    def __init__(self, redis: Any, pubsub_client: Any, layouts: list[Layout], refresh_s: float = 1.0) -> None:
        self._redis = redis
        self._pubsub_client = pubsub_client
        self._layouts = layouts
        self._by_channel = {layout.applied: index for index, layout in enumerate(layouts)}
        self.refresh_s = refresh_s
        self._applied: list[AppliedPosition | None] = [None] * len(layouts)
        self._moved = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._closing = False

    # ------------------------------------------------------------------ readers

    def applied_through(self) -> str | None:
        """The position every partition has applied through (None until each one said)."""
        if any(item is None for item in self._applied):
            return None
        return min(item.position for item in self._applied if item is not None)

    def source(self) -> dict[str, Any]:
        """What a snapshot read from now on reflects: ``position`` (every partition's), ``lagMs``
        (the largest) and each partition's own; nulls for a partition that never checkpointed."""
        partitions = [
            {"partition": str(layout.partition), "position": item.position if item else None,
             "lagMs": item.lag_ms if item else None, "appliedAt": iso_ms(item.at_ms) if item else None}
            for layout, item in zip(self._layouts, self._applied)
        ]
        known = [item for item in self._applied if item is not None]
        whole = bool(known) and len(known) == len(self._applied)
        return {
            "position": self.applied_through(),
            "lagMs": max(item.lag_ms for item in known) if whole else None,
            "appliedAt": iso_ms(min(item.at_ms for item in known)) if whole else None,
            "partitions": partitions,
        }

    async def wait_through(self, wanted: str, timeout_s: float) -> bool:
        """Wait until every partition applied the stream through ``wanted``; False after ``timeout_s``."""
        def through() -> bool:
            applied = self.applied_through()
            return applied is not None and applied >= wanted

        if through():
            return True
        async with self._moved:
            try:
                await asyncio.wait_for(self._moved.wait_for(through), timeout_s)
            except TimeoutError:
                return False
        return True

    # ------------------------------------------------------------------ the owner task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="freshness")

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True  # redis-py's cluster pub/sub may swallow the cancellation; the loop sees this
            self._task.cancel()
            _, stuck = await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT_S)  # bounded: shutdown must go on
            if stuck:
                log.warning("projector positions: the task did not stop within %.0f s of shutdown", CLOSE_TIMEOUT_S)
            self._task = None

    async def _set(self, index: int, value: AppliedPosition | None) -> None:
        if value is not None and value != self._applied[index]:
            self._applied[index] = value
            async with self._moved:
                self._moved.notify_all()

    async def _refresh(self) -> None:
        for index, layout in enumerate(self._layouts):
            await self._set(index, await applied.aread(self._redis, layout))

    async def _run(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while not self._closing:
            pubsub = None
            try:
                await arefresh(self._pubsub_client)
                pubsub = self._pubsub_client.pubsub()
                await pubsub.ssubscribe(*self._by_channel)
                receive = getattr(pubsub, "get_sharded_message", pubsub.get_message)
                await self._refresh()
                due = loop.time() + self.refresh_s
                backoff = 0.1
                while not self._closing:
                    message = await receive(timeout=min(0.5, max(0.01, due - loop.time())))
                    if message is not None and message.get("type") == "smessage":
                        index = self._by_channel.get(text(message.get("channel") or b""))
                        if index is not None:
                            await self._set(index, applied.announced(message.get("data")))
                    if loop.time() >= due:
                        await self._refresh()
                        due = loop.time() + self.refresh_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("projector positions: %s: %s; again in %.1f s", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        await asyncio.wait_for(pubsub.aclose(), CLOSE_TIMEOUT_S)
                    except Exception:
                        pass
