"""The projection: change-stream events and scanned documents into read-model changes (pure).

The change types themselves are the contract's (:mod:`readmodel.changes`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import Timestamp

from readmodel import FINISHED, GONE, LIVE, BalanceChange, Change, TaskChange, position
from readmodel.records import balance_record, finished_task_record, live_task_record

from .durations import observed_duration
from .normalize import Invalid, Rules, normalize_balance, normalize_task
from .times import wall_ms as event_wall_ms
from .values import describe, document_id

TASKS = "tasks"
ECONOMY = "economy"

# The learned typical duration of a tool, or None; see projector.durations.
DurationLookup = Callable[[str | None], int | None]


def _no_estimates(_tool_id: str | None) -> int | None:
    return None


@dataclass(frozen=True)
class Rejected:
    """A document that could not be projected: what the worker dead-letters."""

    kind: str  # TASKS or ECONOMY
    doc_id: str | None
    reason: str
    document: Any


# What a change teaches the durations: (toolId, duration in ms) of a successfully finished task.
Learned = tuple[str, int] | None
Projected = tuple[Change | Rejected, Learned]


def seq_of(cluster_time: Timestamp) -> str:
    return position(cluster_time.time, cluster_time.inc)


def _task(doc: Mapping[str, Any] | None, generation_id: str, seq: str, wall_ms: int, rules: Rules,
          durations: DurationLookup) -> Projected:
    """A generation document's new state (None: gone) as a change, and the duration it teaches."""
    if doc is None:
        return TaskChange(generation_id=generation_id, seq=seq, owner=None, state=GONE), None
    task = normalize_task(doc, rules)
    if isinstance(task, Invalid):
        return Rejected(TASKS, generation_id, task.reason, doc), None
    if not task.live:
        record = finished_task_record(task.visible, task.last_activity_ms)
        finished = TaskChange(generation_id=generation_id, seq=seq, owner=task.owner, state=FINISHED, record=record)
        return finished, observed_duration(task)
    last_sign_of_life = task.last_activity_ms if task.last_activity_ms is not None else wall_ms
    stale_at_ms = last_sign_of_life + rules.stale_after_ms
    record = live_task_record(task.visible, durations(task.visible["toolId"]), stale_at_ms)
    return TaskChange(generation_id=generation_id, seq=seq, owner=task.owner, state=LIVE, record=record,
                      stale_at_ms=stale_at_ms), None


def balance_change(doc: Mapping[str, Any] | None, doc_id: str, seq: str, rules: Rules) -> Change | Rejected:
    """A userEconomy document's new state (None: deleted) as a change."""
    if doc is None:
        return BalanceChange(doc_id=doc_id, seq=seq, owner=None)
    balance = normalize_balance(doc, rules)
    if isinstance(balance, Invalid):
        return Rejected(ECONOMY, doc_id, balance.reason, doc)
    return BalanceChange(doc_id=doc_id, seq=seq, owner=balance.owner,
                         record=balance_record(balance.usd_credit, balance.points, balance.exp))


def document_projection(kind: str, doc: Mapping[str, Any] | None, doc_id: Any, seq: str, wall_ms: int, rules: Rules,
                        durations: DurationLookup = _no_estimates) -> Projected:
    """Either collection's document as a change, or why it cannot be one, and the duration a
    successfully finished task teaches. Never raises: whatever goes wrong while normalizing or
    encoding ONE document is that document's rejection."""
    text_id = document_id(doc_id)
    if text_id is None:
        return Rejected(kind, None, f"missing or unusable _id: {describe(doc_id)}", doc), None
    try:
        if kind == TASKS:
            return _task(doc, text_id, seq, wall_ms, rules, durations)
        return balance_change(doc, text_id, seq, rules), None
    except Exception as exc:  # one document never stops the worker: it becomes a dead letter
        return Rejected(kind, text_id, f"cannot be projected ({type(exc).__name__}: {str(exc)[:120]})", doc), None


def document_change(kind: str, doc: Mapping[str, Any] | None, doc_id: Any, seq: str, wall_ms: int, rules: Rules,
                    durations: DurationLookup = _no_estimates) -> Change | Rejected:
    """:func:`document_projection`'s change alone, for a caller that learns no durations."""
    return document_projection(kind, doc, doc_id, seq, wall_ms, rules, durations)[0]


DOCUMENT_EVENTS = ("insert", "update", "replace", "delete")


def superseded(events: Sequence[Mapping[str, Any]]) -> set[int]:
    """Indexes of the events a later event of the same batch for the same document supersedes.

    The writer keeps only the latest change per document of a batch (``readmodel.writer``), and
    a later event carries a state at least as new (updates bring the document looked up when the
    event was read), so normalizing the earlier ones is work nobody sees. Documents are told apart
    by collection, id type and id; an id that cannot be hashed is never skipped.
    """
    seen: set[tuple[Any, type, Any]] = set()
    skipped: set[int] = set()
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        try:
            doc_id = event["documentKey"]["_id"]
            key = (event["ns"]["coll"], type(doc_id), doc_id)
            if key in seen:
                skipped.add(index)
            else:
                seen.add(key)
        except (KeyError, TypeError):  # not a document event, or an unhashable id
            continue
    return skipped


def event_projection(
    event: Mapping[str, Any],
    kinds: Mapping[str, str],
    rules: Rules,
    durations: DurationLookup = _no_estimates,
) -> tuple[Change | Rejected | None, Learned]:
    """A change-stream event as a change (None for events that carry no document change), and
    the duration it teaches.

    ``kinds`` maps collection names to TASKS or ECONOMY. Updates use the looked-up full document:
    null means the document is gone by now, and a newer document is fine because positions only
    move forward.
    """
    operation = event.get("operationType")
    if operation not in DOCUMENT_EVENTS:
        return None, None
    collection = (event.get("ns") or {}).get("coll")
    kind = kinds.get(collection) if isinstance(collection, str) else None
    if kind is None:
        return None, None
    cluster_time = event.get("clusterTime")
    if not isinstance(cluster_time, Timestamp):
        return Rejected(kind, None, "event without clusterTime", dict(event)), None
    key = event.get("documentKey") or {}
    doc = None if operation == "delete" else event.get("fullDocument")
    wall_ms = event_wall_ms(event.get("wallTime")) or cluster_time.time * 1000
    return document_projection(kind, doc, key.get("_id"), seq_of(cluster_time), wall_ms, rules, durations)


def event_change(event: Mapping[str, Any], kinds: Mapping[str, str], rules: Rules,
                 durations: DurationLookup = _no_estimates) -> Change | Rejected | None:
    """:func:`event_projection`'s change alone, for a caller that learns no durations."""
    return event_projection(event, kinds, rules, durations)[0]
