"""Stalled tasks: a live task that has not moved for much longer than its tool usually takes.

Computed when a snapshot is read, from what the read model stores (no timer, no write): a task
counts as moving whenever the projector applies a change to it, which sets its ``updatedAt``
(progress, status or any other field normalization reads; ``startedAt`` before any). It is
*stalled* once ``now`` passes ``updatedAt + STALLED_FACTOR * expectedDurationMs`` (its tool's
typical duration), or ``updatedAt + STALLED_AFTER_S`` when that duration is unknown; the next
change unflags it. Each live task carries ``stalled`` and ``stalledAt`` (the moment it counts as
stalled if nothing moves), so the panel flags it on time between snapshots.

Pure functions of their inputs; the clock is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from readmodel.records import epoch_ms


@dataclass(frozen=True)
class StallRule:
    """How long a task may stay unchanged: ``factor`` typical durations, else ``fixed_ms``."""

    factor: float = 3.0
    fixed_ms: int = 600_000

    def stalled_at_ms(self, task: dict[str, Any]) -> int | None:
        """When ``task`` counts as stalled if it does not move; None without any time of its own."""
        moved = epoch_ms(task.get("updatedAt")) or epoch_ms(task.get("startedAt"))
        if moved is None:
            return None
        expected = task.get("expectedDurationMs")
        window = round(self.factor * expected) if isinstance(expected, int) and expected > 0 else self.fixed_ms
        return moved + window


DEFAULT_STALL = StallRule()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flag_stalled(snapshot: dict[str, Any], rule: StallRule, now_ms: int) -> dict[str, Any]:
    """Set ``stalled`` and ``stalledAt`` on every live task of ``snapshot`` (in place; returned)."""
    for task in snapshot.get("liveTasks") or ():
        at = rule.stalled_at_ms(task)
        task["stalled"] = at is not None and now_ms >= at
        task["stalledAt"] = None if at is None else iso_ms(at)
    return snapshot
