"""Reading one value of a document: ids, statuses, money, counters, display texts (pure).

Each function either returns the value in the form the read model stores, None when there is
none, or raises :class:`FieldError` naming the field and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, TypeGuard

from bson import Decimal128, Int64, ObjectId

from readmodel.keys import USER_ID_RE

# Bounds on what a document may put into a snapshot. Anything outside is rejected with a reason
# (numbers) or cut (display texts), so one hostile document can neither raise nor bloat a read.
MAX_MONEY = Decimal("1e15")  # |usdCredit|, |costUsd| below a quadrillion dollars
MAX_MONEY_PLACES = 34  # Decimal128's precision: no more decimal places than that
MAX_COUNTER = 2**53 - 1  # exp: the largest integer a JSON reader (the panel) holds exactly
MAX_NUMBER_TEXT = 64  # a number written as a string is at most this long
MAX_STATUS = 64
MAX_TOOL_ID = 128
MAX_DISPLAY_NAME = 200
MAX_PLATFORM = 32


class FieldError(ValueError):
    """A field's value cannot be used; the message names the field and says why."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, answered at once for what documents mostly hold (a plain
    dict, None, a number or a text: the ABC's check costs ~0.5 µs each, several per document)."""
    if type(value) is dict:
        return True
    if value is None or type(value) in _NOT_MAPPINGS:
        return False
    return isinstance(value, Mapping)


_NOT_MAPPINGS = frozenset({str, int, float, bool})


# ---------------------------------------------------------------------------- identities


_ACCOUNTS: dict[str, str | None] = {}


def account_id(value: Any) -> str | None:
    """The string form of a masterAccountId, or None when it is not a usable id (texts are
    remembered: a user's id comes back with each of its documents)."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, str):
        known = _ACCOUNTS.get(value, "")
        if known != "":
            return known
        text = value.strip()
        found = text if USER_ID_RE.match(text) else None
        return remember(_ACCOUNTS, value, found) if len(value) <= 256 else found
    return None


def document_id(value: Any) -> str | None:
    """The string form of a document _id (ObjectId, string or integer)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return None
    if isinstance(value, (ObjectId, str, int, Int64)):
        text = str(value)
        return text if 0 < len(text) <= 256 and text.isprintable() else None
    return None


# Small caches of pure functions of one text (ids, statuses; times in projector.times): a task's
# events repeat them, and hashing, the regex and parsing cost more than the lookup. Each is
# cleared when full, so memory stays bounded whatever the input.
CACHE_MAX = 4096


def remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """``cache[key] = value`` (the cache emptied first when it holds ``CACHE_MAX``); returns value."""
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


_ID_HASHES: dict[str, str] = {}


def id_hash(generation_id: str) -> str:
    """First five hex characters of sha256 of the id: the short id the bots show."""
    known = _ID_HASHES.get(generation_id)
    if known is None:
        known = remember(_ID_HASHES, generation_id, hashlib.sha256(generation_id.encode()).hexdigest()[:5])
    return known


_STATUS_SEPARATORS = re.compile(r"[\s\-]+")
_STATUSES: dict[str, str | None] = {}


def normalize_status(value: Any) -> str | None:
    """'  Cancelled by User ' -> 'cancelled_by_user'; None when it is not a status."""
    if not isinstance(value, str):
        return None
    known = _STATUSES.get(value, "")
    if known != "":
        return known
    text = _STATUS_SEPARATORS.sub("_", value[: MAX_STATUS * 4].strip().lower())[:MAX_STATUS].strip("_") or None
    return remember(_STATUSES, value, text) if len(value) <= MAX_STATUS * 4 else text


# ---------------------------------------------------------------------------- money and numbers


_DECIMAL128_SEEN: dict[tuple[int, int], Decimal] = {}
# Decimal128's BID layout as bson.decimal128 reads it: the sign bit; then either two set bits
# (infinities, NaNs and the large-coefficient form) or a 14-bit biased exponent and a coefficient
# of 113 bits (49 of the high word, all 64 of the low one) worth at most 34 digits.
_D128_SPECIAL = 3 << 61
_D128_HIGH_COEFFICIENT = (1 << 49) - 1
_D128_MAX_COEFFICIENT = 10**34 - 1
_D128_EXPONENT_BIAS = 6176


def decimal128_decimal(value: Decimal128) -> Decimal:
    """``value.to_decimal()``, the reference, which bson computes digit by digit in Python
    (~15 µs), from the coefficient and exponent read off the two words (~1 µs). The special and
    large-coefficient forms go through the reference."""
    high, low = value.__getstate__()
    if high & _D128_SPECIAL != _D128_SPECIAL:
        coefficient = ((high & _D128_HIGH_COEFFICIENT) << 64) | low
        if coefficient <= _D128_MAX_COEFFICIENT:
            exponent = ((high >> 49) & 0x3FFF) - _D128_EXPONENT_BIAS
            return Decimal(f"{'-' if high >> 63 else ''}{coefficient}E{exponent}")
    return value.to_decimal()


