"""The capture loop: lease, resync, tail in batches, checkpoint, sweep, report.

One :meth:`Worker.step` is one unit of work (tests drive it directly); :meth:`Worker.run` loops
until :meth:`Worker.stop`. Every failure is handled the same way: drop the stream and reopen it
from the last checkpoint that was stored, which only ever covers writes already in Redis.

Redis writes run behind the loop (:mod:`.writebehind`): a batch's scripts and its checkpoint are
written, in order, while the next batch is read and normalized. A step driven on its own waits for
its writes (``step()``); :meth:`Worker.run` keeps one batch in flight (``step(wait=False)``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from tqdm import tqdm

from readmodel import LIVE, Change, ReadModel, TaskChange
from readmodel.connect import StoreError, masters

from .changes import ECONOMY, TASKS, Rejected, document_change, event_change, seq_of, superseded
from .checkpoint import Checkpoint, CheckpointStore
from .deadletters import DeadLetters
from .durations import Durations
from .health import State, Stats, publish
from .lease import Lease
from .metrics import Metrics
from .normalize import document_id, epoch_ms, iso, to_utc
from .reading import RESYNC_EVENTS, Stream
from .settings import Settings
from .source import Source, id_key, needs_resync, refuses_resume, token_position
from .verify_schedule import VerifySchedule
from .writebehind import WriteBehind

log = logging.getLogger(__name__)

EVERY_S = 1.0  # lease renewal, stale sweep, health report, idle checkpoint
SWEEP_CHUNK = 1000
# After Redis lost acknowledged writes, every user's version moves this far: further than the
# versions a user can have gone through in the replication lag a failover loses, so no version a
# client saw is handed out again for another state.
VERSION_JUMP = 1000


class LeaseLost(Exception):
    """Another process holds the lease now: stop applying."""


class Stopped(Exception):
    """Asked to stop in the middle of a long operation (a resync)."""


class MastersChanged(RedisError):
    """The Redis masters are not the ones the last writes went to (a failover or a restart):
    writes they acknowledged may be lost, so the next open resyncs."""


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
        self.model = ReadModel(redis, self.layout)
        self.source = Source(mongo, settings.mongo_db, settings.tasks_collection, settings.economy_collection,
                             batch_size=settings.batch_size)
        self.lease = Lease(redis, self.layout, holder, ttl_ms=lease_ttl_ms, monotonic=monotonic)
        self.checkpoints = CheckpointStore(redis, self.layout)
        self.dead_letters = DeadLetters(redis, self.layout, maxlen=settings.deadletter_max)
        self.durations = Durations()
        self.stats = Stats(holder=self.lease.holder)
        self.metrics: Metrics | None = None
        self.max_wait_s = max_wait_s
        self.progress = progress
        self.clock = clock  # wall time (s): positions, staleness, timestamps
        self.monotonic = monotonic  # intervals: lease renewal, chores, durations
        self.stream: Stream | None = None
        self.saved: Checkpoint | None = None
        self.masters = ""  # the Redis masters the writes since the last checkpoint went to
        self.backoff_s = 0.0
        self.caught_up = False  # the last read found nothing new
        self.writes = WriteBehind()
        self._stop = threading.Event()
        self._due = {"renew": 0.0, "periodic": 0.0}
        self._closed = False
        self.verify = VerifySchedule(self)  # scheduled verify and requested repairs (VERIFY_EVERY_S)

    # ------------------------------------------------------------ lifecycle

    def serve_metrics(self, port: int) -> None:
        self.metrics = Metrics(port, self.stats, f"{self.partition.index}/{self.partition.count}")

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

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

    # ------------------------------------------------------------ one step

    def step(self, wait: bool = True) -> State:
        """Hold the lease, (re)open the stream if needed, apply one batch, do periodic chores.
        With ``wait=False`` the batch's writes may still be running when it returns; a failure
        among them is raised (and handled) by a later step."""
        try:
            self.writes.check()
            if not self._ensure_lease():
                self.stats.state = State.STANDBY
                return State.STANDBY
            if self.stream is None:
                self._open()
            self._tail_once()
            if wait:
                self.writes.flush()
            self._periodic()
            self.backoff_s = 0.0
        except LeaseLost as exc:
            self._stand_by(exc)
        except Stopped:
            log.info("stopping in the middle of a resync; the next start resyncs again")
            self._drop_stream()
        except (PyMongoError, *StoreError) as exc:
            if needs_resync(exc) and self.stream is not None:
                self._safely_resync(f"the stream cannot continue: {exc}")
            else:
                self._failed(exc)
        return self.stats.state

    def _safely_resync(self, reason: str) -> None:
        try:
            self.resync(reason)
        except Stopped:
            self._drop_stream()
        except LeaseLost as exc:
            self._stand_by(exc)
        except (PyMongoError, *StoreError) as exc:
            self._failed(exc)

    def _stand_by(self, lost: LeaseLost) -> None:
        log.warning("lost the lease (%s): standing by", lost)
        self._drop_stream()
        self.lease.forget()
        self.stats.state = State.STANDBY

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.stats.error(message)
        self.backoff_s = min(5.0, self.backoff_s * 2 or 0.2)
        log.warning("%s; reopening from the last checkpoint in %.1f s", message, self.backoff_s)
        self._drop_stream()

    def _ensure_lease(self) -> bool:
        now = self.monotonic()
        if self.lease.token is not None and now < self._due["renew"] and self.lease.held():
            return True
        self._due["renew"] = now + EVERY_S
        if self.lease.token is not None:
            if self.lease.renew():
                return True
            log.warning("the lease was taken over: standing by")
            self._drop_stream()
            return False
        if not self.lease.acquire():
            return False
        log.info("leader now (holder %s, fencing token %d)", self.lease.holder, self.lease.token)
        self._drop_stream()
        self.durations = Durations.load(self.redis, self.layout)
        return True

    def _open(self) -> None:
        checkpoint = self.checkpoints.load()
        if checkpoint is None:
            self.resync("no checkpoint")
            return
        now = masters(self.redis)
        if checkpoint.masters and now != checkpoint.masters:
            # Asynchronous replication: the checkpoint may cover writes the new masters never got.
            self.resync("the Redis masters changed since the checkpoint (failover or restart): "
                        "writes they acknowledged may be lost", version_jump=VERSION_JUMP)
            return
        self.masters = now
        try:
            self.stream = self.source.open(checkpoint)
        except PyMongoError as exc:
            if not refuses_resume(exc):
                raise  # transient: retried from the same checkpoint
            self.resync(f"the server refuses to resume from the checkpoint ({type(exc).__name__}: {exc})")
            return
        self.saved = checkpoint
        self.stats.state = State.TAILING
        self.stats.position = checkpoint.position
        log.info("tailing from position %s", checkpoint.position)

    def _drop_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        failed = self.writes.settle()  # what is in flight lands (or fails) before anyone reopens
        if failed is not None:
            log.warning("a write behind the stream failed (%s: %s); the stream reopens from the last checkpoint",
                        type(failed).__name__, failed)

    # ------------------------------------------------------------ tailing

    def _tail_once(self) -> None:
        assert self.stream is not None
        taken = self.stream.take(self.settings.batch_size, self.max_wait_s)
        events, caught_up = taken.events, taken.caught_up
        self.caught_up = caught_up and not events
        changes: list[Change] = []
        rejected: list[Rejected] = []
        learned: dict[str, int] = {}
        resync_reason = None
        last_time = None
        last_wall_ms = None
        ends = next((i for i, event in enumerate(events) if event.get("operationType") in RESYNC_EVENTS), len(events))
        skip = superseded(events[:ends])
        for index, event in enumerate(events):
            operation = event.get("operationType")
            if operation in RESYNC_EVENTS:
                names = [(event.get(part) or {}).get("coll") for part in ("ns", "to")]
                resync_reason = f"{operation} event on {' -> '.join(n for n in names if n) or 'the database'}"
                break
            last_time = event.get("clusterTime") or last_time
            last_wall_ms = epoch_ms(to_utc(event.get("wallTime"))) or last_wall_ms
            if index in skip:
                continue  # a later event of this batch carries this document's newer state
            if not self._owns((event.get("documentKey") or {}).get("_id")):
                continue  # another partition's document
            change = event_change(event, self.source.kinds, self.settings.rules, self.durations)
            if change is None:
                continue
            if isinstance(change, Rejected):
                rejected.append(change)
            else:
                changes.append(change)
                learned.update(self.durations.learn([change]))  # a later live task in this batch benefits
        if rejected:
            rejected = self._with_full_documents(rejected)
        if resync_reason:
            self.writes.submit(lambda: self._apply(changes, rejected, len(events), learned))
            self.writes.flush()
            self.resync(resync_reason)
            return
        now_ms = self._now_ms()
        event_ms = None  # when the batch's last event (owned or not) happened at the source
        if last_time is not None:
            # wallTime has milliseconds; the cluster time only seconds.
            event_ms = last_wall_ms or last_time.time * 1000
            self.stats.lag_ms = max(0, now_ms - event_ms)
            self.stats.last_event_ms = event_ms
        elif caught_up:
            self.stats.lag_ms = 0
        token = taken.token
        position = token_position(token) or (seq_of(last_time) if last_time else None)
        position = position or (self.saved.position if self.saved else self.stream.start)
        idle_due = self.saved is None or now_ms - self.saved.at_ms >= EVERY_S * 1000
        if events or idle_due:
            fence = self.lease.token  # the lease this batch was read under, not whatever holds when it lands

            def write() -> None:
                self._apply(changes, rejected, len(events), learned)
                at_ms = self._now_ms()  # applied through `position` now, this far behind the source:
                self._checkpoint(token, position, at_ms, fence, 0 if event_ms is None else at_ms - event_ms)

            self.writes.submit(write)

    def _owns(self, doc_id: Any) -> bool:
        """Whether this process's partition owns the document (one whose id cannot be read is
        partition 0's, so that it is dead-lettered once)."""
        return self.partition.count == 1 or self.partition.owns(document_id(doc_id))

    def _with_full_documents(self, rejected: list[Rejected]) -> list[Rejected]:
        """Dead letters carry the whole document as it is now, not the stream's trimmed copy
        (kept when the document is gone by now or cannot be read)."""
        complete = []
        for kind in (TASKS, ECONOMY):
            items = [r for r in rejected if r.kind == kind]
            ids = [r.document["_id"] for r in items if isinstance(r.document, Mapping) and "_id" in r.document]
            try:
                found = self.source.full_documents(kind, ids) if ids else {}
            except PyMongoError as exc:
                log.warning("could not fetch rejected documents in full: %s", exc)
                found = {}
            for item in items:
                raw_id = item.document.get("_id") if isinstance(item.document, Mapping) else None
                full = found.get(id_key(raw_id))
                complete.append(item if full is None else replace(item, document=full))
        return complete

    def _apply(self, changes: list[Change], rejected: list[Rejected], events: int, learned: dict[str, int]) -> None:
        if not (changes or rejected or learned):
            self.stats.events_total += events
            return
        if not self.lease.held():
            raise LeaseLost("the lease lapsed before the batch could be applied")
        now_iso = self._now_iso()
        if changes:
            self.model.apply(changes, now_iso)
        Durations.save(self.redis, self.layout, learned)
        if rejected:
            self.stats.dead_letters += self.dead_letters.add(rejected, self.source.collections, now_iso)
            for item in rejected[:3]:
                log.warning("dead-lettered %s %s: %s", self.source.collections.get(item.kind), item.doc_id, item.reason)
        self.stats.events_total += events
        self.stats.batches_total += 1

    def _checkpoint(self, token: Mapping[str, Any] | None, position: str, now_ms: int, fence: int | None = None,
                    lag_ms: int | None = None) -> None:
        fence = self.lease.token if fence is None else fence
        if fence is None:
            raise LeaseLost("no lease to checkpoint under")
        if masters(self.redis) != self.masters:
            raise MastersChanged(f"the Redis masters changed since {self.masters[:24]}...: not checkpointing")
        if not self.checkpoints.save(token, position, fence, now_ms, self.masters, lag_ms):
            raise LeaseLost("the checkpoint write was fenced off")
        self.saved = Checkpoint(token, position, now_ms, fence, self.masters)
        self.stats.checkpoint_ms = now_ms
        self.stats.position = position

    # ------------------------------------------------------------ resync

    def resync(self, reason: str, version_jump: int = 0) -> None:
        """Rebuild the read model from the collections without ever emptying it for readers.

        The stream is opened first, so its start position P precedes the scan; scanned
        documents are written at P; whatever was not written at P or later is swept; tailing
        then continues from P, replaying whatever changed during the scan. ``version_jump``
        moves every user's version that far in the sweep (after Redis lost writes).
        """
        log.warning("resync: %s", reason)
        self.masters = masters(self.redis)
        self.stats.resyncs += 1
        self.stats.state = State.RESYNCING
        self._drop_stream()
        started = self.monotonic()
        self._report()
        stream = self.source.open(None)
        try:
            scanned = self._scan(stream.start)
            self.writes.flush()  # every scanned document is in Redis before the sweep looks
            self._keep_lease()
            users = list(self.model.known_users())
            now_ms, now_iso = self._now_ms(), self._now_iso()
            for i in range(0, len(users), SWEEP_CHUNK):
                self.model.sweep(now_ms, now_iso, users=users[i : i + SWEEP_CHUNK], min_seq=stream.start,
                                 version_jump=version_jump)
            self._checkpoint(stream.token, stream.start, self._now_ms())
        except BaseException:
            stream.close()
            raise
        self.stream = stream
        self.stats.state = State.TAILING
        self._report()
        log.info("resync done: %d documents, %d users checked, position %s, %.1f s",
                 scanned, len(users), stream.start, self.monotonic() - started)

    def _scan(self, seq: str) -> int:
        rules = self.settings.rules
        total = self.source.estimated_total()
        done = 0
        with tqdm(total=total, desc="resync", unit="doc", file=sys.stderr, disable=not self.progress,
                  mininterval=0.5, dynamic_ncols=True) as bar:
            for kind in (TASKS, ECONOMY):
                changes: list[Change] = []
                rejected: list[Rejected] = []
                learned: dict[str, int] = {}
                count = 0
                for doc in self.source.scan(kind):
                    count += 1
                    change = (document_change(kind, doc, doc.get("_id"), seq, self._now_ms(), rules, self.durations)
                              if self._owns(doc.get("_id")) else None)  # None: another partition's
                    if isinstance(change, Rejected):
                        rejected.append(change)
                    elif isinstance(change, TaskChange) and change.state != LIVE:
                        # Finished tasks: nothing to show (the sweep removes any earlier live state),
                        # but they teach typical durations.
                        learned.update(self.durations.learn([change]))
                    elif change is not None:
                        changes.append(change)
                    if count >= self.settings.batch_size:
                        self._scan_batch(changes, rejected, learned, count, bar)
                        done += count
                        changes, rejected, learned, count = [], [], {}, 0
                self._scan_batch(changes, rejected, learned, count, bar)
                done += count
        return done

    def _scan_batch(
        self, changes: list[Change], rejected: list[Rejected], learned: dict[str, int], count: int, bar: tqdm
    ) -> None:
        self._keep_lease()
        self.writes.submit(lambda: self._apply(changes, rejected, 0, learned))
        bar.update(count)
        self._periodic(sweep=False)

    def _keep_lease(self) -> None:
        if self._stop.is_set():
            raise Stopped()
        if self.monotonic() >= self._due["renew"] or not self.lease.held():
            self._due["renew"] = self.monotonic() + EVERY_S
            if not self.lease.renew():
                raise LeaseLost("taken over during a resync")

    # ------------------------------------------------------------ chores

    def _periodic(self, sweep: bool = True) -> None:
        now = self.monotonic()
        if now < self._due["periodic"]:
            return
        self._due["periodic"] = now + EVERY_S
        self.writes.flush()  # the sweep and the report come after the writes read so far
        self._report()
        if sweep and self.lease.held():
            self.model.sweep(self._now_ms(), self._now_iso())
            if self.redis.getdel(self.layout.resync_request) is not None:
                self.resync("requested by an operator")
            self.verify.tick()

    def _report(self) -> None:
        now_ms = self._now_ms()
        self.stats.update_rate(now_ms / 1000)
        publish(self.redis, self.layout, self.stats, now_ms)
        if self.metrics is not None:
            self.metrics.update(now_ms)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _now_iso(self) -> str:
        return iso(datetime.fromtimestamp(self.clock(), UTC)) or ""
