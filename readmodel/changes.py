"""The changes the writer applies: one document's new state, already encoded as its record."""

from __future__ import annotations

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
