"""The resync: rebuild the read model from the collections without ever emptying it for readers.

The stream is opened first, so its start position P precedes the scan; scanned documents are
written at P (behind the scan, by the writer thread); whatever was not written at P or later is
swept; tailing then continues from P, replaying whatever changed during the scan.

Runs on the worker's thread and owns nothing between calls: the stream it opens is handed back
to the worker (or closed when the resync fails); batches go to the writer thread whole.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from readmodel import ReadModel

from .applying import Applied, BatchWriter, Grant
from .batching import Batch, Owns, with_full_documents
from .durations import Durations
from .normalize import Rules
from .projection import ECONOMY, TASKS, document_projection
from .reading import Stream
from .source import Source
from .times import iso_at
from .writebehind import WriteBehind

log = logging.getLogger(__name__)

SWEEP_CHUNK = 1000


class Stopped(Exception):
    """Asked to stop in the middle of a long operation (a resync)."""


@dataclass(frozen=True)
class Rebuilt:
    """A finished resync: the stream to tail from, its checkpoint, and what it did."""

    stream: Stream
    applied: Applied
    documents: int
    users: int


@dataclass
class Resync:
    """What a resync works with; :meth:`run` does one."""

    source: Source
    model: ReadModel
    writer: BatchWriter
    writes: WriteBehind
    rules: Rules
    batch_size: int
    owns: Owns
    grant: Callable[[], Grant]  # the lease now, captured for writes queued now
    keep_going: Callable[[], None]  # renews the lease; raises Stopped or LeaseLost
    chores: Callable[[], None]  # the worker's periodic report while the scan runs
    clock: Callable[[], float] = time.time
    progress: bool = True

    def run(self, durations: Durations, version_jump: int = 0) -> Rebuilt:
        """``version_jump`` moves every user's version that far in the sweep (after Redis lost
        writes)."""
        stream = self.source.open(None)
        try:
            scanned = self._scan(stream.start, durations)
            self.writes.flush()  # every scanned document is in Redis before the sweep looks
            self.keep_going()
            users = list(self.model.known_users())
            now_ms = int(self.clock() * 1000)
            now_iso = iso_at(self.clock())
            for i in range(0, len(users), SWEEP_CHUNK):
                self.model.sweep(now_ms, now_iso, users=users[i : i + SWEEP_CHUNK], min_seq=stream.start,
                                 version_jump=version_jump, fence=self.grant().fence)
            applied = self.writer.checkpoint(stream.token, stream.start, self.grant())
        except BaseException:
            stream.close()
            raise
        return Rebuilt(stream, applied, scanned, len(users))

    def _scan(self, seq: str, durations: Durations) -> int:
        total = self.source.estimated_total()
        done = 0
        with tqdm(total=total, desc="resync", unit="doc", file=sys.stderr,
                  disable=None if self.progress else True,  # None: off when stderr is no terminal
                  mininterval=0.5, dynamic_ncols=True) as bar:
            for kind in (TASKS, ECONOMY):
                for docs in self.source.scan_ahead(kind):
                    batch = Batch(events=len(docs))
                    wall_ms = int(self.clock() * 1000)
                    for doc in docs:
                        doc_id = doc.get("_id")
                        if self.owns(doc_id):  # else another partition's
                            projected = document_projection(kind, doc, doc_id, seq, wall_ms, self.rules, durations)
                            batch.add(projected, durations, finished=False)
                    done += self._write(batch, bar)
        return done

    def _write(self, batch: Batch, bar: tqdm) -> int:
        self.keep_going()
        grant = self.grant()
        scanned, batch.events = batch.events, 0  # documents are not change events
        if batch.rejected:  # the scan read trimmed documents: a dead letter carries the whole one
            batch.rejected = with_full_documents(batch.rejected, self.source.full_documents)
        self.writes.submit(lambda: self.writer.apply(batch, grant))
        bar.update(scanned)
        self.chores()
        return scanned

