"""Sharded pub/sub per process (one connection per Redis shard it needs), fanned out to every open stream.

The projector announces a user's new version on ``Layout.channel(uid)`` (``SPUBLISH``: on a
cluster only the shard holding the user's slot carries it) in the same script that changes the
snapshot. This process subscribes (``SSUBSCRIBE``) to a user's channel while at least one stream
of that user is open here, and unsubscribes when the last one closes. On a single Redis that is
one connection; on a cluster redis-py keeps one per master owning a subscribed channel and moves
subscriptions to the new owner after a failover. A notification makes *one*
snapshot read per user and version, whatever the number of streams; each stream has a
:class:`Listener` that keeps only the newest snapshot it has not sent yet, so a slow client is
never queued for: an undelivered state is replaced by the next one (and counted as dropped).

Reads are batched: notifications only mark a user as wanting a read, and one reader task reads
up to ``batch_size`` waiting users per round trip (each user's three reads in MULTI/EXEC, so every
snapshot is whole). Under load, the users notified while a batch is in flight make the next batch.

A subscription confirmation also triggers a read: it closes the gap between a stream's first
read and its subscription, and after a reconnect (redis-py re-subscribes by itself) it catches
up on anything published while the connection was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError
from sse_starlette import ServerSentEvent

from readmodel import Layout
from readmodel.connect import StoreError, arefresh
from readmodel.text import text

from .metrics import Metrics

log = logging.getLogger("api.fanout")
CLOSE_TIMEOUT_S = 3.0  # shutdown waits this long for the fan-out's own tasks

Reader = Callable[[str], Awaitable[dict[str, Any]]]
ManyReader = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]


class Snapshot:
    """A snapshot read once and shared by every stream of its user; its JSON and SSE frame are encoded once."""

    __slots__ = ("_frame", "_json", "data", "version")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.version = int(data["version"])
        self._json: str | None = None
        self._frame: bytes | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"))
        return self._json

    @property
    def frame(self) -> bytes:
        """The ``event: snapshot`` SSE frame, ``id:`` = version (JSON has no raw newlines)."""
        if self._frame is None:
            self._frame = ServerSentEvent(self.json, id=str(self.version), event="snapshot").encode()
        return self._frame


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Listener:
    """One stream's mailbox: at most one pending snapshot, the newest.

    It is the only per-stream object the fan-out holds, so it is kept small: slots, no
    ``asyncio.Event`` (a future exists only while its stream waits) and no snapshot it has sent.
    """

    __slots__ = ("_on_close", "_on_end", "_pending", "_waiter", "closed", "dropped", "farewell", "metrics", "sent_version", "uid")

    def __init__(
        self,
        uid: str,
        metrics: Metrics,
        sent_version: int = -1,
        on_close: Callable[[Listener], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.uid = uid
        self.metrics = metrics
        self.sent_version = sent_version  # the newest version this stream's client has (or was told it has)
        self.closed = False
        self.dropped = 0
        self.farewell: bytes | None = None  # the last frame of the stream: why it ends (see finish())
        self._pending: Snapshot | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._on_close = on_close
        self._on_end = on_end  # the stream's own clean-up (its limit slot, its expiry timer)

    def offer(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the next one to send if it is newer than anything sent or pending."""
        newest = self._pending.version if self._pending is not None else self.sent_version
        if self.closed or snapshot.version <= newest:
            return
        if self._pending is not None:
            self.dropped += 1
            self.metrics.dropped_states.inc()
        self._pending = snapshot
        self._wake()

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

    def take(self) -> Snapshot | None:
        """The pending snapshot (now no longer pending), or None; None too once closed."""
        snapshot, self._pending = self._pending, None
        return None if self.closed else snapshot

    async def next(self) -> Snapshot | None:
        """The newest unsent snapshot, waiting for one; None once the listener is closed."""
        while self._pending is None and not self.closed:
            await self.wait()
        return self.take()

    def finish(self, farewell: bytes) -> None:
        """Close, with ``farewell`` as the stream's last frame (an event telling the client why)."""
        if not self.closed:
            self.farewell = farewell
            self.close()

    def close(self) -> None:
        """Stop listening (idempotent); the fan-out forgets this listener and its stream ends."""
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


