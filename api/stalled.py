"""Stalled tasks: a live task whose status and progress have not moved for much longer than its
tool usually takes.

Computed when a snapshot is read, from what the read model stores (no timer, no write): each live
task's record carries ``progressMovedAt``, the document's time (``updatedAt``, else ``startedAt``)
of the last change that moved its status or its progress; the apply script keeps it through
changes that move neither (a heartbeat that only bumps ``updatedAt``, the same status written
again). A task is *stalled* once ``now`` passes ``progressMovedAt + STALLED_FACTOR *
expectedDurationMs`` (its tool's typical duration), or ``progressMovedAt + STALLED_AFTER_S`` when
that duration is unknown; the next move unflags it. A record stored before the field existed
falls back to ``updatedAt``, then ``startedAt``. Each live task carries ``stalled`` and
``stalledAt`` (the moment it counts as stalled if nothing moves), so the panel flags it on time
between snapshots.

Pure functions of their inputs; the clock is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from readmodel.records import epoch_ms


@dataclass(frozen=True)
class StallRule:
    """How long a task's progress may stay still: ``factor`` typical durations, else ``fixed_ms``."""

    factor: float = 3.0
    fixed_ms: int = 600_000

    def stalled_at_ms(self, task: dict[str, Any]) -> int | None:
        """When ``task`` counts as stalled if it does not move; None without any time of its own."""
        moved = (epoch_ms(task.get("progressMovedAt")) or epoch_ms(task.get("updatedAt"))
                 or epoch_ms(task.get("startedAt")))
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
