"""The changes the writer applies: one document's new state, already encoded as its record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LIVE, FINISHED, GONE = "live", "finished", "gone"


@dataclass(frozen=True)
class TaskChange:
    """A generation document changed.

    ``state`` is LIVE (``record`` is its live record), FINISHED (``record`` is its finished
    record) or GONE (deleted or unknown: ``record`` is empty). ``stale_at_ms`` (live tasks) is
    when it leaves the snapshot without a sign of life.
    """

    generation_id: str
    seq: str
    owner: str | None
    state: str
    record: str = ""
    stale_at_ms: int | None = None


@dataclass(frozen=True)
class BalanceChange:
    """A userEconomy document changed: ``record`` is its balance record, empty when deleted."""

    doc_id: str
    seq: str
    owner: str | None
    record: str = ""


Change = TaskChange | BalanceChange


def latest_per_document(changes: Iterable[Change]) -> list[Change]:
    """Keep the latest change per document (ties: the later one), in first-seen order."""
    latest: dict[tuple[str, str], Change] = {}
    for change in changes:
        key = ("t", change.generation_id) if isinstance(change, TaskChange) else ("b", change.doc_id)
        kept = latest.get(key)
        if kept is None or kept.seq <= change.seq:
            latest[key] = change
    return list(latest.values())
