"""The projector's health report and the operator's resync request: what both processes agree on.

One writer and one reader each: the projector publishes :class:`Health` (:func:`publish`); the
CLI, the API, the demo and the benchmarks read it (:func:`read`, :func:`aread_heartbeat_ms`). The
CLI asks for a resync (:func:`request_resync`); the leading projector takes the request
(:func:`take_resync_request`). The hash's field names are spelled here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .keys import Layout
from .records import heartbeat_ms
from .text import text_map

# attribute -> field of the hash
_NAMES = {
    "leader": "leader", "state": "state", "heartbeat_ms": "heartbeatMs", "lag_ms": "lagMs",
    "events_total": "eventsTotal", "events_per_sec": "eventsPerSec", "checkpoint_age_ms": "checkpointAgeMs",
    "position": "position", "resyncs": "resyncs", "dead_letters": "deadLetters", "errors": "errors",
    "last_error": "lastError",
}


@dataclass(frozen=True)
class Health:
    """One projector process's report, as stored in ``Layout.health``."""

    leader: str = ""
    state: str = ""
    heartbeat_ms: int = 0
    lag_ms: int = 0
    events_total: int = 0
    events_per_sec: float = 0.0
    checkpoint_age_ms: int = -1  # -1: no checkpoint written yet
    position: str = ""
    resyncs: int = 0
    dead_letters: int = 0
    errors: int = 0
    last_error: str = ""

    def fields(self) -> dict[str, str]:
        """The hash's fields, every value as text."""
        out = {}
        for attribute, name in _NAMES.items():
            value = getattr(self, attribute)
            out[name] = f"{value:.1f}" if isinstance(value, float) else str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Health:
        """Parse a hash; a field that is missing or unreadable keeps its default."""
        defaults = cls()
        values: dict[str, Any] = {}
        for field in fields(cls):
            found = raw.get(_NAMES[field.name])
            if found is None:
                continue
            try:
                values[field.name] = type(getattr(defaults, field.name))(found)
            except ValueError:
                continue
        return cls(**values)


def publish(redis: Any, layout: Layout, health: Health) -> None:
    """The projector: store its report."""
    redis.hset(layout.health, mapping=health.fields())


def read(redis: Any, layout: Layout) -> Health | None:
    """The report a projector stored; None when none has reported yet (sync client)."""
    raw = text_map(redis.hgetall(layout.health))
    return Health.from_fields(raw) if raw else None


async def aread_heartbeat_ms(redis: Any, layout: Layout) -> int | None:
    """The projector's last heartbeat (epoch ms); None when absent (``redis.asyncio`` client)."""
    return heartbeat_ms(await redis.hget(layout.health, _NAMES["heartbeat_ms"]))


def request_resync(redis: Any, layout: Layout, now_ms: int) -> None:
    """The CLI: ask the leading projector to rebuild the read model."""
    redis.set(layout.resync_request, str(now_ms))


def take_resync_request(redis: Any, layout: Layout) -> bool:
    """The leading projector: whether a resync was asked for (the request is consumed)."""
    return redis.getdel(layout.resync_request) is not None
