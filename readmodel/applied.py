"""How far the read model reflects the source, as its readers see it: the position, the lag and
the time that the projector's checkpoint script (``scripts/checkpoint.lua``, the one writer)
stores in a partition's checkpoint hash and announces on its ``applied`` channel as
``"position lagMs atMs"``. The API's freshness and the benchmarks read it here."""

from __future__ import annotations

from typing import Any, NamedTuple

from .keys import Layout
from .text import text

FIELDS = ("position", "lagMs", "atMs")  # in the checkpoint hash; the announcement's words, in this order


class AppliedPosition(NamedTuple):
    """A partition applied the stream through ``position``, ``lag_ms`` behind the source, at ``at_ms``."""

    position: str
    lag_ms: int
    at_ms: int


def parse(raw_position: Any, raw_lag: Any, raw_at: Any) -> AppliedPosition | None:
    """From raw replies or words (a missing lag or time counts as 0); None without a position or
    when a number cannot be read."""
    if raw_position is None:
        return None
    try:
        return AppliedPosition(text(raw_position), int(text(raw_lag if raw_lag is not None else 0)),
                               int(text(raw_at or 0)))
    except (TypeError, ValueError):
        return None


def announced(data: Any) -> AppliedPosition | None:
    """The position an ``applied`` announcement carries; None when it is not one."""
    words = text(data or b"").split(" ")
    return parse(*words) if len(words) == len(FIELDS) else None


async def aread(redis: Any, layout: Layout) -> AppliedPosition | None:
    """The partition's applied position as its checkpoint hash holds it (asyncio client)."""
    return parse(*await redis.hmget(layout.checkpoint, list(FIELDS)))


def read_position(redis: Any, layout: Layout) -> str:
    """The applied position alone ("" before the first checkpoint): one HGET, cheap to poll."""
    raw = redis.hget(layout.checkpoint, FIELDS[0])
    return text(raw) if raw else ""
