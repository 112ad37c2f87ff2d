"""Change-stream cursors: where a stream starts, which entries it sees, how events look."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from . import tokens
from .cursors import MAX_BATCH_BYTES
from .errors import NON_RESUMABLE, CommandError, history_lost
from .events import invalidate_event, render, token_data
from .oplog import INVALIDATE, NOOP, RENAME, Entry
from .projection import stage_projector
from .query import compile_filter
from .store import Store

_SCAN_CHUNK = 4096
_STAGE_OPTIONS = {
    "fullDocument",
    "fullDocumentBeforeChange",
    "resumeAfter",
    "startAfter",
    "startAtOperationTime",
    "allChangesForCluster",
    "showExpandedEvents",
}
_TOKEN_MODIFIED = (
    "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. "
    "Modifying the _id field of an event makes it impossible to resume the stream from that point."
)
# Pre/post images (fullDocument required/whenAvailable, fullDocumentBeforeChange) and expanded
# events are not kept: nothing here asks for them (see docs/standin.md).
_FULL_DOCUMENT = {"default", "updateLookup"}


@dataclass(frozen=True)
class ChangeStreamOpen:
    """How a ``$changeStream`` aggregate asked to start (recorded for tests to assert on)."""

    db: str
    coll: str | None
    resume_after: dict | None
    start_after: dict | None
    start_at_operation_time: Timestamp | None
    full_document: str
    pipeline: list


def parse_stage(stage: Any) -> dict:
    """Validate the ``$changeStream`` stage's options."""
    if not isinstance(stage, Mapping):
        raise CommandError(2, "$changeStream stage must be an object")
    unknown = set(stage) - _STAGE_OPTIONS
    if unknown:
        raise CommandError(40415, f"unknown $changeStream option(s): {sorted(unknown)}")
    if sum(k in stage for k in ("resumeAfter", "startAfter", "startAtOperationTime")) > 1:
        raise CommandError(40674, "Only one type of resume option is allowed, but multiple were found.")
    if stage.get("fullDocument", "default") not in _FULL_DOCUMENT:
        raise CommandError(2, f"the stand-in supports fullDocument default and updateLookup only, not {stage['fullDocument']!r}")
    if stage.get("fullDocumentBeforeChange", "off") != "off":
        raise CommandError(2, "the stand-in keeps no pre-images: fullDocumentBeforeChange must be off")
    if stage.get("showExpandedEvents"):
        raise CommandError(2, "the stand-in does not produce expanded events (showExpandedEvents)")
    return dict(stage)


def compile_match(pipeline: list) -> Callable[[dict], dict | None] | None:
    """The stages after ``$changeStream``, in order: ``$match`` and ``$project`` stages.
    Returns a function giving the event as the pipeline leaves it, or None when a ``$match``
    drops it; None for an empty pipeline."""
    steps: list[Callable[[dict], dict | None]] = []
    for stage in pipeline:
        name = next(iter(stage), "?") if isinstance(stage, Mapping) else "?"
        if name == "$match" and len(stage) == 1:
            predicate = compile_filter(stage["$match"])
            steps.append(lambda event, p=predicate: event if p(event) else None)
        elif name == "$project" and len(stage) == 1:
            steps.append(stage_projector(stage["$project"]))
        else:
            raise CommandError(40324, f"the stand-in supports only $match and $project after $changeStream, not {name}")
    if not steps:
        return None

    def run(event: dict) -> dict | None:
        for step in steps:
            event = step(event)
            if event is None:
                return None
        return event

    return run


