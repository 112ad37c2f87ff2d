"""Sharded pub/sub for one API process: subscribe to the users it serves, reconnect when lost.

The projector announces a user's new version on ``Layout.channel(uid)`` (``SPUBLISH``: on a
cluster only the shard holding the user's slot carries it) in the same script that changes the
snapshot. :class:`Subscriptions` keeps this process subscribed (``SSUBSCRIBE``) to exactly the
channels of the users it is told about (:meth:`Subscriptions.changed`; ``wanted`` lists them all
again after a reconnect) and reports two things, nothing else: a
subscription Redis confirmed (``on_confirm(uid)``: a publish may have happened before it, so the
user must be read again) and a published version (``on_publish(uid, version)``). On a single
Redis that is one connection; on a cluster redis-py keeps one per master owning a subscribed
channel.

After a pub/sub error the connection is dropped and every channel subscribed again from scratch,
once the client answers again (on a cluster, after re-reading the slot map, so the
subscriptions go to a promoted replica); each new confirmation then triggers a re-read, so a
change announced while the connection was down is not lost.

Ownership (two tasks, one hand-off):
- the *subscriber* task (``fanout-subscribe``) owns ``_pubsub`` (it makes and replaces it),
  ``_channels`` (what was asked of Redis), ``_connected`` and ``_lost`` once raised; it runs
  whenever ``_changed`` is set (by :meth:`changed`, by the receiver on a loss, by itself to
  retry), takes ``_pending`` whole (which :meth:`changed` fills synchronously from any task) and
  sets ``_readable`` when there is something to receive;
- the *receiver* task (``fanout-receive``) owns ``_confirmed`` and reads from the current
  ``_pubsub``; on an error it raises ``_lost`` and sets ``_changed`` (the hand-off), then waits
  on ``_readable`` for the subscriber to have connected again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from readmodel import Layout
from readmodel.connect import StoreError, arefresh
from readmodel.text import text

from .metrics import Metrics

log = logging.getLogger("api.fanout")
CLOSE_TIMEOUT_S = 3.0  # shutdown waits this long for the tasks here


class Subscriptions:
    """Keeps the process subscribed to the channels of the users ``wanted`` returns."""

    def __init__(
        self,
        redis: Any,
        layout: Layout,
        wanted: Callable[[], Iterable[str]],
        on_confirm: Callable[[str], None],
        on_publish: Callable[[str, int | None], None],
        metrics: Metrics,
        poll_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self.layout = layout
        self._wanted, self._on_confirm, self._on_publish = wanted, on_confirm, on_publish
        self.metrics = metrics
        self.poll_s, self.retry_s = poll_s, retry_s
        self._pubsub = redis.pubsub()
        self._channels: set[str] = set()
        self._confirmed: set[str] = set()
        self._connected = False  # the client answered since the last error (a cluster client knows its slots)
        self._lost = False
        self._busy = False  # the subscriber is talking to Redis
        self._changed = asyncio.Event()
        self._pending: dict[str, bool] = {}  # uid -> subscribe (True) or unsubscribe, not yet sent
        self._readable = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def confirmed_users(self) -> set[str]:
        """Users whose subscription Redis confirmed (and has not lost since)."""
        return {self.layout.user_of_channel(channel) for channel in self._confirmed}

    @property
    def settled(self) -> bool:
        """No change of the wanted users waits to be sent to Redis."""
        return not (self._changed.is_set() or self._busy or self._pending)

    def changed(self, uid: str, wanted: bool) -> None:
        """``uid`` now has a stream here (``wanted``) or no longer has one: subscribe or
        unsubscribe soon, together with every other change made meanwhile (the latest wins)."""
        self._pending[uid] = wanted
        self._changed.set()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._subscriber(), name="fanout-subscribe"),
                       asyncio.create_task(self._receiver(), name="fanout-receive")]

    async def close(self) -> None:
        """Stop both tasks and release the pub/sub connection (idempotent, bounded)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.warning("pub/sub: %d task(s) did not stop within %.0f s of shutdown", len(stuck), CLOSE_TIMEOUT_S)
        self._tasks = []
        try:
            await asyncio.wait_for(self._pubsub.aclose(), CLOSE_TIMEOUT_S)
        except (TimeoutError, *StoreError, OSError):
            pass

    # ------------------------------------------------------------------ the subscriber task

    async def _subscriber(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            self._busy = True
            taken: dict[str, bool] = {}
            try:
                if self._lost:
                    await self._replace()
                taken, self._pending = self._pending, {}
                await self._reconcile(taken)
            except StoreError as exc:
                self._connected = False
                for uid, wanted in taken.items():
                    self._pending.setdefault(uid, wanted)  # a change made meanwhile is newer
                log.warning("pub/sub (un)subscribe failed, retrying in %.0fs: %s", self.retry_s, exc)
                await asyncio.sleep(self.retry_s)
                self._changed.set()
            finally:
                self._busy = False
                self.metrics.subscribed_users.set(len(self._channels))

    async def _replace(self) -> None:
        """Drop the failed connection and its subscriptions; every wanted user is subscribed again."""
        old, self._pubsub = self._pubsub, self._redis.pubsub()
        self._channels.clear()
        self._connected = False
        self._lost = False
        self._pending = {**dict.fromkeys(self._wanted(), True), **self._pending}
        try:
            await old.aclose()
        except (*StoreError, OSError):
            pass

    async def _reconcile(self, changes: dict[str, bool]) -> None:
        """Send ``changes`` to Redis: as many as there are, not as many users as are subscribed."""
        channels = {self.layout.channel(uid): wanted for uid, wanted in changes.items()}
        add = sorted(ch for ch, wanted in channels.items() if wanted and ch not in self._channels)
        remove = sorted(ch for ch, wanted in channels.items() if not wanted and ch in self._channels)
        if add and not self._connected:
            await arefresh(self._redis)
            self._connected = True
        if add:
            await self._pubsub.ssubscribe(*add)
            self._channels.update(add)
            self._readable.set()
        if remove:
            await self._pubsub.sunsubscribe(*remove)
            self._channels.difference_update(remove)

    # ------------------------------------------------------------------ the receiver task

    async def _receiver(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._pubsub
            if self._lost or not self._channels or not pubsub.subscribed:
                self._readable.clear()
                await self._readable.wait()
                continue
            # A cluster's pub/sub reads sharded messages from every node's connection in turn.
            receive = getattr(pubsub, "get_sharded_message", pubsub.get_message)
            try:
                message = await receive(timeout=self.poll_s)
            except Exception as exc:
                # Besides connection errors: redis-py's cluster pub/sub can end its round-robin
                # over shard connections for good (RuntimeError) once failover emptied it.
                self.metrics.pubsub_reconnects.inc()
                self._confirmed.clear()
                log.warning("pub/sub connection lost (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._lost = True
                self._changed.set()
                continue
            backoff = 0.1
            if message is not None and pubsub is self._pubsub:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = text(message.get("channel") or b"")
        if not self.layout.is_channel(channel):
            return
        uid = self.layout.user_of_channel(channel)
        if kind == "ssubscribe":
            if channel in self._confirmed:
                self.metrics.resubscribes.inc()
            self._confirmed.add(channel)
            self._on_confirm(uid)
        elif kind == "sunsubscribe":
            self._confirmed.discard(channel)
        elif kind == "smessage":
            try:
                version: int | None = int(text(message.get("data") or b""))
            except ValueError:
                version = None
            self._on_publish(uid, version)
