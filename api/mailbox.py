"""One stream's mailbox: at most one pending snapshot, the newest.

A slow client is never queued for: a snapshot not yet taken is replaced by a newer one, and the
replacement is reported to the ``on_drop`` hook (the app counts it in a Prometheus counter; the
mailbox knows nothing of metrics).

Ownership: a mailbox lives in the event loop. The fan-out's reader task offers snapshots; the
stream's task waits for and takes them and sets ``sent_version``; whoever ends the stream (its
task, the expiry timer, server shutdown) closes it. Every change is synchronous (never across an
await), so the loop serializes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .snapshots import SharedSnapshot


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Mailbox:
    """The only per-stream object the fan-out holds, so it is kept small: slots, no
    ``asyncio.Event`` (a future exists only while its stream waits) and no snapshot it has sent."""

    __slots__ = (
        "_on_close",
        "_on_drop",
        "_on_end",
        "_pending",
        "_waiter",
        "closed",
        "dropped",
        "farewell",
        "sent_version",
        "uid",
    )

    def __init__(
        self,
        uid: str,
        sent_version: int = -1,
        on_drop: Callable[[], None] | None = None,
        on_close: Callable[[Mailbox], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.uid = uid
        self.sent_version = sent_version  # the newest version this stream's client has (or was told it has)
        self.closed = False
        self.dropped = 0
        self.farewell: bytes | None = None  # the last frame of the stream: why it ends (see finish())
        self._pending: SharedSnapshot | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._on_drop = on_drop  # a newer snapshot replaced one never taken
        self._on_close = on_close  # the fan-out forgets this mailbox
        self._on_end = on_end  # the stream's own clean-up (its limit slot, its expiry timer)

    def offer(self, snapshot: SharedSnapshot) -> None:
        """Make ``snapshot`` the next one to send if it is newer than anything sent or pending."""
        newest = self._pending.version if self._pending is not None else self.sent_version
        if self.closed or snapshot.version <= newest:
            return
        if self._pending is not None:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._pending = snapshot
        self._wake()

    def mark_sent(self, version: int) -> None:
        """The client has ``version`` (sent outside the mailbox): a pending snapshot not newer goes."""
        self.sent_version = max(self.sent_version, version)
        if self._pending is not None and self._pending.version <= self.sent_version:
            self._pending = None

    @property
    def pending(self) -> bool:
        """A snapshot waits to be taken."""
        return self._pending is not None

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for a pending snapshot or the close; False if ``timeout_s`` passed first."""
        if self._pending is not None or self.closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _time_out, waiter) if timeout_s is not None else None
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> SharedSnapshot | None:
        """The pending snapshot (now no longer pending), or None; None too once closed."""
        snapshot, self._pending = self._pending, None
        return None if self.closed else snapshot

    async def next(self) -> SharedSnapshot | None:
        """The newest unsent snapshot, waiting for one; None once the mailbox is closed."""
        while self._pending is None and not self.closed:
            await self.wait()
        return self.take()

    def finish(self, farewell: bytes) -> None:
        """Close, with ``farewell`` as the stream's last frame (an event telling the client why)."""
        if not self.closed:
            self.farewell = farewell
            self.close()

    def close(self) -> None:
        """Stop listening (idempotent); the fan-out forgets this mailbox and its stream ends."""
        if self.closed:
            return
        self.closed = True
        self._pending = None
        self._wake()
        if self._on_close is not None:
            self._on_close(self)
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
