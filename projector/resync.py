"""The resync: rebuild the read model from the collections without ever emptying it for readers.

The stream is opened first, so its start position P precedes the scan; scanned documents are
written at P (behind the scan, by the writer thread); whatever was not written at P or later is
swept; tailing then continues from P, replaying whatever changed during the scan.

Runs on the worker's thread and owns nothing between calls: the stream it opens is handed back
to the worker (or closed when the resync fails). Each batch is planned on the worker's thread
(its reads of the read model) while the writer thread writes the ones before, and goes to the
writer planned and whole.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm

from readmodel import Change, ReadModel

from .applying import Applied, BatchWriter, Grant
from .batching import Batch, Owns, with_full_documents
from .durations import Durations
from .normalize import Rules
from .projection import ECONOMY, TASKS, document_projection
from .reading import Stream
from .source import Source
from .times import iso_at
from .writebehind import WriteBehind

log = logging.getLogger(__name__)

SWEEP_CHUNK = 1000
# Owner entries a fresh scan remembers having planned (their hashes, ~60 bytes each): see _Ahead.
MET_CAP = 5_000_000
# Live task changes held back, across all users, until their owner's balance is scanned: beyond
# this many they are written at once (each user then costs two script calls instead of one).
HELD_CAP = 100_000
# While a resync runs (see _resync_runtime): the GIL switch interval (Python's default: 5 ms) and
# the collector's thresholds (default: 700, 10, 10).
SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (100_000, 50, 100)


class Stopped(Exception):
    """Asked to stop in the middle of a long operation (a resync)."""


@dataclass(frozen=True)
class Rebuilt:
    """A finished resync: the stream to tail from, its checkpoint, and what it did."""

    stream: Stream
    applied: Applied
    documents: int
    users: int


@dataclass
class Resync:
    """What a resync works with; :meth:`run` does one."""

    source: Source
    model: ReadModel
    writer: BatchWriter
    writes: WriteBehind
    rules: Rules
    batch_size: int
    owns: Owns
    grant: Callable[[], Grant]  # the lease now, captured for writes queued now
    keep_going: Callable[[], None]  # renews the lease; raises Stopped or LeaseLost
    chores: Callable[[], None]  # the worker's periodic report while the scan runs
    clock: Callable[[], float] = time.time
    progress: bool = True

    def run(self, durations: Durations, version_jump: int = 0) -> Rebuilt:
        """``version_jump`` moves every user's version that far in the sweep (after Redis lost
        writes)."""
        with _resync_runtime():
            return self._run(durations, version_jump)

    def _run(self, durations: Durations, version_jump: int) -> Rebuilt:
        stream = self.source.open(None)
        try:
            # With no user in the read model yet (a first start, a flushed Redis), everything the
            # sweep could find was written by this scan at the stream's start: only tasks already
            # stale can go, and the deadline sweep finds those. Anything written after this look
            # is this scan's, another partition's, or refused by the fence (raised when the lease
            # was taken).
            fresh = version_jump == 0 and next(iter(self.model.known_users()), None) is None
            scanned = self._scan(stream.start, durations, fresh)
            self.writes.flush()  # every scanned document is in Redis before the sweep looks
            self.keep_going()
            users = [] if fresh else list(self.model.known_users())
            now_ms = int(self.clock() * 1000)
            now_iso = iso_at(self.clock())
            if fresh:
                self.model.sweep(now_ms, now_iso, fence=self.grant().fence)
            for i in range(0, len(users), SWEEP_CHUNK):
                self.keep_going()  # a full model's sweep can outlast the lease
                self.model.sweep(now_ms, now_iso, users=users[i : i + SWEEP_CHUNK], min_seq=stream.start,
                                 version_jump=version_jump, fence=self.grant().fence)
            applied = self.writer.checkpoint(stream.token, stream.start, self.grant())
        except BaseException:
            stream.close()
            raise
        return Rebuilt(stream, applied, scanned, len(users))

    def _scan(self, seq: str, durations: Durations, fresh: bool) -> int:
        """Tasks first, then balances. A user's live tasks are held back until its balance is
        scanned and written with it: one script call per user instead of two (:class:`_Held`).
        ``fresh``: no user had state when the resync began (:class:`_Ahead`)."""
        total = self.source.estimated_total()
        done = 0
        held = _Held(self.batch_size)
        ahead = _Ahead(self.writer.model, self.writes, fresh)
        with tqdm(total=total, desc="resync", unit="doc", file=sys.stderr,
                  disable=None if self.progress else True,  # None: off when stderr is no terminal
                  mininterval=0.5, dynamic_ncols=True) as bar:
            for kind in (TASKS, ECONOMY):
                for docs in self.source.scan_ahead(kind):
                    batch = Batch(events=len(docs))
                    wall_ms = int(self.clock() * 1000)
                    for doc in docs:
                        doc_id = doc.get("_id")
                        if self.owns(doc_id):  # else another partition's
                            projected = document_projection(kind, doc, doc_id, seq, wall_ms, self.rules, durations)
                            batch.add(projected, durations, finished=False)
                    if kind == TASKS:
                        batch.changes = held.hold(batch.changes)
                    else:
                        batch.changes += held.release([change.owner for change in batch.changes])
                    done += self._write(batch, bar, ahead)
            for changes in held.rest():
                self._write(Batch(changes=changes), bar, ahead)
        return done

    def _write(self, batch: Batch, bar: tqdm, ahead: _Ahead) -> int:
        self.keep_going()
        grant = self.grant()
        scanned, batch.events = batch.events, 0  # documents are not change events
        if batch.rejected:  # the scan read trimmed documents: a dead letter carries the whole one
            batch.rejected = with_full_documents(batch.rejected, self.source.full_documents)
        unread = ahead.before_planning(batch.changes)
        prepared = self.writer.prepare(batch, grant, unread)  # while the writer thread writes the batches before
        self.writes.submit(lambda: self.writer.commit(prepared, grant))
        bar.update(scanned)
        self.chores()
        return scanned



@contextmanager
def _resync_runtime() -> Iterator[None]:
    """The interpreter tuned for a resync, and set back after it. The writer thread waits on Redis
    without the GIL and, each time Redis answers, waits again for the worker's thread (which
    normalizes without pause) to let the GIL go: up to a whole switch interval, and the writes are
    the resync's slowest stage. The cyclic collector, at its default thresholds, runs a young
    collection every 700 new objects and a full one (over every change held back) several times
    per resync: 15 % of the projector's CPU, for documents that make no cycles."""
    switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*thresholds)


