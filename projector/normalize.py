"""Turn raw MongoDB documents into normalized tasks and balances.

Pure functions: no I/O, no clock reads. Bad input never raises out of here; it comes back as a
:class:`Rejection` with a reason that the worker dead-letters.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS

from readmodel.keys import USER_ID_RE

from .progress import read_progress

# Statuses seen in the wild, normalized (lower case, spaces and dashes as underscores).
QUEUED_STATUSES = frozenset({"pending", "queued", "waiting"})
RUNNING_STATUSES = frozenset({"processing", "running"})
TERMINAL_STATUSES = frozenset(
    {
        "completed",
        "success",
        "succeeded",
        "failed",
        "payment_failed",
        "cancelled",
        "cancelled_by_user",
        "timeout",
        "error",
    }
)
SUCCESS_STATUSES = frozenset({"completed", "success", "succeeded"})  # terminal and successful
DEFAULT_POINTS_RATE = Decimal("0.00037")

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


@dataclass(frozen=True)
class Rules:
    """What the normalizer needs to know that is configuration, not data.

    A status in none of the sets is *unknown*: it is shown as live with its own name and no
    progress (the user sees "something is happening"), and it leaves the snapshot when it goes
    stale like any other live task.
    """

    queued: frozenset[str] = QUEUED_STATUSES
    running: frozenset[str] = RUNNING_STATUSES
    terminal: frozenset[str] = TERMINAL_STATUSES
    succeeded: frozenset[str] = SUCCESS_STATUSES  # terminal statuses whose duration is learned
    points_rate: Decimal = DEFAULT_POINTS_RATE
    stale_after_ms: int = 24 * 3600 * 1000

    def is_terminal(self, status: str) -> bool:
        return status in self.terminal


@dataclass(frozen=True)
class Rejection:
    """A document that cannot be projected, with the reason why."""

    reason: str


class FieldError(ValueError):
    """A field's value cannot be used; the message names the field and says why."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name


@dataclass(frozen=True)
class Task:
    """One generation task as every platform shows it."""

    generation_id: str
    owner: str
    id_hash: str
    status: str
    live: bool
    progress_percent: float | None
    progress_source: str | None  # "reported" | "status" | None
    tool_id: str | None
    tool_display_name: str | None
    cost_usd: str | None
    started_at: str | None
    updated_at: str | None
    source_platform: str | None
    # Milliseconds since the epoch of the last sign of life; None when the document has none.
    last_activity_ms: int | None = field(default=None, compare=True)
    succeeded: bool = False  # finished with a status of Rules.succeeded

    def visible(self) -> dict[str, Any]:
        """The fields a reader sees, in the API's naming."""
        return {
            "generationId": self.generation_id,
            "idHash": self.id_hash,
            "status": self.status,
            "progressPercent": self.progress_percent,
            "progressSource": self.progress_source,
            "toolId": self.tool_id,
            "toolDisplayName": self.tool_display_name,
            "costUsd": self.cost_usd,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "sourcePlatform": self.source_platform,
        }


@dataclass(frozen=True)
class Balance:
    """A user's balance: exact USD credit, derived points, experience."""

    owner: str
    usd_credit: str
    points: int
    exp: int


# Every document field the normalizer (and projector.progress) reads. The change stream asks the
# server for these alone: a generation's prompt, outputs and other metadata never cross the wire.
TASK_FIELDS = (
    "_id", "masterAccountId", "status", "costUsd", "toolId", "toolDisplayName", "notificationPlatform",
    "sourcePlatform", "requestTimestamp", "updatedAt", "responseTimestamp",
    "progressPercent", "progress", "currentStep", "totalSteps", "step", "steps", "current", "total",
    "metadata.toolDisplayName", "metadata.progressPercent", "metadata.progress", "metadata.currentStep",
    "metadata.totalSteps", "metadata.step", "metadata.steps", "metadata.current", "metadata.total",
)
BALANCE_FIELDS = ("_id", "masterAccountId", "usdCredit", "balanceUsd", "exp")


# ---------------------------------------------------------------------------- identities


def account_id(value: Any) -> str | None:
    """The string form of a masterAccountId, or None when it is not a usable id."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        return value if USER_ID_RE.match(value) else None
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


def id_hash(generation_id: str) -> str:
    """First five hex characters of sha256 of the id: the short id the bots show."""
    return hashlib.sha256(generation_id.encode()).hexdigest()[:5]


def normalize_status(value: Any) -> str | None:
    """'  Cancelled by User ' -> 'cancelled_by_user'; None when it is not a status."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"[\s\-]+", "_", value[: MAX_STATUS * 4].strip().lower())[:MAX_STATUS].strip("_")
    return text or None


# ---------------------------------------------------------------------------- money and numbers


_DECIMAL128_SEEN: dict[bytes, Decimal] = {}


def _decimal128(value: Decimal128) -> Decimal:
    """``value.to_decimal()``, remembered: bson decodes it bit by bit in Python (~20 µs), and the
    same prices and balances come back again and again."""
    key = value.bid
    number = _DECIMAL128_SEEN.get(key)
    if number is None:
        if len(_DECIMAL128_SEEN) >= 4096:
            _DECIMAL128_SEEN.clear()
        number = _DECIMAL128_SEEN[key] = value.to_decimal()
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


