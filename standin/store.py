"""In-memory databases, collections and the oplog every write appends to.

Thread-safe: one lock guards the data and the oplog; ``changed`` (a Condition on that lock)
wakes change-stream readers when the oplog grows. Stored documents are immutable (updates
are copy-on-write, see ``update.py``), so readers may keep and encode them without the lock.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from .errors import RESUMABLE, CommandError, DuplicateKey, history_lost
from .projection import sort_documents
from .query import compile_filter
from .update import apply_operators, apply_replacement, ensure_id, is_operator_update, same_value, seed_from_filter
from .values import id_key

INSERT, UPDATE, REPLACE, DELETE = "insert", "update", "replace", "delete"
DROP, DROP_DATABASE, RENAME, INVALIDATE = "drop", "dropDatabase", "rename", "invalidate"
NOOP = "noop"  # an oplog entry no stream shows: the server's periodic no-op write
NOOP_INTERVAL_SECONDS = 10.0  # the server's periodicNoopIntervalSecs default (a startup parameter)


class Entry:
    """One oplog entry: a change event before it is rendered for a particular stream.

    ``db``/``coll`` of an invalidate entry name the streams it invalidates (None = any).
    """

    __slots__ = ("coll", "db", "description", "key", "op", "position", "post", "to", "wall")

    def __init__(self, position, op, db, coll, key=None, post=None, description=None, wall=None, to=None):
        self.position = position
        self.op = op
        self.db = db
        self.coll = coll
        self.key = key
        self.post = post  # the inserted or replacing document
        self.description = description
        self.wall = wall
        self.to = to


@dataclass
class WriteResult:
    """Outcome of a batch of write statements, shaped like a write command's reply."""

    n: int = 0
    modified: int = 0
    upserted: list = field(default_factory=list)  # (statement index, _id)
    errors: list = field(default_factory=list)  # (statement index, CommandError)


