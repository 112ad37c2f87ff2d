"""Multi-document transactions, as pymongo drives them (``startTransaction``, ``autocommit:
false``, ``commitTransaction``, ``abortTransaction``) with one open transaction per session.

A transaction's writes go to its own overlay; its reads see the committed data with its own
writes on top (the server reads from a snapshot taken at the transaction's start; the stand-in
does not keep snapshots, see docs/standin.md). ``Store.commit`` applies the overlay and writes
every change to the oplog at one cluster time, carrying the session's ``lsid`` and
``txnNumber`` (jstests/change_streams/apply_ops.js). Aborting drops the overlay: no event.

Owner: ``Transactions`` guards its registry with its own lock; a ``Transaction`` is used by the
one connection thread running its session's command, and read or changed only under the store's
lock (``Store.write``, ``Store.find``, ``Store.commit``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from bson import Binary, Int64

from .errors import CommandError

TRANSIENT = "TransientTransactionError"
# The uid the server adds to an lsid: a digest of the user name; without authentication, the
# digest of an empty name (kNoAuthDigest, src/mongo/db/logical_session_id_helpers.cpp).
_NO_AUTH_UID = Binary(hashlib.sha256(b"").digest(), 0)


def no_such_transaction(number: Any) -> CommandError:
    return CommandError(251, f"Transaction with txnNumber {number} has been aborted or was never started.", [TRANSIENT])


class Transaction:
    """One transaction's uncommitted writes."""

    def __init__(self, lsid: Mapping, number: int) -> None:
        self.lsid = dict(lsid)
        self.number = number
        self.state = "open"  # then "committed" or "aborted"
        self.overlay: dict[tuple[str, str], dict[Any, dict | None]] = {}  # None: deleted
        self.touched: dict[tuple[str, str, Any], dict | None] = {}  # committed doc when first written
        self.changes: list[tuple[str, str, str, dict]] = []  # (op, db, coll, entry fields), in order

    def view(self, committed: dict[str, dict[str, dict]]) -> TxnView:
        return TxnView(self, committed)

    def session_fields(self) -> dict:
        return {"lsid": {"id": self.lsid.get("id"), "uid": _NO_AUTH_UID}, "txnNumber": Int64(self.number)}

    def conflict(self, namespace: str) -> CommandError:
        self.state = "aborted"
        return CommandError(112, f"Write conflict during commit on {namespace}", [TRANSIENT])


class _Overlaid(Mapping):
    """Committed documents of one collection with a transaction's changes on top."""

    def __init__(self, base: Mapping, changes: Mapping) -> None:
        self._base = base
        self._changes = changes

    def __getitem__(self, key: Any) -> dict:
        if key in self._changes:
            doc = self._changes[key]
            if doc is None:
                raise KeyError(key)
            return doc
        return self._base[key]

    def __iter__(self) -> Iterator:
        for key in self._base:
            if key not in self._changes:
                yield key
        for key, doc in self._changes.items():
            if doc is not None:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class TxnView:
    """A transaction's view for ``writes``: reads merge, writes stay in the overlay."""

    def __init__(self, txn: Transaction, committed: dict[str, dict[str, dict]]) -> None:
        self._txn = txn
        self._committed = committed

    def docs(self, db: str, coll: str) -> Mapping | None:
        base = self._committed.get(db, {}).get(coll)
        changes = self._txn.overlay.get((db, coll))
        if not changes:
            return base
        return _Overlaid(base or {}, changes)

    def _touch(self, db: str, coll: str, key: Any) -> None:
        if (db, coll, key) not in self._txn.touched:
            self._txn.touched[(db, coll, key)] = self._committed.get(db, {}).get(coll, {}).get(key)

    def put(self, db: str, coll: str, key: Any, doc: dict) -> None:
        self._touch(db, coll, key)
        self._txn.overlay.setdefault((db, coll), {})[key] = doc

    def remove(self, db: str, coll: str, key: Any) -> None:
        self._touch(db, coll, key)
        self._txn.overlay.setdefault((db, coll), {})[key] = None

    def record(self, op: str, db: str, coll: str, **fields: Any) -> None:
        self._txn.changes.append((op, db, coll, fields))


class Transactions:
    """Each session's current transaction, found from a command's ``lsid`` and ``txnNumber``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[bytes, Transaction] = {}

    @staticmethod
    def in_transaction(command: Mapping) -> bool:
        return command.get("autocommit") is False and "txnNumber" in command and "lsid" in command

    def for_command(self, command: Mapping) -> Transaction:
        """The transaction a command runs in, started by its ``startTransaction``."""
        lsid, number = command["lsid"], int(command["txnNumber"])
        session = bytes(lsid.get("id", b"")) if isinstance(lsid, Mapping) else b""
        with self._lock:
            current = self._by_session.get(session)
            if command.get("startTransaction"):
                if current is not None and current.number >= number:
                    raise CommandError(225, f"txnNumber {number} is not newer than the session's {current.number}")
                current = self._by_session[session] = Transaction(lsid, number)
                return current
            if current is None or current.number != number:
                raise no_such_transaction(number)
            return current


def check_open(txn: Transaction, name: str) -> None:
    """Refuse a command in a transaction that is over."""
    if txn.state == "committed":
        raise CommandError(256, f"Transaction {txn.number} has been committed; {name} cannot run in it.")
    if txn.state != "open":
        raise no_such_transaction(txn.number)
