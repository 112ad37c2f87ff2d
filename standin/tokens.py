"""Cluster times and resume tokens, encoded and parsed as the server does.

A cluster time ``Timestamp(t, i)`` is handled as the 64-bit integer ``t << 32 | i``. A resume
token is ``{"_data": hex}``: the upper-case hex of a KeyString (ascending, V1) holding, as in
``src/mongo/db/pipeline/resume_token.cpp``, ``clusterTime, version, tokenType, txnOpIndex,
fromInvalidate`` and optionally ``uuid, eventIdentifier``. The stand-in writes version-1 tokens
without the optional two (resume_token.cpp allows that for versions <= 1): an event is named by
its cluster time and its index in its transaction. Byte order is KeyString order, so the hex
strings sort like the tokens. ``parse`` applies resume_token.cpp's checks with its error codes.

Oplog positions: an entry's ``position`` is ``cluster time << 20 | index in its transaction``,
so ``before(ts)`` is the position just ahead of every entry at ``ts``.

The only mutable state is ``_SUFFIXES``, a cache every connection thread reads and fills; an
entry is always written with the same value, so a race between two threads is harmless.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import Binary, Timestamp

from . import keystring
from .errors import CommandError
from .keystring import Reader, unreadable

VERSION = 1
EVENT = 128  # ResumeTokenData::kEventToken
HIGH_WATER_MARK = 0  # ResumeTokenData::kHighWaterMarkToken
INDEX_BITS = 20

_HEX = frozenset(string.hexdigits)
FOUND, CHECK_NEXT, SURPASSED = "found", "check next", "surpassed"


def to_int(ts: Timestamp) -> int:
    return ts.time << 32 | ts.inc


def to_timestamp(cluster_time: int) -> Timestamp:
    return Timestamp(cluster_time >> 32, cluster_time & 0xFFFFFFFF)


def position(cluster_time: int, index: int = 0) -> int:
    return cluster_time << INDEX_BITS | index


def before(cluster_time: int) -> int:
    """The position just ahead of every entry at ``cluster_time``."""
    return (cluster_time << INDEX_BITS) - 1


def cluster_time_of(pos: int) -> int:
    return pos >> INDEX_BITS


@dataclass(frozen=True)
class TokenData:
    """What a resume token holds (ResumeTokenData)."""

    cluster_time: int
    version: int = VERSION
    token_type: int = EVENT
    txn_op_index: int = 0
    from_invalidate: bool = False
    uuid: bytes | None = None
    event_identifier: Any = None  # decoded only far enough to check it is an object

    @property
    def is_high_water_mark(self) -> bool:
        return self.token_type == HIGH_WATER_MARK

    def start_position(self) -> int:
        """Where a stream resuming from this token scans from (``$gte`` its cluster time)."""
        return before(self.cluster_time)

    def event_position(self) -> int:
        return position(self.cluster_time, self.txn_op_index)


def encode(data: TokenData) -> dict:
    raw = keystring.timestamp(data.cluster_time) + keystring.integer(data.version) + keystring.integer(data.token_type)
    raw += keystring.integer(data.txn_op_index) + keystring.boolean(data.from_invalidate) + keystring.END
    return {"_data": raw.hex().upper()}


_SUFFIXES: dict[tuple[int, bool], str] = {}


def event_token(cluster_time: int, index: int = 0, *, from_invalidate: bool = False) -> dict:
    """``encode`` of an event's token, with the part after the cluster time cached (hot path)."""
    suffix = _SUFFIXES.get((index, from_invalidate))
    if suffix is None:
        suffix = encode(TokenData(0, txn_op_index=index, from_invalidate=from_invalidate))["_data"][18:]
        if index < 1024:
            _SUFFIXES[(index, from_invalidate)] = suffix
    return {"_data": f"82{cluster_time:016X}{suffix}"}


def high_water_mark(cluster_time: int) -> dict:
    return encode(TokenData(cluster_time, token_type=HIGH_WATER_MARK))


# ---------------------------------------------------------------- parsing


