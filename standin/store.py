"""In-memory databases and collections; every committed change goes to the oplog.

Thread-safe: the oplog's ``changed`` Condition is the one lock guarding the data and the oplog;
it wakes change-stream readers when the oplog grows. Stored documents are immutable (updates
are copy-on-write, see ``update.py``), so readers may keep and encode them without the lock.
A transaction's writes stay in its own ``TxnView`` until ``commit`` applies them at once.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import CommandError
from .oplog import DROP, DROP_DATABASE, INVALIDATE, NOOP_INTERVAL_SECONDS, RENAME, Entry, Oplog
from .projection import sort_documents
from .query import compile_filter
from .values import id_key
from .writes import WriteResult, candidates, delete_statement, insert_statement, run_batch, update_statement


class Committed:
    """The committed data as a write view: changes go straight to the oplog."""

    def __init__(self, dbs: dict[str, dict[str, dict]], oplog: Oplog) -> None:
        self._dbs = dbs
        self._oplog = oplog
        self.changes = 0

    def docs(self, db: str, coll: str) -> Mapping | None:
        return self._dbs.get(db, {}).get(coll)

    def put(self, db: str, coll: str, key: Any, doc: dict) -> None:
        self._dbs.setdefault(db, {}).setdefault(coll, {})[key] = doc

    def remove(self, db: str, coll: str, key: Any) -> None:
        del self._dbs[db][coll][key]

    def record(self, op: str, db: str, coll: str, **fields: Any) -> None:
        self._oplog.append(op, db, coll, **fields)
        self.changes += 1


class Store:
    """Databases -> collections -> documents by _id, plus the oplog."""

    def __init__(
        self,
        *,
        oplog_limit: int | None = None,
        clock: Callable[[], float] = time.time,
        noop_interval: float = NOOP_INTERVAL_SECONDS,
    ) -> None:
        self.oplog = Oplog(limit=oplog_limit, clock=clock, noop_interval=noop_interval)
        self.changed = self.oplog.changed
        self._dbs: dict[str, dict[str, dict]] = {}

    # ------------------------------------------------------------ time and the oplog

    def cluster_time(self) -> int:
        """The cluster time of the latest oplog entry (a write or the periodic no-op)."""
        return self.oplog.cluster_time()

    def earliest_resumable(self) -> int:
        return self.oplog.earliest_resumable()

    def wait_entries(self, after: int, deadline: float, limit: int) -> list[Entry]:
        return self.oplog.wait_entries(after, deadline, limit)

    def truncate_history(self) -> int:
        """Forget the oplog up to now; returns the cluster time history now starts after."""
        with self.changed:
            return self.oplog.truncate()

    def invalidate(self, db: str | None = None, coll: str | None = None) -> None:
        """Invalidate open streams on ``db`` (all if None) / on ``coll`` only if given."""
        with self.changed:
            self.oplog.append(INVALIDATE, db, coll)
            self.changed.notify_all()

    def close(self) -> None:
        """Wake every waiting reader and make further waits fail at once."""
        self.oplog.close()

    # ------------------------------------------------------------ reads

    def lookup(self, db: str, coll: str, _id: Any) -> dict | None:
        """The current document with this _id, without taking the lock."""
        return self._dbs.get(db, {}).get(coll, {}).get(id_key(_id))

    def find(self, db: str, coll: str, filter_doc: Mapping | None = None, sort: Mapping | None = None,
             txn: Any = None) -> list[dict]:
        """Matching documents (shared, immutable) in natural or ``sort`` order; a transaction's
        reads see its own writes."""
        predicate = compile_filter(filter_doc)
        with self.changed:
            docs = (txn.view(self._dbs) if txn is not None else Committed(self._dbs, self.oplog)).docs(db, coll)
            if not docs:
                return []
            found = [doc for doc in candidates(docs, filter_doc) if predicate(doc)]
        return sort_documents(found, sort)

    def collection_names(self, db: str) -> list[str]:
        with self.changed:
            return list(self._dbs.get(db, {}))

    # ------------------------------------------------------------ writes

    def insert(self, db: str, coll: str, docs: Iterable[dict], ordered: bool = True, txn: Any = None) -> WriteResult:
        """Insert documents (taken over, not copied); duplicates become write errors."""
        return self.write(txn, lambda view: run_batch(docs, ordered, insert_statement(view, db, coll)))

    def update(self, db: str, coll: str, statements: Iterable[Mapping], ordered: bool = True, txn: Any = None) -> WriteResult:
        """Run update statements ``{"q": filter, "u": update, "multi": b, "upsert": b}``."""
        return self.write(txn, lambda view: run_batch(statements, ordered, update_statement(view, db, coll)))

    def delete(self, db: str, coll: str, statements: Iterable[Mapping], ordered: bool = True, txn: Any = None) -> WriteResult:
        """Run delete statements ``{"q": filter, "limit": 0 | 1}``."""
        return self.write(txn, lambda view: run_batch(statements, ordered, delete_statement(view, db, coll)))

    def write(self, txn: Any, run: Callable[[Any], Any]) -> Any:
        """``run(view)`` under the lock, on the committed data or in ``txn``; readers are woken
        when it changed the committed data."""
        with self.changed:
            if txn is not None:
                return run(txn.view(self._dbs))
            view = Committed(self._dbs, self.oplog)
            result = run(view)
            if view.changes:
                self.changed.notify_all()
            return result

    def commit(self, txn: Any) -> None:
        """Apply a transaction's writes at once: one cluster time for all its oplog entries, in
        the order they were made (jstests/change_streams/apply_ops.js). A document someone else
        changed since the transaction first touched it fails the commit with WriteConflict."""
        with self.changed:
            for (db, coll, key), first_seen in txn.touched.items():
                if self._dbs.get(db, {}).get(coll, {}).get(key) is not first_seen:
                    raise txn.conflict(f"{db}.{coll}")
            for (db, coll), changes in txn.overlay.items():
                docs = self._dbs.setdefault(db, {}).setdefault(coll, {})
                for key, doc in changes.items():
                    if doc is None:
                        docs.pop(key, None)
                    else:
                        docs[key] = doc
            if txn.changes:
                self.oplog.append_all(txn.changes, txn.session_fields())
                self.changed.notify_all()

    # ------------------------------------------------------------ catalog

    def drop(self, db: str, coll: str) -> bool:
        """Drop a collection: a drop event, then invalidate that collection's streams."""
        with self.changed:
            if coll not in self._dbs.get(db, {}):
                return False
            del self._dbs[db][coll]
            self.oplog.append(DROP, db, coll)
            self.oplog.append(INVALIDATE, db, coll)
            self.changed.notify_all()
            return True

    def rename(self, db: str, coll: str, to_db: str, to_coll: str, *, drop_target: bool = False) -> None:
        """Rename a collection as the server reports it
        (jstests/change_streams/whole_db_metadata_notifications.js): one ``rename`` event (``ns``
        the source, ``to`` the target) and no ``drop`` of a target that ``drop_target`` replaces.
        Across databases the server copies into a temporary collection of the target database and
        renames that (the event's ``ns``), then drops the source (a ``drop`` event)."""
        with self.changed:
            if coll not in self._dbs.get(db, {}):
                raise CommandError(26, f"Source collection {db}.{coll} does not exist")
            target_exists = to_coll in self._dbs.get(to_db, {})
            if target_exists and not drop_target:
                raise CommandError(48, f"target namespace exists: {to_db}.{to_coll}")
            docs = self._dbs[db].pop(coll)
            if to_db == db:
                self._renamed(db, coll, to_db, to_coll, docs)
            else:
                # The temporary name's form is the stand-in's; the server's tests do not check it.
                self._renamed(to_db, f"tmp{secrets.token_hex(3)}.renameCollection", to_db, to_coll, docs)
                self.oplog.append(DROP, db, coll)
                self.oplog.append(INVALIDATE, db, coll)
            self.changed.notify_all()

    def replace_collection(self, db: str, coll: str, docs: list[dict]) -> None:
        """What ``$out`` does: fill a temporary collection, rename it over the target (one
        ``rename`` event from the temporary namespace, whole_db_metadata_notifications.js)."""
        with self.changed:
            stored = {id_key(doc["_id"]): doc for doc in (copy.deepcopy(d) for d in docs)}
            self._renamed(db, f"tmp.agg_out.{secrets.token_hex(16)}", db, coll, stored)
            self.changed.notify_all()

    def _renamed(self, db: str, coll: str, to_db: str, to_coll: str, docs: dict) -> None:
        self._dbs.setdefault(to_db, {})[to_coll] = docs
        self.oplog.append(RENAME, db, coll, to={"db": to_db, "coll": to_coll})
        self.oplog.append(INVALIDATE, db, coll)
        # A stream on the target collection sees the rename, then is invalidated, whether the
        # target existed or not (jstests/change_streams/metadata_notifications.js).
        self.oplog.append(INVALIDATE, to_db, to_coll)

    def drop_database(self, db: str) -> bool:
        """Drop every collection, then the database; invalidates the database's streams."""
        with self.changed:
            colls = self._dbs.pop(db, None)
            if colls is None:
                return False
            for coll in colls:
                self.oplog.append(DROP, db, coll)
                self.oplog.append(INVALIDATE, db, coll)
            self.oplog.append(DROP_DATABASE, db, None)
            self.oplog.append(INVALIDATE, db, None)
            self.changed.notify_all()
            return True

    def create(self, db: str, coll: str) -> bool:
        """Create an empty collection; False if it exists."""
        with self.changed:
            if coll in self._dbs.get(db, {}):
                return False
            self._dbs.setdefault(db, {})[coll] = {}
            return True


def snapshot(docs: Iterable[dict]) -> list[dict]:
    """Deep copies, safe to hand to callers who may mutate them."""
    return [copy.deepcopy(doc) for doc in docs]
