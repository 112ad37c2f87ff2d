"""Database commands: each request document becomes a reply document.

``Dispatcher.handle`` is the wire server's handler. It applies armed faults, runs the
command against the store, and stamps ``operationTime`` and ``$clusterTime`` on the reply.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bson import Binary, Int64, ObjectId

from . import errors, tokens
from .changestream import ChangeStreamCursor, ChangeStreamOpen, compile_match, parse_stage
from .cursors import FIRST_BATCH_SIZE, Cursors, QueryCursor, batch_size
from .errors import CommandError, DuplicateKey
from .faults import Fault, Faults
from .pipeline import run_pipeline
from .query import projector, resolve, sort_key
from .store import Store, WriteResult
from .wire import HANGUP

log = logging.getLogger(__name__)

MAX_WIRE_VERSION = 21  # MongoDB 7.0
UNLIMITED = 1 << 62
DEFAULT_AWAIT_SECONDS = 1.0
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
_SIGNATURE = {"hash": Binary(b"\x00" * 20), "keyId": Int64(0)}


class Dispatcher:
    """Runs commands against a store; records what tests want to assert on."""

    def __init__(self, store: Store, faults: Faults, *, replica_set: str = "rs0") -> None:
        self.store = store
        self.faults = faults
        self.cursors = Cursors()
        self.replica_set = replica_set
        self.host = "127.0.0.1:27017"
        self._stats_lock = threading.Lock()
        self.command_counts: Counter[str] = Counter()
        self.change_stream_opens: list[ChangeStreamOpen] = []
        self._handlers = {
            "hello": self.hello,
            "isMaster": self.hello,
            "ismaster": self.hello,
            "ping": self.ok,
            "endSessions": self.ok,
            "buildInfo": self.build_info,
            "buildinfo": self.build_info,
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "findAndModify": self.find_and_modify,
            "findandmodify": self.find_and_modify,
            "find": self.find,
            "getMore": self.get_more,
            "killCursors": self.kill_cursors,
            "count": self.count,
            "distinct": self.distinct,
            "aggregate": self.aggregate,
            "listCollections": self.list_collections,
            "listDatabases": self.list_databases,
            "listIndexes": self.list_indexes,
            "create": self.create,
            "createIndexes": self.create_indexes,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
        }

    # ------------------------------------------------------------ dispatch

    def handle(self, request: Any) -> Any:
        """The reply document for a request, ``HANGUP``, or None for no reply."""
        if not getattr(request, "is_command", False):
            return HANGUP  # legacy OP_QUERY/OP_GET_MORE/OP_INSERT...: not spoken by pymongo 4
        command = request.doc
        name = next(iter(command), "")
        db = command.get("$db") or request.namespace or "admin"
        with self._stats_lock:
            self.command_counts[name] += 1
        fault = self.faults.take(name)
        if fault is not None and fault.code is None:
            return HANGUP
        try:
            if fault is not None:
                raise self._fault_error(fault, name, command)
            if "startTransaction" in command:
                raise CommandError(20, "transactions are not supported by the stand-in")
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError(59, f"no such command: '{name}'")
            reply = handler(command, db)
        except CommandError as error:
            reply = error.reply()
        except Exception as error:  # a bug here must not kill the connection thread
            log.exception("stand-in failed on %s", name)
            reply = CommandError(1, f"stand-in internal error in {name}: {error!r}").reply()
        reply.setdefault("ok", 1.0)
        now = tokens.to_timestamp(self.store.cluster_time())
        reply["operationTime"] = now
        reply["$clusterTime"] = {"clusterTime": now, "signature": _SIGNATURE}
        return reply

    def _fault_error(self, fault: Fault, name: str, command: Mapping) -> CommandError:
        labels = fault.labels
        if labels is None:
            labels = []
            if fault.code == 286:
                labels = [errors.NON_RESUMABLE]
            elif name in WRITE_COMMANDS and fault.code in errors.RETRYABLE_WRITE_CODES:
                labels = [errors.RETRYABLE_WRITE]
            elif name == "getMore" and fault.code in errors.RESUMABLE_CHANGE_STREAM_CODES:
                if isinstance(self.cursors.peek(command.get("getMore")), ChangeStreamCursor):
                    labels = [errors.RESUMABLE]
        message = fault.message or f"stand-in injected failure of {name}"
        return CommandError(fault.code, message, labels)

    def record_open(self, opened: ChangeStreamOpen) -> None:
        with self._stats_lock:
            self.change_stream_opens.append(opened)

    def opens(self) -> list[ChangeStreamOpen]:
        with self._stats_lock:
            return list(self.change_stream_opens)

    def count_of(self, name: str) -> int:
        with self._stats_lock:
            return self.command_counts[name]

    # ------------------------------------------------------------ handshake and admin

    def hello(self, command: Mapping, db: str) -> dict:
        # No topologyVersion: clients then poll hello instead of expecting a streaming one.
        reply: dict = {"isWritablePrimary" if "hello" in command else "ismaster": True}
        if command.get("helloOk"):
            reply["helloOk"] = True
        reply.update(
            {
                "hosts": [self.host],
                "setName": self.replica_set,
                "setVersion": 1,
                "primary": self.host,
                "me": self.host,
                "electionId": ObjectId("7fffffff0000000000000001"),
                "secondary": False,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000,
                "localTime": datetime.now(timezone.utc),
                "logicalSessionTimeoutMinutes": 30,
                "minWireVersion": 0,
                "maxWireVersion": MAX_WIRE_VERSION,
                "readOnly": False,
            }
        )
        return reply

    def ok(self, command: Mapping, db: str) -> dict:
        return {}

    def build_info(self, command: Mapping, db: str) -> dict:
        return {
            "version": "7.0.0",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "standin",
            "bits": 64,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "storageEngines": ["standin"],
            "standin": True,
        }

    # ------------------------------------------------------------ writes

    def insert(self, command: Mapping, db: str) -> dict:
        result = self.store.insert(db, command["insert"], command.get("documents", []), command.get("ordered", True))
        return _write_reply(result)

    def update(self, command: Mapping, db: str) -> dict:
        for statement in command.get("updates", []):
            if statement.get("arrayFilters"):
                raise CommandError(72, "arrayFilters are not supported by the stand-in")
        result = self.store.update(db, command["update"], command.get("updates", []), command.get("ordered", True))
        reply = _write_reply(result)
        reply["nModified"] = result.modified
        if result.upserted:
            reply["upserted"] = [{"index": i, "_id": _id} for i, _id in result.upserted]
        return reply

    def delete(self, command: Mapping, db: str) -> dict:
        result = self.store.delete(db, command["delete"], command.get("deletes", []), command.get("ordered", True))
        return _write_reply(result)

    def find_and_modify(self, command: Mapping, db: str) -> dict:
        coll = command.get("findAndModify", command.get("findandmodify"))
        remove = bool(command.get("remove"))
        if not remove and command.get("update") is None:
            raise CommandError(9, "Either an update or remove=true must be specified")
        before, after, upserted = self.store.find_and_modify(
            db,
            coll,
            command.get("query"),
            sort=command.get("sort"),
            update=command.get("update"),
            remove=remove,
            upsert=bool(command.get("upsert")),
        )
        value = after if command.get("new") and not remove else before
        project = projector(command.get("fields"))
        if value is not None and project:
            value = project(value)
        last_error: dict = {"n": int(before is not None or upserted is not None)}
        if not remove:
            last_error["updatedExisting"] = before is not None
            if upserted is not None:
                last_error["upserted"] = upserted
        return {"lastErrorObject": last_error, "value": value}

    def drop(self, command: Mapping, db: str) -> dict:
        coll = command["drop"]
        if not self.store.drop(db, coll):
            raise CommandError(26, "ns not found")
        return {"ns": f"{db}.{coll}", "nIndexesWas": 1}

    def drop_database(self, command: Mapping, db: str) -> dict:
        self.store.drop_database(db)
        return {"dropped": db}

    def create(self, command: Mapping, db: str) -> dict:
        if not self.store.create(db, command["create"]):
            raise CommandError(48, f"Collection already exists. NS: {db}.{command['create']}")
        return {}

    def create_indexes(self, command: Mapping, db: str) -> dict:
        created = self.store.create(db, command["createIndexes"])
        return {"numIndexesBefore": 1, "numIndexesAfter": 1, "createdCollectionAutomatically": created,
                "note": "the stand-in keeps no secondary indexes"}

    # ------------------------------------------------------------ reads

    def find(self, command: Mapping, db: str) -> dict:
        coll = command["find"]
        docs = self.store.find(db, coll, command.get("filter"), command.get("sort"))
        skip, limit = int(command.get("skip") or 0), int(command.get("limit") or 0)
        if skip:
            docs = docs[skip:]
        if limit:
            docs = docs[: abs(limit)]
        cursor = QueryCursor(f"{db}.{coll}", docs, projector(command.get("projection")))
        first = cursor.next_batch(batch_size(command.get("batchSize"), FIRST_BATCH_SIZE))
        single = command.get("singleBatch") or limit < 0
        return self._cursor_reply(cursor, "firstBatch", first, single)

    def get_more(self, command: Mapping, db: str) -> dict:
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

    def kill_cursors(self, command: Mapping, db: str) -> dict:
        killed, missing = [], []
        for cursor_id in command.get("cursors", []):
            (killed if self.cursors.remove(cursor_id) else missing).append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": []}

    def count(self, command: Mapping, db: str) -> dict:
        docs = self.store.find(db, command["count"], command.get("query"))
        skip, limit = int(command.get("skip") or 0), abs(int(command.get("limit") or 0))
        n = max(0, len(docs) - skip)
        return {"n": min(n, limit) if limit else n}

    def distinct(self, command: Mapping, db: str) -> dict:
        parts = command["key"].split(".")
        seen: dict = {}
        for doc in self.store.find(db, command["distinct"], command.get("query")):
            for value in resolve(doc, parts):
                for item in value if isinstance(value, list) else [value]:
                    seen.setdefault(sort_key(item), item)
        return {"values": list(seen.values())}

    def aggregate(self, command: Mapping, db: str) -> dict:
        pipeline = command.get("pipeline", [])
        target = command["aggregate"]
        if pipeline and isinstance(pipeline[0], Mapping) and "$changeStream" in pipeline[0]:
            return self._open_change_stream(command, db, target, pipeline)
        if not isinstance(target, str):
            raise CommandError(73, "the stand-in supports database-level aggregate only for $changeStream")
        docs = run_pipeline(self.store.find(db, target), pipeline)
        cursor = QueryCursor(f"{db}.{target}", docs)
        first = cursor.next_batch(batch_size(command.get("cursor", {}).get("batchSize"), FIRST_BATCH_SIZE))
        return self._cursor_reply(cursor, "firstBatch", first, False)

    def _open_change_stream(self, command: Mapping, db: str, target: Any, pipeline: list) -> dict:
        stage = parse_stage(pipeline[0]["$changeStream"])
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
        self.record_open(
            ChangeStreamOpen(
                db=db,
                coll=scope_coll,
                resume_after=stage.get("resumeAfter"),
                start_after=stage.get("startAfter"),
                start_at_operation_time=stage.get("startAtOperationTime"),
                full_document=stage.get("fullDocument", "default"),
                pipeline=list(pipeline[1:]),
            )
        )
        cursor = ChangeStreamCursor(self.store, scope_db, scope_coll, stage, match)
        limit = batch_size(command.get("cursor", {}).get("batchSize"), FIRST_BATCH_SIZE)
        first = cursor.next_batch(limit, 0.0) if limit else []
        reply = self._cursor_reply(cursor, "firstBatch", first, False)
        reply["cursor"]["postBatchResumeToken"] = cursor.post_batch_resume_token()
        return reply

    def list_collections(self, command: Mapping, db: str) -> dict:
        infos = [
            {"name": name, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for name in self.store.collection_names(db)
        ]
        docs = run_pipeline(infos, [{"$match": command.get("filter") or {}}])
        if command.get("nameOnly"):
            docs = [{"name": d["name"], "type": d["type"]} for d in docs]
        return self._cursor_reply(QueryCursor(f"{db}.$cmd.listCollections", docs), "firstBatch", docs, True)

    def list_databases(self, command: Mapping, db: str) -> dict:
        names = self.store.database_names()
        if command.get("nameOnly"):
            return {"databases": [{"name": n} for n in names]}
        return {"databases": [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names], "totalSize": 0}

    def list_indexes(self, command: Mapping, db: str) -> dict:
        coll = command["listIndexes"]
        if coll not in self.store.collection_names(db):
            raise CommandError(26, f"ns does not exist: {db}.{coll}")
        docs = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
        return self._cursor_reply(QueryCursor(f"{db}.{coll}", docs), "firstBatch", docs, True)

    def _cursor_reply(self, cursor: Any, field: str, batch: list, single_batch: bool) -> dict:
        cursor_id = 0
        if cursor.alive and not single_batch:
            cursor_id = self.cursors.add(cursor)
        return {"cursor": {field: batch, "id": Int64(cursor_id), "ns": cursor.namespace}}


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