class Store:
    """Databases -> collections -> documents by _id, plus the oplog."""

    def __init__(
        self,
        *,
        oplog_limit: int | None = None,
        clock: Callable[[], float] = time.time,
        noop_interval: float = NOOP_INTERVAL_SECONDS,
    ) -> None:
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._clock = clock
        self._dbs: dict[str, dict[str, dict]] = {}
        self._position = int(clock()) << 32
        self._last_write = clock()
        self._noop_interval = noop_interval
        self._lost_upto = self._position - 1  # history at or before this position is gone
        self._log: list[Entry] = []
        self._log_positions: list[int] = []
        self._oplog_limit = oplog_limit
        self.closed = False

    # ------------------------------------------------------------ time and the oplog

    def cluster_time(self) -> int:
        """The position of the latest oplog entry (a write or the periodic no-op)."""
        return self._position

    def _tick(self) -> tuple[int, datetime]:
        now = self._clock()
        self._last_write = now
        seconds = int(now)
        if seconds > self._position >> 32:
            self._position = seconds << 32 | 1
        else:
            self._position += 1
        # naive UTC: encodes faster than an aware datetime and decodes the same
        return self._position, datetime.fromtimestamp(now, UTC).replace(tzinfo=None)

    def _append(self, op: str, db: str | None, coll: str | None, **fields: Any) -> Entry:
        position, wall = self._tick()
        entry = Entry(position, op, db, coll, wall=wall, **fields)
        self._log.append(entry)
        self._log_positions.append(position)
        if self._oplog_limit and len(self._log) > self._oplog_limit:
            drop = len(self._log) - self._oplog_limit + max(1, self._oplog_limit // 10)
            self._forget(drop)
        return entry

    def _forget(self, count: int) -> None:
        if count <= 0:
            return
        self._lost_upto = max(self._lost_upto, self._log_positions[count - 1])
        del self._log[:count]
        del self._log_positions[:count]

    def earliest_resumable(self) -> int:
        """Resuming after a position older than this one fails with ChangeStreamHistoryLost."""
        return self._lost_upto

    def wait_entries(self, after: int, deadline: float, limit: int) -> list[Entry]:
        """Oplog entries after ``after`` (at most ``limit``), waiting until ``deadline`` for one.

        A wait that ends with nothing new writes the server's periodic no-op first when the oplog
        has been idle for the no-op interval: an idle stream's post-batch token advances
        only when the oplog does, as on a replica set (whose primary writes that no-op).
        """
        with self.changed:
            while True:
                if self.closed:
                    raise CommandError(11600, "interrupted at shutdown", [RESUMABLE])
                if after < self._lost_upto:
                    raise history_lost()
                index = bisect.bisect_right(self._log_positions, after)
                if index < len(self._log):
                    return self._log[index : index + limit]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if self._clock() - self._last_write < self._noop_interval:
                        return []
                    self._append(NOOP, None, None)
                    self.changed.notify_all()
                    continue
                self.changed.wait(remaining)

    def truncate_history(self) -> int:
        """Forget the oplog up to now; returns the position history now starts after."""
        with self._lock:
            self._forget(len(self._log))
            self._lost_upto = self._position
            return self._position

    def invalidate(self, db: str | None = None, coll: str | None = None) -> None:
        """Invalidate open streams on ``db`` (all if None) / on ``coll`` only if given."""
        with self.changed:
            self._append(INVALIDATE, db, coll)
            self.changed.notify_all()

    def close(self) -> None:
        """Wake every waiting reader and make further waits return at once."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    # ------------------------------------------------------------ reads

    def lookup(self, db: str, coll: str, _id: Any) -> dict | None:
        """The current document with this _id, without taking the lock."""
        return self._dbs.get(db, {}).get(coll, {}).get(id_key(_id))

    def find(self, db: str, coll: str, filter_doc: Mapping | None = None, sort: Mapping | None = None) -> list[dict]:
        """Matching documents (shared, immutable) in natural or ``sort`` order."""
        predicate = compile_filter(filter_doc)
        with self._lock:
            docs = self._dbs.get(db, {}).get(coll)
            if not docs:
                return []
            found = [doc for doc in self._candidates(docs, filter_doc) if predicate(doc)]
        return sort_documents(found, sort)

    def collection_names(self, db: str) -> list[str]:
        with self._lock:
            return list(self._dbs.get(db, {}))

    @staticmethod
    def _candidates(docs: dict, filter_doc: Mapping | None) -> Iterable[dict]:
        """Documents that may match: a direct lookup when the filter pins ``_id``."""
        if not filter_doc or "_id" not in filter_doc:
            return list(docs.values())
        cond = filter_doc["_id"]
        if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
            if list(cond) == ["$in"] and isinstance(cond["$in"], list):
                keys = dict.fromkeys(id_key(v) for v in cond["$in"])  # embedded documents are _ids too
                return [docs[k] for k in keys if k in docs]
            else:
                return list(docs.values())
        doc = docs.get(id_key(cond))
        return [doc] if doc is not None else []

    # ------------------------------------------------------------ writes

    def _collection(self, db: str, coll: str) -> dict:
        return self._dbs.setdefault(db, {}).setdefault(coll, {})

    def _insert_one(self, db: str, coll: str, doc: dict) -> Any:
        doc = ensure_id(doc)
        _id = doc["_id"]
        if isinstance(_id, list):
            raise CommandError(2, "can't use an array for _id")
        key = id_key(_id)
        docs = self._collection(db, coll)
        if key in docs:
            raise DuplicateKey(f"{db}.{coll}", _id)
        docs[key] = doc
        self._append(INSERT, db, coll, key=_id, post=doc)
        return _id

    def insert(self, db: str, coll: str, docs: Iterable[dict], ordered: bool = True) -> WriteResult:
        """Insert documents (taken over, not copied); duplicates become write errors."""
        result = WriteResult()
        with self.changed:
            for index, doc in enumerate(docs):
                try:
                    self._insert_one(db, coll, doc)
                    result.n += 1
                except CommandError as error:
                    result.errors.append((index, error))
                    if ordered:
                        break
            if result.n:
                self.changed.notify_all()
        return result

    def update(self, db: str, coll: str, statements: Iterable[Mapping], ordered: bool = True) -> WriteResult:
        """Run update statements ``{"q": filter, "u": update, "multi": b, "upsert": b}``."""
        return self._write_batch(statements, ordered, lambda stmt, index, result: self._update(db, coll, stmt, index, result))

    def delete(self, db: str, coll: str, statements: Iterable[Mapping], ordered: bool = True) -> WriteResult:
        """Run delete statements ``{"q": filter, "limit": 0 | 1}``."""
        return self._write_batch(statements, ordered, lambda stmt, index, result: self._delete(db, coll, stmt, result))

    def _write_batch(self, statements: Iterable[Mapping], ordered: bool, run: Callable) -> WriteResult:
        result = WriteResult()
        with self.changed:
            before = self._position
            for index, statement in enumerate(statements):
                try:
                    run(statement, index, result)
                except CommandError as error:
                    result.errors.append((index, error))
                    if ordered:
                        break
            if self._position != before:
                self.changed.notify_all()
        return result

    def _matching(self, db: str, coll: str, filter_doc: Mapping | None, multi: bool) -> list[dict]:
        docs = self._dbs.get(db, {}).get(coll)
        if not docs:
            return []
        if filter_doc and len(filter_doc) == 1 and _is_plain_id(filter_doc.get("_id", [])):
            doc = docs.get(id_key(filter_doc["_id"]))  # the common update/delete by _id
            return [doc] if doc is not None else []
        predicate = compile_filter(filter_doc)
        found = []
        for doc in self._candidates(docs, filter_doc):
            if predicate(doc):
                found.append(doc)
                if not multi:
                    break
        return found

    def _update(self, db: str, coll: str, stmt: Mapping, index: int, result: WriteResult) -> None:
        filter_doc, update = stmt.get("q") or {}, stmt.get("u")
        operators = is_operator_update(update)
        multi = bool(stmt.get("multi", False))
        if multi and not operators:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        targets = self._matching(db, coll, filter_doc, multi)
        if not targets:
            if stmt.get("upsert"):
                seed = seed_from_filter(filter_doc)
                new = apply_operators(seed, update)[0] if operators else apply_replacement(seed, update)
                _id = self._insert_one(db, coll, new)
                result.n += 1
                result.upserted.append((index, _id))
            return
        for old in targets:
            result.n += 1
            if self._replace_doc(db, coll, old, update, operators) is not None:
                result.modified += 1

    def _replace_doc(self, db: str, coll: str, old: dict, update: Mapping, operators: bool) -> dict | None:
        """Apply ``update`` to a stored document; the new document, or None if unchanged."""
        if operators:
            new, description = apply_operators(old, update)
            if not description.updated and not description.removed:
                return None
        else:
            new = apply_replacement(old, update)
            if same_value(old, new):
                return None
        _id = old["_id"]
        self._dbs[db][coll][id_key(_id)] = new
        if operators:
            self._append(UPDATE, db, coll, key=_id, description=description.as_event_field())
        else:
            self._append(REPLACE, db, coll, key=_id, post=new)
        return new

    def _delete(self, db: str, coll: str, stmt: Mapping, result: WriteResult) -> None:
        targets = self._matching(db, coll, stmt.get("q") or {}, multi=not stmt.get("limit"))
        docs = self._dbs.get(db, {}).get(coll, {})
        for old in targets:
            del docs[id_key(old["_id"])]
            self._append(DELETE, db, coll, key=old["_id"])
            result.n += 1

    def drop(self, db: str, coll: str) -> bool:
        """Drop a collection: a drop event, then invalidate that collection's streams."""
        with self.changed:
            if coll not in self._dbs.get(db, {}):
                return False
            del self._dbs[db][coll]
            self._append(DROP, db, coll)
            self._append(INVALIDATE, db, coll)
            self.changed.notify_all()
            return True

    def rename(self, db: str, coll: str, to_db: str, to_coll: str, *, drop_target: bool = False) -> None:
        """Rename a collection: a rename event, then invalidate the source collection's streams."""
        with self.changed:
            if coll not in self._dbs.get(db, {}):
                raise CommandError(26, f"Source collection {db}.{coll} does not exist")
            if to_coll in self._dbs.get(to_db, {}):
                if not drop_target:
                    raise CommandError(48, f"target namespace exists: {to_db}.{to_coll}")
                del self._dbs[to_db][to_coll]
                self._append(DROP, to_db, to_coll)
                self._append(INVALIDATE, to_db, to_coll)
            self._dbs.setdefault(to_db, {})[to_coll] = self._dbs[db].pop(coll)
            self._append(RENAME, db, coll, to={"db": to_db, "coll": to_coll})
            self._append(INVALIDATE, db, coll)
            self.changed.notify_all()

    def drop_database(self, db: str) -> bool:
        """Drop every collection, then the database; invalidates the database's streams."""
        with self.changed:
            colls = self._dbs.pop(db, None)
            if colls is None:
                return False
            for coll in colls:
                self._append(DROP, db, coll)
                self._append(INVALIDATE, db, coll)
            self._append(DROP_DATABASE, db, None)
            self._append(INVALIDATE, db, None)
            self.changed.notify_all()
            return True

    def create(self, db: str, coll: str) -> bool:
        """Create an empty collection; False if it exists."""
        with self._lock:
            if coll in self._dbs.get(db, {}):
                return False
            self._collection(db, coll)
            return True


def _is_plain_id(value: Any) -> bool:
    return isinstance(value, (str, int, ObjectId)) and not isinstance(value, bool)


def snapshot(docs: Iterable[dict]) -> list[dict]:
    """Deep copies, safe to hand to callers who may mutate them."""
    return [copy.deepcopy(doc) for doc in docs]
