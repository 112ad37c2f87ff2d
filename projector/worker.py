"""The supervisor: the lease, the error policy and the chores around the pipeline's stages:
reading the stream (:mod:`.reading`), building a batch (:mod:`.batching`), tailing
(:mod:`.tailing`), writing behind (:mod:`.writebehind`, :mod:`.applying`), the resync (:mod:`.resync`).

One :meth:`Worker.step` is one unit of work (tests drive it directly); :meth:`Worker.run` loops
until :meth:`Worker.stop`. Every failure is handled the same way: drop the stream and reopen it
from the last checkpoint that was stored, which only ever covers writes already in Redis.

Who owns what: the worker's thread (the one calling :meth:`step`/:meth:`run`) owns every
attribute of :class:`Worker` and of its ``tailing`` (``stats``, ``stream``, ``durations``,
``masters``, ``backoff_s``, the last checkpoint, the lease object, the chore schedule). The writer
thread sees none of them: a job gets a batch and a frozen :class:`~.applying.Grant` when queued and
returns a frozen :class:`~.applying.Applied`, folded in on this thread by :meth:`_collect`.
``_stop`` is a ``threading.Event`` (set from a signal handler).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

from readmodel.connect import StoreError, masters
from readmodel.fences import Fenced
from readmodel.health import take_resync_request

from .applying import Applied, BatchWriter, Grant, MastersChanged
from .batching import owner
from .checkpoint import Checkpoint
from .durations import Durations
from .health import State, Stats, failure_message, publish
from .lease import Hold, Lease, LeaseLost
from .metrics import Metrics
from .reading import Stream
from .resync import Resync, Stopped
from .settings import Settings
from .source import Source, needs_resync
from .tailing import ResyncNeeded, Tailing
from .times import iso_at
from .verify_schedule import VerifySchedule
from .writebehind import WriteBehind

log = logging.getLogger(__name__)

EVERY_S = 1.0  # lease renewal, stale sweep, health report, idle checkpoint
class Worker:
    """The projector's capture loop over one Redis and one MongoDB database."""

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        mongo: Any,
        *,
        holder: str | None = None,
        lease_ttl_ms: int = 5000,
        max_wait_s: float = 0.25,
        progress: bool = True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.layout = settings.layout
        self.partition = settings.partition
        self.owns = owner(settings.partition)  # whether this partition owns a document id
        self.source = Source(mongo, settings.mongo_db, settings.tasks_collection, settings.economy_collection,
                             batch_size=settings.batch_size)
        self.writer = BatchWriter(redis, self.layout, self.source.collections, settings.deadletter_max,
                                  clock=clock, monotonic=monotonic, audit=settings.fence_audit)
        self.model = self.writer.model  # the sweeps run here, the batches on the writer thread
        self.checkpoints = self.writer.checkpoints
        self.lease = Lease(redis, self.layout, holder, ttl_ms=lease_ttl_ms, monotonic=monotonic, renew_every_s=EVERY_S,
                           audit=settings.fence_audit)
        self.durations = Durations()
        self.stats = Stats(holder=self.lease.holder)
        self.metrics: Metrics | None = None
        self.clock = clock  # wall time (s): positions, staleness, timestamps
        self.monotonic = monotonic  # intervals: lease renewal, chores, durations
        self.stream: Stream | None = None
        self.masters = ""  # the Redis masters the writes since the last checkpoint went to
        self.backoff_s = 0.0
        self._saved_at_failure: Checkpoint | None = None  # backoff ends once a checkpoint passes it
        self.writes = WriteBehind()
        self.tailing = Tailing(self.source, self.writer, self.writes, settings, self.owns, max_wait_s, clock)
        self.resyncer = Resync(self.source, self.model, self.writer, self.writes, settings.rules, settings.batch_size,
                               self.owns, self._grant, self._keep_lease, lambda: self._periodic(sweep=False),
                               clock=clock, progress=progress)
        self._stop = threading.Event()
        self._chores_due = 0.0
        self._closed = False
        self.verify = VerifySchedule(self)  # scheduled verify and requested repairs (VERIFY_EVERY_S)

    # ------------------------------------------------------------ lifecycle

    def serve_metrics(self, port: int) -> None:
        self.metrics = Metrics(port, self.stats, f"{self.partition.index}/{self.partition.count}")

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> Stats:
        """Loop until :meth:`stop`; returns the counters."""
        try:
            while not self._stop.is_set():
                state = self.step(wait=False)
                if state == State.STANDBY:
                    self._stop.wait(0.5)
                elif self.backoff_s:
                    self._stop.wait(self.backoff_s)
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Release the lease and the stream; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.verify.close()
        self._drop_stream()
        self.writes.close()
        self._collect()
        was_leader = self.lease.token is not None
        self.stats.state = State.STOPPED
        try:
            if was_leader:
                publish(self.redis, self.layout, self.stats, self._now_ms())
            self.lease.release()
        except StoreError as exc:
            log.warning("could not release the lease: %s", exc)
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        log.info("projector stopped: %s", self.stats.summary())

    # ------------------------------------------------------------ one step: the error policy

    def step(self, wait: bool = True) -> State:
        """Hold the lease, (re)open the stream if needed, apply one batch, do periodic chores.
        With ``wait=False`` the batch's writes may still be running when it returns; a failure
        among them is raised (and handled) by a later step."""
        try:
            self._collect()
            self.writes.check()
            if not self._ensure_lease():
                self.stats.state = State.STANDBY
                return State.STANDBY
            if self.stream is None:
                self._open()
            assert self.stream is not None
            self.tailing.step(self.stream, self.durations, self._grant(), self.stats)
            if wait:
                self.writes.flush()
                self._collect()
            self._periodic()
            if self.saved != self._saved_at_failure:
                # Writes land behind the loop: a step that raised nothing proves nothing yet (a write
                # of its batch may fail at the next step). A checkpoint stored since the failure does.
                self.backoff_s = 0.0
        except ResyncNeeded as need:
            self._safely_resync(need.reason, need.version_jump)
        except (LeaseLost, Fenced) as exc:  # Fenced: a sweep refused (a newer leader wrote)
            self._stand_by(exc)
        except Stopped:
            log.info("stopping in the middle of a resync; the next start resyncs again")
            self._drop_stream()
        except (PyMongoError, MastersChanged, *StoreError) as exc:
            if needs_resync(exc) and self.stream is not None:
                self._safely_resync(f"the stream cannot continue: {exc}")
            else:
                self._failed(exc)
        return self.stats.state

    def _safely_resync(self, reason: str, version_jump: int = 0) -> None:
        try:
            self.resync(reason, version_jump)
        except Stopped:
            self._drop_stream()
        except (LeaseLost, Fenced) as exc:  # Fenced: a sweep refused (a newer leader wrote)
            self._stand_by(exc)
        except (PyMongoError, MastersChanged, *StoreError) as exc:
            self._failed(exc)

    def _stand_by(self, lost: LeaseLost | Fenced) -> None:
        log.warning("lost the lease (%s): standing by", lost)
        self._drop_stream()
        self.lease.forget()
        self.stats.state = State.STANDBY

    def _failed(self, exc: BaseException) -> None:
        message = failure_message(exc)
        self._saved_at_failure = self.saved
        self.stats.error(message)
        self.backoff_s = min(5.0, self.backoff_s * 2 or 0.2)
        log.warning("%s; reopening from the last checkpoint in %.1f s", message, self.backoff_s)
        self._drop_stream()

    def _ensure_lease(self) -> bool:
        held = self.lease.hold()
        if held == Hold.TAKEN_OVER:
            log.warning("the lease was taken over: standing by")
            self._drop_stream()
        elif held == Hold.ACQUIRED:
            log.info("leader now (holder %s, fencing token %d)", self.lease.holder, self.lease.token)
            self._drop_stream()
            self.durations = Durations.load(self.redis, self.layout)
        return held in (Hold.KEPT, Hold.ACQUIRED)

    def _keep_lease(self) -> None:
        if self._stop.is_set():
            raise Stopped()
        self.lease.keep()

    def _grant(self) -> Grant:
        """The lease as it is now, for writes queued now (never read again by the writer)."""
        return Grant(self.lease.token, self.lease.held_until, self.masters)

    def _open(self) -> None:
        self.masters = masters(self.redis)
        self.stream = self.tailing.open(self.checkpoints.load(), self.masters)
        self.stats.state = State.TAILING
        self.stats.position = self.tailing.saved.position if self.tailing.saved else ""
        log.info("tailing from position %s", self.stats.position)

    def _drop_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        failed = self.writes.settle()  # what is in flight lands (or fails) before anyone reopens
        self._collect()
        if failed is not None:
            log.warning("a write behind the stream failed (%s: %s); the stream reopens from the last checkpoint",
                        type(failed).__name__, failed)

    def _collect(self, *extra: Applied) -> None:
        self.tailing.collect(self.stats, *extra)

    @property
    def saved(self) -> Checkpoint | None:
        """The last checkpoint stored (as the writer reported it)."""
        return self.tailing.saved

    @property
    def caught_up(self) -> bool:
        """Whether the last step ended on an empty getMore begun after it started."""
        return self.tailing.caught_up

    def resync(self, reason: str, version_jump: int = 0) -> None:
        """Rebuild the read model from the collections (:mod:`.resync`), then tail from there."""
        log.warning("resync: %s", reason)
        self.masters = masters(self.redis)
        self.stats.resyncs += 1
        self.stats.state = State.RESYNCING
        self._drop_stream()
        started = self.monotonic()
        self.report()
        rebuilt = self.resyncer.run(self.durations, version_jump)
        self._collect(rebuilt.applied)
        self.stream = rebuilt.stream
        self.stats.state = State.TAILING
        self.report()
        log.info("resync done: %d documents, %d users checked, position %s, %.1f s",
                 rebuilt.documents, rebuilt.users, rebuilt.stream.start, self.monotonic() - started)

    # ------------------------------------------------------------ chores

    def _periodic(self, sweep: bool = True) -> None:
        now = self.monotonic()
        if now < self._chores_due:
            return
        self._chores_due = now + EVERY_S
        self.writes.flush()  # the sweep and the report come after the writes read so far
        self._collect()
        self.report()
        if sweep and self.lease.held():
            self.model.sweep(self._now_ms(), iso_at(self.clock()), fence=self.lease.token)
            if take_resync_request(self.redis, self.layout):
                self.resync("requested by an operator")
            self.verify.tick()

    def report(self) -> None:
        """Publish the health hash (and metrics) now."""
        now_ms = self._now_ms()
        self.stats.update_rate(now_ms / 1000)
        publish(self.redis, self.layout, self.stats, now_ms)
        if self.metrics is not None:
            self.metrics.update(now_ms)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
