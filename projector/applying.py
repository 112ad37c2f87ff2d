"""Applying a batch and storing the checkpoint after it: the jobs the writer thread runs.

Everything a job needs from the worker's thread is captured when the job is queued and handed
over in a frozen :class:`Grant` (the lease's fencing token and how long it is known to be held,
the Redis masters the writes go to): the writer never reads the worker's mutable state. What a job
did comes back as a frozen :class:`Applied`, which ``WriteBehind`` hands to the worker's thread
(``collect()``); only that thread changes the counters. A resync plans its batches on the
worker's thread (:meth:`BatchWriter.prepare`: reads only) while the writer thread writes the ones
before, and hands each over as a frozen :class:`Prepared`. :class:`BatchWriter` itself holds
nothing mutable: the read model, the dead letters and the checkpoint store are Redis calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from readmodel import Layout, ReadModel
from readmodel.connect import masters
from readmodel.fences import Fenced
from readmodel.writer import Plan

from .batching import Batch
from .checkpoint import Checkpoint, CheckpointStore
from .deadletters import DeadLetters
from .durations import Durations
from .lease import LeaseLost
from .times import iso_at

log = logging.getLogger(__name__)


class MastersChanged(Exception):
    """The Redis masters are not the ones the last writes went to (a failover or a restart):
    writes they acknowledged may be lost, so the next open resyncs."""


@dataclass(frozen=True)
class Grant:
    """What a batch was read under, captured on the worker's thread when its writes are queued."""

    fence: int | None  # the lease's fencing token (None: no lease)
    held_until: float  # monotonic time until which the lease is known to be held
    masters: str  # the Redis masters the writes since the last checkpoint went to


@dataclass(frozen=True)
class Applied:
    """What one job did, for the worker's counters."""

    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Prepared:
    """A batch planned (:meth:`BatchWriter.prepare`), ready to be written."""

    batch: Batch
    plan: Plan
    now_iso: str


@contextmanager
def _fenced_off() -> Iterator[None]:
    try:
        yield
    except Fenced as exc:
        raise LeaseLost(f"a batch was fenced off ({exc})") from exc


class BatchWriter:
    """The writer thread's jobs over one Redis: apply a batch; store a checkpoint."""

    def __init__(
        self,
        redis: Any,
        layout: Layout,
        collections: Mapping[str, str],
        deadletter_max: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        audit: bool = False,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.model = ReadModel(redis, layout, audit=audit)
        self.checkpoints = CheckpointStore(redis, layout, self.model.fences)
        self.dead_letters = DeadLetters(redis, layout, maxlen=deadletter_max)
        self.collections = dict(collections)
        self.clock = clock
        self.monotonic = monotonic

    def apply(self, batch: Batch, grant: Grant) -> Applied:
        """Write the batch's changes, dead letters and durations (nothing when it has none)."""
        if not batch:
            return Applied(events=batch.events)
        self._check(grant)
        now_iso = iso_at(self.clock())
        if batch.changes:
            with _fenced_off():
                self.model.apply(batch.changes, now_iso, grant.fence)
        return self._after_changes(batch, now_iso)

    def prepare(self, batch: Batch, grant: Grant, unread: Container[str] = ()) -> Prepared:
        """:meth:`apply`'s reads and planning, without a write: on another thread than
        :meth:`commit`'s, while the writer thread writes earlier batches under the condition
        :meth:`readmodel.ReadModel.execute` states (a resync's: ``projector.resync._Ahead``).
        ``unread``: owner entries not to read (:meth:`readmodel.ReadModel.plan`)."""
        now_iso = iso_at(self.clock())
        return Prepared(batch, self.model.plan(batch.changes, now_iso, grant.fence, unread), now_iso)

    def commit(self, prepared: Prepared, grant: Grant) -> Applied:
        """The writes of a :meth:`prepare`: what :meth:`apply` writes."""
        batch = prepared.batch
        if not batch:
            return Applied(events=batch.events)
        self._check(grant)
        with _fenced_off():  # a plan with no change writes nothing
            self.model.execute(prepared.plan)
        return self._after_changes(batch, prepared.now_iso)

    def _check(self, grant: Grant) -> None:
        if grant.fence is None or self.monotonic() >= grant.held_until:
            raise LeaseLost("the lease lapsed before the batch could be applied")

    def _after_changes(self, batch: Batch, now_iso: str) -> Applied:
        Durations.save(self.redis, self.layout, batch.learned)
        dead = 0
        if batch.rejected:
            dead = self.dead_letters.add(batch.rejected, self.collections, now_iso)
            for item in batch.rejected[:3]:
                log.warning("dead-lettered %s %s: %s", self.collections.get(item.kind), item.doc_id, item.reason)
        return Applied(events=batch.events, batches=1, dead_letters=dead)

    def checkpoint(self, token: Mapping[str, Any] | None, position: str, grant: Grant,
                   event_ms: int | None = None) -> Applied:
        """Store the resume point after the writes it covers, fenced by the grant's lease, and
        announce how far behind the source they were applied (``event_ms``: when the last
        covered event happened; None: caught up)."""
        if grant.fence is None:
            raise LeaseLost("no lease to checkpoint under")
        if masters(self.redis) != grant.masters:
            raise MastersChanged(f"the Redis masters changed since {grant.masters[:24]}...: not checkpointing")
        now_ms = int(self.clock() * 1000)
        lag_ms = 0 if event_ms is None else now_ms - event_ms
        if not self.checkpoints.save(token, position, grant.fence, now_ms, grant.masters, lag_ms):
            raise LeaseLost("the checkpoint write was fenced off")
        return Applied(checkpoint=Checkpoint(token, position, now_ms, grant.fence, grant.masters))

