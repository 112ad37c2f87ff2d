"""Data commands: writes, queries, cursors, aggregates and opening change streams."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bson import Int64

from .changestream import ChangeStreamCursor, ChangeStreamOpen, compile_match, parse_stage
from .cursors import FIRST_BATCH_SIZE, Cursors, QueryCursor, batch_size, cursor_reply
from .errors import CommandError, DuplicateKey
from .findmodify import distinct, find_and_modify
from .pipeline import run_pipeline
from .projection import stage_projector
from .store import Store
from .transactions import check_open
from .writes import WriteResult

UNLIMITED = 1 << 62
DEFAULT_AWAIT_SECONDS = 1.0  # a server's default wait for a tailable getMore without maxTimeMS


class DataCommands:
    """Handlers for the commands that read and write documents."""

    def __init__(self, store: Store, cursors: Cursors, on_change_stream: Callable[[ChangeStreamOpen], None]) -> None:
        self.store = store
        self.cursors = cursors
        self._on_change_stream = on_change_stream

    def handlers(self) -> dict[str, Callable[..., dict]]:
        return {
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "find": self.find,
            "getMore": self.get_more,
            "killCursors": self.kill_cursors,
            "count": self.count,
            "aggregate": self.aggregate,
            "findAndModify": self.find_and_modify,
            "findandmodify": self.find_and_modify,
            "distinct": self.distinct,
        }

    def _check(self, txn: Any, name: str) -> None:
        if txn is not None:
            check_open(txn, name)

    # ------------------------------------------------------------ writes

    def insert(self, command: Mapping, db: str, txn: Any = None) -> dict:
        self._check(txn, "insert")
        result = self.store.insert(db, command["insert"], command.get("documents", []), command.get("ordered", True), txn)
        return _write_reply(result)

    def update(self, command: Mapping, db: str, txn: Any = None) -> dict:
        for statement in command.get("updates", []):
            if statement.get("arrayFilters"):
                raise CommandError(72, "arrayFilters are not supported by the stand-in")
        self._check(txn, "update")
        result = self.store.update(db, command["update"], command.get("updates", []), command.get("ordered", True), txn)
        reply = _write_reply(result)
        reply["nModified"] = result.modified
        if result.upserted:
            reply["upserted"] = [{"index": i, "_id": _id} for i, _id in result.upserted]
        return reply

    def delete(self, command: Mapping, db: str, txn: Any = None) -> dict:
        self._check(txn, "delete")
        result = self.store.delete(db, command["delete"], command.get("deletes", []), command.get("ordered", True), txn)
        return _write_reply(result)

    # ------------------------------------------------------------ reads

    def find(self, command: Mapping, db: str, txn: Any = None) -> dict:
        coll = command["find"]
        self._check(txn, "find")
        docs = self.store.find(db, coll, command.get("filter"), command.get("sort"), txn)
        skip, limit = int(command.get("skip") or 0), int(command.get("limit") or 0)
        if skip:
            docs = docs[skip:]
        if limit:
            docs = docs[: abs(limit)]
        projection = command.get("projection")
        cursor = QueryCursor(f"{db}.{coll}", docs, stage_projector(projection) if projection else None)
        first = cursor.next_batch(batch_size(command.get("batchSize"), FIRST_BATCH_SIZE))
        single = command.get("singleBatch") or limit < 0
        return cursor_reply(self.cursors, cursor, "firstBatch", first, single)

    def get_more(self, command: Mapping, db: str, txn: Any = None) -> dict:
        cursor_id = command["getMore"]
        cursor = self.cursors.get(cursor_id)
        limit = batch_size(command.get("batchSize"), UNLIMITED) or UNLIMITED
        if isinstance(cursor, ChangeStreamCursor):
            max_time_ms = command.get("maxTimeMS")
            wait = max_time_ms / 1000 if max_time_ms else DEFAULT_AWAIT_SECONDS
            try:
                batch = cursor.next_batch(limit, wait)
            except CommandError:
                self.cursors.remove(cursor_id)
                raise
        else:
            batch = cursor.next_batch(limit)
        if not cursor.alive:
            self.cursors.remove(cursor_id)
        reply = {"cursor": {"nextBatch": batch, "id": Int64(cursor_id if cursor.alive else 0), "ns": cursor.namespace}}
        if isinstance(cursor, ChangeStreamCursor):
            reply["cursor"]["postBatchResumeToken"] = cursor.post_batch_resume_token()
        return reply

    def find_and_modify(self, command: Mapping, db: str, txn: Any = None) -> dict:
        self._check(txn, "findAndModify")
        coll = command.get("findAndModify", command.get("findandmodify"))
        reply = self.store.write(txn, lambda view: find_and_modify(view, db, coll, command))
        fields = command.get("fields")
        if fields and reply["value"] is not None:
            reply["value"] = stage_projector(fields)(reply["value"])
        return reply

    def distinct(self, command: Mapping, db: str, txn: Any = None) -> dict:
        self._check(txn, "distinct")
        return {"values": distinct(self.store.find(db, command["distinct"], command.get("query"), txn=txn), command.get("key"))}

    def kill_cursors(self, command: Mapping, db: str, txn: Any = None) -> dict:
        killed, missing = [], []
        for cursor_id in command.get("cursors", []):
            (killed if self.cursors.remove(cursor_id) else missing).append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": []}

    def count(self, command: Mapping, db: str, txn: Any = None) -> dict:
        self._check(txn, "count")
        docs = self.store.find(db, command["count"], command.get("query"), txn=txn)
        skip, limit = int(command.get("skip") or 0), abs(int(command.get("limit") or 0))
        n = max(0, len(docs) - skip)
        return {"n": min(n, limit) if limit else n}

    def aggregate(self, command: Mapping, db: str, txn: Any = None) -> dict:
        pipeline = command.get("pipeline", [])
        target = command["aggregate"]
        if pipeline and isinstance(pipeline[0], Mapping) and "$changeStream" in pipeline[0]:
            if txn is not None:
                raise CommandError(263, "Cannot run a $changeStream aggregate in a multi-document transaction.")
            return self._open_change_stream(command, db, target, pipeline)
        self._check(txn, "aggregate")
        if not isinstance(target, str):
            raise CommandError(73, "the stand-in supports database-level aggregate only for $changeStream")
        out = _out_stage(pipeline)
        if out is not None:
            if txn is not None:
                raise CommandError(263, "Cannot run $out in a multi-document transaction.")
            self.store.replace_collection(db, out, run_pipeline(self.store.find(db, target), pipeline[:-1]))
            return {"cursor": {"firstBatch": [], "id": Int64(0), "ns": f"{db}.{target}"}}
        docs = run_pipeline(self.store.find(db, target, txn=txn), pipeline)
        cursor = QueryCursor(f"{db}.{target}", docs)
        first = cursor.next_batch(batch_size(command.get("cursor", {}).get("batchSize"), FIRST_BATCH_SIZE))
        return cursor_reply(self.cursors, cursor, "firstBatch", first, False)

    def _open_change_stream(self, command: Mapping, db: str, target: Any, pipeline: list) -> dict:
        stage = parse_stage(pipeline[0]["$changeStream"])
        level = (command.get("readConcern") or {}).get("level")
        if level not in (None, "majority"):
            raise CommandError(72, f"$changeStream supports only readConcern level majority, not {level!r}")
        match = compile_match(pipeline[1:])
        if stage.get("allChangesForCluster"):
            if db != "admin" or target != 1:
                raise CommandError(73, "allChangesForCluster requires aggregate: 1 on the admin database")
            scope_db, scope_coll = None, None
        elif target == 1:
            scope_db, scope_coll = db, None
        elif isinstance(target, str):
            scope_db, scope_coll = db, target
        else:
            raise CommandError(2, f"bad aggregate target {target!r}")
        self._on_change_stream(
            ChangeStreamOpen(
                db=db,
                coll=scope_coll,
                resume_after=_plain(stage.get("resumeAfter")),
                start_after=_plain(stage.get("startAfter")),
                start_at_operation_time=stage.get("startAtOperationTime"),
                full_document=stage.get("fullDocument", "default"),
                pipeline=list(pipeline[1:]),
            )
        )
        cursor = ChangeStreamCursor(self.store, scope_db, scope_coll, stage, match)
        limit = batch_size(command.get("cursor", {}).get("batchSize"), FIRST_BATCH_SIZE)
        first = cursor.next_batch(limit, 0.0) if limit else []
        reply = cursor_reply(self.cursors, cursor, "firstBatch", first, False)
        reply["cursor"]["postBatchResumeToken"] = cursor.post_batch_resume_token()
        return reply


def _out_stage(pipeline: list) -> str | None:
    """The target of a final ``{"$out": "collection"}`` stage (same database only)."""
    last = pipeline[-1] if pipeline else None
    if not (isinstance(last, Mapping) and "$out" in last):
        return None
    if not isinstance(last["$out"], str):
        raise CommandError(2, "the stand-in supports $out to a collection of the same database only")
    return last["$out"]


def _plain(token: Mapping | None) -> dict | None:
    return dict(token) if token is not None else None


def _write_reply(result: WriteResult) -> dict:
    reply: dict = {"n": result.n}
    if result.errors:
        reply["writeErrors"] = [_write_error(index, error) for index, error in result.errors]
    return reply


def _write_error(index: int, error: CommandError) -> dict:
    doc = {"index": index, "code": error.code, "errmsg": error.message}
    if isinstance(error, DuplicateKey):
        doc["keyPattern"] = {"_id": 1}
        doc["keyValue"] = error.key_value
    return doc
