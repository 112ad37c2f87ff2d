"""The fan-out: who listens to which user here, and every new version handed to their streams.

Split the way encode/broadcaster splits a backend from the broadcast:

- :mod:`api.subscriptions` is the transport: sharded pub/sub, subscribed to the users with a
  stream here, reconnected (and every user re-read) after a loss;
- :mod:`api.reads` is the re-read queue: a notification, a confirmation or a stream's first
  snapshot queues a read, and one task reads the queued users in batches (``read.lua`` per user);
- :mod:`api.mailbox` is one stream's mailbox: the newest unsent snapshot only, a replaced one
  reported to a hook (counted as dropped);
- this module routes: it keeps the mailboxes per user, tells the transport which users to
  subscribe to, turns notifications into queued reads and offers each read snapshot (one
  :class:`~api.snapshots.SharedSnapshot` per user and version, whatever the number of streams) to the
  user's mailboxes.

Encoding a snapshot for the wire is the stream's business (:mod:`api.stream`).

Ownership: ``_listeners`` (uid -> open mailboxes) is changed synchronously, never across an
await, by :meth:`Fanout.listen` (a stream's request task) and by a mailbox's close (whoever ends
the stream); the reader task and the transport's tasks only read it. ``ending`` is set once, by
shutdown. Everything else belongs to the parts above, each of which names its own tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from readmodel import Layout

from .mailbox import Mailbox
from .metrics import Metrics
from .reads import Reader, SnapshotReads
from .snapshots import SharedSnapshot
from .subscriptions import Subscriptions

__all__ = ["Fanout", "Mailbox", "SharedSnapshot"]


class Fanout:
    """Subscribes to the users with open streams here and delivers each new version to them."""

    def __init__(self, pubsub_redis: Any, layout: Layout, reader: Reader, metrics: Metrics,
                 poll_s: float = 1.0, batch_size: int = 200) -> None:
        """``pubsub_redis``: the client notifications come through; ``reader`` reads snapshots
        (:class:`api.snapshots.SnapshotReader`); ``poll_s``: how long one pub/sub read waits."""
        self.layout = layout
        self.metrics = metrics
        self._listeners: dict[str, set[Mailbox]] = {}
        self.ending = False  # the server is shutting down: no stream may stay open
        # One bound method each, shared by every mailbox (a stream's memory is what bounds a process).
        self._count_drop, self._on_close = metrics.dropped_states.inc, self._release
        self.reads = SnapshotReads(reader, self._deliver, self._listened, metrics, batch_size=batch_size)
        self.subscriptions = Subscriptions(pubsub_redis, layout, self._listeners.keys, self.reads.want,
                                           self._published, metrics, poll_s=poll_s)

    # ------------------------------------------------------------------ streams

    def listen(self, uid: str, on_end: Callable[[], None] | None = None) -> Mailbox:
        """A mailbox for ``uid``'s new versions; close it when the stream ends (``on_end`` runs then).

        Once :meth:`end_streams` was called it is closed from the start (its stream ends at once).
        """
        mailbox = Mailbox(uid, on_drop=self._count_drop, on_close=self._on_close, on_end=on_end)
        if self.ending:
            mailbox.close()
            return mailbox
        group = self._listeners.get(uid)
        if group is None:
            group = self._listeners[uid] = set()
            self.subscriptions.changed(uid, True)
        group.add(mailbox)
        return mailbox

    async def first_snapshot(self, uid: str) -> SharedSnapshot:
        """``uid``'s snapshot from a read that starts now, batched with every other read waiting.

        Open the stream's mailbox first: a change right after this read then reaches it.
        """
        return await self.reads.first(uid)

    def end_streams(self) -> None:
        """Close every mailbox and every later one: each open stream ends (server shutdown)."""
        self.ending = True
        for group in list(self._listeners.values()):
            for mailbox in list(group):
                mailbox.close()

    def listener_count(self, uid: str | None = None) -> int:
        if uid is not None:
            return len(self._listeners.get(uid, ()))
        return sum(len(group) for group in self._listeners.values())

    @property
    def subscribed_users(self) -> set[str]:
        """Users whose subscription Redis confirmed."""
        return self.subscriptions.confirmed_users

    @property
    def idle(self) -> bool:
        """No subscription change and no read is waiting or under way."""
        return self.subscriptions.settled and self.reads.idle

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.reads.start()
        await self.subscriptions.start()

    async def close(self) -> None:
        """Close every mailbox, stop reading and release the pub/sub connection (idempotent)."""
        self.end_streams()
        await self.subscriptions.close()
        await self.reads.close()

    # ------------------------------------------------------------------ routing

    def _listened(self, uid: str) -> bool:
        return uid in self._listeners

    def _release(self, mailbox: Mailbox) -> None:
        group = self._listeners.get(mailbox.uid)
        if group is None:
            return
        group.discard(mailbox)
        if not group:
            del self._listeners[mailbox.uid]
            self.reads.forget(mailbox.uid)
            self.subscriptions.changed(mailbox.uid, False)

    def _published(self, uid: str, version: int | None) -> None:
        self.reads.want(uid, version)

    def _deliver(self, uid: str, snapshot: SharedSnapshot) -> None:
        for mailbox in list(self._listeners.get(uid, ())):
            mailbox.offer(snapshot)
