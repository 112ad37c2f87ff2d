"""Learned typical durations per tool, so live tasks without reported progress get an estimate.

Each task that completes successfully (a status of ``Rules.succeeded``: ``SUCCESS_STATUSES``)
contributes its end-minus-start (:func:`observed_duration`, which the projection returns beside
the task's change) to an exponentially weighted moving average per ``toolId``. The averages live
in memory (the lookup passed to :func:`projector.projection.event_projection`) and in the
``durations`` Redis hash, so a restarted or new leader starts with what the previous one learned.
"""

from __future__ import annotations

from typing import Any

from readmodel import Layout
from readmodel.text import text

from .normalize import Task
from .times import datetime_ms, to_utc

MAX_DURATION_MS = 24 * 3600 * 1000
ALPHA = 0.2  # weight of the newest observation


def observed_duration(task: Task) -> tuple[str, int] | None:
    """(toolId, end - start in ms) for a successfully completed task with usable times."""
    tool_id = task.visible["toolId"]
    if not task.succeeded or not tool_id:
        return None
    started = datetime_ms(to_utc(task.visible["startedAt"]))
    ended = task.last_activity_ms
    if started is None or ended is None or not 0 < ended - started <= MAX_DURATION_MS:
        return None
    return tool_id, ended - started


class Durations:
    """toolId -> typical duration (ms); call the instance to look one up."""

    def __init__(self, known: dict[str, int] | None = None, alpha: float = ALPHA) -> None:
        self.alpha = alpha
        self.known: dict[str, int] = dict(known or {})

    def __call__(self, tool_id: str | None) -> int | None:
        return self.known.get(tool_id) if tool_id else None

    def observe(self, tool_id: str, duration_ms: int) -> int:
        previous = self.known.get(tool_id)
        value = duration_ms if previous is None else round(previous + self.alpha * (duration_ms - previous))
        self.known[tool_id] = value
        return value

    @classmethod
    def load(cls, redis: Any, layout: Layout) -> Durations:
        raw = redis.hgetall(layout.durations)
        known = {}
        for key, value in raw.items():
            try:
                known[text(key)] = int(value)
            except ValueError:
                continue
        return cls(known)

    @staticmethod
    def save(redis: Any, layout: Layout, updated: dict[str, int]) -> None:
        if updated:
            redis.hset(layout.durations, mapping=updated)
