"""How MongoDB sees values: BSON type order, equality across numeric types, _id keys, paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Binary, ObjectId, Timestamp
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex


def type_rank(value: Any) -> int:
    """The BSON comparison order of a value's type (null < numbers < strings < ...)."""
    if value is None:
        return 2
    if isinstance(value, bool):
        return 9
    if isinstance(value, (int, float, Decimal128)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, Mapping):
        return 5
    if isinstance(value, (list, tuple)):
        return 6
    if isinstance(value, (bytes, Binary)):
        return 7
    if isinstance(value, ObjectId):
        return 8
    if isinstance(value, datetime):
        return 10
    if isinstance(value, Timestamp):
        return 11
    if isinstance(value, (Regex, re.Pattern)):
        return 12
    if isinstance(value, MinKey):
        return 1
    if isinstance(value, MaxKey):
        return 13
    return 14


def sort_key(value: Any) -> tuple:
    """A key that orders values like MongoDB orders them."""
    rank = type_rank(value)
    if rank == 3:
        if isinstance(value, Decimal128):
            value = value.to_decimal()
        if value != value:  # NaN sorts below every number
            return (3, 0, 0)
        return (3, 1, value)
    if rank in (4, 9):
        return (rank, value)
    if rank == 5:
        return (5, tuple((k, sort_key(v)) for k, v in value.items()))
    if rank == 6:
        return (6, tuple(sort_key(v) for v in value))
    if rank == 7:
        return (7, len(value), bytes(value))
    if rank == 8:
        return (8, value.binary)
    if rank == 10:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return (10, value)
    if rank == 11:
        return (11, value.time, value.inc)
    if rank in (1, 2, 13):
        return (rank,)
    return (rank, repr(value))


_SIMPLE = (str, ObjectId)


def values_equal(a: Any, b: Any) -> bool:
    """Equality as MongoDB sees it: 1 == 1.0 == Int64(1) == Decimal128("1"), True != 1."""
    ta = type(a)
    if ta is type(b) and (ta in _SIMPLE or ta is int):
        return a == b
    return sort_key(a) == sort_key(b)


def id_key(value: Any) -> Any:
    """A hashable key for an _id, equal for _id values MongoDB considers equal."""
    if isinstance(value, (str, ObjectId)):
        return value
    rank = type_rank(value)
    if rank == 3:
        number = value.to_decimal() if isinstance(value, Decimal128) else value
        return number if isinstance(number, (int, Decimal)) else Decimal(repr(number))
    return sort_key(value)




def resolve(doc: Any, parts: list[str]) -> list:
    """Every value a dotted path reaches, descending into arrays like MongoDB does."""
    node = doc
    for part in parts:  # fast path: plain sub-documents all the way down
        if isinstance(node, Mapping):
            if part not in node:
                return []
            node = node[part]
        else:
            break
    else:
        return [node]
    out: list = []
    _resolve(doc, parts, 0, out)
    return out


def _resolve(value: Any, parts: list[str], i: int, out: list) -> None:
    if i == len(parts):
        out.append(value)
        return
    part = parts[i]
    if isinstance(value, Mapping):
        if part in value:
            _resolve(value[part], parts, i + 1, out)
    elif isinstance(value, list):
        if part.isdigit() and int(part) < len(value):
            _resolve(value[int(part)], parts, i + 1, out)
        for element in value:
            if isinstance(element, Mapping):
                _resolve(element, parts, i, out)
