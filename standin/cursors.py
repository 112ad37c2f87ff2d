"""Server-side cursors: the registry getMore and killCursors use, and query result cursors."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson import Int64
from bson.raw_bson import RawBSONDocument

from .errors import CommandError

MAX_BATCH_BYTES = 16 * 1024 * 1024 - 64 * 1024
FIRST_BATCH_SIZE = 101
IDLE_TIMEOUT_SECONDS = 600.0


class QueryCursor:
    """Results of find or a plain aggregate, handed out in batches."""

    awaits_data = False

    def __init__(self, namespace: str, docs: list, project: Callable[[Mapping], Mapping] | None = None) -> None:
        self.namespace = namespace
        self._docs = docs
        self._next = 0
        self._project = project
        self.alive = True
        self.last_used = time.monotonic()

    def next_batch(self, limit: int) -> list[RawBSONDocument]:
        """Up to ``limit`` documents (and at most ~16 MB of them)."""
        self.last_used = time.monotonic()
        batch: list[RawBSONDocument] = []
        size = 0
        docs, project, index, end = self._docs, self._project, self._next, len(self._docs)
        while index < end and len(batch) < limit:
            doc = docs[index]
            raw = bson.encode(project(doc) if project else doc)
            if batch and size + len(raw) > MAX_BATCH_BYTES:
                break
            batch.append(RawBSONDocument(raw))
            size += len(raw)
            index += 1
        self._next = index
        if index >= end:
            self.alive = False
            self._docs = []
        return batch


class Cursors:
    """Open cursors by id; idle cursors expire after ten minutes like on a real server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, Any] = {}
        self._ids = itertools.count(random.randrange(1 << 40, 1 << 50))

    def add(self, cursor: Any) -> int:
        now = time.monotonic()
        with self._lock:
            expired = [cid for cid, c in self._open.items() if now - c.last_used > IDLE_TIMEOUT_SECONDS]
            for cid in expired:
                del self._open[cid]
            cursor_id = next(self._ids)
            self._open[cursor_id] = cursor
            return cursor_id

    def get(self, cursor_id: int) -> Any:
        with self._lock:
            cursor = self._open.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        return cursor

    def peek(self, cursor_id: Any) -> Any:
        with self._lock:
            return self._open.get(cursor_id)

    def remove(self, cursor_id: int) -> bool:
        with self._lock:
            return self._open.pop(cursor_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._open.clear()


def cursor_reply(cursors: Cursors, cursor: Any, field: str, batch: list, single_batch: bool) -> dict:
    """A ``{"cursor": {...}}`` reply; registers the cursor if more batches may follow."""
    cursor_id = 0
    if cursor.alive and not single_batch:
        cursor_id = cursors.add(cursor)
    return {"cursor": {field: batch, "id": Int64(cursor_id), "ns": cursor.namespace}}


def batch_size(value: Any, default: int) -> int:
    """A batchSize option, ``default`` when absent."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CommandError(2, f"batchSize must be a non-negative integer, not {value!r}")
    return value
