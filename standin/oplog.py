"""The oplog: every change in order, the cluster clock, and waiting for new entries.

Owner: the ``Store`` that creates it; every method runs under ``changed`` (the store's one lock,
a Condition), which ``wait_entries`` releases while it waits. Entries are immutable once appended.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import tokens
from .errors import RESUMABLE, CommandError, history_lost

INSERT, UPDATE, REPLACE, DELETE = "insert", "update", "replace", "delete"
DROP, DROP_DATABASE, RENAME, INVALIDATE = "drop", "dropDatabase", "rename", "invalidate"
NOOP = "noop"  # an oplog entry no stream shows: the server's periodic no-op write
NOOP_INTERVAL_SECONDS = 10.0  # the server's periodicNoopIntervalSecs default (a startup parameter)


class Entry:
    """One oplog entry: a change event before it is rendered for a particular stream.

    ``position`` orders entries (``tokens.position(cluster_time, index)``); ``index`` is the
    entry's place in its transaction (0 outside one), ``txn`` the transaction's ``lsid`` and
    ``txnNumber``. ``db``/``coll`` of an invalidate entry name the streams it invalidates
    (None = any).
    """

    __slots__ = ("cluster_time", "coll", "db", "description", "doc_id", "index", "op", "position", "post", "to",
                 "txn", "wall")

    def __init__(self, cluster_time: int, index: int, op: str, db: str | None, coll: str | None, wall: datetime,
                 doc_id: Any = None, post: Any = None, description: Any = None, to: Any = None,
                 txn: dict | None = None) -> None:
        self.cluster_time = cluster_time
        self.index = index
        self.position = tokens.position(cluster_time, index)
        self.op = op
        self.db = db
        self.coll = coll
        self.wall = wall
        self.doc_id = doc_id
        self.post = post  # the inserted or replacing document
        self.description = description
        self.to = to
        self.txn = txn


class Oplog:
    """Entries by position, the cluster time of the latest one, and what history is lost."""

    def __init__(self, *, limit: int | None, clock: Callable[[], float], noop_interval: float) -> None:
        self.changed = threading.Condition(threading.Lock())
        self._clock = clock
        self._limit = limit
        self._noop_interval = noop_interval
        self._cluster_time = int(clock()) << 32
        self._last_write = clock()
        self._lost_upto = tokens.before(self._cluster_time)  # positions before it are gone
        self._entries: list[Entry] = []
        self._positions: list[int] = []
        self.closed = False

    def cluster_time(self) -> int:
        """The cluster time of the latest entry (a write or the periodic no-op)."""
        return self._cluster_time

    def _tick(self) -> tuple[int, datetime]:
        now = self._clock()
        self._last_write = now
        seconds = int(now)
        if seconds > self._cluster_time >> 32:
            self._cluster_time = seconds << 32 | 1
        else:
            self._cluster_time += 1
        # naive UTC: encodes faster than an aware datetime and decodes the same
        return self._cluster_time, datetime.fromtimestamp(now, UTC).replace(tzinfo=None)

    def append(self, op: str, db: str | None, coll: str | None, **fields: Any) -> Entry:
        """One entry at a new cluster time."""
        return self.append_all([(op, db, coll, fields)])[0]

    def append_all(self, changes: list[tuple[str, str | None, str | None, dict]], txn: dict | None = None) -> list[Entry]:
        """Entries sharing one new cluster time, indexed in order: a committed transaction's."""
        cluster_time, wall = self._tick()
        added = [
            Entry(cluster_time, index, op, db, coll, wall, txn=txn, **fields)
            for index, (op, db, coll, fields) in enumerate(changes)
        ]
        self._entries.extend(added)
        self._positions.extend(entry.position for entry in added)
        if self._limit and len(self._entries) > self._limit:
            self._forget(len(self._entries) - self._limit + max(1, self._limit // 10))
        return added

    def _forget(self, count: int) -> None:
        if count <= 0:
            return
        self._lost_upto = max(self._lost_upto, self._positions[count - 1])
        del self._entries[:count]
        del self._positions[:count]

    def earliest_resumable(self) -> int:
        """Continuing after a position older than this one fails with ChangeStreamHistoryLost."""
        return self._lost_upto

    def truncate(self) -> int:
        """Forget every entry, so resuming from any earlier token or time fails with 286; returns
        the cluster time history now starts after."""
        self._forget(len(self._entries))
        self._lost_upto = tokens.before(self._cluster_time + 1)
        return self._cluster_time

    def wait_entries(self, after: int, deadline: float, limit: int) -> list[Entry]:
        """Entries after position ``after`` (at most ``limit``), waiting until ``deadline`` for one.

        A wait that ends with nothing new writes the server's periodic no-op first when the oplog
        has been idle for the no-op interval: an idle stream's post-batch token advances only
        when the oplog does, as on a replica set (whose primary writes that no-op on a timer).
        """
        with self.changed:
            while True:
                if self.closed:
                    raise CommandError(11600, "interrupted at shutdown", [RESUMABLE])
                if after < self._lost_upto:
                    raise history_lost()
                index = bisect.bisect_right(self._positions, after)
                if index < len(self._entries):
                    return self._entries[index : index + limit]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if self._clock() - self._last_write < self._noop_interval:
                        return []
                    self.append(NOOP, None, None)
                    self.changed.notify_all()
                    continue
                self.changed.wait(remaining)

    def close(self) -> None:
        """Wake every waiting reader and make further waits fail at once."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
