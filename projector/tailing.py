"""Tailing: take what the stream's reader handed over, build one batch, queue its writes and its
checkpoint behind the previous batch's; and fold in what the writer reported back.

A checkpoint's position is what the API promises a fresh-after-write read (``afterClusterTime``:
answered once the announced position is at or past the caller's ``operationTime``). Every event of
a transaction carries the transaction's clusterTime, ``lsid`` and ``txnNumber``
(jstests/change_streams/apply_ops.js), and a batch may end among them, its token being the last
event's ``_id`` (report_post_batch_resume_token.js, also after an empty ``getMore`` while that
event is the newest oplog entry): such a batch announces the last position strictly below the
transaction's time, until the stream shows the transaction over (a later event, a ``getMore`` after
it that came back empty, or a token past it). The resume token is stored as it is.

Runs on the worker's thread, which owns a :class:`Tailing`'s state: ``saved`` (the last
checkpoint the writer reported stored), ``caught_up`` and ``open_txn``. The writer thread gets the batch, the
token, the position and a :class:`~.applying.Grant` as values when the job is queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bson import Timestamp
from pymongo.errors import PyMongoError

from .applying import Applied, BatchWriter, Grant
from .batching import Owns, from_events, with_full_documents
from .checkpoint import Checkpoint
from .durations import Durations
from .health import Stats
from .projection import seq_of
from .reading import Stream, Taken
from .settings import Settings
from .source import Source, refuses_resume, token_position
from .writebehind import WriteBehind

IDLE_CHECKPOINT_MS = 1000  # with nothing new, the checkpoint is still stored this often
# After Redis lost acknowledged writes, every user's version moves this far, and at least to the
# clock in ms (readmodel/scripts/sweep.lua): further than the versions a user can have gone through
# in the replication lag a failover loses, so no version a client saw is handed out again.
VERSION_JUMP = 1000
MAX_INCREMENT = 2**32 - 1


def just_below(time: Timestamp) -> str:
    """The last position strictly below a cluster time."""
    if time.inc > 0:
        return seq_of(Timestamp(time.time, time.inc - 1))
    return seq_of(Timestamp(time.time - 1, MAX_INCREMENT))


class ResyncNeeded(Exception):
    """The stream cannot go on from where it is: rebuild the read model instead."""

    def __init__(self, reason: str, version_jump: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.version_jump = version_jump


@dataclass
class Tailing:
    """One tailing step at a time over the worker's stream."""

    source: Source
    writer: BatchWriter
    writes: WriteBehind
    settings: Settings
    owns: Owns
    max_wait_s: float = 0.25
    clock: Callable[[], float] = time.time
    saved: Checkpoint | None = None  # the last checkpoint stored, as the writer reported it
    caught_up: bool = False  # the last take ended on an empty getMore begun after it started
    # (token, position below it) while the last event taken may be followed by more of its transaction
    open_txn: tuple[object, str] | None = None
    held_back: bool = False  # the last checkpoint queued was held below an open transaction

    def open(self, checkpoint: Checkpoint | None, masters_now: str) -> Stream:
        """The stream from the stored checkpoint; :class:`ResyncNeeded` when there is none, when
        the Redis masters that hold its writes changed (a failover or a restart: asynchronous
        replication may have lost them), or when the server refuses to resume from it for good.
        A transient error is raised as it is (retried from the same checkpoint)."""
        if checkpoint is None:
            raise ResyncNeeded("no checkpoint")
        if checkpoint.masters and masters_now != checkpoint.masters:
            raise ResyncNeeded("the Redis masters changed since the checkpoint (failover or restart): "
                               "writes they acknowledged may be lost", VERSION_JUMP)
        try:
            stream = self.source.open(checkpoint)
        except PyMongoError as exc:
            if not refuses_resume(exc):
                raise
            raise ResyncNeeded(f"the server refuses to resume from the checkpoint ({type(exc).__name__}: {exc})") from exc
        self.saved = checkpoint
        return stream

    def step(self, stream: Stream, durations: Durations, grant: Grant, stats: Stats) -> None:
        """Take, build and queue one batch; :class:`ResyncNeeded` after an event that ends the
        stream (the batch's events before it are written first)."""
        taken = stream.take(self.settings.batch_size, self.max_wait_s)
        self.caught_up = taken.caught_up and not taken.events
        tailed = from_events(taken.events, self.source.kinds, self.settings.rules, durations, self.owns)
        batch = tailed.batch
        if batch.rejected:
            batch.rejected = with_full_documents(batch.rejected, self.source.full_documents)
        if tailed.resync_reason:
            self.writes.submit(lambda: self.writer.apply(batch, grant))
            self.writes.flush()
            raise ResyncNeeded(tailed.resync_reason)
        now_ms = int(self.clock() * 1000)
        event_ms = tailed.event_ms  # when the batch's last event (owned or not) happened at the source
        if event_ms is not None:
            stats.lag_ms = max(0, now_ms - event_ms)
            stats.last_event_ms = event_ms
        elif taken.caught_up:
            stats.lag_ms = 0
        last_time = tailed.last_time
        position = token_position(taken.token) or (seq_of(last_time) if last_time else None)
        position = self.whole_transactions(taken, position or (self.saved.position if self.saved else stream.start))
        idle_due = (self.saved is None or now_ms - self.saved.at_ms >= IDLE_CHECKPOINT_MS
                    or (self.held_back and self.open_txn is None))  # announce the transaction's end now
        if taken.events or idle_due:
            token = taken.token
            self.held_back = self.open_txn is not None

            def write() -> Applied:
                applied = self.writer.apply(batch, grant)
                saved = self.writer.checkpoint(token, position, grant, event_ms)
                return Applied(applied.events, applied.batches, applied.dead_letters, saved.checkpoint)

            self.writes.submit(write)

    def whole_transactions(self, taken: Taken, position: str) -> str:
        """``position``, or the last one below the transaction the taken events may end inside."""
        if taken.events:
            last = taken.events[-1]
            time = last.get("clusterTime")
            inside = "txnNumber" in last and not taken.caught_up and taken.token == last.get("_id")
            self.open_txn = (taken.token, just_below(time)) if inside and isinstance(time, Timestamp) else None
        elif self.open_txn is not None and (taken.caught_up or taken.token != self.open_txn[0]):
            # A getMore after the last event came back empty (a committed transaction's events are
            # all in the oplog: none was left), or the token moved past it.
            self.open_txn = None
        return position if self.open_txn is None else min(position, self.open_txn[1])

    def collect(self, stats: Stats, *extra: Applied) -> None:
        """Fold what the writer thread reported (and ``extra``) into ``stats`` and ``saved``."""
        for applied in (*self.writes.collect(), *extra):
            stats.count(applied.events, applied.batches, applied.dead_letters)
            if applied.checkpoint is not None:
                self.saved = applied.checkpoint
                stats.checkpointed(applied.checkpoint.at_ms, applied.checkpoint.position)