def parse(value: Any) -> TokenData:
    """The data of a client's resume token, refused with the server's codes (resume_token.cpp)."""
    if not isinstance(value, Mapping):
        raise CommandError(14, f"resume token must be an object, not {value!r}")  # IDL type check
    data = value.get("_data")
    if not isinstance(data, str):
        raise CommandError(40647, f"Bad resume token: _data of missing or of wrong type. Expected string, got {value!r}")
    type_bits = value.get("_typeBits")
    if type_bits is not None and not (isinstance(type_bits, Binary) and type_bits.subtype == 0):
        raise CommandError(40648, f"Bad resume token: _typeBits of wrong type {value!r}")
    if len(data) % 2 or not _HEX.issuperset(data):
        raise CommandError(9, "resume token string was not a valid hex string")
    elements = Reader(bytes.fromhex(data)).elements()
    if not elements:
        raise CommandError(40649, "invalid empty resume token")
    first = elements.pop(0)
    if not isinstance(first, Timestamp):
        raise unreadable("its first element is not a timestamp")
    result = {"cluster_time": to_int(first)}
    version = _next(elements, 50796, "Resume Token does not contain version")
    if not _is_int32(version):
        raise CommandError(50854, "Invalid resume token: wrong type for version")
    if version not in (0, 1, 2):
        raise CommandError(50795, "Invalid Resume Token: only supports version 0, 1 and 2")
    result["version"] = version
    if version >= 1:
        token_type = _next(elements, 51055, "Resume Token does not contain tokenType")
        if not _is_int32(token_type):
            raise CommandError(51056, "Resume Token tokenType is not an int.")
        if token_type not in (EVENT, HIGH_WATER_MARK):
            raise CommandError(51057, f"Token type {token_type} not recognized")
        result["token_type"] = token_type
    index = _next(elements, 50793, "Resume Token does not contain txnOpIndex")
    if not _is_int32(index):
        raise CommandError(50855, "Resume Token txnOpIndex is not an integer")
    if index < 0:
        raise CommandError(50794, "Invalid Resume Token: txnOpIndex should be non-negative")
    result["txn_op_index"] = index
    if version >= 1:
        from_invalidate = _next(elements, 50872, "Resume Token does not contain fromInvalidate")
        if not isinstance(from_invalidate, bool):
            raise CommandError(50870, "Resume Token fromInvalidate is not a boolean.")
        result["from_invalidate"] = from_invalidate
    if not elements:
        if version > 1:
            raise CommandError(6189500, "Expected UUID or null")
        return TokenData(**result)
    uuid = elements.pop(0)
    if uuid is not None:
        if not (isinstance(uuid, Binary) and uuid.subtype in (3, 4) and len(uuid) == 16):
            raise CommandError(9, "resume token uuid is not a UUID")  # UUID::parse
        result["uuid"] = bytes(uuid)
    if result.get("token_type") == HIGH_WATER_MARK and elements:
        raise CommandError(6189504, "Invalid high water mark token")
    if not elements:
        if result.get("token_type", EVENT) == EVENT and version >= 2:
            raise CommandError(6189501, "Expected an eventIdentifier for an event resume token")
        return TokenData(**result)
    identifier = elements.pop(0)
    if not isinstance(identifier, dict):
        raise CommandError(6189503, "Resume Token eventIdentifier is not an object")
    result["event_identifier"] = identifier
    if elements and version >= 2:
        fragment = elements.pop(0)
        if not _is_int32(fragment) or fragment < 0:
            raise CommandError(7182501, "Resume token 'fragmentNum' must be a non-negative integer.")
    if elements:
        raise CommandError(40646, "invalid oversized resume token")
    return TokenData(**result)


def _is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def _next(elements: list, code: int, message: str) -> Any:
    if not elements:
        raise CommandError(code, message)
    return elements.pop(0)


def compare(event: TokenData, client: TokenData) -> str:
    """Whether a stream's event is before, at or past a client's resume token (the server's
    ``compareAgainstClientResumeToken``, document_source_change_stream_check_resumability.cpp)."""
    if event.cluster_time != client.cluster_time:
        return SURPASSED if event.cluster_time > client.cluster_time else CHECK_NEXT
    if event.token_type != client.token_type:
        return SURPASSED if event.token_type > client.token_type else CHECK_NEXT
    if event.txn_op_index != client.txn_op_index:
        return SURPASSED if event.txn_op_index > client.txn_op_index else CHECK_NEXT
    if event.from_invalidate != client.from_invalidate:
        return SURPASSED if event.from_invalidate else CHECK_NEXT
    if event.uuid != client.uuid:  # a missing UUID sorts first
        return SURPASSED if client.uuid is None or (event.uuid is not None and event.uuid > client.uuid) else CHECK_NEXT
    if event.event_identifier == client.event_identifier:
        return FOUND
    # The stand-in's events carry no eventIdentifier, which sorts before any a client's has.
    return CHECK_NEXT if event.event_identifier is None else SURPASSED
