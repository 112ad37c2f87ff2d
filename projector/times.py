"""Time: BSON dates, ISO-8601 texts and epoch numbers into one form, and back to text (pure)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.datetime_ms import DatetimeMS

from .values import MAX_NUMBER_TEXT, remember

# ---------------------------------------------------------------------------- time


def to_utc(value: Any) -> datetime | None:
    """A BSON date (naive means UTC), an ISO-8601 string, or epoch seconds/milliseconds."""
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except (OverflowError, ValueError):
            return None
    if isinstance(value, DatetimeMS):  # a BSON date outside datetime's years 1..9999
        return None
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_TEXT:
            return None
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return to_utc(parsed)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with millisecond precision and a Z: 2026-11-25T08:48:21.123Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def iso_at(seconds: float) -> str:
    """ISO-8601 UTC (milliseconds) of a clock reading in seconds since the epoch."""
    return iso(datetime.fromtimestamp(seconds, UTC)) or ""


# ``(t - epoch) / 1 s`` is the very float ``t.replace(tzinfo=UTC).timestamp()`` computes for a
# naive UTC ``t`` (both divide whole microseconds by 10**6), at a quarter of its cost.
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


def wall_ms(value: Any) -> int | None:
    """``datetime_ms(to_utc(value))``, without the detours for a BSON date (a naive UTC datetime):
    an event's wallTime, read once or twice per event."""
    if type(value) is datetime and value.tzinfo is None:
        return int((value - _EPOCH) / _SECOND * 1000)
    return datetime_ms(to_utc(value))


def datetime_ms(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch of a moment (see :func:`readmodel.records.epoch_ms` for an ISO text)."""
    return None if moment is None else int(moment.timestamp() * 1000)


Moment = tuple[str, int]  # (ISO text, epoch ms) of a point in time
# A text already in iso()'s form (JavaScript's toISOString() writes it): parsed, it formats back to itself.
_ISO_UTC_MS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_MOMENTS: dict[str, Moment | None] = {}


def moment(value: Any) -> Moment | None:
    """``(iso(t), datetime_ms(t))`` of ``t = to_utc(value)``; None when ``to_utc`` gives None.
    Texts are remembered (a task's requestTimestamp comes back with each of its events)."""
    if isinstance(value, str):
        known = _MOMENTS.get(value, ())
        if known != ():
            return known  # type: ignore[return-value]
    parsed = to_utc(value)
    # iso() and the timestamp cannot fail on what to_utc returns (a UTC datetime in years 1..9999).
    if parsed is None:
        found = None
    elif isinstance(value, str) and _ISO_UTC_MS.fullmatch(value):
        found = (value, int(parsed.timestamp() * 1000))  # iso(parsed) is this very text, at 3x the cost
    else:
        found = (iso(parsed) or "", int(parsed.timestamp() * 1000))
    if isinstance(value, str) and len(value) <= MAX_NUMBER_TEXT:
        remember(_MOMENTS, value, found)
    return found
