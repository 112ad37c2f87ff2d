"""The re-read queue: users waiting for a snapshot read, read in batches by one task.

Anything that needs a user read queues it, synchronously and at no cost: a notification
(``want(uid, version)``: skipped once a read saw that version), a subscription confirmation or a
retry (``want(uid)``: read whatever the version), and a stream's first snapshot
(:meth:`SnapshotReads.first`, awaited by the stream's request). One reader task reads up to
``batch_size`` waiting users per round trip (``read.lua`` per user, so each snapshot is whole);
users queued while a batch is in flight make the next batch, so a burst of ten thousand stream
openings costs fifty round trips on one connection, not ten thousand requests for pool
connections. First reads go before re-reads: a client is waiting for them. The reads metric
counts re-reads (one per user and version, shared by the user's streams), not first reads.

When a batch fails on one user's broken keys (a ``ResponseError``), its users are read one by
one so that every other user still gets their snapshot. A user whose read failed on Redis is
queued again after ``retry_s``; a first read that failed ``FIRST_READ_TRIES`` times fails its
stream's request (503).

Ownership: the *reader* task (``fanout-read``) owns ``_known`` and drains the queue; the queue
(``_queue``, ``_first_order``, ``_order``, ``_firsts``, ``_first_tries``, ``_retrying``) is appended to synchronously by
whichever task calls :meth:`want` or :meth:`first` (and by retry timers on the event loop),
never across an await; :meth:`forget` drops a user's ``_known`` entry when its last stream
closes, synchronously too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import ResponseError

from readmodel.connect import StoreError

from .errors import ServerBusy
from .metrics import Metrics
from .snapshots import SharedSnapshot

log = logging.getLogger("api.fanout")
CLOSE_TIMEOUT_S = 3.0
FIRST_READ_TRIES = 3  # a stream's first read is tried this many times (retry_s apart) before its 503


class Reader(Protocol):
    """What the reads go through (:class:`api.snapshots.SnapshotReader`)."""

    def read(self, uid: str) -> Awaitable[dict[str, Any]]: ...
    def read_many(self, uids: list[str]) -> Awaitable[list[dict[str, Any]]]: ...


@dataclass
class Batch:
    """The users one round trip reads, the first reads it serves and which users were re-reads."""

    uids: list[str] = field(default_factory=list)
    waiting: dict[str, list[asyncio.Future[SharedSnapshot]]] = field(default_factory=dict)
    rereads: set[str] = field(default_factory=set)
    tries: dict[str, int] = field(default_factory=dict)  # the how-manieth try each first read is


class SnapshotReads:
    """Reads queued users in batches and hands each snapshot to ``deliver``."""

    def __init__(self, reader: Reader, deliver: Callable[[str, SharedSnapshot], None], listened: Callable[[str], bool],
                 metrics: Metrics, batch_size: int = 200, retry_s: float = 0.5) -> None:
        """``listened(uid)``: whether ``uid`` still has a stream here (re-reads of others are skipped)."""
        self._reader, self._deliver, self._listened = reader, deliver, listened
        self.metrics = metrics
        self.batch_size, self.retry_s = batch_size, retry_s
        self._known: dict[str, int] = {}  # uid -> newest version a read saw
        # Queued users: uid -> the version notified (None: read whatever the version).
        self._queue: dict[str, int | None] = {}
        self._first_order: deque[str] = deque()  # users a stream's first snapshot waits for
        self._order: deque[str] = deque()  # the other queued users, in arrival order
        self._firsts: dict[str, list[asyncio.Future[SharedSnapshot]]] = {}
        self._first_tries: dict[str, int] = {}  # uid -> the how-manieth try its queued first read is
        self._retrying: dict[str, list[asyncio.Future[SharedSnapshot]]] = {}  # first reads waiting to try again
        self._want = asyncio.Event()
        self._retries: set[asyncio.TimerHandle] = set()
        self._task: asyncio.Task | None = None
        self._reading: Batch | None = None  # the batch being read

    @property
    def idle(self) -> bool:
        """Nothing is queued or being read."""
        return not (self._queue or self._firsts or self._reading is not None or self._retries)

    def want(self, uid: str, version: int | None = None) -> None:
        """Queue a read of ``uid`` (a user with a stream here): for ``version`` (skipped if a read
        already saw it), or, with None, whatever the version. A queued user is not queued twice."""
        if not self._listened(uid):
            return
        if version is not None and version <= self._known.get(uid, -1):
            return
        if uid in self._queue:
            queued = self._queue[uid]
            if queued is not None and (version is None or version > queued):
                self._queue[uid] = version
            return
        self._queue[uid] = version
        self._order.append(uid)
        self._want.set()

    async def first(self, uid: str) -> SharedSnapshot:
        """``uid``'s snapshot from a read that starts after this call (a stream's first)."""
        if self._task is None:
            raise ServerBusy("the server is shutting down; reconnect", headers={"Retry-After": "1"})
        waiter: asyncio.Future[SharedSnapshot] = asyncio.get_running_loop().create_future()
        self._queue_first(uid, [waiter])
        return await waiter

    def _queue_first(self, uid: str, waiters: list[asyncio.Future[SharedSnapshot]], tries: int = 1) -> None:
        queued = self._firsts.get(uid)
        if queued is None:
            queued = self._firsts[uid] = []
            self._first_order.append(uid)
            self._want.set()
        queued.extend(waiters)
        self._first_tries[uid] = max(tries, self._first_tries.get(uid, 1))

    def forget(self, uid: str) -> None:
        """``uid``'s last stream here closed."""
        self._known.pop(uid, None)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read_batches(), name="fanout-read")

    async def close(self) -> None:
        """Stop reading; a stream still waiting for its first snapshot gets 503 (idempotent)."""
        task, self._task = self._task, None
        for timer in self._retries:
            timer.cancel()
        self._retries.clear()
        if task is not None:
            task.cancel()
            _, stuck = await asyncio.wait([task], timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.warning("fan-out reader did not stop within %.0f s of shutdown", CLOSE_TIMEOUT_S)
        closing = ServerBusy("the server is shutting down; reconnect", headers={"Retry-After": "1"})
        cut = self._reading.waiting.values() if self._reading is not None else ()
        for waiters in (*self._firsts.values(), *self._retrying.values(), *cut):
            self._fail(waiters, closing)
        self._firsts.clear()
        self._retrying.clear()
        self._reading = None

    # ------------------------------------------------------------------ the reader task

    async def _read_batches(self) -> None:
        """Reads the queued users, a batch per round trip, until none is queued; then waits.

        A user notified while its read is in flight is queued again and read in a later batch,
        so the newest version is never missed.
        """
        while True:
            await self._want.wait()
            self._want.clear()
            while self._queue or self._firsts:
                batch = self._take_batch()
                if batch.uids:
                    self._reading = batch
                    await self._read_batch(batch)
                    self._reading = None

    def _take_batch(self) -> Batch:
        """Up to ``batch_size`` queued users, first reads first."""
        batch = Batch()
        while self._first_order and len(batch.uids) < self.batch_size:
            uid = self._first_order.popleft()
            batch.waiting[uid] = self._firsts.pop(uid)
            batch.tries[uid] = self._first_tries.pop(uid, 1)
            if self._queue.pop(uid, False) is not False:
                batch.rereads.add(uid)  # the re-read it waited for is this read
            batch.uids.append(uid)
        while self._order and len(batch.uids) < self.batch_size:
            uid = self._order.popleft()
            if uid not in self._queue:
                continue  # read with a first read already
            version = self._queue.pop(uid)
            if not self._listened(uid):
                continue
            if version is not None and version <= self._known.get(uid, -1):
                continue  # a read made after this notification already saw it
            batch.uids.append(uid)
            batch.rereads.add(uid)
        return batch

    async def _read_batch(self, batch: Batch) -> None:
        uids = batch.uids
        try:
            datas = await self._reader.read_many(uids)
        except ResponseError as exc:
            if len(uids) == 1:
                self._failed(batch, uids, exc)
                return
            await self._read_each(batch)
            return
        except StoreError as exc:
            self._failed(batch, uids, exc)
            return
        except Exception as exc:
            log.exception("snapshot read of %d users failed", len(uids))
            for uid in uids:
                self._fail(batch.waiting.get(uid, ()), exc)
            return
        self.metrics.snapshot_read_batches.inc()
        for uid, data in zip(uids, datas):
            self._read_one(batch, uid, data)

    async def _read_each(self, batch: Batch) -> None:
        """One user's keys may be broken (e.g. a wrong type): read the batch's users one by one."""
        results = await asyncio.gather(*(self._reader.read(uid) for uid in batch.uids), return_exceptions=True)
        self.metrics.snapshot_read_batches.inc(1 + len(batch.uids))  # the failed round trip and one each
        for uid, result in zip(batch.uids, results):
            if isinstance(result, StoreError):
                self._failed(batch, [uid], result)
            elif isinstance(result, BaseException):
                log.error("snapshot read for %s failed", uid, exc_info=result)
                self._fail(batch.waiting.get(uid, ()), result)
            else:
                self._read_one(batch, uid, result)

    def _read_one(self, batch: Batch, uid: str, data: dict[str, Any]) -> None:
        snapshot = SharedSnapshot(data)
        if uid in batch.rereads:
            self.metrics.snapshot_reads.inc()  # first reads are their streams' own, not counted
        for waiter in batch.waiting.get(uid, ()):
            if not waiter.done():
                waiter.set_result(snapshot)
        if self._listened(uid):  # else its last stream closed while the read was in flight
            self._known[uid] = max(self._known.get(uid, -1), snapshot.version)
            self._deliver(uid, snapshot)

    def _failed(self, batch: Batch, uids: list[str], exc: Exception) -> None:
        """Queue ``uids`` again after ``retry_s``; a first read that failed ``FIRST_READ_TRIES``
        times fails its stream's request (a starved event loop can time out one connect or read:
        a burst of openings must not turn that into hundreds of 503s)."""
        again = list(uids)  # a user's other streams still want it (want() skips the rest)
        firsts: dict[str, int] = {}  # uid -> the try its first read makes next
        for uid in uids:
            waiters, tries = batch.waiting.get(uid), batch.tries.get(uid, 1)
            if waiters and tries < FIRST_READ_TRIES:
                firsts[uid] = tries + 1
                self._retrying.setdefault(uid, []).extend(waiters)
            elif waiters:
                self._fail(waiters, exc)
        log.warning("snapshot read of %d user(s) failed (%s); retrying in %.1fs", len(uids), exc, self.retry_s)
        timer: asyncio.TimerHandle | None = None

        def retry() -> None:
            self._retries.discard(timer)
            for uid, tries in firsts.items():
                held = self._retrying.pop(uid, None)  # None: an earlier retry took them along
                if held:
                    self._queue_first(uid, held, tries)
            for uid in again:
                self.want(uid)

        timer = asyncio.get_running_loop().call_later(self.retry_s, retry)
        self._retries.add(timer)

    @staticmethod
    def _fail(waiters: Any, exc: BaseException) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
