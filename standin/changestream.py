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
from .projection import stage_projector
from .query import compile_filter
from .store import DROP, DROP_DATABASE, INSERT, INVALIDATE, NOOP, RENAME, REPLACE, UPDATE, Entry, Store

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
    """An open change stream on a collection, a database (coll None) or the cluster (db None)."""

    awaits_data = True

    def __init__(self, store: Store, db: str | None, coll: str | None, stage: Mapping,
                 match: Callable[[dict], dict | None] | None) -> None:
        self._store = store
        self.db = db
        self.coll = coll
        self._match = match
        self._lookup = stage.get("fullDocument") == "updateLookup"
        self.position = self._start_position(stage)  # the last oplog entry scanned
        # The post-batch resume token and the oplog position it stands for: the token given to
        # resume from, else a high-water mark at the start (plan_executor_pipeline.cpp,
        # _initializeResumableScanState).
        given = stage.get("resumeAfter") or stage.get("startAfter")
        self._pbrt = dict(given) if given is not None else tokens.token(self.position, tokens.HIGH_WATER_MARK)
        self._pbrt_position = self.position
        self.alive = True
        self.last_used = time.monotonic()

    @property
    def namespace(self) -> str:
        if self.db is None:
            return "admin.$cmd.aggregate"
        return f"{self.db}.{self.coll}" if self.coll else f"{self.db}.$cmd.aggregate"

    def _start_position(self, stage: Mapping) -> int:
        if "resumeAfter" in stage:
            position, kind = tokens.parse_token(stage["resumeAfter"])
            if kind == tokens.INVALIDATE:
                raise CommandError(260, "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                                        "from an invalidate notification.")
        elif "startAfter" in stage:
            position, _ = tokens.parse_token(stage["startAfter"])
        elif "startAtOperationTime" in stage:
            at = stage["startAtOperationTime"]
            if not isinstance(at, Timestamp):
                raise CommandError(14, "startAtOperationTime must be a Timestamp")
            position = tokens.to_int(at) - 1
        else:
            return self._store.cluster_time()
        if position < self._store.earliest_resumable():
            raise history_lost()
        return position

    def next_batch(self, limit: int, wait_seconds: float) -> list[RawBSONDocument]:
        """Up to ``limit`` matching events (and ~16 MB), waiting up to ``wait_seconds`` for the
        first one; a batch takes every event already there up to those limits.

        The post-batch token follows ``_performChangeStreamsAccounting`` in the server's
        plan_executor_pipeline.cpp: each event returned sets it to that event's ``_id``; when the
        scan runs out of entries it becomes a high-water mark only if the oplog scanned has moved
        past that token. A batch that stops at ``limit`` or at the size limit ends on its last
        event's token.
        """
        self.last_used = time.monotonic()
        deadline = self.last_used + wait_seconds
        batch: list[RawBSONDocument] = []
        size = 0
        while self.alive:
            entries = self._store.wait_entries(self.position, deadline if not batch else 0.0, _SCAN_CHUNK)
            if not entries:
                if self.position > self._pbrt_position:
                    self._pbrt = tokens.token(self.position, tokens.HIGH_WATER_MARK)
                    self._pbrt_position = self.position
                if batch or time.monotonic() >= deadline:
                    break
                continue
            for entry in entries:
                if not self._sees(entry):
                    self.position = entry.position
                    continue
                if entry.op == INVALIDATE:
                    batch.append(RawBSONDocument(bson.encode(self._invalidate_event(entry))))
                    self.position = self._pbrt_position = entry.position
                    self._pbrt = tokens.token(entry.position, tokens.INVALIDATE)
                    self.alive = False
                    break
                event = self._render(entry)
                if self._match is not None:
                    token = event["_id"]
                    event = self._match(event)
                    if event is not None and event.get("_id") != token:
                        raise CommandError(280, _TOKEN_MODIFIED, [NON_RESUMABLE])
                if event is None:
                    self.position = entry.position
                    continue
                raw = bson.encode(event)
                if batch and size + len(raw) > MAX_BATCH_BYTES:
                    return batch
                batch.append(RawBSONDocument(raw))
                size += len(raw)
                self.position = self._pbrt_position = entry.position
                self._pbrt = event["_id"]
                if len(batch) >= limit:
                    return batch
        self.last_used = time.monotonic()
        return batch

    def post_batch_resume_token(self) -> dict:
        return self._pbrt

    def _sees(self, entry: Entry) -> bool:
        if entry.op == NOOP:
            return False
        if entry.op == INVALIDATE:
            if self.db is None:
                return entry.db is None and entry.coll is None
            return (entry.db is None or entry.db == self.db) and (entry.coll is None or entry.coll == self.coll)
        if self.db is None:
            return True
        return entry.db == self.db and (self.coll is None or entry.coll == self.coll)

    def _invalidate_event(self, entry: Entry) -> dict:
        return {
            "_id": tokens.token(entry.position, tokens.INVALIDATE),
            "operationType": INVALIDATE,
            "clusterTime": tokens.to_timestamp(entry.position),
            "wallTime": entry.wall,
        }

    def _render(self, entry: Entry) -> dict:
        op = entry.op
        event: dict = {
            "_id": tokens.token(entry.position),
            "operationType": op,
            "clusterTime": tokens.to_timestamp(entry.position),
            "wallTime": entry.wall,
        }
        if op == INSERT or op == REPLACE:
            event["fullDocument"] = entry.post
        elif op == UPDATE and self._lookup:
            event["fullDocument"] = self._store.lookup(entry.db, entry.coll, entry.key)
        if op == DROP_DATABASE:
            event["ns"] = {"db": entry.db}
        else:
            event["ns"] = {"db": entry.db, "coll": entry.coll}
        if op == RENAME:
            event["to"] = dict(entry.to)
        elif op != DROP and op != DROP_DATABASE:
            event["documentKey"] = {"_id": entry.key}
        if op == UPDATE:
            event["updateDescription"] = entry.description
        return event