class _Ahead:
    """The documents of the batches that may still be in the writer's queue or being written
    (owned by the worker's thread, for one scan). A batch is planned on the worker's thread while
    the writer writes the ones before. Its plan reads its documents' owner entries, so a batch
    that shares a document with one of those (the scan met a document twice) waits until they are
    written. It also reads owners' positions that writes to other documents of the same user move
    (``balanceSeq``, pruned task positions); they only decide whether a change is older than what
    is applied, and every change a resync writes is at the stream's start, where every such
    position is at or below it before and after: the decision cannot flip. The tail does not plan
    ahead (its changes have positions of their own).

    A *fresh* scan (no user had state when it began) need not read the entry of a document it has
    not met yet: no user shows that document, and an entry left from before (a document that left,
    kept for its position) is at or before the stream's start, as every position written before
    the resync is, so the change is not obsolete and the entry's past owners show nothing. The
    hashes of the entries planned so far are kept (a collision only costs a read) up to
    ``MET_CAP``; beyond it every entry is read again. Skipping those reads saves a round trip per
    batch that waits behind the writer's scripts in Redis."""

    def __init__(self, model: ReadModel, writes: WriteBehind, fresh: bool = False) -> None:
        self.model, self.writes = model, writes
        self.recent: deque[set[str]] = deque(maxlen=writes.depth + 1)  # queued, and the one being written
        self.met: set[int] | None = set() if fresh else None  # hashes of the entries planned (a fresh scan)

    def before_planning(self, changes: list[Change]) -> set[str]:
        """Wait for the writes a plan of ``changes`` must read; returns the owner entries it need
        not read."""
        documents = {self.model.owner_key(change) for change in changes}
        if not self.writes.busy:
            self.recent.clear()
        elif any(not documents.isdisjoint(earlier) for earlier in self.recent):
            self.writes.flush()
            self.recent.clear()
        self.recent.append(documents)
        if self.met is None or len(self.met) > MET_CAP:
            self.met = None
            return set()
        unread = {key for key in documents if hash(key) not in self.met}
        self.met.update(hash(key) for key in documents)
        return unread


class _Held:
    """Live task changes of the scan kept by owner until the owner's balance comes (owned by the
    worker's thread, for one scan). A user's held changes go out on their own once they fill a
    batch, and all of them once ``HELD_CAP`` are held: one script call never takes more than
    about a batch, and memory stays bounded."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.by_owner: dict[str | None, list[Change]] = {}
        self.count = 0

    def hold(self, changes: list[Change]) -> list[Change]:
        """Keep ``changes``; returns those to write now."""
        now: list[Change] = []
        for change in changes:
            kept = self.by_owner.setdefault(change.owner, [])
            kept.append(change)
            self.count += 1
            if len(kept) >= self.batch_size:
                now += self.by_owner.pop(change.owner)
                self.count -= len(kept)
        if self.count > HELD_CAP:
            now += [change for kept in self.by_owner.values() for change in kept]
            self.by_owner.clear()
            self.count = 0
        return now

    def release(self, owners: list[str | None]) -> list[Change]:
        """The held changes of ``owners`` (given up)."""
        out: list[Change] = []
        for owner in owners:
            kept = self.by_owner.pop(owner, None)
            if kept:
                out += kept
                self.count -= len(kept)
        return out

    def rest(self) -> Iterator[list[Change]]:
        """What is still held (users without a balance), in batches."""
        rest = [change for kept in self.by_owner.values() for change in kept]
        self.by_owner.clear()
        self.count = 0
        for i in range(0, len(rest), self.batch_size):
            yield rest[i : i + self.batch_size]
