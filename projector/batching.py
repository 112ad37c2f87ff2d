"""Building a batch: sorting change events (tailing) or scanned documents (a resync) into what the
writer applies — changes, rejected documents and learned durations — in one place.

Runs on the worker's thread, which owns the :class:`~projector.durations.Durations` it teaches
(a duration learned from one event already serves a live task later in the same batch). A
:class:`Batch` is filled on that thread and handed whole to the writer thread by
``WriteBehind.submit``; nobody changes it after that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bson import Timestamp
from pymongo.errors import PyMongoError

from readmodel import LIVE, Change, Partition, TaskChange

from .durations import Durations
from .normalize import Rules
from .projection import ECONOMY, TASKS, Learned, Rejected, event_projection, superseded
from .reading import RESYNC_EVENTS
from .source import id_key
from .times import wall_ms
from .values import document_id

log = logging.getLogger(__name__)

Owns = Callable[[Any], bool]  # whether this partition owns a document id
FullDocuments = Callable[[str, list[Any]], dict[Any, Mapping[str, Any]]]  # Source.full_documents


def owner(partition: Partition) -> Owns:
    """Whether ``partition`` owns a document id (one whose id cannot be read is partition 0's,
    so that it is dead-lettered once)."""
    if partition.count == 1:
        return lambda _doc_id: True
    return lambda doc_id: partition.owns(document_id(doc_id))


@dataclass
class Batch:
    """What one write applies: changes, dead letters, durations learned, and how many events it
    covers (counted even when none of them changed anything)."""

    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    learned: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def add(self, projected: tuple[Change | Rejected | None, Learned], durations: Durations, *,
            finished: bool = True) -> None:
        """Sort one projected change in, teaching ``durations`` what it learned; ``finished=False``
        (the scan) keeps finished tasks out of the changes: there is nothing to show for them, and
        the sweep removes any earlier live state."""
        change, learned = projected
        if learned is not None:
            self.learned[learned[0]] = durations.observe(*learned)
        if change is None:
            return
        if isinstance(change, Rejected):
            self.rejected.append(change)
            return
        if not finished and isinstance(change, TaskChange) and change.state != LIVE:
            return
        self.changes.append(change)

    def __bool__(self) -> bool:
        return bool(self.changes or self.rejected or self.learned)


@dataclass
class Tailed:
    """A batch built from change events, and what the events said besides."""

    batch: Batch
    resync_reason: str | None = None  # an event after which the collections may hold anything
    last_time: Timestamp | None = None  # cluster time of the last event before it
    last_wall_ms: int | None = None  # its wall time (ms), when the server gave one

    @property
    def event_ms(self) -> int | None:
        """When the last event happened at the source (wallTime has milliseconds, the cluster
        time only seconds)."""
        if self.last_time is None:
            return None
        return self.last_wall_ms or self.last_time.time * 1000


def from_events(
    events: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str],
    rules: Rules,
    durations: Durations,
    owns: Owns,
) -> Tailed:
    """The batch of ``events`` up to the first one that ends the stream (a resync reason)."""
    tailed = Tailed(Batch(events=len(events)))
    ends = next((i for i, event in enumerate(events) if event.get("operationType") in RESYNC_EVENTS), len(events))
    skip = superseded(events[:ends])
    for event in reversed(events[:ends]):  # the last cluster time and wall time given
        tailed.last_time = tailed.last_time or event.get("clusterTime")
        tailed.last_wall_ms = tailed.last_wall_ms or wall_ms(event.get("wallTime"))
        if tailed.last_time and tailed.last_wall_ms:
            break
    for index, event in enumerate(events[:ends]):
        if index in skip:
            continue  # a later event of this batch carries this document's newer state
        if not owns((event.get("documentKey") or {}).get("_id")):
            continue  # another partition's document
        tailed.batch.add(event_projection(event, kinds, rules, durations), durations)
    if ends < len(events):
        event = events[ends]
        names = [(event.get(part) or {}).get("coll") for part in ("ns", "to")]
        tailed.resync_reason = (f"{event.get('operationType')} event on "
                                f"{' -> '.join(n for n in names if n) or 'the database'}")
    return tailed


def with_full_documents(rejected: list[Rejected], full_documents: FullDocuments) -> list[Rejected]:
    """Dead letters carry the whole document as it is now, not the stream's trimmed copy (kept
    when the document is gone by now or cannot be read)."""
    complete = []
    for kind in (TASKS, ECONOMY):
        items = [r for r in rejected if r.kind == kind]
        ids = [r.document["_id"] for r in items if isinstance(r.document, Mapping) and "_id" in r.document]
        try:
            found = full_documents(kind, ids) if ids else {}
        except PyMongoError as exc:
            log.warning("could not fetch rejected documents in full: %s", exc)
            found = {}
        for item in items:
            raw_id = item.document.get("_id") if isinstance(item.document, Mapping) else None
            full = found.get(id_key(raw_id))
            complete.append(item if full is None else replace(item, document=full))
    return complete
