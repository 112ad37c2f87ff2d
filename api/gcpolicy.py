"""Full garbage collections kept off the streams' path: the long-lived heap is frozen.

An API process holding 5,000 SSE streams keeps about 1.1 million objects the cyclic garbage
collector tracks (~216 per stream: tasks, coroutines, cancel scopes, events, sockets). CPython
3.11 traverses all of them in a full collection, which it runs whenever the objects promoted
since the last one exceed a quarter of the old generation: 700 ms of CPU measured at 5,000
streams, during which no stream sends anything (the p99 of ``python -m bench --only delivery``
at 5,000 streams, docs/performance.md).

:class:`HeapFreezer` collects and freezes the heap once at start (the app's modules and clients),
then every ``interval_s`` collects the young generations (the objects created since: a few
milliseconds) and freezes what survived (``gc.freeze()``). No later collection traverses a frozen
object; it is still freed as soon as its last reference goes, so the streams' transient objects
(a heartbeat's timer and future) cost nothing more. CPython's own collections then only ever see
what was created in the last interval.

An object frozen while alive that later becomes garbage inside a reference cycle (parts of a
closed stream) is reclaimed only by a collection of the frozen heap too (unfreeze, collect,
freeze), which costs what CPython's own full collection costs. It runs, checked every
``check_s``, when either has happened since the last one:

- the process's allocated memory blocks (``sys.getallocatedblocks()``: 3 ms at 2 million blocks,
  where counting the frozen objects takes 30 ms or more) have grown by ``regrow`` (half): frozen
  garbage of any origin stays under that share of the heap;
- more streams have closed than ``regrow`` times those open now (and at least ``min_closed``):
  closed streams are where frozen garbage comes from, and the block count alone cannot see it
  once the streams held at a peak have closed (their garbage keeps the blocks allocated, so the
  heap would have to grow by half *of the peak* first). With ``streams`` given (the API's
  stream limiter: ``open`` and ``closed``), the garbage of closed streams stays under that share
  of the streams held now, whatever the peak was.

The long pause comes once per such growth or churn, not whenever short-lived objects happened to
be promoted.

The policy is process-wide: the server process turns it on (``python -m api``); an app created
inside another process (a test) leaves that process's collector alone.

Ownership: the task ``gc-freeze`` (:meth:`HeapFreezer._run`) is the only caller of
``gc.freeze``/``gc.unfreeze`` in the process and owns ``_base``, ``_closed_base``, ``_checked``
and the counters; it only reads the limiter's counts (same event loop).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from typing import Protocol

log = logging.getLogger("api.gcpolicy")


class Streams(Protocol):
    """What the policy reads of the streams held (api.limits.StreamLimiter)."""

    open: int
    closed: int


class HeapFreezer:
    """Freezes what survives each interval; collects the frozen heap only when the process's
    memory blocks have grown by ``regrow`` since the last time."""

    def __init__(self, interval_s: float = 1.0, check_s: float = 10.0, regrow: float = 0.5,
                 streams: Streams | None = None, min_closed: int = 100) -> None:
        self.interval_s, self.check_s, self.regrow = interval_s, check_s, regrow
        self.streams, self.min_closed = streams, min_closed
        self._base = 0  # allocated blocks right after the last full collection
        self._closed_base = 0  # streams.closed at the last full collection
        self._checked = 0.0  # time.monotonic() of the last growth check
        self.freezes = 0
        self.full_collections = 0
        self._task: asyncio.Task | None = None

    def step(self, now: float | None = None) -> None:
        """One interval: a full collection if the heap grew enough (checked every ``check_s``),
        else the young generations collected and their survivors frozen."""
        now = time.monotonic() if now is None else now
        if now - self._checked >= self.check_s:
            self._checked = now
            if sys.getallocatedblocks() > self._base * (1 + self.regrow) or self._churned():
                self.collect_all()
                return
        gc.collect(1)
        gc.freeze()
        self.freezes += 1

    def _churned(self) -> bool:
        """More streams closed since the last full collection than the share of those open now."""
        if self.streams is None:
            return False
        closed = self.streams.closed - self._closed_base
        return closed >= max(self.min_closed, self.regrow * self.streams.open)

    def collect_all(self) -> None:
        """Collect the whole heap, frozen part included, and freeze what survived."""
        started = time.thread_time()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._base = sys.getallocatedblocks()
        self._closed_base = self.streams.closed if self.streams is not None else 0
        self.full_collections += 1
        log.info("full garbage collection: %d unreachable objects, %d memory blocks kept, %.0f ms CPU",
                 found, self._base, (time.thread_time() - started) * 1000)

    async def start(self) -> None:
        """Freeze the heap as it is (the app's modules and clients), then check every ``interval_s``."""
        self.collect_all()
        self._checked = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="gc-freeze")

    async def close(self) -> None:
        """Stop checking and unfreeze the heap (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
            gc.unfreeze()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.step()
