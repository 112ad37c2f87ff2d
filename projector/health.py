"""What the worker reports about itself: its counters (:class:`Stats`, owned by the worker's
thread), the report it publishes (``readmodel.health``) and the check (metrics: ``metrics.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import OutOfMemoryError

from readmodel import Layout, health
from readmodel.connect import StoreError
from readmodel.health import Health

HEARTBEAT_LIMIT_MS = 10_000  # older: the worker is gone or stuck
LAG_LIMIT_MS = 60_000
CHECKPOINT_LIMIT_MS = 60_000  # while tailing


class State(StrEnum):
    """What a worker is doing; written to the health hash as its value."""

    STARTING = "starting"
    STANDBY = "standby"  # another process holds the lease
    RESYNCING = "resyncing"
    TAILING = "tailing"
    STOPPED = "stopped"


LEADING = (State.TAILING, State.RESYNCING)


@dataclass
class Stats:
    """Counters and gauges of one worker process."""

    holder: str = ""
    state: State = State.STARTING
    events_total: int = 0
    batches_total: int = 0
    resyncs: int = 0
    dead_letters: int = 0
    errors: int = 0
    last_error: str = ""
    lag_ms: int = 0
    last_event_ms: int = 0  # cluster time (ms) of the last applied event
    checkpoint_ms: int = 0  # wall clock of the last checkpoint write
    position: str = ""
    events_per_sec: float = 0.0
    _rate_mark: tuple[float, int] = field(default=(0.0, 0), repr=False)

    def update_rate(self, now_s: float) -> None:
        mark_s, mark_events = self._rate_mark
        if mark_s and now_s > mark_s:
            self.events_per_sec = (self.events_total - mark_events) / (now_s - mark_s)
        self._rate_mark = (now_s, self.events_total)

    def count(self, events: int, batches: int, dead_letters: int) -> None:
        """Fold in what the writer applied (reported back to the thread that owns these stats)."""
        self.events_total += events
        self.batches_total += batches
        self.dead_letters += dead_letters

    def checkpointed(self, at_ms: int, position: str) -> None:
        self.checkpoint_ms = at_ms
        self.position = position

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:300]

    def summary(self) -> str:
        return (
            f"events={self.events_total} batches={self.batches_total} resyncs={self.resyncs} "
            f"deadLetters={self.dead_letters} errors={self.errors} position={self.position or '-'}"
        )

    def health(self, now_ms: int) -> Health:
        """The report as of ``now_ms``, for the health hash."""
        return Health(
            leader=self.holder, state=str(self.state), heartbeat_ms=now_ms, lag_ms=self.lag_ms,
            events_total=self.events_total, events_per_sec=self.events_per_sec,
            checkpoint_age_ms=now_ms - self.checkpoint_ms if self.checkpoint_ms else -1, position=self.position,
            resyncs=self.resyncs, dead_letters=self.dead_letters, errors=self.errors, last_error=self.last_error,
        )


def failure_message(exc: BaseException) -> str:
    """What failed, in the words the log and ``lastError`` use."""
    store = "Redis" if isinstance(exc, StoreError) else "MongoDB" if isinstance(exc, PyMongoError) else ""
    prefix = ("Redis is full (maxmemory with noeviction) and refuses writes; " if isinstance(exc, OutOfMemoryError)
              else f"{store} failed: " if store else "")
    return prefix + f"{type(exc).__name__}: {exc}"


def publish(redis: Any, layout: Layout, stats: Stats, now_ms: int) -> None:
    health.publish(redis, layout, stats.health(now_ms))


def evaluate(report: Health | None, now_ms: int, max_lag_ms: int = LAG_LIMIT_MS) -> str | None:
    """None when healthy, else the reason in one sentence."""
    if report is None:
        return "no projector has reported health yet"
    beat = report.heartbeat_ms
    if now_ms - beat > HEARTBEAT_LIMIT_MS:
        return f"no heartbeat for {(now_ms - beat) / 1000:.0f} s (last state {report.state or '?'})"
    state = report.state
    if state not in LEADING:
        return f"the projector is {state or 'in an unknown state'}, not applying changes"
    lag = report.lag_ms
    if lag > max_lag_ms:
        return f"lag is {lag / 1000:.1f} s (limit {max_lag_ms / 1000:.0f} s)"
    checkpoint_age = report.checkpoint_age_ms
    if state == State.TAILING and (checkpoint_age < 0 or checkpoint_age > CHECKPOINT_LIMIT_MS):
        return f"the checkpoint has not advanced for {checkpoint_age / 1000:.0f} s"
    return None