class Fanout:
    """Subscribes per user with live listeners and delivers each new version to them."""

    def __init__(
        self,
        redis: Any,
        layout: Layout,
        read: Reader,
        metrics: Metrics,
        poll_s: float = 1.0,
        read_many: ManyReader | None = None,
        batch_size: int = 200,
    ) -> None:
        """``read`` reads one user's snapshot; ``read_many`` several in one round trip, in order
        (without it, a batch is read with concurrent ``read`` calls)."""
        self._redis = redis
        self._pubsub = redis.pubsub()
        # A cluster's pub/sub reads sharded messages from every node's connection in turn.
        self._receive = getattr(self._pubsub, "get_sharded_message", self._pubsub.get_message)
        self.layout = layout
        self._read = read
        self._read_many = read_many or self._read_each
        self.batch_size = batch_size
        self.metrics = metrics
        self.poll_s = poll_s
        self._listeners: dict[str, set[Listener]] = {}
        self._known: dict[str, int] = {}  # uid -> newest version read by the fan-out
        # Users waiting for a read, in arrival order: uid -> the version notified (None: read
        # whatever the version, e.g. after a (re)subscription).
        self._wanted: dict[str, int | None] = {}
        self._wanted_order: deque[str] = deque()
        self._want = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._channels: set[str] = set()  # channels this process asked Redis for
        self._confirmed: set[str] = set()  # channels whose subscription Redis confirmed
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        self._reconcile_queued = False  # a reconcile is spawned and has not looked at the listeners yet
        self._connected = False  # the client answered since the last pub/sub error (a cluster client knows its slots)
        self.ending = False  # the server is shutting down: no stream may stay open

    # ------------------------------------------------------------------ listeners

    def listen(self, uid: str, on_end: Callable[[], None] | None = None) -> Listener:
        """A listener for ``uid``'s new versions; close it when the stream ends (``on_end`` runs then).

        Once :meth:`end_streams` was called it is closed from the start (its stream ends at once).
        """
        listener = Listener(uid, self.metrics, on_close=self._release, on_end=on_end)
        if self.ending:
            listener.close()
            return listener
        first = uid not in self._listeners
        self._listeners.setdefault(uid, set()).add(listener)
        if first:
            self._queue_reconcile()
        return listener

    def end_streams(self) -> None:
        """Close every listener and every later one: each open stream ends (server shutdown)."""
        self.ending = True
        for group in list(self._listeners.values()):
            for listener in list(group):
                listener.close()

    def listener_count(self, uid: str | None = None) -> int:
        if uid is not None:
            return len(self._listeners.get(uid, ()))
        return sum(len(group) for group in self._listeners.values())

    @property
    def subscribed_users(self) -> set[str]:
        return {self.layout.user_of_channel(channel) for channel in self._confirmed}

    def _release(self, listener: Listener) -> None:
        group = self._listeners.get(listener.uid)
        if group is None:
            return
        group.discard(listener)
        if not group:
            del self._listeners[listener.uid]
            self._known.pop(listener.uid, None)
            self._queue_reconcile()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="fanout")
        self._reader = asyncio.create_task(self._read_batches(), name="fanout-reader")

    async def close(self) -> None:
        """Close every listener, stop reading and release the pub/sub connection (idempotent)."""
        self.end_streams()
        tasks = [t for t in (self._runner, self._reader, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a Redis call must not hold the process's shutdown forever.
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.warning("fan-out: %d task(s) did not stop within %.0f s of shutdown", len(stuck), CLOSE_TIMEOUT_S)
        self._runner = self._reader = None
        try:
            await asyncio.wait_for(self._pubsub.aclose(), CLOSE_TIMEOUT_S)
        except (TimeoutError, *StoreError, OSError):
            pass

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ subscriptions

    def _queue_reconcile(self) -> None:
        # One queued reconcile serves every change made before it runs: opening 20k streams of
        # 20k users spawns a handful of reconciles, not 20k (each one reads every user).
        if not self._reconcile_queued:
            self._reconcile_queued = True
            self._spawn(self._reconcile())

    async def _reconcile(self) -> None:
        """Subscribe to users with listeners, unsubscribe from users without (serialized)."""
        async with self._lock:
            self._reconcile_queued = False
            wanted = {self.layout.channel(uid) for uid in self._listeners}
            add, remove = sorted(wanted - self._channels), sorted(self._channels - wanted)
            try:
                if add and not self._connected:
                    await arefresh(self._redis)
                    self._connected = True
                if add:
                    await self._pubsub.ssubscribe(*add)
                    self._channels.update(add)
                    self._wake.set()
                if remove:
                    await self._pubsub.sunsubscribe(*remove)
                    self._channels.difference_update(remove)
            except StoreError as exc:
                self._connected = False
                log.warning("pub/sub (un)subscribe failed, retrying in 1s: %s", exc)
                self._spawn(self._reconcile_later(1.0))
            self.metrics.subscribed_users.set(len(self._channels))

    async def _reconcile_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._reconcile()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._channels or not self._pubsub.subscribed:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                message = await self._receive(timeout=self.poll_s)
            except Exception as exc:
                # Besides connection errors: redis-py's cluster pub/sub can end its round-robin
                # over shard connections for good (RuntimeError) once failover emptied it.
                self._connected = False
                self.metrics.pubsub_reconnects.inc()
                self._confirmed.clear()
                log.warning("pub/sub connection lost (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._restart()
                continue
            backoff = 0.1
            if message is not None:
                self._handle(message)

    async def _restart(self) -> None:
        """After a pub/sub error: drop every subscription and subscribe again from scratch.

        The reconcile first makes sure the client answers and, on a cluster, re-reads the slot map
        (:func:`readmodel.connect.arefresh`: the subscriptions then go to the promoted replica);
        it retries every second until it succeeds, and each confirmation reads its user again, so
        no change announced meanwhile is lost.
        """
        async with self._lock:
            old, self._pubsub = self._pubsub, self._redis.pubsub()
            self._receive = getattr(self._pubsub, "get_sharded_message", self._pubsub.get_message)
            self._channels.clear()
            self._confirmed.clear()
            self._connected = False
        try:
            await old.aclose()
        except (*StoreError, OSError):
            pass
        self._queue_reconcile()

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
            self._want_read(uid)  # a publish may have happened before this confirmation
        elif kind == "sunsubscribe":
            self._confirmed.discard(channel)
        elif kind == "smessage":
            try:
                version = int(text(message.get("data") or b""))
            except ValueError:
                version = None
            if version is None or version > self._known.get(uid, -1):
                self._want_read(uid, version)

    # ------------------------------------------------------------------ reads

    def _want_read(self, uid: str, version: int | None = None) -> None:
        """Queue a read of ``uid``: for ``version`` (skipped if a read already saw it), or, with
        None, whatever the version. A user already waiting is not queued twice."""
        if uid not in self._listeners:
            return
        if uid in self._wanted:
            queued = self._wanted[uid]
            if queued is not None and (version is None or version > queued):
                self._wanted[uid] = version
            return
        self._wanted[uid] = version
        self._wanted_order.append(uid)
        self._want.set()

    def _take_batch(self) -> list[str]:
        """Up to ``batch_size`` waiting users that still have listeners and a version to read."""
        batch: list[str] = []
        while self._wanted_order and len(batch) < self.batch_size:
            uid = self._wanted_order.popleft()
            version = self._wanted.pop(uid)
            if uid not in self._listeners:
                continue
            if version is not None and version <= self._known.get(uid, -1):
                continue  # a read made after this notification already saw it
            batch.append(uid)
        return batch

    async def _read_batches(self) -> None:
        """The one reader: reads the waiting users, a batch per round trip, until none waits.

        A user notified while its read is in flight waits again and is read in a later batch,
        so the newest version is never missed.
        """
        while True:
            await self._want.wait()
            self._want.clear()
            while self._wanted_order:
                batch = self._take_batch()
                if batch:
                    await self._read_batch(batch)

    async def _read_batch(self, uids: list[str]) -> None:
        try:
            datas = await self._read_many(uids)
        except ResponseError as exc:
            if len(uids) == 1:
                self._retry_later(uids, exc)
                return
            # One user's keys may be broken (e.g. a wrong type): read them one by one so that
            # every other user still gets their snapshot.
            results = await asyncio.gather(*(self._read(uid) for uid in uids), return_exceptions=True)
            self.metrics.snapshot_read_batches.inc(1 + len(uids))  # the failed round trip and one each
            failed = []
            for uid, result in zip(uids, results):
                if isinstance(result, StoreError):
                    failed.append(uid)
                elif isinstance(result, BaseException):
                    log.error("snapshot read for %s failed", uid, exc_info=result)
                else:
                    self._deliver(uid, result)
            if failed:
                self._retry_later(failed, exc)
            return
        except StoreError as exc:
            self._retry_later(uids, exc)
            return
        except Exception:
            log.exception("snapshot read of %d users failed", len(uids))
            return
        self.metrics.snapshot_read_batches.inc()
        for uid, data in zip(uids, datas):
            self._deliver(uid, data)

    def _deliver(self, uid: str, data: dict[str, Any]) -> None:
        """Offer one read snapshot to every listener of its user (one :class:`Snapshot` shared)."""
        snapshot = Snapshot(data)
        self.metrics.snapshot_reads.inc()
        group = self._listeners.get(uid)
        if not group:
            return  # the user's last stream closed while the read was in flight
        self._known[uid] = max(self._known.get(uid, -1), snapshot.version)
        for listener in list(group):
            listener.offer(snapshot)

    def _retry_later(self, uids: list[str], exc: Exception, delay_s: float = 0.5) -> None:
        log.warning("snapshot read of %d user(s) failed (%s); retrying in %.1fs", len(uids), exc, delay_s)
        self._spawn(self._want_later(uids, delay_s))

    async def _want_later(self, uids: list[str], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        for uid in uids:
            self._want_read(uid)

    async def _read_each(self, uids: list[str]) -> list[dict[str, Any]]:
        """A batch read through the single-user reader (when no ``read_many`` was given)."""
        return list(await asyncio.gather(*(self._read(uid) for uid in uids)))