def _decimal128(value: Decimal128) -> Decimal:
    """:func:`decimal128_decimal`, remembered: the same prices and balances come back again and
    again."""
    key = value.__getstate__()
    number = _DECIMAL128_SEEN.get(key)
    if number is None:
        if len(_DECIMAL128_SEEN) >= 4096:
            _DECIMAL128_SEEN.clear()
        number = _DECIMAL128_SEEN[key] = decimal128_decimal(value)
    return number


def exact_decimal(value: Any) -> Decimal | None:
    """An exact Decimal from Decimal128, int, float or numeric string; None when not a number.

    Floats go through their shortest repr, so 0.1 becomes Decimal('0.1'), not the binary artefact.
    NaN, infinities, booleans and strings longer than ``MAX_NUMBER_TEXT`` are not numbers. The
    magnitude is not checked here: see :func:`money` and :func:`counter`.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, Decimal128):
            number = _decimal128(value)
        elif isinstance(value, Decimal):
            number = value
        elif isinstance(value, (int, Int64)):
            if abs(value) > 10**MAX_NUMBER_TEXT:
                return None
            number = Decimal(int(value))
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str) and value.strip() and len(value) <= MAX_NUMBER_TEXT:
            number = Decimal(value.strip().lstrip("$"))
        else:
            return None
    except (InvalidOperation, ValueError, ArithmeticError):
        return None
    return number if number.is_finite() else None


def describe(value: Any) -> str:
    """A short description of a bad value for a rejection reason (never the whole of it)."""
    if isinstance(value, str) and len(value) > 60:
        return f"a {len(value)}-character string"
    if isinstance(value, int) and abs(value) > 10**60:
        return f"a {value.bit_length()}-bit integer"
    return f"{value!r:.60}"


_MONEY_SEEN: dict[tuple[int, int], Decimal] = {}


def money(name: str, value: Any) -> Decimal:
    """An amount of USD: exact, finite, below ``MAX_MONEY``, at most ``MAX_MONEY_PLACES`` places.

    Negative zero is zero. Raises :class:`FieldError` naming ``name`` otherwise. A Decimal128
    that passed is remembered by its two words (a task's price comes back with each of its events).
    """
    if type(value) is Decimal128:
        key = value.__getstate__()
        known = _MONEY_SEEN.get(key)
        if known is None:
            known = remember(_MONEY_SEEN, key, _money(name, value))
        return known
    return _money(name, value)


_MONEY_TEXTS: dict[tuple[int, int], str] = {}


def money_text(name: str, value: Any) -> str:
    """``decimal_text(money(name, value))``, remembered for a Decimal128 by its two words (a
    task's price comes back with each of its events)."""
    if type(value) is Decimal128:
        key = value.__getstate__()
        known = _MONEY_TEXTS.get(key)
        if known is None:
            known = remember(_MONEY_TEXTS, key, decimal_text(money(name, value)))
        return known
    return decimal_text(money(name, value))


def _money(name: str, value: Any) -> Decimal:
    number = exact_decimal(value)
    if number is None:
        raise FieldError(name, f"is not an exact number: {describe(value)}")
    exponent = number.as_tuple().exponent  # an int: exact_decimal returns finite numbers only
    places = -exponent if isinstance(exponent, int) else MAX_MONEY_PLACES + 1
    if places > MAX_MONEY_PLACES or (not number.is_zero() and number.adjusted() >= MAX_MONEY.adjusted()):
        raise FieldError(name, f"is out of range (|x| < 1e15, at most {MAX_MONEY_PLACES} decimal places): {number:.6E}")
    return number.copy_abs() if number.is_zero() else number


def counter(name: str, value: Any) -> int:
    """A whole number from Int64, int, double, Decimal128 or a string (fractions truncated),
    with magnitude at most ``MAX_COUNTER``; raises :class:`FieldError` naming ``name`` otherwise."""
    if (type(value) is Int64 or type(value) is int) and -MAX_COUNTER <= value <= MAX_COUNTER:
        return int(value)  # what the exact path below gives for a whole number in range
    number = exact_decimal(value)
    if number is None:
        raise FieldError(name, f"is not a number: {describe(value)}")
    if number.adjusted() > 16 or abs(number) > MAX_COUNTER:
        raise FieldError(name, f"is out of range (|x| <= 2^53 - 1): {number:.6E}")
    return int(number)


def decimal_text(number: Decimal) -> str:
    """Plain notation, never exponent: Decimal('1E+2') -> '100', keeping the source's scale.

    Only for amounts :func:`money` accepted (their text is at most about 50 characters).
    """
    text = format(number, "f")
    return "0" if text in ("-0", "") else text


def points_for(usd_credit: Decimal, rate: Decimal) -> int:
    """floor(usdCredit / rate)."""
    return int((usd_credit / rate).to_integral_value(rounding=ROUND_FLOOR))


def clip_text(value: Any, limit: int) -> str | None:
    if isinstance(value, str):
        text = value[: limit * 4].strip()[:limit]
        return text or None
    return None