def money(name: str, value: Any) -> Decimal:
    """An amount of USD: exact, finite, below ``MAX_MONEY``, at most ``MAX_MONEY_PLACES`` places.

    Negative zero is zero. Raises :class:`FieldError` naming ``name`` otherwise.
    """
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


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------- documents


def _text(value: Any, limit: int) -> str | None:
    if isinstance(value, str):
        text = value[: limit * 4].strip()[:limit]
        return text or None
    return None


def _field(name: str, read: Callable[[Any], Any], value: Any) -> Any:
    """``read(value)``; any exception becomes a :class:`FieldError` naming ``name``."""
    try:
        return read(value)
    except FieldError:
        raise
    except Exception as exc:  # one field of one document: never a crash, a reason
        raise FieldError(name, f"cannot be read ({type(exc).__name__}: {str(exc)[:80]})") from None


def _project(build: Callable[[Mapping[str, Any], Rules], Any], doc: Any, rules: Rules) -> Any:
    if not isinstance(doc, Mapping):
        return Rejection(f"document is a {type(doc).__name__}, not a mapping")
    try:
        return build(doc, rules)
    except FieldError as exc:
        return Rejection(str(exc))


def normalize_task(doc: Any, rules: Rules = Rules()) -> Task | Rejection:
    """A ``generationOutputs`` document as a :class:`Task`, or why it cannot be one. Never raises."""
    return _project(_task, doc, rules)


def _task(doc: Mapping[str, Any], rules: Rules) -> Task | Rejection:
    generation_id = _field("_id", document_id, doc.get("_id"))
    if generation_id is None:
        return Rejection("missing or unusable _id")
    owner = _field("masterAccountId", account_id, doc.get("masterAccountId"))
    if owner is None:
        return Rejection(f"missing or invalid masterAccountId: {describe(doc.get('masterAccountId'))}")
    status = _field("status", normalize_status, doc.get("status"))
    if status is None:
        return Rejection(f"missing or non-text status: {describe(doc.get('status'))}")
    raw_cost = doc.get("costUsd")
    cost = None if raw_cost is None else decimal_text(_field("costUsd", lambda v: money("costUsd", v), raw_cost))

    live = not rules.is_terminal(status)
    percent = _field("progress", read_progress, doc)
    source = "reported" if percent is not None else None
    if percent is None:
        if status in rules.queued:
            percent, source = 0.0, "status"
        elif not live:
            percent, source = 100.0, "status"

    raw_metadata = doc.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    started = _field("requestTimestamp", to_utc, doc.get("requestTimestamp"))
    updated = (_field("updatedAt", to_utc, doc.get("updatedAt"))
               or _field("responseTimestamp", to_utc, doc.get("responseTimestamp")) or started)
    return Task(
        generation_id=generation_id,
        owner=owner,
        id_hash=id_hash(generation_id),
        status=status,
        live=live,
        progress_percent=percent,
        progress_source=source,
        tool_id=_text(doc.get("toolId"), MAX_TOOL_ID),
        tool_display_name=(_text(doc.get("toolDisplayName"), MAX_DISPLAY_NAME)
                           or _text(metadata.get("toolDisplayName"), MAX_DISPLAY_NAME)),
        cost_usd=cost,
        started_at=iso(started),
        updated_at=iso(updated),
        source_platform=(_text(doc.get("notificationPlatform"), MAX_PLATFORM)
                         or _text(doc.get("sourcePlatform"), MAX_PLATFORM)),
        last_activity_ms=epoch_ms(updated),
        succeeded=not live and status in rules.succeeded,
    )


def normalize_balance(doc: Any, rules: Rules = Rules()) -> Balance | Rejection:
    """A ``userEconomy`` document as a :class:`Balance`, or why it cannot be one. Never raises."""
    return _project(_balance, doc, rules)


def _balance(doc: Mapping[str, Any], rules: Rules) -> Balance | Rejection:
    owner = _field("masterAccountId", account_id, doc.get("masterAccountId"))
    if owner is None:
        return Rejection(f"missing or invalid masterAccountId: {describe(doc.get('masterAccountId'))}")
    name = "usdCredit" if "usdCredit" in doc else "balanceUsd"
    raw_credit = doc.get(name)
    credit = Decimal(0) if raw_credit is None else _field(name, lambda v: money(name, v), raw_credit)
    raw_exp = doc.get("exp")
    exp = 0 if raw_exp is None else _field("exp", lambda v: counter("exp", v), raw_exp)
    points = _field("points", lambda c: points_for(c, rules.points_rate), credit)
    return Balance(owner=owner, usd_credit=decimal_text(credit), points=points, exp=exp)


def is_stale(task: Task, now_ms: int, rules: Rules) -> bool:
    """A live task with no sign of life for longer than the configured age."""
    return task.last_activity_ms is not None and now_ms - task.last_activity_ms > rules.stale_after_ms
