"""Cluster times and resume tokens.

A cluster time ``Timestamp(t, i)`` is handled as the 64-bit integer ``t << 32 | i``. A resume
token is ``{"_data": "82" + 16 hex digits of that integer + 2 hex digits of kind}``: fixed
width upper-case hex, so string order equals oplog order. The kind marks invalidate events,
which may be passed to ``startAfter`` but not to ``resumeAfter``, as on a real server, and
high-water marks: the ``postBatchResumeToken`` of a batch that ended because nothing more was
there (a real server's high-water-mark tokens differ from every event's token too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import Timestamp

from .errors import CommandError

EVENT = 0
INVALIDATE = 1
HIGH_WATER_MARK = 2
_PREFIX = "82"
_LENGTH = len(_PREFIX) + 16 + 2


def to_int(ts: Timestamp) -> int:
    return ts.time << 32 | ts.inc


def to_timestamp(position: int) -> Timestamp:
    return Timestamp(position >> 32, position & 0xFFFFFFFF)


def token(position: int, kind: int = EVENT) -> dict:
    """The resume token for a position in the oplog."""
    return {"_data": f"{_PREFIX}{position:016X}{kind:02X}"}


def parse_token(value: Any) -> tuple[int, int]:
    """``(position, kind)`` of a resume token; error 260 if it is not one of ours."""
    data = value.get("_data") if isinstance(value, Mapping) else None
    if not isinstance(data, str) or len(data) != _LENGTH or not data.startswith(_PREFIX):
        raise CommandError(260, f"invalid resume token: {value!r}")
    try:
        return int(data[2:18], 16), int(data[18:], 16)
    except ValueError:
        raise CommandError(260, f"invalid resume token: {value!r}") from None