class ChangeStreamCursor:
    """An open change stream on a collection, a database (coll None) or the cluster (db None).

    Owner: the connection thread running its aggregate or getMore (one at a time).
    """

    awaits_data = True

    def __init__(self, store: Store, db: str | None, coll: str | None, stage: Mapping,
                 match: Callable[[dict], dict | None] | None) -> None:
        self._store = store
        self.db = db
        self.coll = coll
        self._match = match
        self._lookup = store.lookup if stage.get("fullDocument") == "updateLookup" else None
        # A client's event token still to be met before any later event is returned
        # (document_source_change_stream_ensure_resume_token_present.cpp).
        self._resume_check: tokens.TokenData | None = None
        # The post-batch resume token, and the cluster time it stands for: the token given to
        # resume from, else a high-water mark at the start (plan_executor_pipeline.cpp,
        # _initializeResumableScanState).
        self._pbrt, self._pbrt_time = self._start(stage)
        self._scanned_time = self._pbrt_time  # the cluster time of the latest oplog entry scanned
        self.alive = True
        self.last_used = time.monotonic()

    @property
    def namespace(self) -> str:
        if self.db is None:
            return "admin.$cmd.aggregate"
        return f"{self.db}.{self.coll}" if self.coll else f"{self.db}.$cmd.aggregate"

    def _start(self, stage: Mapping) -> tuple[dict, int]:
        """Sets the scan position; returns the initial post-batch token and its cluster time."""
        given = stage.get("resumeAfter", stage.get("startAfter"))
        if given is not None:
            data = tokens.parse(given)
            if data.from_invalidate and "resumeAfter" in stage:
                raise CommandError(260, "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                                        "from an invalidate notification.")
            if data.from_invalidate:
                self.position = data.event_position()  # start after the invalidating entry
            else:
                self.position = data.start_position()
                self._resume_check = None if data.is_high_water_mark else data
            pbrt, start_time = dict(given), data.cluster_time
        else:
            if "startAtOperationTime" in stage:
                at = stage["startAtOperationTime"]
                if not isinstance(at, Timestamp):
                    raise CommandError(14, "startAtOperationTime must be a Timestamp")
                start_time = tokens.to_int(at)
            else:
                # One tick after the last applied write (DocumentSourceChangeStream::
                # getStartTimeForNewStream, addTicks(1)), so the stream does not return it.
                start_time = self._store.cluster_time() + 1
            self.position = tokens.before(start_time)
            pbrt = tokens.high_water_mark(start_time)
        if self.position < self._store.earliest_resumable():
            raise history_lost()
        return pbrt, start_time

    def next_batch(self, limit: int, wait_seconds: float) -> list[RawBSONDocument]:
        """Up to ``limit`` matching events (and ~16 MB), waiting up to ``wait_seconds`` for the
        first one; a batch takes every event already there up to those limits.

        The post-batch token follows ``_performChangeStreamsAccounting`` in the server's
        plan_executor_pipeline.cpp: each event returned sets it to that event's ``_id``; when the
        scan runs out of entries it becomes a high-water mark only if the oplog scanned has moved
        past that token's cluster time. A batch that stops at ``limit`` or at the size limit ends
        on its last event's token.
        """
        self.last_used = time.monotonic()
        deadline = self.last_used + wait_seconds
        batch: list[RawBSONDocument] = []
        size = 0
        while self.alive:
            entries = self._store.wait_entries(self.position, deadline if not batch else 0.0, _SCAN_CHUNK)
            if not entries:
                if self._scanned_time > self._pbrt_time:
                    self._pbrt, self._pbrt_time = tokens.high_water_mark(self._scanned_time), self._scanned_time
                if batch or time.monotonic() >= deadline:
                    break
                continue
            for entry in entries:
                event = self._event(entry)
                if event is None:
                    self.position, self._scanned_time = entry.position, entry.cluster_time
                    continue
                raw = bson.encode(event)
                if batch and size + len(raw) > MAX_BATCH_BYTES:
                    return batch
                batch.append(RawBSONDocument(raw))
                size += len(raw)
                self.position, self._scanned_time = entry.position, entry.cluster_time
                self._pbrt, self._pbrt_time = event["_id"], entry.cluster_time
                if entry.op == INVALIDATE:
                    self.alive = False
                    break
                if len(batch) >= limit:
                    return batch
        self.last_used = time.monotonic()
        return batch

    def post_batch_resume_token(self) -> dict:
        return self._pbrt

    def _event(self, entry: Entry) -> dict | None:
        """The event this stream returns for an entry, or None when it returns none."""
        if not self._sees(entry):
            return None
        rendered = invalidate_event(entry) if entry.op == INVALIDATE else render(entry, self._lookup)
        token = rendered["_id"]
        event = self._match(rendered) if self._match is not None and entry.op != INVALIDATE else rendered
        if event is None:
            return None
        if self._resume_check is not None and not self._met_resume_point(entry):
            return None
        if event.get("_id") != token:
            raise CommandError(280, _TOKEN_MODIFIED, [NON_RESUMABLE])
        return event

    def _met_resume_point(self, entry: Entry) -> bool:
        """Whether an event after the client's resume token may be returned; events up to and
        including it are swallowed, and an event past it that was not preceded by it means the
        token names no event of this stream: 280 (ensure_resume_token_present.cpp)."""
        client = self._resume_check
        assert client is not None
        status = tokens.compare(token_data(entry), client)
        if status == tokens.CHECK_NEXT:
            return False
        if status == tokens.FOUND:
            self._resume_check = None
            return False
        event_id = tokens.event_token(entry.cluster_time, entry.index)
        raise CommandError(280, f"cannot resume stream; the resume token was not found. {event_id}", [NON_RESUMABLE])

    def _sees(self, entry: Entry) -> bool:
        if entry.op == NOOP:
            return False
        if entry.op == INVALIDATE:
            if self.db is None:
                return entry.db is None and entry.coll is None
            return (entry.db is None or entry.db == self.db) and (entry.coll is None or entry.coll == self.coll)
        if self.db is None:
            return True
        if entry.op == RENAME and self.coll is not None and entry.to == {"db": self.db, "coll": self.coll}:
            return True  # a rename onto this collection (metadata_notifications.js)
        return entry.db == self.db and (self.coll is None or entry.coll == self.coll)
