"""Full garbage collections kept off the streams' path: the long-lived heap is frozen.

An API process holding 5,000 SSE streams keeps about 1.1 million objects the cyclic garbage
collector tracks (~216 per stream: tasks, coroutines, cancel scopes, events, sockets). CPython
3.11 traverses all of them in a full collection, which it runs whenever the objects promoted
since the last one exceed a quarter of the old generation: 700 ms of CPU measured at 5,000
streams, during which no stream sends anything (the p99 of ``python -m bench --only delivery``
at 5,000 streams, docs/performance.md).

:class:`HeapFreezer` collects and freezes the heap once at start (the app's modules and clients),
then checks it every ``interval_s``:

- when more than ``freeze_at`` objects sit unfrozen in the old generation (those that survived
  two collections: a newly opened stream's objects), it collects the unfrozen heap (only those
  objects: milliseconds) and freezes what survived (``gc.freeze()``). No later collection
  traverses a frozen object; it is still freed as soon as its last reference goes.
- an object frozen while alive that later becomes garbage inside a reference cycle (parts of a
  closed stream) is reclaimed only by a collection of the frozen heap too (unfreeze, collect,
  freeze), which costs what CPython's own full collection costs. It runs when the frozen heap
  has grown by ``regrow`` (half) since the last one, so that garbage stays under that share of
  the heap and the long pause comes once per such growth (streams opened, or as many closed
  ones replaced), not whenever short-lived objects happened to be promoted.

The policy is process-wide: the server process turns it on (``python -m api``); an app created
inside another process (a test) leaves that process's collector alone.

Ownership: the task ``gc-freeze`` (:meth:`HeapFreezer._run`) is the only caller of
``gc.freeze``/``gc.unfreeze`` in the process and owns ``_base`` and the counters.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("api.gcpolicy")


class HeapFreezer:
    """Freezes the objects that survived into the old generation; collects the frozen heap
    only when it has grown by ``regrow`` since the last time."""

    def __init__(self, interval_s: float = 1.0, freeze_at: int = 10_000, regrow: float = 0.5) -> None:
        self.interval_s, self.freeze_at, self.regrow = interval_s, freeze_at, regrow
        self._base = 0  # the frozen heap's size right after the last full collection
        self.freezes = 0
        self.full_collections = 0
        self._task: asyncio.Task | None = None

    def step(self) -> None:
        """One check: a full collection if the frozen heap grew enough, else a freeze if due."""
        if gc.get_freeze_count() > self._base * (1 + self.regrow) + self.freeze_at:
            self.collect_all()
        elif len(gc.get_objects(generation=2)) > self.freeze_at:
            gc.collect()  # the unfrozen heap only
            gc.freeze()
            self.freezes += 1

    def collect_all(self) -> None:
        """Collect the whole heap, frozen part included, and freeze what survived."""
        started = time.thread_time()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._base = gc.get_freeze_count()
        self.full_collections += 1
        log.info("full garbage collection: %d unreachable objects, %d kept (frozen), %.0f ms CPU",
                 found, self._base, (time.thread_time() - started) * 1000)

    async def start(self) -> None:
        """Freeze the heap as it is (the app's modules and clients), then check every ``interval_s``."""
        self.collect_all()
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
